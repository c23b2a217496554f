"""The API: tokens, roles scoped to sites and devices, values, history, commands end to end."""

from __future__ import annotations

import asyncio
import threading
import time

import orjson
import pytest
from fastapi.testclient import TestClient

from edge.agent import Agent
from edge.config import load_site
from hub.api.app import create_app
from hub.apply import Applier, Raw
from hub.auth import Role, create_user
from hub.db import make_engine, session_scope
from hub.settings import load_settings
from hub.telemetry import SqlTelemetry
from simulators.simulator import ModbusSimulator
from tests.edge.helpers import sim_config, site_config, tcp_endpoint

T0 = 1_795_334_400_000  # 2026-11-22T08:00:00Z, 16:00 in Shanghai
PW = "correct horse battery"


def birth(site, gw, devices):
    return Raw(
        f"wuye/v1/{site}/{gw}/birth",
        orjson.dumps(
            {
                "v": 1,
                "gw": gw,
                "site": site,
                "bdseq": 0,
                "stream": "s" * 32,
                "ts": T0,
                "agent": "t",
                "devices": [
                    {
                        "id": d,
                        "profile": "pump-station",
                        "bus": "b",
                        "unit": 1,
                        "interval_s": 1.0,
                        "points": [
                            {
                                "name": "outlet_pressure",
                                "unit": "MPa",
                                "kind": "measurement",
                                "type": "uint16",
                            },
                            {
                                "name": "pressure_setpoint",
                                "unit": "MPa",
                                "kind": "measurement",
                                "type": "uint16",
                                "writable": True,
                            },
                        ],
                    }
                    for d in devices
                ],
            }
        ),
    )


def data(site, gw, dev, seq, ts, value):
    return Raw(
        f"wuye/v1/{site}/{gw}/data/{dev}",
        orjson.dumps(
            {
                "v": 1,
                "gw": gw,
                "seq": seq,
                "ts": ts,
                "dev": dev,
                "values": {"outlet_pressure": value},
            }
        ),
    )


@pytest.fixture
def hub(broker, tmp_path):
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    from hub.db import upgrade

    upgrade(url)
    engine = make_engine(url)
    settings = load_settings(
        database_url=url, mqtt_url=broker.url, secret_file=tmp_path / "secret", ingest_linger_ms=10
    )
    applier = Applier(engine, SqlTelemetry(), 4096)
    applier.apply([birth("s1", "gw-1", ["ps-1", "ps-2"]), birth("s2", "gw-2", ["ps-9"])])
    # a minute of pressure on ps-1: 0.30 for 30 s, then 0.40
    applier.apply(
        [
            data("s1", "gw-1", "ps-1", i + 1, T0 + i * 1000, 0.30 if i < 30 else 0.40)
            for i in range(60)
        ]
    )
    applier.apply([data("s2", "gw-2", "ps-9", 1, T0, 0.5)])
    with session_scope(engine) as s:
        create_user(s, "admin", PW, Role.HQ_ADMIN)
        create_user(s, "mgr1", PW, Role.SITE_MANAGER, ["s1"])
        create_user(s, "eng1", PW, Role.ENGINEER, ["s1"])
        create_user(s, "fin1", PW, Role.FINANCE, ["s1"])
        create_user(s, "owner1", PW, Role.OWNER, devices=["gw-1/ps-1"])
    with TestClient(create_app(settings, engine)) as client:
        yield client
    engine.dispose()


def login(client, user):
    r = client.post("/api/v1/auth/token", data={"username": user, "password": PW})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_login_and_tokens(hub):
    assert (
        hub.post("/api/v1/auth/token", data={"username": "admin", "password": "wrong"}).status_code
        == 401
    )
    assert hub.get("/api/v1/me").status_code == 401
    assert hub.get("/api/v1/me", headers={"Authorization": "Bearer nonsense"}).status_code == 401
    me = hub.get("/api/v1/me", headers=login(hub, "mgr1")).json()
    assert (me["role"], me["sites"]) == ("site_manager", ["s1"])


CMD = {"gateway": "gw-1", "device": "ps-1", "point": "pressure_setpoint", "value": 0.4}
CMD2 = {**CMD, "gateway": "gw-2", "device": "ps-9"}
# a site named by the caller outside his own: 403; an object of another site (or, for an
# owner, another's device) named by its id: 404, as if it did not exist
OUT_OF_SCOPE = {
    "mgr1": [
        (403, "get", "/api/v1/sites/s2/gateways"),
        (403, "get", "/api/v1/sites/s2/devices"),
        (404, "get", "/api/v1/devices/gw-2/ps-9/latest"),
        (404, "post", "/api/v1/commands", CMD2),
        (403, "get", "/api/v1/sites/s2/deadletters"),
    ],
    "eng1": [(403, "get", "/api/v1/sites/s2/devices"), (404, "post", "/api/v1/commands", CMD2)],
    "fin1": [
        (403, "post", "/api/v1/commands", CMD),
        (403, "get", "/api/v1/sites/s1/deadletters"),
        (403, "get", "/api/v1/sites/s2/devices"),
    ],
    "owner1": [
        (403, "get", "/api/v1/sites"),
        (403, "get", "/api/v1/sites/s1/devices"),
        (404, "get", "/api/v1/devices/gw-1/ps-2/latest"),
        (403, "post", "/api/v1/commands", CMD),
        (403, "get", "/api/v1/sites/s1/gateways"),
    ],
}


@pytest.mark.parametrize("user", list(OUT_OF_SCOPE))
def test_each_role_is_refused_outside_its_scope(hub, user):
    headers = login(hub, user)
    for code, method, path, *body in OUT_OF_SCOPE[user]:
        r = getattr(hub, method)(path, headers=headers, **({"json": body[0]} if body else {}))
        assert r.status_code == code, (user, method, path, r.status_code, r.text)
        assert "s2" not in r.text or "s2" in path  # nothing of another site in the answer


def test_scopes_filter_what_is_listed(hub):
    assert [s["id"] for s in hub.get("/api/v1/sites", headers=login(hub, "admin")).json()] == [
        "s1",
        "s2",
    ]
    assert [s["id"] for s in hub.get("/api/v1/sites", headers=login(hub, "mgr1")).json()] == ["s1"]
    mine = hub.get("/api/v1/devices", headers=login(hub, "owner1")).json()
    assert [(d["gateway_id"], d["device_id"]) for d in mine] == [("gw-1", "ps-1")]
    latest = hub.get("/api/v1/devices/gw-1/ps-1/latest", headers=login(hub, "owner1")).json()
    assert latest[0]["point"] == "outlet_pressure" and latest[0]["value"] == 0.40
    assert latest[0]["unit"] == "MPa"
    gws = hub.get("/api/v1/sites/s1/gateways", headers=login(hub, "eng1")).json()
    assert gws[0]["id"] == "gw-1" and gws[0]["messages"] == 60 and gws[0]["gaps"] == 0


def test_history_is_downsampled(hub):
    r = hub.get(
        "/api/v1/devices/gw-1/ps-1/history",
        headers=login(hub, "fin1"),
        params={
            "point": "outlet_pressure",
            "start": "2026-11-22T16:00:00+08:00",
            "end": "2026-11-22T16:01:00+08:00",
            "step_s": 20,
        },
    )
    assert r.status_code == 200, r.text
    got = [(p["count"], round(p["value"], 4), p["min"], p["max"]) for p in r.json()]
    assert got == [(20, 0.30, 0.30, 0.30), (20, 0.35, 0.30, 0.40), (20, 0.40, 0.40, 0.40)]
    bad = hub.get(
        "/api/v1/devices/gw-1/ps-1/history",
        headers=login(hub, "fin1"),
        params={
            "point": "outlet_pressure",
            "start": "2026-11-22T08:00:00",
            "end": "2026-11-22T09:00:00",
        },
    )
    assert bad.status_code == 422 and "timezone" in bad.text


def test_commands_refuse_read_only_points(hub):
    r = hub.post(
        "/api/v1/commands", headers=login(hub, "eng1"), json={**CMD, "point": "outlet_pressure"}
    )
    assert r.status_code == 422 and "not a writable point" in r.text
    r = hub.post("/api/v1/commands", headers=login(hub, "eng1"), json={**CMD, "value": "x"})
    assert r.status_code == 422


async def test_a_command_reaches_the_device_and_its_result_comes_back(broker, tmp_path):
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    from hub.db import upgrade

    upgrade(url)
    engine = make_engine(url)
    settings = load_settings(
        database_url=url, mqtt_url=broker.url, secret_file=tmp_path / "secret", ingest_linger_ms=10
    )
    with session_scope(engine) as s:
        create_user(s, "eng", PW, Role.ENGINEER, ["test-site"])
    cfg = sim_config(tcp_endpoint("plant", "pump-station:1"))
    async with ModbusSimulator(cfg) as sim:
        path = site_config(
            tmp_path,
            broker.url,
            [{"name": "plant", "type": "tcp", "host": "127.0.0.1", "port": sim.tcp_port()}],
            [{"id": "ps-1", "bus": "plant", "unit": 1, "profile": "pump-station", "interval": 0.5}],
        )
        async with Agent(load_site(path)):
            with TestClient(create_app(settings, engine)) as client:
                headers = login(client, "eng")
                done = threading.Event()

                def registered() -> bool:
                    r = client.get("/api/v1/sites/test-site/devices", headers=headers)
                    return r.status_code == 200 and len(r.json()) == 1

                await asyncio.to_thread(_until, registered)
                r = client.post(
                    "/api/v1/commands",
                    headers=headers,
                    json={
                        "gateway": "gw-1",
                        "device": "ps-1",
                        "point": "pressure_setpoint",
                        "value": 0.52,
                        "ttl_s": 30,
                    },
                )
                assert r.status_code == 202, r.text
                cid = r.json()["id"]

                def acked() -> bool:
                    status = client.get(f"/api/v1/commands/{cid}", headers=headers).json()
                    done.set() if status["status"] != "pending" else None
                    return done.is_set()

                await asyncio.to_thread(_until, acked)
                final = client.get(f"/api/v1/commands/{cid}", headers=headers).json()
    assert final["status"] == "done" and final["created_by"] == "eng"
    assert sim.device("pump-station-1").value("pressure_setpoint") == 0.52
    engine.dispose()


def _until(predicate, timeout: float = 30) -> None:
    """Poll API state (no event to wait on over HTTP) until it holds, with a deadline."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        tick.wait(0.1)
