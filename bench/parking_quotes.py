"""Visitor quotes per second and their latency on one hub process: p50, p99, requests/s.

The hub (``python -m hub serve --no-ingest``, one process) serves a database holding one lot
with ``--cars`` cars inside (their entries folded in through the ingest code, as from an
edge) and a few hundred older stays; wrk keeps ``--concurrency`` requests in flight on
``GET /api/v1/parking/{lot}/quote?plate=...`` for random plates of cars inside, for
``--duration`` seconds. The route is open without login and rate-limited per client
address (30 a minute); each request carries a random ``X-Forwarded-For`` as it would behind
the reverse proxy (many phones), which the hub trusts from 127.0.0.1. Every answer must be
200: a 404 or a 429 fails the run.

    .venv/bin/python -m bench.parking_quotes --runs 3
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import orjson

from bench.common import exit_on_sigterm, measure_quietly, median, record
from bench.hub_ingest import _pg_database
from bench.wrk import hub_api, run_wrk
from hub.apply import Applier, Raw
from hub.db import make_engine, session_scope, upgrade
from hub.parking import service as parking
from hub.telemetry import SqlTelemetry
from protocols.parking.messages import Policy

LOT, SITE, GW = "bench-lot", "bench", "gw-park"
RULE = {
    "kind": "standard",
    "free_minutes": 15,
    "first": {"minutes": 60, "fen": 500},
    "step": {"minutes": 30, "fen": 200},
    "tier2": {"after_minutes": 480, "step": {"minutes": 60, "fen": 100}},
    "cap_fen": 3000,
}


def plates(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    serial = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    out: set[str] = set()
    while len(out) < n:
        out.add("浙C" + "".join(rng.choices(serial, k=5)))
    return sorted(out)


def prepare(db: str, inside: list[str], gone: int) -> None:
    """The lot, ``gone`` stays that ended, then one car inside per plate of ``inside``."""
    upgrade(db)
    engine = make_engine(db)
    with session_scope(engine) as s:
        parking.create_lot(s, LOT, SITE, GW, Policy(capacity=5000, rule=RULE))
    applier = Applier(engine, SqlTelemetry(), 1 << 20)
    birth = {"v": 1, "gw": GW, "site": SITE, "bdseq": 0, "stream": "b" * 32, "ts": 1}
    applier.apply(
        [
            Raw(
                f"wuye/v1/{SITE}/{GW}/birth",
                orjson.dumps({**birth, "agent": "bench", "devices": []}),
            )
        ]
    )
    rng = random.Random(1)
    now = int(time.time() * 1000)
    records: list[dict[str, Any]] = []

    def park(kind: str, plate: str, session: str, at: int) -> None:
        records.append(
            {
                "v": 1,
                "gw": GW,
                "seq": len(records) + 1,
                "ts": at,
                "lot": LOT,
                "kind": kind,
                "session": session,
                "at": at,
                "plate": plate,
                "action": "open",
                "gate": "in1" if kind == "entry" else "out1",
            }
        )

    for i, plate in enumerate(plates(gone, seed=2)):
        entered = now - rng.randint(10, 72) * 3_600_000
        park("entry", plate, f"old-{i}", entered)
        park("exit", plate, f"old-{i}", entered + rng.randint(10, 600) * 60_000)
    for i, plate in enumerate(inside):
        park("entry", plate, f"in-{i}", now - rng.randint(1, 1440) * 60_000)
    topic = f"wuye/v1/{SITE}/{GW}/park"
    for i in range(0, len(records), 500):
        applier.apply([Raw(topic, orjson.dumps(r)) for r in records[i : i + 500]])
    engine.dispose()


WRK_SCRIPT = """
local plates = {%s}
local thread_no = 0
setup = function(thread)
  thread_no = thread_no + 1
  thread:set("seed", thread_no)
end
init = function(args)
  math.randomseed(os.time() * 7 + seed)
end
request = function()
  local plate = plates[math.random(#plates)]
  local phone = string.format("10.%%d.%%d.%%d", math.random(0, 255), math.random(0, 255),
                              math.random(1, 254))
  return wrk.format("GET", "/api/v1/parking/%s/quote?plate=" .. plate,
                    {["X-Forwarded-For"] = phone})
end
"""


def load(base: str, inside: list[str], concurrency: int, duration: float, workdir: Path) -> Any:
    table = ",".join(f'"{urllib.parse.quote(p)}"' for p in inside)
    return run_wrk(base, WRK_SCRIPT % (table, LOT), concurrency, duration, workdir / "quotes.lua")


def once(db: str, inside: list[str], concurrency: int, duration: float, workdir: Path) -> Any:
    with hub_api(db, workdir) as base:
        # on a quiet machine; again if others took CPU meanwhile (bench/common.py)
        return measure_quietly(lambda: load(base, inside, concurrency, duration, workdir))


def main() -> None:
    exit_on_sigterm()
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cars", type=int, default=1000, help="inside the lot")
    ap.add_argument("--gone", type=int, default=500, help="stays that already ended")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--databases", default="sqlite,postgresql")
    args = ap.parse_args()
    inside = plates(args.cars)
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        for kind in args.databases.split(","):
            if kind == "sqlite":
                db, drop = f"sqlite:///{Path(d) / 'quotes.db'}", None
            else:
                db, drop = _pg_database()
            try:
                prepare(db, inside, args.gone)
                runs = [
                    once(db, inside, args.concurrency, args.duration, Path(d))
                    for _ in range(args.runs)
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
    load_after = os.getloadavg()
    record(
        "parking_quotes",
        "bench.parking_quotes",
        {
            "cars_inside": args.cars,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "results": results,
            "load1_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        },
    )


if __name__ == "__main__":
    main()
