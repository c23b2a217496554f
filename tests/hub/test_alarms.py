"""Alarms raised by ingest from the data it applies (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading

import orjson
import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from hub.alarms import service as alarms
from hub.alarms.models import Alarm, AlarmEvent
from hub.apply import Applier, Raw, ms_to_dt
from hub.db import session_scope
from hub.telemetry import SqlTelemetry

T0 = 1_795_334_400_000
BIRTH = {
    "v": 1,
    "gw": "gw-1",
    "site": "s1",
    "bdseq": 0,
    "stream": "d" * 32,
    "ts": 1,
    "agent": "t",
    "devices": [
        {
            "id": "ps-1",
            "profile": "pump-station",
            "bus": "b",
            "unit": 1,
            "interval_s": 2.0,
            "points": [
                {"name": "outlet_pressure", "unit": "MPa", "kind": "measurement", "type": "uint16"}
            ],
        }
    ],
}


class Feed:
    """Pressure samples of ps-1 through an applier, one message each, in sequence."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.seq = 0
        self.applier = Applier(engine, SqlTelemetry(), 8192)
        self.applier.apply([Raw("wuye/v1/s1/gw-1/birth", orjson.dumps(BIRTH))])

    def restart(self) -> None:
        """A new hub process: nothing in memory, the same database."""
        self.applier = Applier(self.engine, SqlTelemetry(), 8192)

    def pressure(self, at_s: float, value: float, **more: object) -> list[Alarm]:
        self.seq += 1
        body = {
            "v": 1,
            "gw": "gw-1",
            "seq": self.seq,
            "ts": T0 + int(at_s * 1000),
            "dev": "ps-1",
            "values": {"outlet_pressure": value, **more},
        }
        out = self.applier.apply([Raw("wuye/v1/s1/gw-1/data/ps-1", orjson.dumps(body))])
        return out.alarms


def active(engine) -> list[Alarm]:
    with Session(engine) as s:
        return list(s.exec(select(Alarm).where(Alarm.active)))


def everything(engine) -> list[Alarm]:
    with Session(engine) as s:
        return list(s.exec(select(Alarm).order_by(Alarm.id)))


def test_low_pressure_for_30_s_raises_escalates_and_clears_with_hysteresis(engine):
    feed = Feed(engine)
    feed.pressure(0, 0.45)
    feed.pressure(10, 0.22)  # below major (0.25): the 30 s start here
    feed.pressure(30, 0.24)
    assert active(engine) == []  # 20 s so far
    raised = feed.pressure(42, 0.23)  # 32 s: raised at 40 s exactly
    assert [(a.alarm_type, a.severity, a.active) for a in raised] == [
        ("outlet_pressure_low", "major", True)
    ]
    assert raised[0].started_at == ms_to_dt(T0 + 40_000)
    # flapping just around the threshold, below the clear level: the same alarm, no new one
    for i, v in enumerate([0.26, 0.24, 0.27, 0.22, 0.26]):
        feed.pressure(50 + i, v)
    assert len(everything(engine)) == 1
    feed.pressure(60, 0.15)  # critical below 0.18, for 30 s
    feed.pressure(91, 0.15)
    (alarm,) = active(engine)
    assert alarm.severity == "critical"
    feed.pressure(100, 0.27)  # above major but under the clear level (0.28): still active
    assert len(active(engine)) == 1
    feed.pressure(101, 0.30)
    assert active(engine) == []
    with Session(engine) as s:
        trail = [(e.kind, e.severity) for e in s.exec(select(AlarmEvent).order_by(AlarmEvent.id))]
    assert trail == [("raised", "major"), ("escalated", "critical"), ("cleared", "critical")]
    # a new episode is a new alarm
    feed.pressure(110, 0.2)
    feed.pressure(141, 0.2)
    assert len(everything(engine)) == 2 and len(active(engine)) == 1


def test_a_hub_restart_half_way_through_the_duration_still_fires_on_time(engine):
    feed = Feed(engine)
    feed.pressure(0, 0.2)
    feed.pressure(20, 0.2)
    feed.restart()
    feed.pressure(29, 0.2)
    assert active(engine) == []
    (alarm,) = feed.pressure(31, 0.2)
    assert alarm.started_at == ms_to_dt(T0 + 30_000)


def test_a_duration_completes_on_a_tick_between_samples(engine):
    feed = Feed(engine)
    feed.pressure(0, 0.2)  # a device reporting by exception says nothing more
    with session_scope(engine) as s:
        assert alarms.tick(s, feed.applier.rulebook, ["gw-1"], T0 + 29_000) == []
    with session_scope(engine) as s:
        (alarm,) = alarms.tick(s, feed.applier.rulebook, ["gw-1"], T0 + 35_000)
        assert alarm.alarm_type == "outlet_pressure_low" and alarm.started_at == ms_to_dt(
            T0 + 30_000
        )
    with Session(engine) as s:
        assert alarms.timed_gateways(s) == ["gw-1"]


def test_the_database_allows_one_active_alarm_per_device_and_type(engine):
    feed = Feed(engine)
    feed.pressure(0, 0.2)
    feed.pressure(31, 0.2)
    (alarm,) = active(engine)
    barrier = threading.Barrier(2)
    errors: list[Exception] = []

    def insert_twin() -> None:
        twin = Alarm(
            **{k: v for k, v in alarm.model_dump().items() if k != "id"},
        )
        barrier.wait()
        try:
            with session_scope(engine) as s:
                s.add(twin)
        except IntegrityError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=insert_twin) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(errors) == 2 and len(active(engine)) == 1


def test_people_acknowledge_and_comment_once(engine):
    feed = Feed(engine)
    feed.pressure(0, 0.2)
    (alarm,) = feed.pressure(31, 0.2)
    with session_scope(engine) as s:
        alarms.acknowledge(s, alarm.id, "eng1", "on my way")
        alarms.comment(s, alarm.id, "eng1", "valve closed by a contractor")
    with session_scope(engine) as s, pytest.raises(alarms.AlarmError, match="already"):
        alarms.acknowledge(s, alarm.id, "eng2")
    with Session(engine) as s:
        a = s.get(Alarm, alarm.id)
        assert a is not None and a.acknowledged and a.acked_by == "eng1" and a.active
        who = [(e.kind, e.who) for e in s.exec(select(AlarmEvent).order_by(AlarmEvent.id))]
    assert who == [("raised", None), ("acknowledged", "eng1"), ("comment", "eng1")]
