"""Load an API with Debian's wrk (C, so the load costs the 2 cores little), and a hub to load.

A benchmark writes its Lua ``request`` function; :func:`run_wrk` adds the ``done`` function
that reports requests, errors and the p50/p99 latencies, runs wrk and reads them back.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from deploy.mosquitto import Mosquitto, free_port

DONE = """
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), summary.duration))
end
"""


def run_wrk(
    base: str, request_lua: str, concurrency: int, duration: float, script: Path
) -> dict[str, float]:
    """Requests/s, p50 and p99 (ms) of ``duration`` s with ``concurrency`` in flight; any
    failed request (a non-2xx included) fails the run."""
    script.write_text(request_lua + DONE)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{concurrency}", f"-d{round(duration)}s", "-s", str(script), base + "/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    requests, errors, p50_us, p99_us, duration_us = (int(x) for x in line.split()[1:])
    assert errors == 0, f"{errors} failed requests:\n{out}"
    return {
        "requests": requests,
        "per_s": requests / (duration_us / 1e6),
        "p50_ms": p50_us / 1000,
        "p99_ms": p99_us / 1000,
    }


@contextlib.contextmanager
def hub_api(db: str, workdir: Path) -> Iterator[str]:
    """``python -m hub serve --no-ingest`` on ``db`` (one process); yields its base URL."""
    broker = Mosquitto(workdir).start()  # the dispatcher (commands, syncs) wants a broker
    port = free_port()
    env = {
        **os.environ,
        "WUYE_HUB_DATABASE_URL": db,
        "WUYE_HUB_MQTT_URL": broker.url,
        "WUYE_HUB_SECRET_FILE": str(workdir / "secret"),
    }
    command = ["-m", "hub", "serve", "--no-ingest", "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(
        [sys.executable, *command], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline().startswith("READY")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(30)
        broker.stop()
