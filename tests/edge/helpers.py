"""Building blocks of the edge end-to-end tests: configs, simulators, agents."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from simulators.config import parse_config

ROOT = Path(__file__).resolve().parents[2]


def sim_config(*endpoints: dict[str, Any], seed: int = 1) -> Any:
    return parse_config({"seed": seed, "endpoints": list(endpoints)}, "test")


def tcp_endpoint(name: str, *devices: str) -> dict[str, Any]:
    return {
        "name": name,
        "tcp": {"host": "127.0.0.1", "port": 0},
        "devices": [_dev(d) for d in devices],
    }


def rtu_endpoint(name: str, *devices: str, baud: int | None = None) -> dict[str, Any]:
    return {"name": name, "rtu": {"baud": baud}, "devices": [_dev(d) for d in devices]}


def _dev(word: str) -> dict[str, Any]:
    profile, _, unit = word.partition(":")
    return {"profile": profile, "unit": unit, "id": f"{profile}-{{unit}}"}


def site_config(
    tmp_path: Path,
    broker_url: str,
    buses: list[dict[str, Any]],
    devices: list[dict[str, Any]],
    **extra: Any,
) -> Path:
    """Write a site config for the agent and return its path."""
    cfg = {
        "site": "test-site",
        "gateway": "gw-1",
        "broker": {"url": broker_url, "keepalive": 2},
        "outbox": {"path": str(tmp_path / "outbox.db"), "commit_interval": 0.2},
        "buses": buses,
        "devices": devices,
        **extra,
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def start_agent(config: Path) -> subprocess.Popen[str]:
    """``python -m edge run`` as a user runs it; returns once it printed READY."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(config), "--plain-logs"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "READY":
        proc.kill()
        raise AssertionError(
            f"agent did not start: {line}{proc.stderr.read() if proc.stderr else ''}"
        )
    return proc


def sim_site(
    tmp_path: Path,
    broker_url: str,
    sim: Any,
    *,
    interval: float,
    bus: dict[str, Any] | None = None,
    device: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """A site config polling every device of a running simulator, on its own endpoints.

    TCP endpoints become tcp buses, RTU endpoints rtu buses at 115200 baud; ``bus`` and
    ``device`` add settings to every bus and device.
    """
    buses = []
    for e in sim.config.endpoints:
        if e.tcp is not None:
            b = {"name": e.name, "type": "tcp", "host": "127.0.0.1", "port": sim.tcp_port(e.name)}
        else:
            b = {"name": e.name, "type": "rtu", "port": sim.rtu_path(e.name), "baudrate": 115200}
        buses.append({**b, **(bus or {})})
    devices = [
        {
            "id": d.id,
            "bus": d.endpoint,
            "unit": d.unit,
            "profile": d.profile.name,
            "interval": interval,
            **(device or {}),
        }
        for d in sim.devices.values()
    ]
    return site_config(tmp_path, broker_url, buses, devices, **extra)
