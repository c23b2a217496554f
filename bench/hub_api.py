"""API latency of the latest-values query under concurrent load: p50, p99, requests/s.

The hub (``python -m hub serve --no-ingest``, one process) serves a database holding 200
devices of 50 points (SQLite or PostgreSQL); a load process keeps ``--concurrency``
requests in flight on random devices' ``/latest`` for ``--duration`` seconds. The load
is Debian's ``wrk`` (``make bench`` installs it), so the client costs the 2 cores little.

    .venv/bin/python -m bench.hub_api --runs 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
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


WRK_SCRIPT = """
math.randomseed(os.time())
request = function()
  local path = string.format("/api/v1/devices/gw-%%03d/d%%02d/latest",
                             math.random(0, %d), math.random(0, %d))
  return wrk.format("GET", path, {["Authorization"] = "Bearer %s"})
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%d %%d\\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), summary.duration))
end
"""


def load(base: str, concurrency: int, duration: float, workdir: Path) -> dict[str, float]:
    """Drive the API with wrk (C, so the load costs the 2 cores little) on random devices."""
    r = httpx.post(f"{base}/api/v1/auth/token", data={"username": "bench", "password": PASSWORD})
    script = workdir / "latest.lua"
    script.write_text(WRK_SCRIPT % (GATEWAYS - 1, DEVICES - 1, r.json()["access_token"]))
    out = subprocess.run(
        ["wrk", "-t2", f"-c{concurrency}", f"-d{round(duration)}s", "-s", str(script), base + "/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    requests, errors, p50_us, p99_us, duration_us = (int(x) for x in line.split()[1:])
    assert errors == 0, f"{errors} failed requests:\n{out}"
    return {
        "requests": requests,
        "per_s": requests / (duration_us / 1e6),
        "p50_ms": p50_us / 1000,
        "p99_ms": p99_us / 1000,
    }


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
        return load(f"http://127.0.0.1:{port}", concurrency, duration, workdir)
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
