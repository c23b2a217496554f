"""Ingest is total: whatever a payload holds, it is applied or dead-lettered, never more.

Each case here once stopped ingest for good (issue #9): a seq past 64 bits, a ts past year
9999, a bdseq that large, an exception in one message, a cache ahead of a rolled-back
transaction. SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading

import httpx
import orjson
import pytest
from sqlmodel import Session, select

from hub.api.app import create_app
from hub.apply import Applier, Raw
from hub.models import DeadLetter, Gateway, Latest
from hub.runtime import make_consumer
from hub.settings import load_settings
from hub.telemetry import SqlTelemetry
from tests.hub.test_apply import BIRTH, birth, data
from tests.support.wait import until_applied


def raw(topic: str, body: dict) -> Raw:
    return Raw(topic, json.dumps(body).encode())  # json: integers past 64 bits too


def data_body(seq, **kw):
    body = {"v": 1, "gw": "gw-1", "seq": seq, "ts": 1_795_334_400_000, "dev": "em-1"}
    return {**body, "values": {"voltage": 220.0, "kwh": 1.5}, **kw}


POISON = [
    ("seq past 64 bits", raw("wuye/v1/s1/gw-1/data/em-1", data_body(2**64))),
    ("seq past 2^53", raw("wuye/v1/s1/gw-1/data/em-1", data_body(2**63))),
    ("ts past year 9999", raw("wuye/v1/s1/gw-1/data/em-1", data_body(9, ts=10**17))),
    ("seq as true", raw("wuye/v1/s1/gw-1/data/em-1", data_body(True))),
    ("seq as a string", raw("wuye/v1/s1/gw-1/data/em-1", data_body("9"))),
    ("value as a string", raw("wuye/v1/s1/gw-1/data/em-1", data_body(9, values={"kwh": "2"}))),
    ("hist as yes", raw("wuye/v1/s1/gw-1/data/em-1", data_body(9, hist="yes"))),
    ("NUL in a point name", raw("wuye/v1/s1/gw-1/data/em-1", data_body(9, values={"\0": 1}))),
    ("birth bdseq past 64 bits", raw("wuye/v1/s1/gw-1/birth", {**BIRTH, "bdseq": 2**64})),
    ("birth ts past year 9999", raw("wuye/v1/s1/gw-1/birth", {**BIRTH, "ts": 10**17})),
    (
        "status ts past 9999",
        raw(
            "wuye/v1/s1/gw-1/status",
            {"v": 1, "gw": "gw-1", "ts": 10**17, "metrics": {}, "devices": {}},
        ),
    ),
    (
        "event ts past 9999",
        raw(
            "wuye/v1/s1/gw-1/event",
            {"v": 1, "gw": "gw-1", "seq": 9, "ts": 10**17, "event": "device_online"},
        ),
    ),
    (
        "a boolean for a number",
        Raw("wuye/v1/s1/gw-1/data/em-1", orjson.dumps(data_body(9, values={"voltage": True}))),
    ),
    (
        "a counter out of range",
        Raw("wuye/v1/s1/gw-1/data/em-1", orjson.dumps(data_body(9, values={"kwh": 1e30}))),
    ),
]


@pytest.fixture
def applier(engine):
    return Applier(engine, SqlTelemetry(), max_payload=4096)


def latest_voltage(engine) -> float | None:
    with Session(engine) as s:
        row = s.exec(select(Latest)).first()
    return row.points["voltage"][0] if row and "voltage" in row.points else None


@pytest.mark.parametrize(("case", "bad"), POISON, ids=[c for c, _ in POISON])
def test_a_bad_message_is_a_dead_letter_and_the_batch_around_it_arrives(applier, engine, case, bad):
    out = applier.apply([birth(), data(1), bad, data(2)])
    assert out.dead == 1 and out.applied == 2
    assert latest_voltage(engine) == 222.0  # data(2): 220 + seq
    with Session(engine) as s:
        (letter,) = s.exec(select(DeadLetter)).all()
        assert letter.payload == bad.payload and letter.reason
    # and ingest goes on: the next batch is applied
    assert applier.apply([data(3)]).applied == 1


def test_an_exception_in_one_message_dead_letters_that_message_only(
    applier, engine, monkeypatch, caplog
):
    real = applier._event

    def bug(s, t, e):
        if e.seq == 5:
            raise ZeroDivisionError("a bug in the event path")
        return real(s, t, e)

    monkeypatch.setattr(applier, "_event", bug)
    event = {"v": 1, "gw": "gw-1", "ts": 1_795_334_400_000, "event": "device_online", "dev": "em-1"}
    batch = [birth()] + [
        raw("wuye/v1/s1/gw-1/event/em-1", {**event, "seq": q}) if q in (4, 5) else data(q)
        for q in range(1, 11)
    ]
    with caplog.at_level(logging.ERROR, logger="hub.apply"):
        out = applier.apply(batch)
    assert out.dead == 1 and out.applied == 9
    with Session(engine) as s:
        (letter,) = s.exec(select(DeadLetter)).all()
        gw = s.get(Gateway, "gw-1")
    assert "ZeroDivisionError" in letter.reason and b'"seq": 5' in letter.payload
    # held in the sequence (10 messages, no gap): the edge may forget it, it is kept here
    assert gw is not None and gw.bad == 1 and gw.messages == 10 and gw.gaps == 0
    assert any("wuye/v1/s1/gw-1/event/em-1" in r.getMessage() for r in caplog.records)


def test_caches_never_hold_what_a_rolled_back_transaction_made(applier, engine):
    """A new gateway whose first batch fails must be created again by the next one."""

    class FailOnce(SqlTelemetry):
        failed = False

        def write(self, session, samples):
            if not self.failed:
                self.failed = True
                raise RuntimeError("telemetry refused this batch")
            super().write(session, samples)

    applier.sink = FailOnce()
    first = applier.apply([data(1)])  # its gateway's insert is rolled back with it
    assert first.dead == 1
    second = applier.apply([data(2)])
    assert second.applied == 1 and latest_voltage(engine) == 222.0
    with Session(engine) as s:
        assert s.get(Gateway, "gw-1") is not None


def test_a_database_outage_keeps_the_batch_for_a_retry(applier, engine, monkeypatch):
    """Not the message's fault: nothing is dead-lettered, the caller is told to retry."""
    from hub import apply as apply_mod

    def down(*a, **kw):
        raise apply_mod.OperationalError("SELECT 1", {}, Exception("server closed"))

    monkeypatch.setattr(applier, "_apply_once", down)
    monkeypatch.setattr(applier.engine, "connect", down)
    with pytest.raises(apply_mod.DatabaseDown):
        applier.apply([birth(), data(1)])
    monkeypatch.undo()
    assert applier.apply([birth(), data(1)]).applied == 1
    with Session(engine) as s:
        assert s.exec(select(DeadLetter)).all() == []


def _publish(port: int, topic: str, payload: bytes, retain: bool = False) -> None:
    subprocess.run(
        ["mosquitto_pub", "-p", str(port), "-q", "1", "-t", topic, "-s"]
        + (["-r"] if retain else []),
        input=payload,
        check=True,
        timeout=10,
    )


def _settings(broker, db_url, **extra):
    env = {"WUYE_HUB_DATABASE_URL": db_url, "WUYE_HUB_MQTT_URL": broker.url}
    env.update({f"WUYE_HUB_{k.upper()}": v for k, v in extra.items()})
    return env


def test_poison_through_the_broker_and_a_restart_on_the_retained_one(
    broker, engine, db_url, monkeypatch
):
    """A retained birth with a bdseq past 64 bits comes back on every restart: it once
    killed ingest each time. Now it is a dead letter, and good data still arrives."""
    for k, v in _settings(broker, db_url).items():
        monkeypatch.setenv(k, v)
    settings = load_settings()
    bad_birth = json.dumps({**BIRTH, "bdseq": 2**64}).encode()
    _publish(broker.port, "wuye/v1/s1/gw-1/birth", bad_birth, retain=True)
    births = []
    for restart in range(2):
        consumer = make_consumer(settings, engine)
        consumer.start()
        try:
            assert consumer.connected.wait(10)
            poison = json.dumps(data_body(2**64)).encode()
            _publish(broker.port, "wuye/v1/s1/gw-1/data/em-1", poison)
            _publish(broker.port, "wuye/v1/s1/gw-1/data/em-1", data(10 + restart).payload)
            until_applied(
                consumer,
                lambda r=restart: latest_voltage(engine) == 230.0 + r,
                what="good data after the poison",
            )
            assert consumer.alive
        finally:
            consumer.stop()
        with Session(engine) as s:
            letters = s.exec(select(DeadLetter)).all()
        births.append(sum("birth" in d.topic for d in letters))
        assert sum("data" in d.topic for d in letters) == restart + 1
    assert 0 < births[0] < births[1]  # the retained birth came back with the restart


async def test_a_dead_ingest_thread_is_not_ready_on_health(broker, engine, db_url, monkeypatch):
    die = "wuye/v1/s1/gw-1/status"
    for k, v in _settings(broker, db_url, test_die_topic=die).items():
        monkeypatch.setenv(k, v)
    died = threading.Event()
    app = create_app(load_settings(), engine, on_ingest_failure=lambda exc: died.set())
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        r = await client.get("/health")
        assert r.status_code == 200 and r.json()["ingest"] == "connected"
        _publish(broker.port, die, b"{}")
        assert died.wait(10)
        r = await client.get("/health")
        assert r.status_code == 503 and r.json()["ingest"].startswith("dead")
        metrics = (await client.get("/metrics")).text
        assert "wuye_hub_ingest_alive 0.0" in metrics


def test_python_m_hub_ingest_exits_non_zero_when_its_thread_dies(broker, db_url, tmp_path):
    die = "wuye/v1/s1/gw-1/status"
    env = {**_settings(broker, db_url, test_die_topic=die), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub", "ingest", "--instance", "die"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        _publish(broker.port, die, b"{}")
        assert proc.wait(30) == 70
    finally:
        proc.kill()
        proc.wait()
    assert "ingest thread died" in (proc.stderr.read() if proc.stderr else "")
