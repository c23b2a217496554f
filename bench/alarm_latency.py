"""Latency from a fault injected in a Modbus simulator to the alarm shown on the page.

Every part runs as it would for a user, each in its own process: the simulator (a pump
station on Modbus TCP), the edge agent polling it every ``--interval`` s, Mosquitto, the
hub (``python -m hub serve``: ingest, alarms, API and page in one process), and Debian's
chromium (headless, driven by Playwright) showing the engineers' page. Each round forces
the pump-1 fault bit on through the simulator's control endpoint (the "pump tripped" rule
raises at once, critical) and times until the alarm's row is in the page; then clears the
bit and waits until the row is gone. p50 and p99 over the rounds; several runs, medians.

The polling interval is part of the latency: a fault waits on average half an interval
before the agent reads it.

    .venv/bin/python -m bench.alarm_latency --runs 3 --rounds 20
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import expect, sync_playwright

from bench import rig
from bench.common import median, record
from deploy.mosquitto import Mosquitto, free_port
from hub.auth import Role, create_user
from hub.db import make_engine, session_scope, upgrade
from simulators.control import call

PASSWORD = "bench-password-1"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def once(workdir: Path, rounds: int, interval: float) -> dict[str, Any]:
    broker = Mosquitto(workdir).start()
    db = f"sqlite:///{workdir / f'hub-{time.monotonic_ns()}.db'}"
    upgrade(db)
    engine = make_engine(db)
    with session_scope(engine) as s:
        create_user(s, "eng", PASSWORD, Role.ENGINEER, ["bench"])
    engine.dispose()
    control = free_port()
    api_port = free_port()
    env = {
        **os.environ,
        "WUYE_HUB_DATABASE_URL": db,
        "WUYE_HUB_MQTT_URL": broker.url,
        "WUYE_HUB_SECRET_FILE": str(workdir / "secret"),
        "WUYE_HUB_API_PORT": str(api_port),
        "WUYE_HUB_INGEST_LINGER_MS": "20",
    }
    hub = rig.python("-m", "hub", "serve", "--log-level", "warning", stdout=-1, env=env)
    try:
        assert hub.stdout is not None
        base = rig.Lines(hub.stdout).next(60, "hub READY").split()[1]
        with rig.simulator(workdir, {"plant": ["pump-station:1"]}, control=control) as info:
            devices = rig.sim_devices(info)
            config = rig.site_config(workdir, broker.url, info, devices, interval)
            device = devices[0].id
            with rig.agent(config, workdir / "agent.log"), sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = browser.new_page()
                page.goto(base)
                page.fill("input[name=username]", "eng")
                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit]")
                expect(page.get_by_test_id("live")).to_have_text("live", timeout=30_000)
                # the device is known to the hub (its first data arrived) before timing
                expect(page.get_by_test_id("devices")).to_contain_text(device, timeout=30_000)
                rows = page.locator("#alarms tbody tr", has_text="Pump tripped")
                # checked on every animation frame: expect() polls at up to 1 s intervals,
                # which would be measured instead of the system
                present = "() => [...document.querySelectorAll('#alarms tbody tr')]"
                present += ".some(r => r.textContent.includes('Pump tripped'))"
                shown: list[float] = []
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    call(
                        f"127.0.0.1:{control}",
                        "POST",
                        f"/devices/{device}/force",
                        {"point": "pump1_fault", "value": True},
                    )
                    page.wait_for_function(present, polling="raf", timeout=30_000)
                    shown.append(time.perf_counter() - t0)
                    call(
                        f"127.0.0.1:{control}",
                        "POST",
                        f"/devices/{device}/force",
                        {"point": "pump1_fault", "value": False},
                    )
                    expect(rows).to_have_count(0, timeout=30_000)
                browser.close()
    finally:
        rig.stop(hub)
        broker.stop()
    shown.sort()
    return {
        "rounds": rounds,
        "p50_ms": shown[len(shown) // 2] * 1000,
        "p99_ms": shown[min(len(shown) - 1, int(len(shown) * 0.99))] * 1000,
        "max_ms": shown[-1] * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--interval", type=float, default=1.0, help="the agent's polling period, s")
    args = ap.parse_args()
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as d:
            runs.append(once(Path(d), args.rounds, args.interval))
        print(runs[-1], flush=True)
    record(
        "alarm_latency",
        "bench.alarm_latency",
        {
            "interval_s": args.interval,
            "runs": runs,
            "p50_ms": round(median([r["p50_ms"] for r in runs]), 1),
            "p99_ms": round(median([r["p99_ms"] for r in runs]), 1),
        },
    )


if __name__ == "__main__":
    main()
