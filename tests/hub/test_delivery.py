"""Gaps that tell the truth, and the watermark the hub tells each edge (SQLite, PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest
from sqlmodel import Session, select

from hub.apply import Applier, Raw
from hub.models import Gap, Gateway
from hub.telemetry import SqlTelemetry
from protocols.mqtt import Committed
from tests.hub.test_apply import birth, data

EVENT = "wuye/v1/s1/gw-1/event"


def dropped(seq: int, *runs: tuple[int, int]) -> Raw:
    detail = {
        "count": sum(b - a + 1 for a, b in runs),
        "first_seq": runs[0][0],
        "last_seq": runs[-1][1],
        "ranges": [list(r) for r in runs],
    }
    body = {"v": 1, "gw": "gw-1", "seq": seq, "ts": 1, "event": "outbox_dropped", "detail": detail}
    return Raw(EVENT, orjson.dumps(body))


@pytest.fixture
def applier(engine):
    return Applier(engine, SqlTelemetry(), max_payload=8192, gap_grace=timedelta(0))


def committed(out) -> Committed:
    (payload,) = [p for t, p in out.replies if t == "wuye/v1/s1/gw-1/committed"]
    return Committed.model_validate_json(payload)


def gaps(engine) -> tuple[int, int, list[tuple[int, int, str]]]:
    with Session(engine) as s:
        gw = s.get(Gateway, "gw-1")
        assert gw is not None
        rows = s.exec(select(Gap).order_by(Gap.first_seq)).all()
        return gw.gaps, gw.dropped, [(g.first_seq, g.last_seq, g.reason) for g in rows]


def test_a_drop_announced_after_the_gap_turns_missing_into_deliberate(applier, engine):
    applier.apply([birth(), data(1), data(2)])
    c = committed(applier.apply([data(10)]))
    assert (c.seq, c.max, c.gaps) == (2, 10, ((3, 9),))  # the hub misses 3..9
    assert gaps(engine) == (7, 0, [(3, 9, "missing")])
    c = committed(applier.apply([dropped(11, (3, 5), (7, 9))]))
    # 6 was a critical message kept between the dropped runs: still missing, and asked for
    assert gaps(engine) == (
        1,
        6,
        [(3, 5, "dropped_by_edge"), (6, 6, "missing"), (7, 9, "dropped_by_edge")],
    )
    assert (c.seq, c.max, c.gaps) == (5, 11, ((6, 6),))
    c = committed(applier.apply([data(6)]))
    assert (c.seq, c.max, c.gaps) == (11, 11, ())
    assert gaps(engine)[:2] == (0, 6)


def test_a_drop_announced_before_its_gap_is_seen_never_counts_as_missing(applier, engine):
    applier.apply([birth(), data(1)])
    # the event outran the messages around the drop (a resend, several ingest processes)
    c = committed(applier.apply([dropped(8, (2, 6))]))
    assert gaps(engine) == (1, 5, [(2, 6, "dropped_by_edge"), (7, 7, "missing")])
    assert (c.seq, c.gaps) == (6, ((7, 7),))
    assert committed(applier.apply([data(7)])).seq == 8


def test_a_drop_run_that_names_the_future_or_nonsense_is_ignored(applier, engine):
    applier.apply([birth(), data(1)])
    body = {
        "v": 1,
        "gw": "gw-1",
        "seq": 2,
        "ts": 1,
        "event": "outbox_dropped",
        "detail": {"ranges": [[5, 9], [0, 1], ["a", 2], [3], [1, 2**60]]},
    }
    applier.apply([Raw(EVENT, orjson.dumps(body))])
    assert gaps(engine) == (0, 0, [])


def test_gaps_younger_than_the_grace_are_not_yet_asked_for(engine):
    applier = Applier(engine, SqlTelemetry(), max_payload=8192, gap_grace=timedelta(hours=1))
    applier.apply([birth(), data(1)])
    c = committed(applier.apply([data(5)]))
    assert (c.seq, c.max, c.gaps) == (1, 5, ())  # missing, but perhaps in another process


def test_a_replay_filling_thousands_of_seqs_at_once(applier, engine):
    applier.apply([birth(), data(1)])
    applier.apply([data(3000)])
    late = [data(q) for q in range(2, 3000) if q % 7]
    c = committed(applier.apply(late))
    missing = [q for q in range(2, 3000) if q % 7 == 0]
    n, _, rows = gaps(engine)
    assert n == len(missing) and [a for a, b, _ in rows] == missing
    assert c.seq == 6 and len(c.gaps) == 100  # the oldest hundred


def test_a_new_stream_starts_a_new_watermark(applier, engine):
    applier.apply([birth(), data(1), data(2)])
    c = committed(applier.apply([birth(stream="b" * 32, bdseq=1)]))
    assert (c.stream, c.seq, c.max) == ("b" * 32, 0, 0)


def test_the_hubs_own_messages_seen_through_its_wildcard_are_not_dead_letters(applier, engine):
    out = applier.apply([birth(), data(1)])
    mine = [Raw(topic, payload) for topic, payload in out.replies] + [
        Raw("wuye/v1/s1/gw-1/cmd", b"{}"),
        Raw("wuye/v1/s1/gw-1/sync", b"not even json"),
    ]
    again = applier.apply(mine)
    assert (again.applied, again.dead, again.duplicates) == (0, 0, 0)
    assert gaps(engine) == (0, 0, [])


def test_gaps_seen_before_the_birth_hold_back_the_new_streams_watermark(applier, engine):
    """Data of a new gateway can come before its birth (another ingest process has it):
    the gap it shows must follow it into the birth's stream, or the edge frees 3 and 4."""
    applier.apply([data(1), data(2), data(5)])
    c = committed(applier.apply([birth()]))
    assert (c.seq, c.max, c.gaps) == (2, 5, ((3, 4),))


def test_a_message_dead_lettered_alone_still_holds_its_place(applier, engine, monkeypatch):
    real = applier._event

    def bug(s, t, e):
        if e.seq == 3:
            raise ZeroDivisionError("a bug in the event path")
        return real(s, t, e)

    monkeypatch.setattr(applier, "_event", bug)
    event = {"v": 1, "gw": "gw-1", "seq": 3, "ts": 1, "event": "device_online", "dev": "em-1"}
    out = applier.apply(
        [birth(), data(1), data(2), Raw("wuye/v1/s1/gw-1/event/em-1", orjson.dumps(event)), data(4)]
    )
    assert out.dead == 1
    c = committed(applier.apply([data(5)]))
    assert (c.seq, c.gaps) == (5, ())  # 3 is held (as its dead letter): the edge may free it
    assert gaps(engine)[0] == 0
