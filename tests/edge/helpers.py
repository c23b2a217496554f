"""Building blocks of the edge end-to-end tests: configs, simulators, agents."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from simulators.config import parse_config

ROOT = Path(__file__).resolve().parents[2]


def sim_config(*endpoints: dict[str, Any], seed: int = 1):
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
