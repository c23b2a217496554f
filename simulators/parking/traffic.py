"""``python -m simulators parking``: a lot's gates on pseudo-terminals and cars through them,
in real time, talking to a running edge agent and hub the way the real world does.

The barrier gates (one entry, one exit) live on ptys linked at stable paths in the work
directory; the agent's site config points at them. Once the agent's camera receiver
answers, a car arrives every few seconds: its plate is pushed by the entry camera, it
drives over the loop when the arm is up, stays a while, and leaves by the exit camera. Some
visitors pay first on their phone (the hub's visitor API, then the sandbox provider's pay
link), the others pay at the booth (the agent's booth interface) when the exit holds
them; pass holders just drive through. Each car's story is printed (on stderr) as it happens.

Prints ``READY {"in1": "/path/of/pty", "out1": "..."}`` once the gates exist.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from protocols.parking.frames import ArmState
from simulators.parking.camera import PlateCamera
from simulators.parking.gate import GateSimulator

_SERIAL = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # Chinese plates use no I or O


@dataclass(frozen=True)
class Endpoints:
    camera: str  # the agent's camera receiver, e.g. http://127.0.0.1:8088/api/plates
    booth: str  # the agent's booth interface
    hub: str  # the hub's API
    lot: str


def plate(rng: random.Random) -> str:
    return "浙A" + "".join(rng.choice(_SERIAL) for _ in range(5))


async def drive(
    gates: dict[str, GateSimulator],
    ends: Endpoints,
    *,
    passes: list[str],
    every_s: float,
    stay_s: tuple[float, float],
    online_share: float = 0.4,
    seed: int = 1,
    log: bool = True,
) -> None:
    """Cars until cancelled; each car runs as its own task."""
    rng = random.Random(seed)
    cam_in = PlateCamera(ends.camera, "cam-in1", "in", seed=seed)
    cam_out = PlateCamera(ends.camera, "cam-out1", "out", seed=seed + 1)
    lanes = {"in1": asyncio.Lock(), "out1": asyncio.Lock()}  # one car at a time per lane

    def say(text: str) -> None:
        if log:  # stdout carries only the READY line
            print(text, file=sys.stderr, flush=True)

    async def through(gate: GateSimulator, lock: asyncio.Lock, cam: PlateCamera, p: str) -> bool:
        async with lock:
            before = gate.opens_count
            await cam.recognize(p)
            try:
                async with asyncio.timeout(3):
                    await gate.wait_until(lambda: gate.opens_count > before)
            except TimeoutError:
                return False
            await gate.wait_arm(ArmState.OPEN)
            await gate.car_arrives()
            await gate.car_leaves()
            return True

    async def car(p: str, holder: bool) -> None:
        in_gate, out_gate = gates["in1"], gates["out1"]
        if not await through(in_gate, lanes["in1"], cam_in, p):
            say(f"{p}: refused at the entry")
            return
        say(f"{p}: in{' (pass)' if holder else ''}")
        await asyncio.sleep(rng.uniform(*stay_s))  # the car is parked: real time passes
        async with httpx.AsyncClient(timeout=10) as http:
            if not holder and rng.random() < online_share:
                await pay_online(http, ends, p, say)
            if await through(out_gate, lanes["out1"], cam_out, p):
                say(f"{p}: out")
                return
            held = (await http.get(f"{ends.booth}/booth")).json().get("out1", {})
            due = int(held.get("due_fen", 0))
            async with lanes["out1"]:
                before = out_gate.opens_count
                r = await http.post(
                    f"{ends.booth}/booth/out1/pay", json={"fen": due, "operator": "demo"}
                )
                if r.status_code != 200:
                    say(f"{p}: the booth could not let it out: {r.text}")
                    return
                await out_gate.wait_until(lambda: out_gate.opens_count > before)
                await out_gate.car_arrives()
                await out_gate.car_leaves()
            say(f"{p}: paid {due / 100:.2f} yuan at the booth, out")

    tasks: set[asyncio.Task[None]] = set()
    parked: set[str] = set()  # pass holders inside: the same car does not arrive twice

    async def holder_car(p: str) -> None:
        parked.add(p)
        try:
            await car(p, True)
        finally:
            parked.discard(p)

    try:
        while True:
            free = [p for p in passes if p not in parked]
            if free and rng.random() < 0.3:
                t = asyncio.create_task(holder_car(rng.choice(free)))
            else:
                t = asyncio.create_task(car(plate(rng), False))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            await asyncio.sleep(rng.expovariate(1 / every_s))
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def pay_online(http: httpx.AsyncClient, ends: Endpoints, p: str, say: object) -> None:
    """What a visitor's phone does: look the car up, order, pay at the provider's link."""
    quote = await http.get(f"{ends.hub}/api/v1/parking/{ends.lot}/quote", params={"plate": p})
    if quote.status_code != 200 or quote.json()["due_fen"] == 0:
        return
    order = await http.post(
        f"{ends.hub}/api/v1/parking/{ends.lot}/pay",
        json={"plate": p},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    if order.status_code != 201:
        return
    o = order.json()
    pay_url = o["pay"]["pay_url"].replace("/pay/", "/orders/") + "/pay"
    await http.post(pay_url, json={"payer": p})
    if callable(say):
        say(f"{p}: paid {o['amount_fen'] / 100:.2f} yuan online")


async def wait_for(url: str, timeout: float = 60) -> None:
    """Until something answers HTTP at ``url`` (the agent starts after the gates exist)."""
    async with asyncio.timeout(timeout), httpx.AsyncClient(timeout=2) as http:
        while True:
            try:
                await http.get(url)
                return
            except httpx.TransportError:
                await asyncio.sleep(0.2)  # nothing to wait on but the port opening


async def wait_synced(booth: str, timeout: float = 60) -> None:
    """Until the agent holds the lot's state from the hub (before that, cars go to the booth)."""
    async with asyncio.timeout(timeout), httpx.AsyncClient(timeout=2) as http:
        while True:
            if (await http.get(f"{booth}/booth/lot")).json()["version"] > 0:
                return
            await asyncio.sleep(0.2)  # the agent has no event to offer over HTTP


async def serve(
    workdir: Path, ends: Endpoints, passes: list[str], every_s: float, stay_s: tuple[float, float]
) -> None:
    async with (
        GateSimulator(name="in1", link=workdir / "gate-in1.pty", travel_time=0.8) as gate_in,
        GateSimulator(name="out1", link=workdir / "gate-out1.pty", travel_time=0.8) as gate_out,
    ):
        print("READY " + json.dumps({"in1": gate_in.path, "out1": gate_out.path}), flush=True)
        await wait_for(ends.camera.rsplit("/api/", 1)[0] + "/")
        await wait_for(ends.booth + "/booth")
        await wait_synced(ends.booth)
        await drive(
            {"in1": gate_in, "out1": gate_out}, ends, passes=passes, every_s=every_s, stay_s=stay_s
        )
