"""A simulated day of one lot, end to end, reconciled to the fen.

Hundreds of cars (passes on plates and IC cards, temporary cars paying online or at the
booth, misread plates corrected at the booth, deny-listed cars) go through gate controllers
and card readers on pseudo-terminals and cameras pushing over HTTP to the edge agent, whose
records reach the hub (uvicorn with embedded ingest, on SQLite) through a real Mosquitto;
visitors pay through the hub's visitor API and the sandbox provider, which notifies the hub
over HTTP. The day (simulators/parking/lot.py) runs on a virtual clock read by the edge, the
hub's quotes and the sandbox, so fees are those of the simulated stays.

In the middle the hub stops for two virtual hours (the server, its ingest and its sync
sender; the database stays) and comes back on the same database; later the edge is cut off
the broker for an hour while the hub keeps serving visitors, who pay online and then meet a
booth that cannot know it. Afterwards every car's entry, exit and fee at the hub equals the
ledger's, the revenue report equals what was paid, and each double payment shows as a refund
in the unpaid report, so that money kept equals fees charged.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn
import yaml
from sqlmodel import Session, col, select

import hub.parking.service as hub_parking
from deploy.mosquitto import free_port
from edge.agent import Agent
from edge.config import load_site
from hub.api.app import create_app
from hub.auth import Role, create_user
from hub.db import make_engine, session_scope, upgrade
from hub.models import Gateway
from hub.parking.models import ParkingLot, ParkingRecord, ParkingSession, ParkingSync
from hub.payments.models import PaymentOrder, PaymentStatus
from hub.settings import load_settings
from protocols.parking.messages import Policy
from simulators.parking.camera import PlateCamera
from simulators.parking.gate import GateSimulator
from simulators.parking.lot import ClockedPayChannel, DayClock, Lanes, LotDay, plan_day
from simulators.parking.reader import CardReaderSimulator
from simulators.paychannel import RetryPolicy

SECRET = b"only-for-the-parking-day-0123456789"
PW = "correct horse battery"
SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 6, 0, tzinfo=SHANGHAI)
LOT, SITE, GW = "north", "s1", "gw-1"
IN, OUT = ["in1", "in2"], ["out1", "out2"]
POLICY = Policy(
    capacity=500,
    grace_minutes=15,
    rule={
        "kind": "standard",
        "free_minutes": 15,
        "first": {"minutes": 60, "fen": 500},
        "step": {"minutes": 30, "fen": 200},
        "tier2": {"after_minutes": 480, "step": {"minutes": 60, "fen": 100}},
        "cap_fen": 3000,
    },
)


async def until(
    predicate: Callable[[], bool], consumer: Callable[[], Any], timeout: float, what: str
) -> None:
    """Until ``predicate`` (hub database state) holds, checked after each batch the hub's
    ingest commits (``consumer()``: the running hub's), with a deadline."""
    await asyncio.to_thread(_until_applied, predicate, consumer, timeout, what)


def _until_applied(
    predicate: Callable[[], bool], consumer: Callable[[], Any], timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{what} not reached in {timeout} s")
        c = consumer()
        with c.applied:  # a batch committed between the check and here is seen next round
            c.applied.wait(min(left, 1.0))


class Hub:
    """The hub's process as the test sees it: start, stop, start again on the same database
    and port (the sandbox and the visitors keep its address)."""

    def __init__(self, db_url: str, tmp_path: Path, broker_url: str, sandbox_url: str) -> None:
        self.db_url, self.tmp_path = db_url, tmp_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = load_settings(
            database_url=db_url,
            mqtt_url=broker_url,
            secret_file=tmp_path / "secret",
            ingest_linger_ms=10,
            pay_sandbox_url=sandbox_url,
            pay_sandbox_secret=SECRET.decode(),
            pay_notify_url=self.url,
        )
        self.starts = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._engine: Any = None

    def start(self) -> None:
        self._engine = make_engine(self.db_url)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)  # requests queue until uvicorn has started
        app = create_app(self.settings, self._engine)
        self.app = app
        config = uvicorn.Config(app, log_config=None, access_log=False, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="hub-api"
        )
        self._sock = sock
        self._thread.start()
        self.starts += 1

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None and self._sock
        self._server.should_exit = True  # lifespan: ingest and the sync sender stop too
        self._thread.join(30)
        assert not self._thread.is_alive(), "the hub did not stop"
        self._sock.close()
        self._engine.dispose()


class EdgeLine:
    """A TCP proxy between the edge and the broker: cut() drops the edge off the network."""

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> EdgeLine:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.drop()

    def drop(self) -> None:
        for w in list(self._writers):
            w.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.broker_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            w.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}


def site_config(tmp_path: Path, broker_port: int, camera_port: int, devices: dict) -> Path:
    lanes = [
        {
            "gate": g,
            "direction": "in" if g in IN else "out",
            "port": devices["gates"][g].path,
            "reader": devices["readers"][g].path,
            "camera": f"cam-{g}",
        }
        for g in IN + OUT
    ]
    cfg: dict[str, Any] = {
        "site": SITE,
        "gateway": GW,
        "broker": {"url": f"mqtt://127.0.0.1:{broker_port}"},
        "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval": 0.2},
        "parking": {
            "lot": LOT,
            "camera_host": "127.0.0.1",
            "camera_port": camera_port,
            # in compressed time a real-time window would merge a car's visits: every push
            # of the simulation is a distinct recognition
            "repeat_s": 0,
            "lanes": lanes,
        },
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


async def test_a_day_of_one_lot_reconciles_to_the_fen(broker, tmp_path, monkeypatch):
    async with asyncio.timeout(100):
        await _day(broker, tmp_path, monkeypatch)


async def _day(broker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db_url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade(db_url)
    engine = make_engine(db_url)
    with session_scope(engine) as s:
        create_user(s, "mgr", PW, Role.SITE_MANAGER, [SITE])
        create_user(s, "fin", PW, Role.FINANCE, [SITE])
    plan = plan_day(7, IN, OUT, T0)
    clock = DayClock(plan.start)
    monkeypatch.setattr(hub_parking, "utcnow", clock.now)  # the hub quotes on the day's clock

    camera_port = free_port()
    cam_url = f"http://127.0.0.1:{camera_port}/api/plates"
    async with contextlib.AsyncExitStack() as stack:
        gates = {
            g: await stack.enter_async_context(
                GateSimulator(name=g, travel_time=0.002, close_delay=0.002)
            )
            for g in IN + OUT
        }
        readers = {
            g: await stack.enter_async_context(CardReaderSimulator(name=f"{g}-reader"))
            for g in IN + OUT
        }
        cameras = {g: PlateCamera(cam_url, f"cam-{g}", "in" if g in IN else "out") for g in gates}
        fast = RetryPolicy(first_s=0.05, cap_s=0.2, attempts=4, timeout_s=10)
        sandbox = await stack.enter_async_context(ClockedPayChannel(SECRET, clock, retry=fast))
        line = await stack.enter_async_context(EdgeLine(broker.port))
        hub = Hub(db_url, tmp_path, broker.url, sandbox.url)
        hub.start()
        stack.callback(lambda: hub.stop() if hub.running else None)
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=hub.url, timeout=10))

        token = await http.post("/api/v1/auth/token", data={"username": "mgr", "password": PW})
        staff = {"Authorization": f"Bearer {token.json()['access_token']}"}
        lot = {"id": LOT, "site_id": SITE, "gateway_id": GW, "policy": POLICY.model_dump()}
        assert (await http.post("/api/v1/lots", json=lot, headers=staff)).status_code == 201
        for body in plan.pass_requests():
            r = await http.post(f"/api/v1/lots/{LOT}/passes", json=body, headers=staff)
            assert r.status_code == 201, r.text
        for plate in plan.denied_plates():
            deny = {"plate": plate, "kind": "deny", "start": (T0 - timedelta(days=1)).isoformat()}
            r = await http.post(f"/api/v1/lots/{LOT}/lists", json=deny, headers=staff)
            assert r.status_code == 201, r.text

        config = site_config(tmp_path, line.port, camera_port, {"gates": gates, "readers": readers})
        agent = await stack.enter_async_context(Agent(load_site(config)))
        assert agent.parking is not None
        service = agent.parking.service

        def hub_version() -> int:
            with Session(engine) as s:
                row = s.get(ParkingLot, LOT)
                return row.version if row else -1

        def caught_up() -> bool:
            with Session(engine) as s:
                gw = s.get(Gateway, GW)
                lot_row = s.get(ParkingLot, LOT)
                return (
                    gw is not None
                    and lot_row is not None
                    and gw.max_seq >= agent.outbox.last_seq
                    and lot_row.version == service.state.version
                )

        def ingest() -> Any:
            return hub.app.state.consumer

        await until(lambda: service.state.version == hub_version(), ingest, 20, "the edge synced")

        class World:
            """The hub stopping and starting, the edge cut off and back (LotDay's World)."""

            outage_real_s = 0.0
            cut_real_s = 0.0
            _t = 0.0

            async def settle(self) -> None:
                await until(caught_up, ingest, 20, "records and syncs delivered")

            async def hub_down(self) -> None:
                await asyncio.to_thread(hub.stop)
                self._t = asyncio.get_running_loop().time()

            async def hub_up(self) -> None:
                self.outage_real_s = asyncio.get_running_loop().time() - self._t
                await asyncio.to_thread(hub.start)

            async def cut_edge(self) -> None:
                line.cut = True
                line.drop()
                link = agent.link
                async with asyncio.timeout(10), link.changed:
                    await link.changed.wait_for(lambda: not link.online.is_set())
                self._t = asyncio.get_running_loop().time()

            async def restore_edge(self) -> None:
                self.cut_real_s = asyncio.get_running_loop().time() - self._t
                line.cut = False

        world = World()
        lanes = Lanes(gates, readers, cameras)
        day = LotDay(
            plan,
            agent.parking,
            lanes,
            clock,
            policy=POLICY,
            hub_url=hub.url,
            lot=LOT,
            paychannel=sandbox,
            world=world,
        )
        started = asyncio.get_running_loop().time()
        try:
            ledger = await day.run()
        except BaseException:
            with Session(engine) as s:
                print("hub:", s.get(ParkingLot, LOT), s.get(ParkingSync, LOT), s.get(Gateway, GW))
            print("edge: version", service.state.version, "bad syncs", service.bad_syncs)
            print("edge: outbox", agent.outbox.depth, agent.outbox.last_seq, agent.link.state)
            raise
        day_real_s = asyncio.get_running_loop().time() - started
        await until(caught_up, ingest, 30, "the hub caught up after the day")

        fin = await http.post("/api/v1/auth/token", data={"username": "fin", "password": PW})
        finance = {"Authorization": f"Bearer {fin.json()['access_token']}"}
        window = {"start": T0.isoformat(), "end": (T0 + timedelta(days=1)).isoformat()}
        revenue = (
            await http.get(f"/api/v1/lots/{LOT}/reports/revenue", params=window, headers=finance)
        ).json()
        unpaid = (
            await http.get(f"/api/v1/lots/{LOT}/reports/unpaid", params=window, headers=finance)
        ).json()
        opens = {g: gates[g].opens_count for g in gates}

        # -- the edge did what the rule says, car by car -------------------------------------
        assert ledger.problems == []
        assert service.state.sessions == {}, "everybody left"
        assert opens == dict(ledger.opens), "one OPEN on the line per car let through"
        t = ledger.totals()
        print(f"day: {t}; {day_real_s:.1f} s real, hub down {world.outage_real_s:.1f} s,")
        print(f"edge cut off {world.cut_real_s:.1f} s; asks {service.asks}")
        assert t["stays"] >= 250 and t["entered"] >= 250 and t["refused"] >= 3
        assert service.asks_paid >= 1, "a payment the edge had not heard of opened the exit"
        assert service.asks_unanswered >= 1, "an exit asked the stopped hub"
        assert hub.starts == 2

        # -- the hub's sessions equal the ledger's stays ---------------------------------------
        with Session(engine) as s:
            sessions = s.exec(select(ParkingSession).where(ParkingSession.lot_id == LOT)).all()
            records = s.exec(select(ParkingRecord).where(ParkingRecord.lot_id == LOT)).all()
            orders = s.exec(
                select(PaymentOrder).where(col(PaymentOrder.status) == PaymentStatus.PAID)
            ).all()
        at_hub = {(x.plate or x.card, x.entry_at): x for x in sessions}
        stays = [st for st in ledger.stays if st.entry_at is not None]
        assert len(at_hub) == len(sessions) == len(stays)
        wrong = []
        for st in stays:
            x = at_hub.get(st.key)
            got = x and (
                x.status,
                x.exit_at,
                x.fee_fen,
                x.paid_online_fen,
                x.paid_booth_fen,
                x.unpaid_fen,
                x.corrected_from,
            )
            want = (
                "exited",
                st.exit_at,
                st.owed_fen,
                st.paid_online_fen,
                st.paid_booth_fen,
                st.unpaid_fen,
                st.misread_as,
            )
            if got != want:
                wrong.append(f"{st.car}/{st.visit} {st.how}: hub {got}, ledger {want}")
        assert wrong == []

        # -- nothing charged twice: one booth payment per stay at most, each order once --------
        booth = Counter(r.session_id for r in records if r.kind == "booth_payment")
        assert max(booth.values()) == 1
        assert sorted(o.id for o in orders) == sorted(o for st in stays for o in st.orders)
        assert sum(o.amount_fen for o in orders) == t["online_fen"]
        assert sum(r.kind == "correction" for r in records) == sum(
            st.misread_as is not None for st in stays
        )

        # -- reports: revenue is what was paid; double payments are refunds ---------------------
        assert sum(r["online_fen"] for r in revenue) == t["online_fen"]
        assert sum(r["online_count"] for r in revenue) == t["online_count"]
        assert sum(r["booth_fen"] for r in revenue) == t["booth_fen"]
        assert sum(r["booth_count"] for r in revenue) == t["booth_count"]
        refunds = {r["session"]: r["overpaid_fen"] for r in unpaid}
        twice = [st for st in stays if st.refund_fen]
        assert len(twice) >= 3, "visitors paid online while the edge was cut off, then at the booth"
        assert refunds == {at_hub[st.key].id: st.refund_fen for st in twice}
        for st in twice:  # the refund is exactly the online payment the booth could not see
            assert st.refund_fen == st.paid_online_fen and st.paid_booth_fen == st.owed_fen
        assert sum(r["unpaid_fen"] for r in unpaid) == t["unpaid_fen"] == 0
        kept = t["online_fen"] + t["booth_fen"] - sum(refunds.values())
        assert kept == t["owed_fen"] == sum(x.fee_fen for x in sessions)

        # -- while the hub was down the gates kept deciding --------------------------------------
        assert plan.outage is not None
        down_from, down_to = plan.outage
        out_then = [st for st in stays if st.exit_at and down_from <= st.exit_at < down_to]
        in_then = [st for st in stays if st.entry_at and down_from <= st.entry_at < down_to]
        assert len(in_then) >= 10 and len(out_then) >= 10
        assert any(st.kind == "pass" for st in out_then), "passes opened"
        assert sum(st.paid_booth_fen > 0 for st in out_then) >= 5, (
            "temporary cars paid at the booth"
        )
        assert any("online: hub unreachable" in st.how for st in stays)
    engine.dispose()
