"""Bytes our agent writes to disk per hour at 100 values/s, with the default group commit.

Two device sets, each polled once a second for 100 values/s, each run against a fresh
outbox on the machine's disk (ext4 here; not tmpfs, where nothing would reach a disk):

- telemetry: 8 lifts (11 values) and 1 pump station (12): no billing counter, so messages
  wait for the group commit (``commit_interval`` 1 s by default);
- billing: 10 em-3p meters (10 values, 2 of them billing counters): every message is
  critical and commits (fsync) at once: the cost of the guarantee.

Measured over a window after a warm-up, from ``/proc/PID/io`` of the agent: ``write_bytes``
(what the agent sent to the block layer: SQLite's WAL, checkpoints into the database) and
``wchar`` (bytes passed to write calls, cached or not), extrapolated to an hour; commits per
second from the agent's own counter (``wuye_edge_outbox_commits_total`` on its metrics
endpoint), each a sync of the WAL. The file system's journal, written by the kernel's
journal thread, is not in these figures.

    .venv/bin/python -m bench.edge_disk [--runs 3] [--duration 120] [--warmup 10]
"""

from __future__ import annotations

import argparse
import shutil
import time
from typing import Any

from bench import rig
from bench.common import exit_on_sigterm, measure_quietly, median, record
from deploy.mosquitto import Mosquitto, free_port
from protocols.profile import load_profiles

SETS: dict[str, tuple[tuple[str, int], ...]] = {
    "telemetry": (("lift", 8), ("pump-station", 1)),
    "billing": (("em-3p", 10),),
}
INTERVAL = 1.0


def sim_runs(devices: tuple[tuple[str, int], ...]) -> list[str]:
    runs, unit = [], 1
    for profile, n in devices:
        runs.append(f"{profile}:{unit}-{unit + n - 1}")
        unit += n
    return runs


def once(name: str, duration_s: float, warmup_s: float) -> dict[str, Any]:
    workdir = rig.WORK / "edge-disk"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    broker = Mosquitto(workdir).start()
    metrics = free_port()
    try:
        with (
            rig.simulator(workdir, {"site": sim_runs(SETS[name])}) as sim,
            rig.tally(broker.port) as tally,
        ):
            devices = rig.sim_devices(sim)
            config = rig.site_config(
                workdir, broker.url, sim, devices, interval=INTERVAL, metrics_port=metrics
            )
            with rig.agent(config, workdir / "agent.log") as proc:
                tally.wait_values("wuye")
                time.sleep(warmup_s)
                io0, m0, n0 = rig.proc_io(proc.pid), rig.scrape(metrics), tally.counts()["wuye"]
                t0 = time.monotonic()
                while (left := t0 + duration_s - time.monotonic()) > 0:
                    if proc.poll() is not None:
                        raise RuntimeError(f"agent exited with {proc.returncode}; see {workdir}")
                    time.sleep(min(1.0, left))
                io1, m1, n1 = rig.proc_io(proc.pid), rig.scrape(metrics), tally.counts()["wuye"]
                elapsed = time.monotonic() - t0
                wal = sum(f.stat().st_size for f in workdir.glob("outbox.db*"))
    finally:
        broker.stop()
    per_hour = 3600 / elapsed
    got = {k: n1[k] - n0[k] for k in n1}
    due = len(devices) / INTERVAL * elapsed
    if got["messages"] < 0.9 * due or got["errors"]:
        raise RuntimeError(
            f"{name}: the agent delivered {got['messages']} messages ({got['errors']} errors) "
            f"of {due:.0f} due in {elapsed:.0f} s"
        )
    written = io1["write_bytes"] - io0["write_bytes"]
    commits = m1["wuye_edge_outbox_commits_total"] - m0["wuye_edge_outbox_commits_total"]
    return {
        "write_mb_per_h": round(written * per_hour / 2**20, 1),
        "wchar_mb_per_h": round((io1["wchar"] - io0["wchar"]) * per_hour / 2**20, 1),
        "commits_per_s": round(commits / elapsed, 2),
        "write_kb_per_commit": round(written / max(commits, 1) / 1024, 1),
        "values_per_s": round(got["values"] / elapsed, 1),
        "messages_per_s": round(got["messages"] / elapsed, 1),
        "outbox_files_mb_end": round(wal / 2**20, 2),
        "window_s": round(elapsed, 1),
    }


def main() -> None:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=120.0, help="window, seconds")
    ap.add_argument("--warmup", type=float, default=10.0, help="after the first value, seconds")
    args = ap.parse_args()
    profiles = load_profiles()
    sets: dict[str, Any] = {}
    for name, devices in SETS.items():
        runs = []
        for _ in range(args.runs):
            # bytes written do not depend on others' CPU use: recorded, never measured again
            runs.append(
                measure_quietly(lambda n=name: once(n, args.duration, args.warmup), attempts=1)
            )
            print(name, runs[-1], flush=True)
        sets[name] = {
            "devices": {p: n for p, n in devices},
            "values_per_poll": sum(len(profiles[p].points) * n for p, n in devices),
            **{
                f"median_{k}": median([r[k] for r in runs])
                for k in ("write_mb_per_h", "wchar_mb_per_h", "commits_per_s", "values_per_s")
            },
            "runs": runs,
        }
    record(
        "edge_disk",
        "bench.edge_disk",
        {"interval_s": INTERVAL, "commit_interval_s": 1.0, "window_s": args.duration, **sets},
    )


if __name__ == "__main__":
    main()
