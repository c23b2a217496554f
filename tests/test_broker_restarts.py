"""The broker is never the only copy: SIGKILLed and restarted five times under load.

Two edge agents poll simulated meters and publish through a real Mosquitto (persistence
on, as deploy/ configures it) into a real hub ingest. The broker is killed with SIGKILL
five times, and the order in which things come back differs each round: everything at
once; the hub first; the edges away longer than the hub; everything at once again; the
edges first while the hub is away (what they publish then reaches no one: the broker was
killed before saving the hub's session, and Mosquitto 2.0.11 would not restore its shared
subscription anyway). At the end every sequence number each edge committed is applied at
the hub exactly once, and nothing is left in the outboxes.
Before the hub's watermark, one such restart lost hundreds of messages.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

from sqlalchemy import text
from sqlmodel import Session, col, select

from deploy.mosquitto import BrokerLimits, Mosquitto
from edge.agent import Agent
from edge.config import load_site
from edge.link import LinkState
from hub.db import make_engine, upgrade
from hub.ingest import Consumer
from hub.models import Gap, Gateway, Seen
from hub.runtime import make_consumer
from hub.settings import load_settings
from simulators.simulator import ModbusSimulator
from tests.edge.helpers import sim_config, sim_site, tcp_endpoint
from tests.support.gate import Gate

GATEWAYS = ("gw-1", "gw-2")


def held(engine, gw: str) -> int:
    with Session(engine) as s:
        g = s.get(Gateway, gw)
        return 0 if g is None else g.max_seq


async def until(predicate, timeout: float, what: str, consumer: Consumer | None = None) -> None:
    """Until ``predicate`` holds: re-checked after each batch the hub commits (or, with no
    hub, each outbox commit of the edges), with a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{what} not reached in {timeout} s")
        if consumer is not None:

            def wait(c: Consumer = consumer, t: float = min(left, 0.5)) -> None:
                with c.applied:
                    c.applied.wait(t)

            await asyncio.to_thread(wait)
        else:
            waits = [asyncio.ensure_future(_committed(a)) for a in _AGENTS]
            await asyncio.wait(waits, timeout=min(left, 0.5))
            for w in waits:
                w.cancel()


_AGENTS: list[Agent] = []


async def _committed(agent: Agent) -> None:
    async with agent.outbox.committed:
        await agent.outbox.committed.wait()


async def reconnected(agent: Agent, connects: int, timeout: float = 30) -> None:
    """Until the agent's link has connected again since it had ``connects``."""
    async with asyncio.timeout(timeout), agent.link.changed:
        await agent.link.changed.wait_for(
            lambda: agent.link.connects > connects and agent.link.state is LinkState.ONLINE
        )


async def test_broker_killed_five_times_loses_nothing_and_applies_once(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade(db_url)
    engine = make_engine(db_url)
    broker = Mosquitto(tmp_path, limits=BrokerLimits(autosave_s=60)).start()
    gate = Gate(broker.port)
    await gate.open()
    settings = load_settings(
        database_url=db_url,
        mqtt_url=broker.url,
        ingest_linger_ms=20,
        watermark_interval_s=1.0,
        gap_grace_s=0.5,
    )
    consumer: Consumer | None = None

    def hub_up() -> Consumer:
        c = make_consumer(settings, engine)
        c.start()
        assert c.connected.wait(15), "hub did not subscribe"
        return c

    def hub_down(c: Consumer | None) -> None:
        if c is not None:
            c.stop()

    cfg = sim_config(tcp_endpoint("plant", "em-1p:1-3", "water-meter:4"))
    async with ModbusSimulator(cfg) as sim:
        agents: list[Agent] = []
        for gw in GATEWAYS:
            d = tmp_path / gw
            d.mkdir()
            path = sim_site(
                d,
                gate.url,
                sim,
                interval=0.1,
                gateway=gw,
                outbox={
                    "path": str(d / "outbox.db"),
                    "commit_interval": 0.2,
                    "resend_after": 2.0,
                    "replay_rate": 5000,
                },
            )
            agents.append(Agent(load_site(path)))
        _AGENTS[:] = agents
        for a in agents:
            await a.__aenter__()
        try:
            consumer = await asyncio.to_thread(hub_up)

            async def load(n: int = 150) -> None:
                """Until the hub has applied n more messages of each gateway."""
                start = {gw: held(engine, gw) for gw in GATEWAYS}
                await until(
                    lambda: all(held(engine, gw) >= start[gw] + n for gw in GATEWAYS),
                    60,
                    "load through the hub",
                    consumer,
                )

            async def edges_made(n: int = 100) -> None:
                start = [a.outbox.last_seq for a in agents]
                await until(
                    lambda: all(
                        a.outbox.last_seq >= s + n for a, s in zip(agents, start, strict=True)
                    ),
                    30,
                    "edges committing while away",
                )

            await load()
            rounds = []
            # 1: everything comes back at once
            broker.stop()
            broker.start()
            rounds.append("all at once")
            await load()
            # 2: the hub first, the edges after
            await asyncio.to_thread(hub_down, consumer)
            await gate.shut()
            broker.stop()
            broker.start()
            consumer = await asyncio.to_thread(hub_up)
            await gate.open()
            rounds.append("hub first")
            await load()
            # 3: the edges away longer than the hub (their outboxes fill meanwhile)
            await gate.shut()
            broker.stop()
            broker.start()
            await edges_made()
            await gate.open()
            rounds.append("edges late")
            await load()
            # 4: at once again
            broker.stop()
            broker.start()
            rounds.append("all at once")
            await load()
            # 5: the edges first, publishing to no one, the hub after
            # (last, so that no later reconnect repairs its losses: only the watermark can)
            await asyncio.to_thread(hub_down, consumer)
            consumer = None
            connects = [a.link.connects for a in agents]
            broker.stop()
            broker.start()
            for a, n in zip(agents, connects, strict=True):
                await reconnected(a, n)  # and sent all they hold, to no one
            await edges_made()
            consumer = await asyncio.to_thread(hub_up)
            rounds.append("edges first")
            await load()
            # quiesce: the hub catches up with everything the edges committed so far
            marks = {gw: a.outbox.last_seq for gw, a in zip(GATEWAYS, agents, strict=True)}
            await until(
                lambda: all(held(engine, gw) >= marks[gw] for gw in GATEWAYS),
                60,
                "the hub catching up",
                consumer,
            )
        finally:
            for a in agents:
                await a.stop(drain_timeout=30)
            hub_down(consumer)
            await gate.shut()
            broker.stop()
    resent = sum(a.link.resent for a in agents)
    for gw in GATEWAYS:
        ob = sqlite3.connect(tmp_path / gw / "outbox.db")
        last = ob.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()[0]
        left = ob.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        stream = ob.execute("SELECT value FROM meta WHERE key='stream'").fetchone()[0]
        ob.close()
        with Session(engine) as s:
            seqs = s.exec(
                select(Seen.seq).where(Seen.gateway_id == gw, Seen.stream == stream)
            ).all()
            missing = s.exec(
                select(Gap).where(Gap.gateway_id == gw, col(Gap.reason) == "missing")
            ).all()
            g = s.get(Gateway, gw)
        assert sorted(seqs) == list(range(1, last + 1)), f"{gw}: a committed message was lost"
        assert left == 0, f"{gw}: {left} messages never confirmed by the hub"
        assert missing == [] and g is not None and g.gaps == 0
    with engine.connect() as conn:
        rows, distinct = conn.execute(
            text("SELECT COUNT(*), COUNT(DISTINCT device || '@' || ts) FROM telemetry")
        ).one()
    assert rows == distinct, "a message was applied twice"
    print(f"broker restarts: rounds {rounds}; {rows} data messages applied once, {resent} resent")
    engine.dispose()
