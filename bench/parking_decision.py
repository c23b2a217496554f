"""Decision latency at a lot's gates: a plate pushed (or a card tapped) to the OPEN frame on
the gate controller's line, p50 and p99, with the hub up and with the hub down.

Each run: Mosquitto; the hub (``python -m hub serve``, SQLite) with one lot, 20 passes on
plates and 10 on IC cards; the edge agent (``python -m edge run``) with 2 entry and 2 exit
lanes. The lanes' devices are simulators in this process: gate controllers and card readers
on pseudo-terminals, plate cameras pushing over HTTP. Vehicles come one at a time,
``--gap-ms`` apart: temporary cars entering, and leaving within the free minutes (the exit
still prices the stay), pass holders by plate, card holders by card. A decision is timed
from just before the camera's POST (or the card frame's write on the reader's line) to the
moment this process reads the OPEN frame off the gate's line: the edge's whole path (HTTP
or serial in, the decision, the SQLite commit of its record, the frame out), seen from
outside. Then the broker is stopped (the edge reaches neither broker nor hub and decides
alone) and the same is measured again.

    .venv/bin/python -m bench.parking_decision --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench import rig
from bench.common import (
    MAX_FOREIGN,
    ForeignCpu,
    exit_on_sigterm,
    median,
    record,
    wait_quiet,
)
from deploy.mosquitto import Mosquitto, free_port
from hub.auth import Role, create_user
from hub.db import make_engine, session_scope, upgrade
from hub.parking import service as parking
from hub.parking.models import ParkingPass
from protocols.parking.frames import ArmState
from protocols.parking.messages import Policy
from simulators.parking.camera import PlateCamera
from simulators.parking.gate import GateSimulator
from simulators.parking.reader import CardReaderSimulator

TARGET_P99_MS = 20.0
LOT, SITE, GW = "bench-lot", "bench", "gw-park"
IN, OUT = ("in1", "in2"), ("out1", "out2")
PASSWORD = "bench-password-1"
RULE = {
    "kind": "standard",
    "free_minutes": 15,
    "first": {"minutes": 60, "fen": 500},
    "step": {"minutes": 30, "fen": 200},
    "cap_fen": 3000,
}


class TimedGate(GateSimulator):
    """A gate controller that notes when each OPEN it carries out came off its line."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.opened_at: list[float] = []

    def _on_data(self, data: bytes) -> None:
        t = time.perf_counter()
        before = self.model.opens_count
        super()._on_data(data)
        if self.model.opens_count > before:
            self.opened_at.append(t)


@dataclass(frozen=True)
class Car:
    plate: str | None
    card: str | None = None


def fleet(rng: random.Random) -> tuple[list[Car], list[Car]]:
    """(every car, the pass holders): 30 temporary, 20 passes on plates, 10 on cards."""
    serial = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    plates = sorted({"浙B" + "".join(rng.choices(serial, k=5)) for _ in range(60)})[:50]
    cards = [Car(None, f"{rng.getrandbits(32):08X}") for _ in range(10)]
    holders = [Car(p) for p in plates[:20]] + cards
    return [Car(p) for p in plates[20:]] + holders, holders


def prepare(db: str, holders: list[Car]) -> None:
    upgrade(db)
    engine = make_engine(db)
    now = datetime.now(UTC)
    with session_scope(engine) as s:
        create_user(s, "bench", PASSWORD, Role.HQ_ADMIN)
        parking.create_lot(s, LOT, SITE, GW, Policy(capacity=500, rule=RULE))
    for car in holders:
        with session_scope(engine) as s:
            p = ParkingPass(
                id=parking.new_id(),
                lot_id=LOT,
                plate=car.plate,
                card=car.card,
                start=now - timedelta(days=1),
                end=now + timedelta(days=30),
            )
            parking.put_pass(s, p)
    engine.dispose()


def site_config(
    workdir: Path, broker: str, gates: dict[str, TimedGate], readers: dict[str, Any], ports: Any
) -> Path:
    lanes = [
        {
            "gate": g,
            "direction": "in" if g in IN else "out",
            "port": gates[g].path,
            "reader": readers[g].path,
            "camera": f"cam-{g}",
        }
        for g in (*IN, *OUT)
    ]
    cfg = {
        "site": SITE,
        "gateway": GW,
        "broker": {"url": broker},
        "outbox": {"path": str(workdir / "outbox.db")},
        "metrics_port": ports["metrics"],
        "parking": {
            "lot": LOT,
            "camera_host": "127.0.0.1",
            "camera_port": ports["camera"],
            "repeat_s": 0,  # the bench never sends one vehicle twice
            "lanes": lanes,
        },
    }
    path = workdir / "site.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


async def drive(
    cars: list[Car],
    n: int,
    gap_s: float,
    gates: dict[str, TimedGate],
    readers: dict[str, CardReaderSimulator],
    cameras: dict[str, PlateCamera],
    rng: random.Random,
    inside: set[Car],
) -> list[tuple[str, float]]:
    """``n`` vehicles through the lanes, one at a time; each one's (how it showed itself,
    latency in seconds)."""
    out: list[tuple[str, float]] = []
    for i in range(n):
        car = cars[i % len(cars)]
        going_in = car not in inside
        gate = rng.choice(IN if going_in else OUT)
        sim = gates[gate]
        async with asyncio.timeout(5):
            await sim.wait_arm(ArmState.CLOSED)
        await sim.car_arrives()
        k = len(sim.opened_at)
        t0 = time.perf_counter()
        if car.card:
            await readers[gate].present(car.card)
        else:
            assert car.plate is not None
            r = await cameras[gate].recognize(car.plate)
            assert r.status == 200, r.body
        async with asyncio.timeout(5):
            await sim.wait_until(lambda s=sim, k=k: len(s.opened_at) > k)  # type: ignore[misc]
            out.append(("card" if car.card else "plate", sim.opened_at[k] - t0))
            await sim.wait_arm(ArmState.OPEN)
        await sim.car_leaves()
        inside.symmetric_difference_update({car})
        await asyncio.sleep(gap_s)  # the next vehicle's arrival, not a wait for a result
    return out


def stats(latencies: list[tuple[str, float]]) -> dict[str, Any]:
    def of(values: list[float]) -> dict[str, float]:
        ms = sorted(x * 1000 for x in values)
        return {
            "n": len(ms),
            "p50_ms": round(ms[len(ms) // 2], 2),
            "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
            "max_ms": round(ms[-1], 2),
        }

    by_kind = {k: of([t for kind, t in latencies if kind == k]) for k in ("plate", "card")}
    return {**of([t for _, t in latencies]), **by_kind}


def once(n: int, gap_s: float, seed: int) -> dict[str, Any]:
    workdir = rig.WORK / "parking-decision"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    _, holders = fleet(random.Random(0))
    db = f"sqlite:///{workdir / 'hub.db'}"
    prepare(db, holders)
    broker = Mosquitto(workdir).start()
    ports = {"hub": free_port(), "camera": free_port(), "metrics": free_port()}
    env = {
        **os.environ,
        "WUYE_HUB_DATABASE_URL": db,
        "WUYE_HUB_MQTT_URL": broker.url,
        "WUYE_HUB_SECRET_FILE": str(workdir / "secret"),
    }
    with open(workdir / "hub.log", "w") as hub_log:
        hub = subprocess.Popen(
            [sys.executable, "-m", "hub", "serve", "--port", str(ports["hub"])],
            env=env,
            stdout=subprocess.PIPE,
            stderr=hub_log,
            text=True,
        )
    try:
        assert hub.stdout is not None
        line = rig.Lines(hub.stdout).next(60, "hub READY")
        assert line.startswith("READY"), line
        up, down, up_foreign, down_foreign = asyncio.run(
            measure(workdir, broker, ports, n, gap_s, random.Random(seed))
        )
    finally:
        rig.stop(hub)
        broker.stop()
    return {
        "hub_up": {**stats(up), "foreign_core_percent": up_foreign},
        "hub_down": {**stats(down), "foreign_core_percent": down_foreign},
    }


async def measure(
    workdir: Path,
    broker: Mosquitto,
    ports: dict[str, int],
    n: int,
    gap_s: float,
    rng: random.Random,
) -> tuple[list[tuple[str, float]], list[tuple[str, float]], float, float]:
    """Latencies with the broker up, then stopped; and others' CPU meanwhile (% of a core)."""
    cars, _ = fleet(random.Random(0))
    async with contextlib.AsyncExitStack() as stack:
        gates = {
            g: await stack.enter_async_context(
                TimedGate(name=g, travel_time=0.002, close_delay=0.002)
            )
            for g in (*IN, *OUT)
        }
        readers = {
            g: await stack.enter_async_context(CardReaderSimulator(name=f"{g}-reader"))
            for g in (*IN, *OUT)
        }
        url = f"http://127.0.0.1:{ports['camera']}/api/plates"
        cameras = {g: PlateCamera(url, f"cam-{g}", "in" if g in IN else "out") for g in gates}
        config = site_config(workdir, broker.url, gates, readers, ports)
        # the agent's start is waited for on a thread: the gates answer it meanwhile
        started = rig.agent(config, workdir / "agent.log")
        agent = await asyncio.to_thread(started.__enter__)
        stack.push_async_callback(asyncio.to_thread, started.__exit__, None, None, None)
        await synced(f"http://127.0.0.1:{ports['hub']}")
        inside: set[Car] = set()
        foreign = ForeignCpu()
        up = await drive(cars, n, gap_s, gates, readers, cameras, rng, inside)
        up_foreign = foreign.core_percent()
        await asyncio.to_thread(broker.stop)
        await offline(ports["metrics"])
        foreign = ForeignCpu()
        down = await drive(cars, n, gap_s, gates, readers, cameras, rng, inside)
        down_foreign = foreign.core_percent()
        if agent.poll() is not None:
            raise RuntimeError(f"the agent exited; see {workdir}")
    return up, down, up_foreign, down_foreign


async def synced(hub: str) -> None:
    """Until the edge confirms the lot's state (its passes) to the hub."""
    async with httpx.AsyncClient(base_url=hub, trust_env=False) as http:
        r = await http.post("/api/v1/auth/token", data={"username": "bench", "password": PASSWORD})
        auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
        deadline = time.monotonic() + 30
        while True:
            lot = (await http.get(f"/api/v1/lots/{LOT}", headers=auth)).json()
            if lot["sync"]["confirmed"] == lot["version"]:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the edge did not confirm the lot's state: {lot}")
            await asyncio.sleep(0.1)


async def offline(metrics_port: int) -> None:
    """Until the agent says it lost the broker."""
    deadline = time.monotonic() + 30
    while True:
        online = await asyncio.to_thread(rig.scrape, metrics_port)
        if online.get("wuye_edge_mqtt_online") == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the agent did not notice the broker stopping")
        await asyncio.sleep(0.1)


def quietly(n: int, gap_s: float, seed: int) -> dict[str, Any]:
    """A run on a quiet machine; again (3 tries at most) if others took CPU meanwhile."""
    for attempt in range(1, 4):
        quiet = wait_quiet()
        result = once(n, gap_s, seed)
        others = max(result[m]["foreign_core_percent"] for m in ("hub_up", "hub_down"))
        if others <= MAX_FOREIGN or attempt == 3:
            return {
                **result,
                "quiet": quiet,
                "disturbed": others > MAX_FOREIGN,
                "attempts": attempt,
            }
        print(f"others used {others:.0f}% of a core meanwhile; measuring again", file=sys.stderr)
    raise AssertionError("unreachable")


def main() -> None:
    exit_on_sigterm()
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--vehicles", type=int, default=600, help="per run and mode")
    ap.add_argument("--gap-ms", type=float, default=20.0, help="between two vehicles")
    args = ap.parse_args()
    load_before = os.getloadavg()
    runs = [quietly(args.vehicles, args.gap_ms / 1000, seed) for seed in range(args.runs)]
    load_after = os.getloadavg()
    result: dict[str, Any] = {"vehicles": args.vehicles, "gap_ms": args.gap_ms, "runs": runs}
    for mode in ("hub_up", "hub_down"):
        p99 = median([r[mode]["p99_ms"] for r in runs])
        result[mode] = {
            "p50_ms": round(median([r[mode]["p50_ms"] for r in runs]), 2),
            "p99_ms": round(p99, 2),
            **{
                f"{kind}_{q}": round(median([r[mode][kind][q] for r in runs]), 2)
                for kind in ("plate", "card")
                for q in ("p50_ms", "p99_ms")
            },
            "target_p99_ms": TARGET_P99_MS,
            "of_target": round(p99 / TARGET_P99_MS, 2),
        }
    result["load1_before_after"] = [round(load_before[0], 2), round(load_after[0], 2)]
    record("parking_decision", "bench.parking_decision", result)


if __name__ == "__main__":
    main()
