"""A lot's devices at the edge wired to its parking service.

Owns the gate controllers, card readers and the camera receiver of the site config's
``parking`` section; turns their events into vehicles at gates (one vehicle read several
times within ``repeat_s`` is one vehicle), and keeps the last verdict per lane for the
booth (a car held at an exit is paid for there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

from edge.config import ParkingConfig
from edge.parking.camera import CameraReceiver
from edge.parking.events import EventQueue
from edge.parking.gate import GateController, GateEventKind
from edge.parking.lot import Verdict
from edge.parking.reader import CardReader
from edge.parking.service import HubLink, Lane, Outbox, ParkingService
from protocols.parking.messages import Action, Direction

log = logging.getLogger(__name__)


class ParkingSite:
    def __init__(
        self, cfg: ParkingConfig, site: str, gateway: str, outbox: Outbox, link: HubLink
    ) -> None:
        self.cfg = cfg
        self.gates = {
            lane.gate: GateController(
                lane.port, address=lane.address, name=lane.gate, baudrate=lane.baudrate
            )
            for lane in cfg.lanes
        }
        self.readers = {
            lane.gate: CardReader(lane.reader, name=f"{lane.gate}-reader")
            for lane in cfg.lanes
            if lane.reader
        }
        self.by_camera = {lane.camera: lane.gate for lane in cfg.lanes if lane.camera}
        self.camera = (
            CameraReceiver(cfg.camera_host, cfg.camera_port, cameras=set(self.by_camera))
            if self.by_camera
            else None
        )
        lanes = {lane.gate: Lane(lane.gate, Direction(lane.direction)) for lane in cfg.lanes}
        self.service = ParkingService(site, gateway, cfg.lot, lanes, self.gates, outbox, link)
        self.service.after_sync.append(self._paid_while_held)
        self._link = link
        # per gate, the last vehicle and its verdict: what the booth shows and acts on
        self.last: dict[str, tuple[Verdict, str | None, str | None]] = {}
        self.low_confidence = 0
        self.repeats = 0
        self._recent: dict[tuple[str, str], float] = {}
        self.booth: Any = None  # edge.parking.booth.Booth when booth_port is set
        self._stack = contextlib.AsyncExitStack()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ParkingSite:
        for gate in self.gates.values():
            await self._stack.enter_async_context(gate)
        for reader in self.readers.values():
            await self._stack.enter_async_context(reader)
        if self.camera is not None:
            await self._stack.enter_async_context(self.camera)
        await self.service.start()
        if self.cfg.booth_port is not None:
            from edge.parking.booth import Booth

            self.booth = await self._stack.enter_async_context(
                Booth(self, self.cfg.booth_host, self.cfg.booth_port)
            )
        for gate_id, reader in self.readers.items():
            self._spawn(f"cards-{gate_id}", self._cards(gate_id, reader))
        if self.camera is not None:
            self._spawn("plates", self._plates(self.camera))
        for gate in self.gates.values():
            self._spawn(f"gate-events-{gate.name}", self._gate_events(gate))
        self._spawn("confirm-on-connect", self._confirm_on_connect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._stack.aclose()

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fresh(self, gate: str, who: str) -> bool:
        """False for a vehicle read again at the same gate within ``repeat_s``."""
        now = time.monotonic()
        key = (gate, who)
        last = self._recent.get(key)
        if len(self._recent) > 10_000:
            self._recent = {k: t for k, t in self._recent.items() if now - t < self.cfg.repeat_s}
        if last is not None and now - last < self.cfg.repeat_s:
            self.repeats += 1
            return False
        self._recent[key] = now
        return True

    async def _decide(self, gate: str, plate: str | None = None, card: str | None = None) -> None:
        try:
            verdict = await self.service.vehicle(gate, plate=plate, card=card)
        except Exception:  # one vehicle's trouble must not stop the lane
            log.exception("deciding for %s at %s failed", plate or card, gate)
        else:
            self.last[gate] = (verdict, plate, card)

    async def _cards(self, gate: str, reader: CardReader) -> None:
        async for read in reader.events:
            if self._fresh(gate, read.uid):
                await self._decide(gate, card=read.uid)

    async def _plates(self, camera: CameraReceiver) -> None:
        # one queue per gate: a car held at one exit (its exit asking the hub) must not
        # hold up the cars at the other gates, while each gate still takes its cars in order
        lanes: dict[str, EventQueue[str]] = {}
        async for ev in camera.events:
            gate = self.by_camera.get(ev.push.camera_id)
            if gate is None:
                continue
            if ev.push.confidence < self.cfg.min_confidence:
                self.low_confidence += 1
                log.info("ignored %s at %s: confidence %d", ev.push.plate, gate, ev.push.confidence)
                continue
            if self._fresh(gate, ev.push.plate):
                if gate not in lanes:
                    lanes[gate] = EventQueue()
                    self._spawn(f"plates-{gate}", self._plate_lane(gate, lanes[gate]))
                lanes[gate].put(ev.push.plate)

    async def _plate_lane(self, gate: str, plates: EventQueue[str]) -> None:
        async for plate in plates:
            await self._decide(gate, plate=plate)

    def _paid_while_held(self) -> None:
        """A car held at an exit whose payment has just arrived (the visitor paid by phone
        at the barrier) is decided again, and let out: nobody has to fetch the booth."""
        paid = {p.session for p in self.service.state.paid.values()}
        for gate, (verdict, plate, card) in list(self.last.items()):
            lane = self.service.lanes[gate]
            if (
                lane.direction is Direction.OUT
                and verdict.action is Action.BOOTH
                and verdict.session in paid
            ):
                self.last.pop(gate)
                self._spawn(f"paid-at-{gate}", self._decide(gate, plate, card))

    async def _confirm_on_connect(self) -> None:
        """Tell the hub which state version is held here each time the link comes up: a
        replaced outbox (and so an empty state) is then noticed and a snapshot sent."""
        link = self._link
        online, changed = getattr(link, "online", None), getattr(link, "changed", None)
        if online is None or changed is None:
            return
        while True:
            await online.wait()
            self.service.confirm()
            async with changed:
                await changed.wait_for(lambda: not online.is_set())

    async def _gate_events(self, gate: GateController) -> None:
        async for ev in gate.events:
            if ev.kind in (GateEventKind.FAULT, GateEventKind.OFFLINE):
                log.warning("gate %s: %s %s", gate.name, ev.kind, ev.fault)

    # -- the booth -----------------------------------------------------------------------------
    async def booth_payment(self, gate: str, fen: int, operator: str) -> Verdict:
        """The booth took ``fen`` for the car last held at exit ``gate``; let it out."""
        last = self.last.get(gate)
        if last is None or last[0].action is not Action.BOOTH:
            raise LookupError(f"no car held at {gate}")
        _, plate, card = last
        verdict = await self.service.booth_payment(gate, plate, fen, operator, card=card)
        self.last[gate] = (verdict, plate, card)
        return verdict

    def stats(self) -> dict[str, int]:
        out = {
            "parking_decisions_total": self.service.decisions,
            "parking_bad_syncs_total": self.service.bad_syncs,
            "parking_gate_failures_total": self.service.gate_failures,
            "parking_low_confidence_total": self.low_confidence,
            "parking_repeats_total": self.repeats,
            "parking_state_version": self.service.state.version,
            "parking_inside": len(self.service.state.sessions),
        }
        if self.camera is not None:
            out["parking_camera_refused_total"] = self.camera.stats.refused
        out["parking_bad_frames_total"] = sum(
            g.decoder_stats.bad_frames for g in self.gates.values()
        ) + sum(r.decoder_stats.bad_frames for r in self.readers.values())
        return out
