"""`make demo` runs `python -m simulators demo`: a whole community, end to end."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_a_community_end_to_end(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "simulators", "demo", "--duration", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "BIRTH gateway gw-01 (bdseq 0, 15 devices)" in out
    # a meter on the RS-485 pty line and the pump station on Modbus TCP both report
    assert any(
        line.split()[1:2] == ["em-101"] and "energy_import=" in line for line in out.splitlines()
    )
    assert any(
        line.split()[1:2] == ["ps-1"] and "outlet_pressure=" in line for line in out.splitlines()
    )
    assert "EVENT device_offline" not in out
    assert "hub API     http://127.0.0.1:" in out and "login: admin / " in out
    # the lot's state reaches the edge, and a car goes in through a gate on a pty
    assert "SYNCED lot north-gate: the edge holds version" in out
    # the fee scene: rooms billed, a receipt at the desk, an owner paying online
    fees = next(line for line in out.splitlines() if line.startswith("fees "))
    assert "rooms of sunny-garden; bill run" in fees
    assert re.search(r"desk: receipt \d{4}-\d{6} [\d.]+ 元 by cashier-sun", out)
    assert "owner-li paid order" in out or "owner-li paid nothing owed" in out
    assert any(" PARK entry " in line and " in1 open " in line for line in out.splitlines())


def test_the_demo_restarts_a_hub_whose_ingest_died():
    """The demo runs its hub as deploy/ does, under a supervisor: made to die (the test
    hook), it exits 70 and is back on the same address."""
    import os
    import re
    import threading
    import time

    import httpx

    die = "wuye/v1/demo-test/gw-x/status"
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators", "demo", "--duration", "25"],
        cwd=ROOT,
        env={**os.environ, "WUYE_HUB_TEST_DIE_TOPIC": die},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = ""
        for line in proc.stdout:
            banner += line
            if "hub API" in line:
                break
        port = re.search(r"broker +mqtt://127\.0\.0\.1:(\d+)", banner)
        api = re.search(r"hub API +(http://\S+)/docs", banner)
        assert port and api, banner
        rest: list[str] = []  # keep reading: a full pipe would stall the demo
        reader = threading.Thread(target=lambda: rest.extend(proc.stdout or ()), daemon=True)
        reader.start()
        subprocess.run(["mosquitto_pub", "-p", port[1], "-t", die, "-m", "{}"], check=True)
        log = ROOT / "var" / "demo" / "hub.log"
        deadline, tick = time.monotonic() + 60, threading.Event()
        while "exited 70; restart 1" not in log.read_text():  # the supervisor says so
            assert time.monotonic() < deadline, "the hub was not restarted"
            tick.wait(0.2)
        while True:  # until the new hub listens on the same address
            try:
                health = httpx.get(f"{api[1]}/health", timeout=5)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the restarted hub does not answer"
                tick.wait(0.2)
        assert health.status_code == 200
        code = proc.wait(90)
        reader.join(10)
        assert code == 0, (proc.stderr.read() if proc.stderr else "") + "".join(rest[-20:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
