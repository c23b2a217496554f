"""Applying MQTT messages: once in effect, gaps, history, dead letters (SQLite and PostgreSQL)."""

from __future__ import annotations

import orjson
import pytest
from sqlmodel import Session, select

from hub.apply import Applier, Raw, ms_to_dt
from hub.models import DeadLetter, Device, Gap, Gateway, Latest, Reading, Telemetry
from hub.telemetry import SqlTelemetry

BIRTH = {
    "v": 1,
    "gw": "gw-1",
    "site": "s1",
    "bdseq": 0,
    "stream": "a" * 32,
    "ts": 1,
    "agent": "t",
    "devices": [
        {
            "id": "em-1",
            "profile": "em-1p",
            "bus": "b",
            "unit": 1,
            "interval_s": 5.0,
            "points": [
                {"name": "voltage", "unit": "V", "kind": "measurement", "type": "float32"},
                {"name": "kwh", "unit": "kWh", "kind": "counter", "type": "uint32"},
            ],
        }
    ],
}
T0 = 1_795_334_400_000


def birth(**kw):
    return Raw("wuye/v1/s1/gw-1/birth", orjson.dumps({**BIRTH, **kw}))


def data(seq, ts=None, hist=False, **values):
    body = {
        "v": 1,
        "gw": "gw-1",
        "seq": seq,
        "hist": hist,
        "ts": ts or T0 + seq * 1000,
        "dev": "em-1",
        "values": values or {"voltage": 220.0 + seq, "kwh": 100 + seq / 100},
    }
    return Raw("wuye/v1/s1/gw-1/data/em-1", orjson.dumps(body))


@pytest.fixture
def applier(engine):
    return Applier(engine, SqlTelemetry(), max_payload=4096)


def test_each_message_takes_effect_once(applier, engine):
    applier.apply([birth(), data(1), data(2)])
    out = applier.apply([data(2), data(1), data(3), data(3)])  # redelivery, and twice in a batch
    assert (out.applied, out.duplicates) == (1, 3)
    with Session(engine) as s:
        rows = s.exec(select(Telemetry)).all()
        assert len(rows) == 3 and all(set(r.values) == {"voltage", "kwh"} for r in rows)
        readings = s.exec(select(Reading).order_by(Reading.ts)).all()
        assert [str(r.value) for r in readings] == ["100.010000", "100.020000", "100.030000"]
        gw = s.get(Gateway, "gw-1")
        assert (gw.messages, gw.duplicates, gw.max_seq, gw.gaps) == (3, 3, 3, 0)


def test_gaps_are_recorded_and_late_messages_fill_them(applier, engine):
    applier.apply([birth(), data(1), data(5), data(9)])
    with Session(engine) as s:
        gaps = [(g.first_seq, g.last_seq) for g in s.exec(select(Gap).order_by(Gap.first_seq))]
        assert gaps == [(2, 4), (6, 8)]
        assert s.get(Gateway, "gw-1").gaps == 6
    applier.apply([data(3), data(6), data(8)])
    with Session(engine) as s:
        gaps = [(g.first_seq, g.last_seq) for g in s.exec(select(Gap).order_by(Gap.first_seq))]
        assert gaps == [(2, 2), (4, 4), (7, 7)]
        assert s.get(Gateway, "gw-1").gaps == 3


def test_historical_values_never_overwrite_newer_latest(applier, engine):
    applier.apply([birth(), data(10, voltage=230.0)])
    applier.apply([data(4, hist=True, voltage=199.0)])  # replayed, older
    with Session(engine) as s:
        value, _, seq = s.exec(select(Latest)).one().points["voltage"]
        assert (value, seq) == (230.0, 10)
        assert len(s.exec(select(Telemetry)).all()) == 2  # history is still kept


def test_data_before_birth_is_kept_and_the_birth_adopts_it(applier, engine):
    applier.apply([data(1)])
    applier.apply([birth()])
    out = applier.apply([data(1), data(2)])
    assert (out.applied, out.duplicates) == (1, 1)
    with Session(engine) as s:
        dev = s.exec(select(Device)).one()
        assert dev.profile == "em-1p" and s.get(Gateway, "gw-1").site_id == "s1"


BAD = [
    (Raw("wuye/v1/s1/gw-1/data/em-1", b"{not json"), "not JSON"),
    (Raw("wuye/v1/s1/gw-1/data/em-1", b'{"v":2}'), "unknown schema version"),
    (Raw("wuye/v1/s1/gw-1/weather", b"{}"), "unknown kind"),
    (Raw("wuye/v1/s1/gw-1/data/em-1", b"x" * 5000), "over the limit"),
    (
        Raw(
            "wuye/v1/s1/gw-1/data/em-1",
            orjson.dumps(
                {"v": 1, "gw": "gw-1", "seq": 7, "ts": 1, "dev": "em-1", "values": {"v": "high"}}
            ),
        ),
        "values.v",
    ),
    (
        Raw(
            "wuye/v1/s1/gw-1/data/em-1",
            orjson.dumps({"v": 1, "gw": "gw-2", "seq": 7, "ts": 1, "dev": "em-1", "values": {}}),
        ),
        "published on 'gw-1'",
    ),
    (
        Raw(
            "wuye/v1/s2/gw-1/data/em-1",
            orjson.dumps({"v": 1, "gw": "gw-1", "seq": 8, "ts": 1, "dev": "em-1", "values": {}}),
        ),
        "belongs to site 's1'",
    ),
]


def test_bad_messages_become_dead_letters_and_good_ones_still_arrive(applier, engine):
    applier.apply([birth()])
    out = applier.apply([data(1), *[raw for raw, _ in BAD], data(2)])
    assert (out.applied, out.dead) == (2, len(BAD))
    with Session(engine) as s:
        letters = s.exec(select(DeadLetter).order_by(DeadLetter.id)).all()
        for letter, (_, reason) in zip(letters, BAD, strict=True):
            assert reason in letter.reason
        gw = s.get(Gateway, "gw-1")
        assert gw.bad == len(BAD)
        # the refused data message with a readable seq 7 holds its place: 3..6 are missing,
        # 7 is not (its gap could never be filled, and would stop the edge's watermark)
        assert (gw.max_seq, gw.gaps, gw.messages) == (7, 4, 3)


def test_outbox_drops_are_recorded_as_deliberate_gaps(applier, engine):
    event = {
        "v": 1,
        "gw": "gw-1",
        "seq": 50,
        "ts": T0,
        "event": "outbox_dropped",
        "detail": {"count": 20, "first_seq": 20, "last_seq": 39},
    }
    applier.apply([birth(), Raw("wuye/v1/s1/gw-1/event", orjson.dumps(event))])
    with Session(engine) as s:
        reasons = {(g.first_seq, g.last_seq, g.reason) for g in s.exec(select(Gap))}
        assert (20, 39, "dropped_by_edge") in reasons


def test_housekeeping_prunes_aged_telemetry_and_seen_ids(engine, db_url, tmp_path):
    from datetime import timedelta

    from sqlalchemy import update

    from hub.ingest import Consumer
    from hub.models import Seen, utcnow
    from hub.settings import load_settings

    settings = load_settings(
        database_url=db_url,
        telemetry_retention_days=1,
        seen_retention_days=1,
        secret_file=tmp_path / "s",
    )
    consumer = Consumer(settings, engine, SqlTelemetry(1))
    now_ms = int(utcnow().timestamp() * 1000)
    consumer.applier.apply([birth(), data(1, ts=now_ms - 3 * 86400_000), data(2, ts=now_ms)])
    with Session(engine) as s:
        s.execute(update(Seen).where(Seen.seq == 1).values(at=utcnow() - timedelta(days=2)))
        s.commit()
    consumer._housekeeping()
    with Session(engine) as s:
        assert {t.ts.timestamp() * 1000 // 1 for t in s.exec(select(Telemetry))} == {now_ms}
        assert [x.seq for x in s.exec(select(Seen))] == [2]


def test_history_extracts_one_point_per_step_on_both_databases(applier, engine, tmp_path):
    from datetime import timedelta

    from hub.history import history
    from hub.settings import load_settings

    applier.apply([birth(), *[data(i, voltage=200.0 + i, kwh=float(i)) for i in range(1, 21)]])
    with Session(engine) as s:
        dev = s.exec(select(Device)).one()
        start = ms_to_dt(T0)
        got = history(
            s,
            load_settings(secret_file=tmp_path / "s"),
            dev,
            "voltage",
            start,
            start + timedelta(seconds=30),
            10,
        )
    # seq i is at T0 + i s: steps [0,10) holds 1..9, [10,20) holds 10..19, [20,30) holds 20
    assert [(p.count, p.min, p.max) for p in got] == [
        (9, 201.0, 209.0),
        (10, 210.0, 219.0),
        (1, 220.0, 220.0),
    ]


def test_the_latest_status_of_a_gateway_is_kept_and_an_older_one_never_replaces_it(applier, engine):
    def status(ts, depth):
        body = {
            "v": 1,
            "gw": "gw-1",
            "ts": ts,
            "metrics": {"outbox_depth": depth, "mqtt_online": 1},
            "devices": {"em-1": "online"},
        }
        return Raw("wuye/v1/s1/gw-1/status", orjson.dumps(body))

    applier.apply([birth(), status(T0 + 2000, 7)])
    applier.apply([status(T0 + 1000, 99)])  # a retained copy redelivered late
    with Session(engine) as s:
        gw = s.get(Gateway, "gw-1")
        assert gw.status == {
            "metrics": {"outbox_depth": 7, "mqtt_online": 1},
            "devices": {"em-1": "online"},
        }
        assert gw.status_at == ms_to_dt(T0 + 2000)
