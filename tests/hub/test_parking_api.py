"""Parking through the API: a visitor pays by plate, an owner buys a pass, finance reads
reports; the sandbox provider (simulators/paychannel.py) notifies the hub over real HTTP.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import httpx
import orjson
from sqlmodel import Session, select

from hub.apply import Applier, Raw
from hub.auth import Role, create_user
from hub.db import session_scope
from hub.parking import service as parking
from hub.parking.models import ParkingChange, ParkingPass, ParkingSession
from hub.telemetry import SqlTelemetry
from protocols.parking.messages import Policy
from simulators.paychannel import PayChannelSimulator
from tests.hub.test_payments import FAST, SECRET, running_hub

PW = "correct horse battery"
RULE = {
    "kind": "standard",
    "free_minutes": 15,
    "first": {"minutes": 60, "fen": 500},
    "step": {"minutes": 30, "fen": 200},
    "cap_fen": 3000,
}


def setup(engine, entered: datetime) -> None:
    a = Applier(engine, SqlTelemetry(), max_payload=8192)
    birth = {"v": 1, "gw": "gw-1", "site": "s1", "bdseq": 0, "stream": "c" * 32, "ts": 1}
    a.apply([Raw("wuye/v1/s1/gw-1/birth", orjson.dumps({**birth, "agent": "t", "devices": []}))])
    with session_scope(engine) as s:
        parking.create_lot(
            s, "lot1", "s1", "gw-1", Policy(capacity=50, rule=RULE, monthly_fen=25000)
        )
        create_user(s, "fin", PW, Role.FINANCE, sites=["s1"])
        create_user(s, "eng", PW, Role.ENGINEER, sites=["s1"])
        create_user(s, "mgr2", PW, Role.SITE_MANAGER, sites=["s2"])
        create_user(s, "owner", PW, Role.OWNER, sites=["s1"])
    entry = {
        "v": 1,
        "gw": "gw-1",
        "seq": 1,
        "ts": 1,
        "lot": "lot1",
        "kind": "entry",
        "session": "sess-1",
        "at": int(entered.timestamp() * 1000),
        "plate": "浙A12345",
        "action": "open",
        "gate": "in1",
    }
    assert a.apply([Raw("wuye/v1/s1/gw-1/park", orjson.dumps(entry))]).applied == 1


async def login(hub: httpx.AsyncClient, user: str) -> dict[str, str]:
    r = await hub.post("/api/v1/auth/token", data={"username": user, "password": PW})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def pay_at_sandbox(sim: PayChannelSimulator, order_id: str) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{sim.url}/orders/{order_id}/pay", json={"faults": {}})
    assert r.status_code == 200, r.text
    await sim.wait_for(lambda: sim.order(order_id).settled)


async def test_visitor_pays_by_plate_and_the_lot_learns_it(engine, db_url, tmp_path):
    unregister = parking.register_payments()
    entered = datetime.now(UTC) - timedelta(minutes=70)
    setup(engine, entered)
    try:
        async with PayChannelSimulator(SECRET, retry=FAST) as sim:
            with running_hub(db_url, engine, tmp_path, sim.url) as settings:
                async with httpx.AsyncClient(base_url=settings.pay_notify_url or "") as hub:
                    q = (await hub.get("/api/v1/parking/lot1/quote?plate=浙A12345")).json()
                    assert (q["session"], q["due_fen"], q["paid_fen"]) == ("sess-1", 700, 0)
                    missing = await hub.get("/api/v1/parking/lot1/quote?plate=浙Z99999")
                    assert missing.status_code == 404

                    body = {"plate": "浙A12345"}
                    key = {"Idempotency-Key": "visitor-phone-0001"}
                    first = await hub.post("/api/v1/parking/lot1/pay", json=body, headers=key)
                    again = await hub.post("/api/v1/parking/lot1/pay", json=body, headers=key)
                    assert first.status_code == 201, first.text
                    order = first.json()
                    assert again.json()["order_id"] == order["order_id"]
                    assert order["amount_fen"] == 700 and order["pay"]["pay_url"]
                    await pay_at_sandbox(sim, order["order_id"])

                    after = (await hub.get("/api/v1/parking/lot1/quote?plate=浙A12345")).json()
                    assert (after["due_fen"], after["paid_fen"]) == (0, 700)
                    assert after["paid_until"] is not None
                    nothing = await hub.post(
                        "/api/v1/parking/lot1/pay",
                        json=body,
                        headers={"Idempotency-Key": "visitor-phone-0002"},
                    )
                    assert nothing.status_code == 409  # nothing is due within the grace

                    # plates cannot be enumerated quickly from one address
                    codes = [
                        (await hub.get(f"/api/v1/parking/lot1/quote?plate=浙A{i:05d}")).status_code
                        for i in range(30)
                    ]
                    assert 429 in codes
    finally:
        unregister()
    with Session(engine) as s:
        sess = s.get(ParkingSession, "sess-1")
        assert sess is not None and sess.paid_online_fen == 700
        change = s.exec(select(ParkingChange).where(ParkingChange.kind == "paid")).one()
        assert change.value["session"] == "sess-1" and change.value["fen"] == 700


async def test_owner_buys_a_pass_and_finance_reads_the_reports(engine, db_url, tmp_path):
    unregister = parking.register_payments()
    setup(engine, datetime.now(UTC) - timedelta(minutes=20))
    try:
        async with PayChannelSimulator(SECRET, retry=FAST) as sim:
            with running_hub(db_url, engine, tmp_path, sim.url) as settings:
                async with httpx.AsyncClient(base_url=settings.pay_notify_url or "") as hub:
                    owner = await login(hub, "owner")
                    buy = {"plate": "浙A12345", "months": 3}
                    r = await hub.post(
                        "/api/v1/lots/lot1/passes/purchase",
                        json=buy,
                        headers={**owner, "Idempotency-Key": "owner-buys-0001"},
                    )
                    assert r.status_code == 201, r.text
                    assert r.json()["amount_fen"] == 75000
                    await pay_at_sandbox(sim, r.json()["order_id"])
                    mine = (await hub.get("/api/v1/lots/lot1/passes", headers=owner)).json()
                    assert [p["plate"] for p in mine] == ["浙A12345"]
                    end = datetime.fromisoformat(mine[0]["end"])
                    assert timedelta(days=88) < end - datetime.now(UTC) < timedelta(days=93)

                    fin = await login(hub, "fin")
                    day = datetime.now(UTC)
                    window = {
                        "start": (day - timedelta(days=1)).isoformat(),
                        "end": (day + timedelta(days=1)).isoformat(),
                    }
                    rev = await hub.get(
                        "/api/v1/lots/lot1/reports/revenue", params=window, headers=fin
                    )
                    assert sum(row["passes_fen"] for row in rev.json()) == 75000
                    occ = await hub.get(
                        "/api/v1/lots/lot1/reports/occupancy",
                        params={**window, "format": "csv", "step_s": 3600},
                        headers=fin,
                    )
                    rows = list(csv.DictReader(io.StringIO(occ.text)))
                    assert occ.headers["content-type"].startswith("text/csv")
                    assert max(int(row["inside"]) for row in rows) == 1

                    eng = await login(hub, "eng")
                    other = await login(hub, "mgr2")
                    denied = [
                        await hub.get(
                            "/api/v1/lots/lot1/reports/revenue", params=window, headers=eng
                        ),
                        await hub.get("/api/v1/lots/lot1", headers=other),
                        await hub.post(
                            "/api/v1/lots/lot1/passes",
                            json={"plate": "浙A1", "start": window["start"], "end": window["end"]},
                            headers=fin,
                        ),
                        await hub.post(
                            "/api/v1/lots/lot1/passes/purchase",
                            json=buy,
                            headers={**fin, "Idempotency-Key": "finance-buys-01"},
                        ),
                    ]
                    # another site's lot is answered as one that does not exist
                    assert [d.status_code for d in denied] == [403, 404, 403, 403]
    finally:
        unregister()
    with Session(engine) as s:
        assert len(s.exec(select(ParkingPass)).all()) == 1
