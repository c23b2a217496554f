"""The pieces of an edge benchmark, each a context manager that stops its process on exit.

A simulator process serving Modbus TCP endpoints, our agent as ``python -m edge run``, the
counting subscriber (bench.tally), a site config for the agent, its metrics and its I/O.
Everything listens on loopback; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench" / "work"  # on the real disk (not tmpfs): the disk benchmark needs it


class Lines:
    """The lines a child writes to a pipe, read on a thread so that waits can time out."""

    def __init__(self, pipe: IO[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(pipe,), daemon=True).start()

    def _pump(self, pipe: IO[str]) -> None:
        for line in pipe:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def next(self, timeout_s: float, what: str) -> str:
        """The next line; RuntimeError if none comes within timeout_s or the pipe closed."""
        try:
            line = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            raise RuntimeError(f"{what}: nothing within {timeout_s} s") from None
        if line is None:
            raise RuntimeError(f"{what}: the process closed its output")
        return line


def stop(proc: subprocess.Popen[Any], grace_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after grace_s; returns once the process is gone."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def python(*args: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, text=True, **kw)


# -- the simulator -------------------------------------------------------------------------


@contextlib.contextmanager
def simulator(
    workdir: Path,
    endpoints: Mapping[str, Sequence[str]],
    seed: int = 1,
    control: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Serve devices on Modbus TCP endpoints; yield the simulator's READY document.

    ``endpoints`` maps an endpoint name to device runs ``PROFILE:UNITS`` (``em-3p:1-50``);
    each endpoint listens on a free loopback port. Device ids are ``ENDPOINT-PROFILE-UNIT``
    (unique across endpoints); the document gains ``"profiles"``: device id -> profile.
    ``control``: serve the control endpoint (faults, forced values) on that port.
    """
    runs = {name: [run.split(":") for run in rs] for name, rs in endpoints.items()}
    profiles: dict[str, str] = {}
    for name, pairs in runs.items():
        for profile, units in pairs:
            first, _, last = units.partition("-")
            for unit in range(int(first), int(last or first) + 1):
                profiles[f"{name}-{profile}-{unit}"] = profile
    config = {
        "schema": "wuye.simulator/1",
        "seed": seed,
        "endpoints": [
            {
                "name": name,
                "tcp": {"host": "127.0.0.1", "port": 0},
                "devices": [
                    {"profile": profile, "unit": units, "id": name + "-{profile}-{unit}"}
                    for profile, units in pairs
                ],
            }
            for name, pairs in runs.items()
        ],
    }
    path = workdir / "simulator.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    log = workdir / "simulator.log"
    with open(log, "w") as err:
        proc = python(
            *("-m", "simulators", "modbus", "--config", str(path)),
            *("--control", f"127.0.0.1:{control}" if control else "off"),
            stdout=subprocess.PIPE,
            stderr=err,
        )
    try:
        assert proc.stdout is not None
        line = Lines(proc.stdout).next(30, f"simulator READY (see {log})")
        if not line.startswith("READY "):
            raise RuntimeError(f"simulator: unexpected {line!r}")
        yield {**json.loads(line.removeprefix("READY ")), "profiles": profiles}
    finally:
        stop(proc, 5)


@dataclass(frozen=True)
class SimDevice:
    endpoint: str
    id: str
    unit: int
    profile: str


def sim_devices(info: Mapping[str, Any]) -> list[SimDevice]:
    """Every simulated device of a READY document, by endpoint then unit."""
    return [
        SimDevice(ep["name"], dev, unit, info["profiles"][dev])
        for ep in info["endpoints"]
        for dev, unit in sorted(ep["devices"].items(), key=lambda kv: kv[1])
    ]


# -- our agent -----------------------------------------------------------------------------


def site_config(
    workdir: Path,
    broker_url: str,
    info: Mapping[str, Any],
    devices: Sequence[SimDevice],
    interval: float,
    **extra: Any,
) -> Path:
    """Write a site config polling ``devices`` every ``interval`` s; defaults otherwise.

    One bus per simulator endpoint; the outbox in workdir; ``extra`` adds top-level fields
    (``metrics_port``, ``outbox``...).
    """
    used = {d.endpoint for d in devices}
    cfg = {
        "site": "bench",
        "gateway": "gw-bench",
        "broker": {"url": broker_url},
        "outbox": {"path": str(workdir / "outbox.db")},
        "buses": [
            {"name": ep["name"], "type": "tcp", "host": ep["host"], "port": ep["port"]}
            for ep in info["endpoints"]
            if ep["name"] in used
        ],
        "devices": [
            {
                "id": d.id,
                "bus": d.endpoint,
                "unit": d.unit,
                "profile": d.profile,
                "interval": interval,
            }
            for d in devices
        ],
    }
    for key, value in extra.items():
        cfg[key] = {**cfg[key], **value} if isinstance(cfg.get(key), dict) else value
    path = workdir / "site.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@contextlib.contextmanager
def agent(config: Path, log: Path) -> Iterator[subprocess.Popen[str]]:
    """Run ``python -m edge run --config config`` (stderr to log); yield it once READY.

    The outbox of a previous run at the same path is removed first: every run starts empty.
    """
    outbox = Path(yaml.safe_load(config.read_text())["outbox"]["path"])
    for f in outbox.parent.glob(outbox.name + "*"):
        f.unlink()
    with open(log, "w") as err:
        proc = python(
            "-m", "edge", "run", "--config", str(config), stdout=subprocess.PIPE, stderr=err
        )
    try:
        assert proc.stdout is not None
        line = Lines(proc.stdout).next(30, f"agent READY (see {log})")
        if line != "READY":
            raise RuntimeError(f"agent: unexpected {line!r}; see {log}")
        yield proc
    finally:
        stop(proc)


def scrape(port: int) -> dict[str, float]:
    """The agent's metrics by name, labels dropped: ``{"wuye_edge_outbox_commits_total": 12.0}``.

    Of a labelled family (per bus, per device) only the first line is kept.
    """
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("wuye_edge_"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            out.setdefault(name, float(line.rsplit(" ", 1)[1]))
    return out


# -- the witness ---------------------------------------------------------------------------


class Tally:
    """Client side of bench.tally: ``counts()`` asks the subscriber for its counts."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self._lines = Lines(proc.stdout)
        if (line := self._lines.next(15, "tally READY")) != "READY":
            raise RuntimeError(f"tally: unexpected {line!r}")

    def counts(self) -> dict[str, dict[str, int]]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        counts: dict[str, dict[str, int]] = json.loads(self._lines.next(5, "tally counts"))
        return counts

    def wait_values(self, family: str, timeout_s: float = 60.0) -> None:
        """Return once ``family`` ("wuye" or "tb") delivered values; RuntimeError if not."""
        deadline = time.monotonic() + timeout_s
        first = self.counts()[family]["values"]
        while self.counts()[family]["values"] == first:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {family} values delivered within {timeout_s} s")
            time.sleep(0.2)


@contextlib.contextmanager
def tally(port: int) -> Iterator[Tally]:
    proc = python("-m", "bench.tally", str(port), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        yield Tally(proc)
    finally:
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()
        stop(proc, 5)


# -- measuring -----------------------------------------------------------------------------


def proc_io(pid: int) -> dict[str, int]:
    """``/proc/PID/io`` as numbers: write_bytes reached the block layer, wchar the write calls."""
    rows = Path(f"/proc/{pid}/io").read_text().splitlines()
    return {k: int(v) for k, v in (row.split(": ") for row in rows)}
