"""Run the benchmarks: ``python -m bench.run all|NAME`` (``--runs N``); names below.

Each benchmark runs as its own process (``python -m bench.X``), one after the other, and
writes its result to .bench/results/X.json; docs/PERFORMANCE.md explains the figures.
Exit status 1 if any of them failed (the others still run).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.common import exit_on_sigterm

BENCHMARKS = {
    "cpu": "bench.edge_cpu",
    "memory": "bench.edge_memory",
    "replay": "bench.replay",
    "disk": "bench.edge_disk",
    "ingest": "bench.hub_ingest",
    "api": "bench.hub_api",
    "gate": "bench.parking_decision",
    "quotes": "bench.parking_quotes",
    "alarms": "bench.alarm_rules",
    "alarm-latency": "bench.alarm_latency",
    "billing-reports": "bench.billing_reports",
    "desk-payment": "bench.desk_payment",
}


def main() -> None:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", choices=["all", *BENCHMARKS])
    ap.add_argument("--runs", type=int, default=3, help="runs per benchmark (medians reported)")
    args = ap.parse_args()
    names = list(BENCHMARKS) if args.which == "all" else [args.which]
    failed = []
    for name in names:
        print(f"== {name}: {BENCHMARKS[name]}", flush=True)
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", BENCHMARKS[name], "--runs", str(args.runs)])
        try:
            code = proc.wait()
        finally:
            if proc.poll() is None:  # we were interrupted: let it clean up after itself
                proc.terminate()
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        print(f"== {name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
