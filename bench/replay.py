"""Replay after an outage: N messages buffered in the outbox, then the broker comes back.

The outbox is filled first; then a fresh process (as the agent would be after a restart)
runs the MQTT link against a real Mosquitto while a separate process counts deliveries.
Measured: messages/s from connect to the last PUBACK, and the replaying process's RSS,
sampled every 0.5 s (flat is the target: the outbox is paged from disk, never loaded whole).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psutil

from bench.common import exit_on_sigterm, measure_quietly, median, record, spawn_python
from deploy.mosquitto import Mosquitto
from edge.config import BrokerConfig
from edge.link import MqttLink
from edge.outbox import Outbox
from protocols.mqtt import Birth, Kind, Topic

SITE, GW = "bench", "gw-replay"
VALUES = {
    "voltage_a": 229.87,
    "voltage_b": 230.12,
    "voltage_c": 231.02,
    "current_a": 3.21,
    "current_b": 2.98,
    "current_c": 3.05,
    "active_power": 2.113,
    "power_factor": 0.982,
    "energy_import": 12345.67,
    "energy_export": 0.0,
}


async def fill(path: Path, n: int) -> None:
    topic = str(Topic(SITE, GW, Kind.DATA, "em-1"))
    ts = int(time.time() * 1000) - 3600_000
    async with Outbox(path, max_bytes=2**40) as ob:
        for i in range(n):
            body = orjson.dumps({"ts": ts + i, "dev": "em-1", "values": VALUES})
            ob.put_nowait(topic, body, created=ts + i, critical=False)
            if i % 20_000 == 19_999:
                await ob.flush()


async def _no_commands(payload: bytes) -> None:
    return None


async def replay(path: Path, port: int, n: int, window: int, timeout_s: float) -> None:
    """The child: replay the outbox and print the elapsed time once all n are acked.

    Gives up after timeout_s (and prints no DONE line).
    """
    async with Outbox(path, max_bytes=2**40) as ob:
        link = MqttLink(
            SITE,
            GW,
            BrokerConfig(url=f"mqtt://127.0.0.1:{port}"),
            ob,
            lambda b, s: Birth(
                gw=GW, site=SITE, bdseq=b, stream=s, ts=0, agent="bench", devices=()
            ),
            _no_commands,
            window=window,
            replay_rate=1e9,
        )
        print("READY", flush=True)
        t0 = time.perf_counter()
        task = asyncio.create_task(link.run())
        while link.acked < n and time.perf_counter() - t0 < timeout_s:
            await asyncio.sleep(0.2)
        if link.acked >= n:
            print(f"DONE {time.perf_counter() - t0:.3f}", flush=True)
        await link.close()
        await task


def timeout_for(n: int) -> float:
    """Bound on one replay: ten times slower than the target (5,000 msg/s), at least 2 min."""
    return max(120.0, n / 500)


def once(n: int, window: int, workdir: Path) -> dict[str, float]:
    path = workdir / "outbox.db"
    timeout_s = timeout_for(n)
    for f in workdir.glob("outbox.db*"):
        f.unlink()
    asyncio.run(fill(path, n))
    broker = Mosquitto(workdir).start()
    counter = spawn_python(
        "-m",
        "bench.counter",
        str(broker.port),
        "wuye/+/+/+/data/#",
        str(n),
        str(timeout_s + 10),
        stdout=subprocess.PIPE,
    )
    child = spawn_python(
        "-m",
        "bench.replay",
        "--child",
        str(path),
        str(broker.port),
        str(n),
        str(window),
        str(timeout_s),
        stdout=subprocess.PIPE,
    )
    try:
        assert counter.stdout is not None and child.stdout is not None
        assert counter.stdout.readline().strip() == "READY"
        assert child.stdout.readline().strip() == "READY"
        proc = psutil.Process(child.pid)
        rss: list[float] = []
        start_cpu = cpu = proc.cpu_times()
        deadline = time.monotonic() + timeout_s + 30
        while child.poll() is None and time.monotonic() < deadline:
            try:
                rss.append(proc.memory_info().rss / 2**20)
                cpu = proc.cpu_times()
            except psutil.NoSuchProcess:
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(0.5)
        child.kill()
        out = child.stdout.read()
        done = [x for x in out.splitlines() if x.startswith("DONE")]
        if not done:
            raise RuntimeError(f"replay of {n} messages did not finish within {timeout_s:.0f} s")
        elapsed = float(done[0].split()[1])
        received = int(counter.stdout.readline().split()[1])
        if received < n:
            raise RuntimeError(f"the subscriber received {received} of {n} messages")
    finally:
        counter.kill()
        child.kill()
        broker.stop()
    return {
        "msgs_per_s": round(n / elapsed),
        "received": received,
        "cpu_s": round(cpu.user + cpu.system - start_cpu.user - start_cpu.system, 2),
        "rss_first_mb": round(rss[1] if len(rss) > 1 else rss[0], 1),
        "rss_max_mb": round(max(rss), 1),
        "rss_last_mb": round(rss[-1], 1),
        "rss_growth_mb": round(max(rss) - (rss[1] if len(rss) > 1 else rss[0]), 1),
    }


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        path, port, n, window, timeout_s = sys.argv[2:7]
        asyncio.run(replay(Path(path), int(port), int(n), int(window), float(timeout_s)))
        return
    exit_on_sigterm()
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--window", type=int, default=100)
    args = ap.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as d:
        for _ in range(args.runs):
            runs.append(measure_quietly(lambda: once(args.messages, args.window, Path(d))))
            print(runs[-1], flush=True)
    record(
        "replay",
        "bench.replay",
        {
            "messages": args.messages,
            "window": args.window,
            "runs": runs,
            "median_msgs_per_s": median([r["msgs_per_s"] for r in runs]),
            "median_rss_max_mb": median([r["rss_max_mb"] for r in runs]),
            "median_rss_growth_mb": median([r["rss_growth_mb"] for r in runs]),
            "target": ">= 5000 msg/s with flat memory (RSS growth <= 5 MB while replaying)",
            "meets_target": all(r["msgs_per_s"] >= 5000 and r["rss_growth_mb"] <= 5 for r in runs),
        },
    )


if __name__ == "__main__":
    main()
