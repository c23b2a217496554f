"""API latency of the latest-values query under concurrent load: p50, p99, requests/s.

The hub (``python -m hub serve --no-ingest``, one process) serves a database holding 200
devices of 50 points (SQLite or PostgreSQL); a load process keeps ``--concurrency``
requests in flight on random devices' ``/latest`` for ``--duration`` seconds.

    .venv/bin/python -m bench.hub_api --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import median, record
from bench.hub_ingest import DEVICES, GATEWAYS, _pg_database, births, data
from deploy.mosquitto import Mosquitto, free_port
from hub.apply import Applier, Raw
from hub.auth import Role, create_user
from hub.db import make_engine, session_scope, upgrade
from hub.telemetry import SqlTelemetry

PASSWORD = "bench-password-1"


def prepare(db: str) -> None:
    upgrade(db)
    engine = make_engine(db)
    applier = Applier(engine, SqlTelemetry(), 1 << 20)
    applier.apply([Raw(t, p) for t, p in births()])
    msgs = [Raw(t, p) for t, p in data(2000)]
    for i in range(0, len(msgs), 500):
        applier.apply(msgs[i : i + 500])
    with session_scope(engine) as s:
        create_user(s, "bench", PASSWORD, Role.HQ_ADMIN)
    engine.dispose()


async def load(base: str, concurrency: int, duration: float) -> list[float]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        r = await client.post(
            "/api/v1/auth/token", data={"username": "bench", "password": PASSWORD}
        )
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        latencies: list[float] = []
        deadline = time.perf_counter() + duration

        async def worker() -> None:
            rng = random.Random()
            while time.perf_counter() < deadline:
                gw, dev = rng.randrange(GATEWAYS), rng.randrange(DEVICES)
                t0 = time.perf_counter()
                resp = await client.get(
                    f"/api/v1/devices/gw-{gw:03d}/d{dev:02d}/latest", headers=headers
                )
                latencies.append(time.perf_counter() - t0)
                assert resp.status_code == 200 and len(resp.json()) == 50, resp.text

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies


def once(db: str, concurrency: int, duration: float, workdir: Path) -> dict[str, Any]:
    broker = Mosquitto(workdir).start()  # the command dispatcher wants a broker
    port = free_port()
    env = {
        **os.environ,
        "WUYE_HUB_DATABASE_URL": db,
        "WUYE_HUB_MQTT_URL": broker.url,
        "WUYE_HUB_SECRET_FILE": str(workdir / "secret"),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hub",
            "serve",
            "--no-ingest",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().startswith("READY")
        lat = sorted(asyncio.run(load(f"http://127.0.0.1:{port}", concurrency, duration)))
        return {
            "requests": len(lat),
            "per_s": len(lat) / duration,
            "p50_ms": lat[len(lat) // 2] * 1000,
            "p99_ms": lat[int(len(lat) * 0.99)] * 1000,
        }
    finally:
        server.terminate()
        server.wait(30)
        broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--databases", default="sqlite,postgresql")
    args = ap.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        for kind in args.databases.split(","):
            if kind == "sqlite":
                db, drop = f"sqlite:///{Path(d) / 'api.db'}", None
            else:
                db, drop = _pg_database()
            try:
                prepare(db)
                runs = [
                    once(db, args.concurrency, args.duration, Path(d)) for _ in range(args.runs)
                ]
            finally:
                if drop is not None:
                    drop()
            results[kind] = {
                "runs": runs,
                **{
                    k: round(median([r[k] for r in runs]), 1) for k in ("per_s", "p50_ms", "p99_ms")
                },
            }
            print(kind, results[kind], flush=True)
    record(
        "hub_api",
        "bench.hub_api",
        {"concurrency": args.concurrency, "duration_s": args.duration, "results": results},
    )


if __name__ == "__main__":
    main()
