"""CPU seconds per 10,000 values polled and published: our agent against ThingsBoard IoT Gateway.

One simulator process serves em-3p meters (10 values each: 7 float32, an int16, 2 uint32
counters) on one Modbus TCP endpoint; one Mosquitto; one subscriber process (bench.tally)
counts the values each side delivers. For each rate (N meters polled once a second, so 10 x N
values/s) the contenders poll the same N meters and publish to the same broker:

- ours: ``python -m edge run`` with the meters at interval 1 s, defaults otherwise (group
  commit 1 s; em-3p carries billing counters, so every message is a critical, synced commit);
- tb-default: ThingsBoard IoT Gateway 3.8.5's Modbus connector, one request per value;
- tb-ranges: the same with its wide-range reads (3 requests per meter: the 7 floats, the
  int16, the 2 counters).

By default (``--schedule concurrent``) ours and one TB mode run side by side and are measured
over the same window, each by psutil on its own process tree: two windows per rate and run,
so ours is measured twice as often as each TB mode. ``--schedule sequential`` gives each
contender its own window, one after the other. A window opens a few seconds after every
contender's first value reached the subscriber; it counts only if the subscriber saw at least
90 % of the values due from each (and none of ours as errors), otherwise the benchmark fails.

    .venv/bin/python -m bench.edge_cpu [--runs 3] [--meters 10,50] [--duration 60]

Diagnostic: ``--contenders ours --no-counters`` measures ours alone on a copy of em-3p whose
counters are plain measurements (same registers, nothing synced at once); the difference to
ours on em-3p is the cost of the immediate commits. Written to edge_cpu_no_counters_ours.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench import rig
from bench.common import exit_on_sigterm, measure_quietly, median, record, tree_cpu, tree_rss
from bench.tbgw import harness
from deploy.mosquitto import Mosquitto
from protocols.profile import PROFILES_DIR, load_profiles

PROFILE = "em-3p"
TARGET = 1 / 3  # ours at most a third of TB's CPU per value
MIN_DELIVERED = 0.9
TB_TYPES = {
    "int16": "16int",
    "uint16": "16uint",
    "int32": "32int",
    "uint32": "32uint",
    "float32": "32float",
}


@dataclass
class Running:
    """A contender while it runs: what the window needs to measure it."""

    name: str
    family: str  # its values in the tally: "wuye" or "tb"
    cpu: Callable[[], float]
    rss: Callable[[], int]
    check_alive: Callable[[], None]


@dataclass
class Rig:
    workdir: Path
    broker: Mosquitto
    sim: dict[str, Any]
    tally: rig.Tally
    per_meter: int  # values per poll of one meter
    no_counters: bool = False  # ours polls em-3p with its counters as plain measurements


def tb_registers() -> list[harness.Register]:
    """The profile's points as the TB harness describes registers: same addresses, same types."""
    profile = load_profiles()[PROFILE]
    return [
        (p.name, p.table.value, p.address, TB_TYPES[p.type.value], p.type.width)
        for p in profile.points
    ]


def plain_profile(directory: Path) -> str:
    """Write em-3p with its counters made plain measurements; return the copy's name.

    Same registers and values, but no message is critical: they wait for the group commit.
    A diagnostic: the difference to em-3p is the cost of the immediate, synced commits.
    """
    data = yaml.safe_load((PROFILES_DIR / f"{PROFILE}.yaml").read_text())
    data["name"] = f"{PROFILE}-plain"
    for point in data["points"]:
        if point.get("kind") == "counter":
            point["kind"] = "measurement"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{PROFILE}-plain.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return str(data["name"])


@contextlib.contextmanager
def ours(r: Rig, meters: int) -> Iterator[Running]:
    work = r.workdir / "ours"
    work.mkdir(exist_ok=True)
    devices = rig.sim_devices(r.sim)[:meters]
    extra: dict[str, Any] = {}
    if r.no_counters:
        profile = plain_profile(work / "profiles")
        devices = [dataclasses.replace(d, profile=profile) for d in devices]
        extra["profile_dirs"] = [str(work / "profiles")]
    config = rig.site_config(work, r.broker.url, r.sim, devices, interval=1.0, **extra)
    with rig.agent(config, work / "agent.log") as proc:

        def alive() -> None:
            if proc.poll() is not None:
                raise RuntimeError(f"our agent exited with {proc.returncode}; see {work}")

        yield Running("ours", "wuye", lambda: tree_cpu(proc.pid), lambda: tree_rss(proc.pid), alive)


@contextlib.contextmanager
def thingsboard(r: Rig, meters: int, mode: harness.Mode) -> Iterator[Running]:
    port = r.sim["endpoints"][0]["port"]
    regs = tb_registers()
    devices: list[harness.Device] = [
        (d.id, "127.0.0.1", port, d.unit, regs) for d in rig.sim_devices(r.sim)[:meters]
    ]
    config = harness.write_config(
        r.workdir / f"tb-{mode}", "127.0.0.1", r.broker.port, devices, mode, poll_period_ms=1000
    )
    with harness.gateway(config, "127.0.0.1", r.broker.port) as gw:
        yield Running(f"tb-{mode}", "tb", lambda: sum(gw.cpu()), gw.rss, gw.check_alive)


def window(
    r: Rig, contenders: list[Running], meters: int, duration_s: float, warmup_s: float
) -> dict[str, Any]:
    """Measure contenders that run together over one window; fail if one did not deliver.

    Returns ``{"machine_busy_percent": ..., "contenders": {name: figures}}``; the machine's
    busy share (all cores, everything running) shows whether the window was CPU-starved.
    """
    for c in contenders:
        r.tally.wait_values(c.family)
    time.sleep(warmup_s)
    before = r.tally.counts()
    cpu0 = {c.name: c.cpu() for c in contenders}
    psutil.cpu_percent()  # the machine's busy share is measured from here
    t0 = time.monotonic()
    rss = dict.fromkeys(cpu0, 0)
    while (left := t0 + duration_s - time.monotonic()) > 0:
        for c in contenders:
            c.check_alive()
            rss[c.name] = max(rss[c.name], c.rss())
        time.sleep(min(1.0, left))
    cpu1 = {c.name: c.cpu() for c in contenders}
    machine_busy = psutil.cpu_percent()
    after = r.tally.counts()
    elapsed = time.monotonic() - t0
    due = meters * r.per_meter * elapsed  # one poll a second
    out: dict[str, Any] = {}
    for c in contenders:
        got = {k: after[c.family][k] - before[c.family][k] for k in after[c.family]}
        cpu = cpu1[c.name] - cpu0[c.name]
        if got["values"] < MIN_DELIVERED * due or got["errors"]:
            raise RuntimeError(
                f"{c.name} with {meters} meters delivered {got['values']} values "
                f"({got['errors']} errors) of {due:.0f} due in {elapsed:.1f} s"
            )
        out[c.name] = {
            "values": got["values"],
            "values_per_s": round(got["values"] / elapsed, 1),
            "due_per_s": meters * r.per_meter,
            "messages": got["messages"],
            "cpu_s": round(cpu, 3),
            "cpu_core_percent": round(100 * cpu / elapsed, 2),
            "cpu_s_per_10k_values": round(cpu / got["values"] * 10_000, 3),
            "rss_mb_max": round(rss[c.name] / 2**20, 1),
            "window_s": round(elapsed, 1),
        }
    return {"machine_busy_percent": machine_busy, "contenders": out}


Starter = Callable[[Rig, int], contextlib.AbstractContextManager[Running]]
CONTENDERS: dict[str, Starter] = {
    "ours": ours,
    "tb-default": lambda r, n: thingsboard(r, n, "default"),
    "tb-ranges": lambda r, n: thingsboard(r, n, "ranges"),
}


def groups(schedule: str, names: list[str]) -> list[list[str]]:
    """Which contenders share a window: ours beside each TB mode, or each alone."""
    tbs = [n for n in names if n != "ours"]
    if schedule == "concurrent" and "ours" in names and tbs:
        return [["ours", tb] for tb in tbs]
    return [[n] for n in names]


def summarise(windows: list[dict[str, Any]], rates: list[int], per_meter: int) -> dict[str, Any]:
    """Medians per rate and contender, ratios against each TB mode, and a fixed-cost fit.

    ``ratios`` divides the medians; ``paired_ratios`` lists ours/TB of each window where
    both ran together (concurrent schedule), the fairest comparison when the machine drifts.
    """
    per: dict[str, Any] = {}
    for meters in rates:
        rows: dict[str, list[dict[str, Any]]] = {}
        paired: dict[str, list[float]] = {}
        for w in windows:
            if w["meters"] != meters:
                continue
            for name, m in w["contenders"].items():
                rows.setdefault(name, []).append(m)
                if name != "ours" and "ours" in w["contenders"]:
                    ours_cost = w["contenders"]["ours"]["cpu_s_per_10k_values"]
                    ratio = ours_cost / m["cpu_s_per_10k_values"]
                    paired.setdefault(f"ours/{name}", []).append(round(ratio, 3))
        med = {
            name: {
                "cpu_s_per_10k_values": median([m["cpu_s_per_10k_values"] for m in ms]),
                "runs": [m["cpu_s_per_10k_values"] for m in ms],
                "cpu_core_percent": median([m["cpu_core_percent"] for m in ms]),
                "values_per_s": median([m["values_per_s"] for m in ms]),
                "rss_mb_max": max(m["rss_mb_max"] for m in ms),
            }
            for name, ms in rows.items()
        }
        ratios = {
            f"ours/{tb}": round(
                med["ours"]["cpu_s_per_10k_values"] / med[tb]["cpu_s_per_10k_values"], 3
            )
            for tb in ("tb-default", "tb-ranges")
            if tb in med and "ours" in med
        }
        per[f"{meters * per_meter}_values_per_s"] = {
            "meters": meters,
            "median": med,
            "ratios": ratios,
            "paired_ratios": {k: {"median": median(v), "runs": v} for k, v in paired.items()},
            "meets_target": all(v <= TARGET for v in ratios.values()),
        }
    fit = {}
    if len(rates) >= 2:
        lo = per[f"{min(rates) * per_meter}_values_per_s"]
        hi = per[f"{max(rates) * per_meter}_values_per_s"]
        for name in lo["median"]:
            a, b = lo["median"][name], hi["median"][name]
            # CPU (core-%) = fixed + slope x values/s, through the two medians
            slope = (b["cpu_core_percent"] - a["cpu_core_percent"]) / (
                b["values_per_s"] - a["values_per_s"]
            )
            fit[name] = {
                "fixed_core_percent": round(a["cpu_core_percent"] - slope * a["values_per_s"], 2),
                "marginal_cpu_s_per_10k_values": round(slope / 100 * 10_000, 3),
            }
    return {"rates": per, "linear_fit": fit}


def main() -> None:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--meters", default="10,50", help="meters polled at 1 Hz, one rate each")
    ap.add_argument("--duration", type=float, default=60.0, help="window, seconds")
    ap.add_argument("--warmup", type=float, default=5.0, help="after the first value, seconds")
    ap.add_argument("--schedule", choices=["concurrent", "sequential"], default="concurrent")
    ap.add_argument("--contenders", default=",".join(CONTENDERS), help="a subset of the three")
    ap.add_argument(
        "--no-counters",
        action="store_true",
        help="diagnostic: ours polls em-3p with its counters as plain measurements",
    )
    args = ap.parse_args()
    names = args.contenders.split(",")
    if not set(names) <= set(CONTENDERS):
        ap.error(f"--contenders: choose among {', '.join(CONTENDERS)}")
    # a diagnostic run gets its own result file
    result = "edge_cpu" + ("_no_counters" if args.no_counters else "")
    if names != list(CONTENDERS):
        result += "_" + "_".join(n.replace("-", "_") for n in names)
    rates = [int(x) for x in args.meters.split(",")]
    per_meter = len(load_profiles()[PROFILE].points)
    if any(n != "ours" for n in names):
        harness.ensure_venv()
    workdir = rig.WORK / "edge-cpu"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    windows: list[dict[str, Any]] = []
    broker = Mosquitto(workdir).start()
    try:
        with (
            rig.simulator(workdir, {"tcp0": [f"{PROFILE}:1-{max(rates)}"]}) as sim,
            rig.tally(broker.port) as tally,
        ):
            r = Rig(workdir, broker, sim, tally, per_meter, args.no_counters)
            for run in range(args.runs):
                for meters in rates:
                    for group in groups(args.schedule, names):

                        def measure(group: list[str] = group, meters: int = meters) -> Any:
                            with contextlib.ExitStack() as stack:
                                running = [
                                    stack.enter_context(CONTENDERS[n](r, meters)) for n in group
                                ]
                                return window(r, running, meters, args.duration, args.warmup)

                        windows.append({"run": run, "meters": meters, **measure_quietly(measure)})
                        print(windows[-1], flush=True)
    finally:
        broker.stop()
    record(
        result,
        "bench.edge_cpu",
        {
            "schedule": args.schedule,
            "profile": PROFILE + ("-plain (counters as measurements)" if args.no_counters else ""),
            "values_per_meter": per_meter,
            "window_s": args.duration,
            "tbgw": harness.TBGW_VERSION,
            **summarise(windows, rates, per_meter),
            "target": "ours <= 1/3 of TB's CPU s per 10k values",
            "windows": windows,
        },
    )


if __name__ == "__main__":
    main()
