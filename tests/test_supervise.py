"""A hub whose ingest thread dies exits 70 and is started again by its supervisor."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from deploy.mosquitto import free_port
from deploy.supervise import supervise

ROOT = Path(__file__).resolve().parent.parent
DIE = "wuye/v1/s1/gw-1/status"


def lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    q: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            q.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return q


def next_ready(q: queue.Queue[str], timeout: float = 60) -> str:
    while True:
        line = q.get(timeout=timeout)  # raises queue.Empty after the deadline
        if line.startswith("READY"):
            return line.split()[1]


def test_the_supervisor_restarts_a_hub_whose_ingest_died(broker, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "WUYE_HUB_DATABASE_URL": f"sqlite:///{tmp_path / 'hub.db'}",
        "WUYE_HUB_MQTT_URL": broker.url,
        "WUYE_HUB_SECRET_FILE": str(tmp_path / "secret"),
        "WUYE_HUB_API_PORT": str(port),
        "WUYE_HUB_TEST_DIE_TOPIC": DIE,
    }
    cmd = [sys.executable, "-m", "deploy.supervise", "--backoff", "0.2", "--"]
    proc = subprocess.Popen(
        [*cmd, sys.executable, "-m", "hub", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out = lines_of(proc)
        api = next_ready(out)
        assert httpx.get(f"{api}/health").json()["ingest"] == "connected"
        subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-t", DIE, "-m", "{}"], check=True)
        assert next_ready(out) == api  # the second hub, on the same port
        health = httpx.get(f"{api}/health")
        assert health.status_code == 200 and health.json()["ingest"] in (
            "connected",
            "disconnected",
        )
        proc.terminate()  # passed on to the hub, which stops cleanly: so does the supervisor
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read() if proc.stderr else ""
    assert "the ingest thread died" in err and "exited 70; restart 1" in err


def test_the_supervisor_stops_on_a_clean_exit_and_gives_up_when_told():
    assert supervise([sys.executable, "-c", "pass"]) == 0
    assert (
        supervise([sys.executable, "-c", "raise SystemExit(3)"], backoff=0.01, max_restarts=2) == 3
    )
