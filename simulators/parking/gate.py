"""A barrier-gate controller on a pseudo-terminal, speaking protocols/parking/frames.py.

    async with GateSimulator(travel_time=0.05) as gate:
        open_port(gate.path)            # or gate.link
        await gate.car_arrives()        # LOOP ARRIVED goes out on the line
        await gate.wait_arm(ArmState.OPEN)
        await gate.car_leaves()         # PASSED; the arm closes after close_delay
        gate.opens_count, gate.duplicates, gate.state

With the default real clock, arm movements and auto-close run on event-loop timers. Give a
``clock`` (e.g. :class:`simulators.clock.ManualClock`) to drive time by hand: nothing moves
until the test advances the clock and calls :meth:`GateSimulator.tick`.

Faults: :meth:`stick_arm` (the arm never arrives; ARM_STUCK after a while),
:meth:`raise_fault` (any controller fault code), :meth:`set_line_fault` (SILENT: deaf and
mute; GARBAGE: noise instead of every frame; BAD_CHECKSUM: every frame's CRC spoilt),
:meth:`drop_replies` (the next replies are lost; the commands are carried out),
:meth:`inject_garbage` and :meth:`inject_bad_checksum` (one-off noise or bad frame now),
:meth:`unplug` / :meth:`replug` (the port disappears and comes back behind the same link).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Self

from protocols.parking.frames import (
    ArmReport,
    ArmState,
    Close,
    FaultCode,
    GateDecoder,
    GateMessage,
    GateStatus,
    Open,
    Query,
    Reply,
    Request,
    encode,
)
from protocols.parking.framing import DecodeStats
from simulators.clock import Clock
from simulators.parking.barrier import BarrierModel
from simulators.parking.pty import PtyLine


class LineFault(StrEnum):
    NONE = "none"
    SILENT = "silent"  # hears nothing, says nothing: a cut cable or a dead controller
    GARBAGE = "garbage"  # noise instead of every frame
    BAD_CHECKSUM = "bad_checksum"  # every frame with a spoilt CRC


@dataclass(slots=True)
class GateSimStats:
    requests: int = 0  # good frames addressed to this gate
    other_address: int = 0  # good frames for another address (ignored, as on RS-485)
    not_requests: int = 0  # good frames a host does not send (ignored)
    sent: int = 0  # frames (or their stand-in noise) written
    replies_dropped: int = 0  # by drop_replies() or SILENT
    bytes_ignored: int = 0  # heard while SILENT


class GateSimulator:
    """One barrier-gate controller at address ``addr`` on its own pty."""

    def __init__(
        self,
        *,
        addr: int = 1,
        link: Path | None = None,
        travel_time: float = 1.5,
        close_delay: float = 0.5,
        auto_close_after: float | None = None,
        stuck_limit: float | None = None,
        dup_window: float = 10.0,
        clock: Clock | None = None,
        seed: int = 0,
        name: str = "gate",
    ) -> None:
        self.name = name
        self._timers = clock is None
        self._clock: Clock = clock if clock is not None else time.monotonic
        self.model = BarrierModel(
            self._clock,
            addr=addr,
            travel_time=travel_time,
            close_delay=close_delay,
            auto_close_after=auto_close_after,
            stuck_limit=stuck_limit,
            dup_window=dup_window,
        )
        self.stats = GateSimStats()
        self.received: deque[Request] = deque(maxlen=1000)  # requests, newest last
        self.line_fault = LineFault.NONE
        self._decoder = GateDecoder()
        self._line = PtyLine(name, self._on_data, link)
        self._rng = random.Random(seed)
        self._drop = 0
        self._timer: asyncio.TimerHandle | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Self:
        await self._line.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop timers, close the pty and remove the link; idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._line.close()

    # what tests and a lot simulator look at

    @property
    def path(self) -> str:
        """The pty to open (``/dev/pts/N``); empty while unplugged."""
        return self._line.path

    @property
    def link(self) -> Path | None:
        return self._line.link

    @property
    def state(self) -> ArmState:
        return self.model.arm

    @property
    def status(self) -> GateStatus:
        return self.model.status

    @property
    def opens_count(self) -> int:
        """OPEN commands carried out; a resent OPEN (same seq) is not counted."""
        return self.model.opens_count

    @property
    def duplicates(self) -> int:
        return self.model.duplicates

    @property
    def decoder_stats(self) -> DecodeStats:
        """Frames from the host that were thrown away, by reason."""
        return self._decoder.stats

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds (checked after every change); no timeout."""
        while not predicate():
            await self._changed.wait()

    async def wait_arm(self, arm: ArmState) -> None:
        await self.wait_until(lambda: self.model.arm is arm)

    # the world

    async def car_arrives(self) -> None:
        """A vehicle drives onto the loop (LOOP ARRIVED; a closing arm goes back up)."""
        self._emit(self.model.vehicle_arrives())

    async def car_leaves(self) -> None:
        """The vehicle leaves the loop: PASSED if the arm was open (it then closes), else LEFT."""
        self._emit(self.model.vehicle_leaves())

    def tick(self) -> None:
        """Catch up with the clock: movements and timers that came due report now."""
        self._emit(self.model.update())

    # faults

    def stick_arm(self, stuck: bool = True) -> None:
        self.model.stuck = stuck
        self._emit([])

    def raise_fault(self, code: FaultCode) -> None:
        self._emit(self.model.raise_fault(code))

    def clear_fault(self) -> None:
        self._emit(self.model.clear_fault())

    def set_line_fault(self, fault: LineFault) -> None:
        self.line_fault = fault

    def drop_replies(self, count: int = 1) -> None:
        """Lose the next ``count`` replies on the line; their commands are still carried out."""
        self._drop += count

    def inject_garbage(self, data: bytes | None = None) -> bytes:
        """Write ``data`` (default: 5 to 24 random bytes) on the line now; returns it."""
        noise = data if data is not None else self._noise()
        self._line.write(noise)
        return noise

    def inject_bad_checksum(self) -> None:
        """Write one status report with a spoilt CRC."""
        self._line.write(encode(ArmReport(self.model.addr, 0, self.status), bad_checksum=True))

    def unplug(self) -> None:
        """The port disappears (clients read EIO); the gate itself keeps working."""
        self._line.unplug()

    def replug(self) -> None:
        """A new pty behind the same link."""
        self._decoder.reset()
        self._line.replug()

    # the line

    def _on_data(self, data: bytes) -> None:
        if self.line_fault is LineFault.SILENT:
            self.stats.bytes_ignored += len(data)
            self._notify()
            return
        for msg in self._decoder.feed(data):
            if msg.addr != self.model.addr:
                self.stats.other_address += 1
            elif isinstance(msg, Open | Close | Query):
                self.stats.requests += 1
                self.received.append(msg)
                self._emit(self.model.handle(msg))
            else:
                self.stats.not_requests += 1

    def _emit(self, messages: list[GateMessage]) -> None:
        for msg in messages:
            self._send(msg)
        self._reschedule()
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _send(self, msg: GateMessage) -> None:
        if self.line_fault is LineFault.SILENT:
            self.stats.replies_dropped += isinstance(msg, Reply)
            return
        if self._drop and isinstance(msg, Reply):
            self._drop -= 1
            self.stats.replies_dropped += 1
            return
        self.stats.sent += 1
        if self.line_fault is LineFault.GARBAGE:
            self._line.write(self._noise())
        else:
            self._line.write(encode(msg, bad_checksum=self.line_fault is LineFault.BAD_CHECKSUM))

    def _noise(self) -> bytes:
        return self._rng.randbytes(self._rng.randint(5, 24))

    def _reschedule(self) -> None:
        if not self._timers:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = self.model.next_deadline()
        if due is not None:
            delay = max(0.0, due - self._clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self.tick)
