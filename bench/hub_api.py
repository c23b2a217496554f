"""API latency of the latest-values query under concurrent load: p50, p99, requests/s.

The hub (``python -m hub serve --no-ingest``, one process) serves a database holding 200
devices of 50 points (SQLite or PostgreSQL); a load process keeps ``--concurrency``
requests in flight on random devices' ``/latest`` for ``--duration`` seconds. The load
is Debian's ``wrk`` (``make bench`` installs it), so the client costs the 2 cores little.

    .venv/bin/python -m bench.hub_api --runs 3
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench.common import median, record
from bench.hub_ingest import DEVICES, GATEWAYS, _pg_database, births, data
from bench.wrk import hub_api, run_wrk
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
"""


def load(base: str, concurrency: int, duration: float, workdir: Path) -> dict[str, float]:
    """wrk on random devices' latest values, with a bearer token."""
    r = httpx.post(f"{base}/api/v1/auth/token", data={"username": "bench", "password": PASSWORD})
    lua = WRK_SCRIPT % (GATEWAYS - 1, DEVICES - 1, r.json()["access_token"])
    return run_wrk(base, lua, concurrency, duration, workdir / "latest.lua")


def once(db: str, concurrency: int, duration: float, workdir: Path) -> dict[str, Any]:
    with hub_api(db, workdir) as base:
        return load(base, concurrency, duration, workdir)


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
