"""simulators -> edge agent -> Mosquitto -> hub ingest: every value stored exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from sqlmodel import Session, func, select

from edge.agent import Agent
from edge.config import load_site
from hub.db import make_engine
from hub.models import Device, Gateway, Latest, Telemetry
from hub.runtime import make_consumer
from hub.settings import load_settings
from simulators.simulator import ModbusSimulator
from tests.edge.helpers import sim_config, sim_site, tcp_endpoint
from tests.support.subscriber import Subscriber

ROOT = Path(__file__).resolve().parents[2]


def wait_until(predicate, timeout: float = 60, what: str = "condition") -> None:
    """Poll hub state (a database has no event to wait on) until it holds, with a deadline."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout}s")
        tick.wait(0.1)


def truth(sub: Subscriber) -> Counter:
    """(device, ts, point) of every distinct data message the broker carried."""
    seen: dict[int, dict] = {m["seq"]: m for m in sub.sequenced() if "values" in m}
    return Counter((m["dev"], m["ts"], p) for m in seen.values() for p in m["values"])


def stored(engine) -> Counter:
    with Session(engine) as s:
        rows = s.exec(
            select(Device.device_id, Telemetry.ts, Telemetry.values).join(
                Device, Device.id == Telemetry.device
            )
        ).all()
    return Counter((d, int(ts.timestamp() * 1000), p) for d, ts, values in rows for p in values)


async def run_edge(broker, tmp_path, until, interval=0.05):
    cfg = sim_config(tcp_endpoint("plant", "em-3p:1-3", "water-meter:4-5"))
    async with ModbusSimulator(cfg) as sim:
        path = sim_site(tmp_path, broker.url, sim, interval=interval)
        async with Agent(load_site(path)) as agent:
            await until(agent)


async def test_every_value_is_stored_once_with_device_time_and_value(broker, tmp_path, db_url):
    settings = load_settings(database_url=db_url, mqtt_url=broker.url, ingest_linger_ms=20)
    engine = make_engine(db_url)
    consumer = make_consumer(settings, engine)
    consumer.start()
    assert consumer.connected.wait(10)
    sub = Subscriber(broker.port)

    async def until(agent):
        await asyncio.to_thread(sub.wait_for, lambda m: len(sub.sequenced()) >= 200)

    await run_edge(broker, tmp_path, until)
    want = truth(sub)
    await asyncio.to_thread(wait_until, lambda: stored(engine) == want, 60, "all values stored")

    def offline() -> bool:
        with Session(engine) as s:
            return not s.get(Gateway, "gw-1").online

    # the edge stopped cleanly: its death (matching bdseq) marks the gateway offline
    await asyncio.to_thread(wait_until, offline, 30, "gateway offline after its death")
    consumer.stop()
    assert max(stored(engine).values()) == 1
    with Session(engine) as s:
        gw = s.get(Gateway, "gw-1")
        assert gw.site_id == "test-site" and gw.gaps == 0 and gw.duplicates == 0
        last = {}
        for m in sorted((m for m in sub.sequenced() if "values" in m), key=lambda m: m["ts"]):
            for p, v in m["values"].items():
                last[(m["dev"], p)] = float(v)
        rows = s.exec(
            select(Device.device_id, Latest.points).join(Device, Device.id == Latest.device)
        ).all()
        assert {(d, p): v[0] for d, points in rows for p, v in points.items()} == last
    sub.close()
    engine.dispose()


def start_ingest(env: dict[str, str], instance: str = "1") -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub", "ingest", "--instance", instance],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
    return proc


async def test_hub_killed_mid_stream_stores_every_value_once(broker, tmp_path, db_url):
    env = {
        **os.environ,
        "WUYE_HUB_DATABASE_URL": db_url,
        "WUYE_HUB_MQTT_URL": broker.url,
        "WUYE_HUB_INGEST_LINGER_MS": "20",
    }
    engine = make_engine(db_url)
    sub = Subscriber(broker.port)
    hub = await asyncio.to_thread(start_ingest, env)

    async def until(agent):
        nonlocal hub
        for _ in range(3):
            seen = len(sub.sequenced())
            await asyncio.to_thread(sub.wait_for, lambda m, s=seen: len(sub.sequenced()) > s + 80)
            hub.send_signal(signal.SIGKILL)
            hub.wait()
            hub = await asyncio.to_thread(start_ingest, env)

    await run_edge(broker, tmp_path, until)
    want = truth(sub)
    await asyncio.to_thread(wait_until, lambda: stored(engine) == want, 60, "all values stored")
    hub.send_signal(signal.SIGTERM)
    hub.wait(30)
    assert max(stored(engine).values()) == 1
    sub.close()
    engine.dispose()


async def test_two_ingest_processes_split_the_stream(broker, tmp_path, db_url):
    env = {
        **os.environ,
        "WUYE_HUB_DATABASE_URL": db_url,
        "WUYE_HUB_MQTT_URL": broker.url,
        "WUYE_HUB_INGEST_LINGER_MS": "20",
    }
    engine = make_engine(db_url)
    sub = Subscriber(broker.port)
    hubs = [await asyncio.to_thread(start_ingest, env, str(i)) for i in (1, 2)]

    async def until(agent):
        await asyncio.to_thread(sub.wait_for, lambda m: len(sub.sequenced()) >= 300)

    await run_edge(broker, tmp_path, until)
    want = truth(sub)
    await asyncio.to_thread(wait_until, lambda: stored(engine) == want, 60, "all values stored")
    for h in hubs:
        h.send_signal(signal.SIGTERM)
    assert [h.wait(30) for h in hubs] == [0, 0]
    assert max(stored(engine).values()) == 1
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(Gateway)).one() == 1
    sub.close()
    engine.dispose()
