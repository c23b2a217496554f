"""`make demo` runs `python -m simulators demo`: a whole community, end to end."""

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
    assert any(" PARK entry " in line and " in1 open " in line for line in out.splitlines())
