"""Shared bits of the benchmarks: machine description, medians, results file."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).resolve().parent.parent / ".bench" / "results"


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def median(values: list[float]) -> float:
    return statistics.median(values)


def record(name: str, module: str, result: dict[str, Any]) -> Path:
    """Write a result as JSON under .bench/results and print it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = " ".join([".venv/bin/python", "-m", module, *sys.argv[1:]])
    result = {
        "bench": name,
        "machine": machine(),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "command": command,
        **result,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return path


def spawn_python(*args: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, *args], text=True, **kw)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so that every ``finally`` stops what the benchmark started."""
    signal.signal(signal.SIGTERM, lambda sig, _frame: sys.exit(128 + sig))


def wait_quiet(timeout_s: float = 180.0, idle_percent: float = 10.0) -> dict[str, Any]:
    """Wait (at most timeout_s) until the machine is quiet enough to measure on.

    Quiet: the whole machine was less than idle_percent busy over the last 5 s. The 1-minute
    load average is recorded but is not the test: it lags by minutes both ways (high long
    after our own previous run has stopped, still low when someone's test suite has just
    started). Returns what was seen; ``quiet`` is False if it gave up (the run goes ahead and
    the result says so). Disturbances that start later are caught by :class:`ForeignCpu`.
    """
    started = time.monotonic()
    while True:
        busy = psutil.cpu_percent(interval=5.0)
        load1 = os.getloadavg()[0]
        quiet = busy < idle_percent
        waited = time.monotonic() - started
        if quiet or waited > timeout_s:
            break
        print(f"waiting for a quiet machine: {busy:.0f}% busy, load {load1:.2f}", file=sys.stderr)
    return {
        "load1": round(load1, 2),
        "busy_percent": round(busy, 1),
        "waited_s": round(waited),
        "quiet": quiet,
    }


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (reaped ones included)."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants now."""
    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total


def _machine_busy_s() -> float:
    t = psutil.cpu_times()  # guest time is already inside user; steal is not ours
    return t.user + t.nice + t.system + t.irq + t.softirq


class ForeignCpu:
    """CPU the machine spends outside this process and its descendants, from now on.

    Everything a benchmark runs (broker, simulator, agents, gateway, subscriber) is a
    descendant, so what is left is someone else's work (and the kernel's threads).
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.machine = _machine_busy_s()
        self.ours = tree_cpu(os.getpid())

    def core_percent(self) -> float:
        """Percent of one core used by others since construction."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        machine = _machine_busy_s() - self.machine
        ours = tree_cpu(os.getpid()) - self.ours
        return round(100 * max(machine - ours, 0.0) / elapsed, 1)


MAX_FOREIGN = 10.0  # % of one core: background daemons and kernel threads stay below


def measure_quietly(
    measure: Callable[[], dict[str, Any]], attempts: int = 3, max_foreign: float = MAX_FOREIGN
) -> dict[str, Any]:
    """Run ``measure`` on a quiet machine (wait_quiet); again if others took CPU meanwhile.

    Up to ``attempts`` times; the last attempt is kept in any case. The result gains
    ``quiet`` (what wait_quiet saw), ``foreign_core_percent`` (others' CPU during the
    measurement, % of one core), ``disturbed`` (it was above max_foreign) and ``attempts``.
    """
    tries = 0
    while True:
        tries += 1
        quiet = wait_quiet()
        foreign = ForeignCpu()
        result = measure()
        others = foreign.core_percent()
        if others <= max_foreign or tries >= attempts:
            break
        print(f"others used {others:.0f}% of a core meanwhile; measuring again", file=sys.stderr)
    return {
        **result,
        "quiet": quiet,
        "foreign_core_percent": others,
        "disturbed": others > max_foreign,
        "attempts": tries,
    }
