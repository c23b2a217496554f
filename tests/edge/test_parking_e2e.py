"""Parking end to end: cameras push plates to the edge, gates on pseudo-terminals open,
records reach the hub through a real Mosquitto, and the hub's state reaches the gate.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from deploy.mosquitto import free_port
from edge.agent import Agent
from edge.config import load_site
from hub.api.app import create_app
from hub.auth import Role, create_user
from hub.db import make_engine, session_scope, upgrade
from hub.parking.models import ParkingSession, ParkingSync
from hub.settings import load_settings
from simulators.parking.camera import PlateCamera
from simulators.parking.gate import GateSimulator
from tests.support.wait import until_applied

PW = "correct horse battery"
RULE = {
    "kind": "standard",
    "free_minutes": 15,
    "first": {"minutes": 60, "fen": 500},
    "step": {"minutes": 30, "fen": 200},
    "cap_fen": 3000,
}


def parking_site(
    tmp_path: Path, broker_url: str, gates: dict[str, GateSimulator], port: int, **parking: Any
) -> Path:
    cfg: dict[str, Any] = {
        "site": "s1",
        "gateway": "gw-1",
        "broker": {"url": broker_url},
        "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval": 0.2},
        "parking": {
            "lot": "north",
            "camera_host": "127.0.0.1",
            "camera_port": port,
            "lanes": [
                {"gate": "in1", "direction": "in", "port": gates["in1"].path, "camera": "cam-in1"},
                {
                    "gate": "out1",
                    "direction": "out",
                    "port": gates["out1"].path,
                    "camera": "cam-out1",
                },
            ],
            **parking,
        },
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


async def test_a_pass_made_while_the_edge_was_away_reaches_the_gate(broker, tmp_path):
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade(url)
    engine = make_engine(url)
    settings = load_settings(
        database_url=url, mqtt_url=broker.url, secret_file=tmp_path / "secret", ingest_linger_ms=10
    )
    with session_scope(engine) as s:
        create_user(s, "mgr", PW, Role.SITE_MANAGER, ["s1"])
    camera_port = free_port()
    cam_url = f"http://127.0.0.1:{camera_port}/api/plates"
    async with (
        GateSimulator(name="in1", travel_time=0.05) as gate_in,
        GateSimulator(name="out1", travel_time=0.05) as gate_out,
    ):
        config = parking_site(tmp_path, broker.url, {"in1": gate_in, "out1": gate_out}, camera_port)
        with TestClient(create_app(settings, engine)) as hub:
            token = hub.post("/api/v1/auth/token", data={"username": "mgr", "password": PW})
            auth = {"Authorization": f"Bearer {token.json()['access_token']}"}
            lot = {
                "id": "north",
                "site_id": "s1",
                "gateway_id": "gw-1",
                "policy": {"capacity": 10, "rule": RULE},
            }
            # the lot is set up before its gateway was ever seen
            assert hub.post("/api/v1/lots", json=lot, headers=auth).status_code == 201
            now = datetime.now(UTC)
            a_pass = {
                "plate": "浙A88888",
                "start": (now - timedelta(days=1)).isoformat(),
                "end": (now + timedelta(days=30)).isoformat(),
            }
            assert (
                hub.post("/api/v1/lots/north/passes", json=a_pass, headers=auth).status_code == 201
            )

            def sync_state() -> ParkingSync:
                with Session(engine) as s:
                    st = s.get(ParkingSync, "north")
                    assert st is not None
                    return st

            # sent to an edge that is not there: not confirmed, and not given up on
            await asyncio.to_thread(
                until_applied,
                hub.app.state.consumer,
                lambda: sync_state().attempts >= 1,
                10,
                "a first send",
            )
            assert sync_state().confirmed == 0

            async with Agent(load_site(config)):
                await asyncio.to_thread(
                    until_applied,
                    hub.app.state.consumer,
                    lambda: sync_state().confirmed == 2,
                    30,
                    "the edge confirming",
                )
                cam_in = PlateCamera(cam_url, "cam-in1", "in")
                cam_out = PlateCamera(cam_url, "cam-out1", "out")
                assert (await cam_in.recognize("浙A88888")).status == 200
                await gate_in.wait_until(lambda: gate_in.opens_count == 1)
                # a temporary car comes in, and leaves within the free minutes
                await cam_in.recognize("浙B12345")
                await gate_in.wait_until(lambda: gate_in.opens_count == 2)
                await cam_out.recognize("浙B12345")
                await gate_out.wait_until(lambda: gate_out.opens_count == 1)

                def recorded() -> list[tuple[str | None, str, bool]]:
                    with Session(engine) as s:
                        rows = s.exec(select(ParkingSession)).all()
                        return sorted((r.plate, r.status, r.exit_at is None) for r in rows)

                await asyncio.to_thread(
                    until_applied,
                    hub.app.state.consumer,
                    lambda: (
                        recorded() == [("浙A88888", "inside", True), ("浙B12345", "exited", False)]
                    ),
                    30,
                    "both stays at the hub",
                )
                lot_now = hub.get("/api/v1/lots/north", headers=auth).json()
                assert lot_now["inside"] == 1 and lot_now["sync"]["confirmed"] == 2

            # the box is replaced (a new SD card: no outbox, no state): on connecting it says
            # it holds nothing, and gets the whole state again
            for f in tmp_path.glob("outbox.db*"):
                f.unlink()
            async with Agent(load_site(config)) as fresh:
                assert fresh.parking is not None
                service = fresh.parking.service
                await asyncio.to_thread(
                    until_applied,
                    hub.app.state.consumer,
                    lambda: len(service.state.passes) == 1,
                    30,
                    "the state sent again",
                )
                assert service.state.version == 2
    with Session(engine) as s:
        stay = s.exec(select(ParkingSession).where(ParkingSession.plate == "浙A88888")).one()
        assert stay.lease == "monthly"
    engine.dispose()


async def test_an_unpaid_car_is_held_and_the_booth_takes_the_fee_and_lets_it_out(broker, tmp_path):
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade(url)
    engine = make_engine(url)
    settings = load_settings(
        database_url=url, mqtt_url=broker.url, secret_file=tmp_path / "secret", ingest_linger_ms=10
    )
    # charged from the first second: 5 yuan for the first minute
    rule = {
        "kind": "standard",
        "first": {"minutes": 1, "fen": 500},
        "step": {"minutes": 1, "fen": 100},
    }
    with session_scope(engine) as s:
        from hub.parking.service import create_lot
        from protocols.parking.messages import Policy

        create_lot(s, "north", "s1", "gw-1", Policy(capacity=5, rule=rule))
    camera_port, booth_port = free_port(), free_port()
    async with (
        GateSimulator(name="in1", travel_time=0.05) as gate_in,
        GateSimulator(name="out1", travel_time=0.05) as gate_out,
    ):
        gates = {"in1": gate_in, "out1": gate_out}
        config = parking_site(tmp_path, broker.url, gates, camera_port, booth_port=booth_port)
        with TestClient(create_app(settings, engine)) as hub:
            async with Agent(load_site(config)) as agent:
                assert agent.parking is not None
                service = agent.parking.service
                await asyncio.to_thread(
                    until_applied,
                    hub.app.state.consumer,
                    lambda: service.state.policy is not None,
                    30,
                    "the lot's policy",
                )
                cam_url = f"http://127.0.0.1:{camera_port}/api/plates"
                await PlateCamera(cam_url, "cam-in1", "in").recognize("浙C55555")
                await gate_in.wait_until(lambda: gate_in.opens_count == 1)
                # the edge's clock, half a minute on: the car stayed 30 s (first minute due)
                real = service.clock
                service.clock = lambda: real() + 30_000
                await PlateCamera(cam_url, "cam-out1", "out").recognize("浙C55555")
                booth = f"http://127.0.0.1:{booth_port}"
                async with httpx.AsyncClient(base_url=booth) as client:

                    async def held() -> dict[str, Any]:
                        return (await client.get("/booth")).json().get("out1", {})

                    await gate_out.wait_until(lambda: "out1" in agent.parking.last)
                    shown = await held()
                    assert (shown["plate"], shown["action"], shown["due_fen"]) == (
                        "浙C55555",
                        "booth",
                        500,
                    )
                    assert gate_out.opens_count == 0
                    bad = await client.post("/booth/out1/pay", json={"fen": -1, "operator": "li"})
                    assert bad.status_code == 422
                    paid = await client.post("/booth/out1/pay", json={"fen": 500, "operator": "li"})
                    assert paid.status_code == 200 and paid.json()["action"] == "open"
                    await gate_out.wait_until(lambda: gate_out.opens_count == 1)

                def settled() -> tuple[str, int, int] | None:
                    with Session(engine) as s:
                        row = s.exec(select(ParkingSession)).first()
                        return (row.status, row.paid_booth_fen, row.fee_fen) if row else None

                await asyncio.to_thread(
                    until_applied,
                    hub.app.state.consumer,
                    lambda: settled() == ("exited", 500, 500),
                    30,
                    "the booth payment at the hub",
                )
    engine.dispose()


async def test_a_car_held_at_the_exit_leaves_once_its_driver_pays_by_phone(broker, tmp_path):
    """Nobody needs to fetch the booth: the payment reaches the edge, the gate opens."""
    from hub.parking.service import create_lot
    from protocols.parking.messages import Policy
    from simulators.paychannel import PayChannelSimulator
    from tests.hub.test_page import serving
    from tests.hub.test_payments import FAST, SECRET

    url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade(url)
    engine = make_engine(url)
    rule = {
        "kind": "standard",
        "first": {"minutes": 1, "fen": 500},
        "step": {"minutes": 1, "fen": 100},
    }
    with session_scope(engine) as s:
        create_lot(s, "north", "s1", "gw-1", Policy(capacity=5, rule=rule))
    camera_port = free_port()
    cam_url = f"http://127.0.0.1:{camera_port}/api/plates"
    async with (
        PayChannelSimulator(SECRET, retry=FAST) as sandbox,
        GateSimulator(name="in1", travel_time=0.05) as gate_in,
        GateSimulator(name="out1", travel_time=0.05) as gate_out,
    ):
        settings_kw = {"pay_sandbox_url": sandbox.url, "pay_sandbox_secret": SECRET.decode()}
        config = parking_site(tmp_path, broker.url, {"in1": gate_in, "out1": gate_out}, camera_port)
        port = free_port()
        settings = load_settings(
            database_url=url,
            mqtt_url=broker.url,
            secret_file=tmp_path / "secret",
            ingest_linger_ms=10,
            pay_notify_url=f"http://127.0.0.1:{port}",
            **settings_kw,
        )
        app = create_app(settings, engine)
        with serving(app, port=port) as base:
            async with Agent(load_site(config)) as agent, httpx.AsyncClient(base_url=base) as hub:
                assert agent.parking is not None
                service = agent.parking.service
                await asyncio.to_thread(
                    until_applied,
                    app.state.consumer,
                    lambda: service.state.policy is not None,
                    30,
                    "the lot's policy",
                )
                await PlateCamera(cam_url, "cam-in1", "in").recognize("浙D12345")
                await gate_in.wait_until(lambda: gate_in.opens_count == 1)

                def at_hub() -> bool:
                    with Session(engine) as s:
                        return s.exec(select(ParkingSession)).first() is not None

                await asyncio.to_thread(
                    until_applied, app.state.consumer, at_hub, 30, "the stay at the hub"
                )
                real = service.clock
                service.clock = lambda: real() + 30_000  # half a minute later, at the exit
                await PlateCamera(cam_url, "cam-out1", "out").recognize("浙D12345")
                await gate_out.wait_until(lambda: "out1" in agent.parking.last)
                assert agent.parking.last["out1"][0].due_fen == 500 and gate_out.opens_count == 0

                # the driver pays on the phone, at the barrier (the hub's clock has not moved:
                # it quotes the first minute too)
                order = await hub.post(
                    "/api/v1/parking/north/pay",
                    json={"plate": "浙D12345"},
                    headers={"Idempotency-Key": "phone-at-the-barrier"},
                )
                assert order.status_code == 201, order.text
                oid = order.json()["order_id"]
                async with httpx.AsyncClient() as phone:
                    r = await phone.post(f"{sandbox.url}/orders/{oid}/pay", json={})
                    assert r.status_code == 200, r.text
                async with asyncio.timeout(20):
                    await gate_out.wait_until(lambda: gate_out.opens_count == 1)
    engine.dispose()
