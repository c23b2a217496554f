"""Resident memory of our agent polling 200 simulated devices.

One simulator process serves 200 devices on 4 Modbus TCP endpoints (4 buses for the agent),
each endpoint a mix like a residential block: 20 single-phase meters, 10 three-phase meters,
12 water meters, 4 lifts and 4 pump stations. The agent polls every device every 5 s with
default settings and publishes to Mosquitto; a subscriber process (bench.tally) checks that
the messages arrive. The agent's RSS is sampled every second from READY: ``max`` over the
whole run, ``steady`` the median after the warm-up, and ``growth`` the last sample minus
the first one after warm-up (flat is the goal).

    .venv/bin/python -m bench.edge_memory [--runs 3] [--warmup 60] [--measure 60]
"""

from __future__ import annotations

import argparse
import shutil
import time
from typing import Any

from bench import rig
from bench.common import exit_on_sigterm, measure_quietly, median, record, tree_rss
from deploy.mosquitto import Mosquitto

ENDPOINTS = 4
MIX = (("em-1p", 20), ("em-3p", 10), ("water-meter", 12), ("lift", 4), ("pump-station", 4))
INTERVAL = 5.0
TARGET_MB = 80


def endpoints() -> dict[str, list[str]]:
    """Simulator endpoints: the same mix on each, units 1.. in the order of MIX."""
    runs, unit = [], 1
    for profile, n in MIX:
        runs.append(f"{profile}:{unit}-{unit + n - 1}")
        unit += n
    return {f"block{i + 1}": runs for i in range(ENDPOINTS)}


def once(warmup_s: float, measure_s: float) -> dict[str, Any]:
    workdir = rig.WORK / "edge-memory"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    broker = Mosquitto(workdir).start()
    try:
        with rig.simulator(workdir, endpoints()) as sim, rig.tally(broker.port) as tally:
            devices = rig.sim_devices(sim)
            config = rig.site_config(workdir, broker.url, sim, devices, interval=INTERVAL)
            with rig.agent(config, workdir / "agent.log") as proc:
                t0 = time.monotonic()
                samples: list[tuple[float, float]] = []
                before: dict[str, int] | None = None
                t1 = t0
                while (now := time.monotonic() - t0) < warmup_s + measure_s:
                    if proc.poll() is not None:
                        raise RuntimeError(f"agent exited with {proc.returncode}; see {workdir}")
                    if before is None and now >= warmup_s:
                        before = tally.counts()["wuye"]
                        t1 = time.monotonic()
                    samples.append((now, tree_rss(proc.pid) / 2**20))
                    time.sleep(1.0)
                after = tally.counts()["wuye"]
                elapsed = time.monotonic() - t1
    finally:
        broker.stop()
    assert before is not None
    got = {k: after[k] - before[k] for k in after}
    due = len(devices) / INTERVAL * elapsed
    if got["messages"] < 0.9 * due or got["errors"]:
        raise RuntimeError(
            f"the agent delivered {got['messages']} messages ({got['errors']} errors) "
            f"of {due:.0f} due in {elapsed:.0f} s"
        )
    steady = [mb for t, mb in samples if t >= warmup_s]
    return {
        "devices": len(devices),
        "rss_mb_max": round(max(mb for _, mb in samples), 1),
        "rss_mb_steady": round(median(steady), 1),
        "rss_mb_growth": round(steady[-1] - steady[0], 1),
        "rss_mb_at_ready": round(samples[0][1], 1),
        "messages_per_s": round(got["messages"] / elapsed, 1),
        "values_per_s": round(got["values"] / elapsed, 1),
    }


def main() -> None:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds before 'steady'")
    ap.add_argument("--measure", type=float, default=60.0, help="seconds of 'steady'")
    args = ap.parse_args()
    runs = []
    for _ in range(args.runs):
        # memory does not depend on others' CPU use: recorded, never measured again
        runs.append(measure_quietly(lambda: once(args.warmup, args.measure), attempts=1))
        print(runs[-1], flush=True)
    steady = median([r["rss_mb_steady"] for r in runs])
    record(
        "edge_memory",
        "bench.edge_memory",
        {
            "devices": runs[0]["devices"],
            "mix_per_endpoint": dict(MIX),
            "endpoints": ENDPOINTS,
            "interval_s": INTERVAL,
            "warmup_s": args.warmup,
            "measure_s": args.measure,
            "median_rss_mb_steady": steady,
            "median_rss_mb_max": median([r["rss_mb_max"] for r in runs]),
            "target": f"<= {TARGET_MB} MB",
            "meets_target": max(r["rss_mb_max"] for r in runs) <= TARGET_MB,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
