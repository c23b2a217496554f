"""The barrier-gate controller driver: the one owner of the gate's serial line.

    async with GateController("/dev/ttyUSB0", address=1, name="gate-in-1") as gate:
        await gate.open()                 # ACK, or GateRefused / GateNoReply / TransportError
        status = await gate.status()
        async for event in gate.events:   # GateEvent: arm, vehicle, fault, online/offline
            ...

Commands are serialised (one request on the line at a time, as RS-485 needs) and carry a
sequence number; a command with no answer is sent again with the same number every
``reply_timeout`` until it is answered or ``command_timeout`` runs out. The gate does not
carry out a resend twice, so an OPEN whose ACK was lost opens the gate once.

States: CONNECTING (the port is not open: not yet, or lost and being reopened), SILENT
(open, but the gate has not answered: since the port opened, or its last request went
unanswered), ONLINE (it answered or reported), CLOSED. The driver asks the gate's status
on every (re)connect and every ``poll_interval`` seconds, which also refreshes
:attr:`GateController.last_status` if a report was lost on the line.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType
from typing import Self

from edge.parking.events import EventQueue
from edge.parking.serialport import SerialLine
from protocols.errors import DeviceError, TransportError
from protocols.parking.frames import (
    Ack,
    ArmReport,
    Close,
    Command,
    FaultCode,
    FaultReport,
    GateDecoder,
    GateMessage,
    GateStatus,
    LoopEvent,
    LoopReport,
    Nak,
    NakReason,
    Open,
    Query,
    Reply,
    Request,
    StatusReply,
    encode,
)
from protocols.parking.framing import DecodeStats

log = logging.getLogger(__name__)


class GateState(StrEnum):
    CONNECTING = "connecting"
    SILENT = "silent"
    ONLINE = "online"
    CLOSED = "closed"


class GateEventKind(StrEnum):
    ARM = "arm"  # the arm changed state: event.status.arm
    VEHICLE_ARRIVED = "vehicle_arrived"
    VEHICLE_PASSED = "vehicle_passed"  # left the loop with the arm open: went through
    VEHICLE_LEFT = "vehicle_left"  # left the loop without passing
    FAULT = "fault"  # event.fault
    FAULT_CLEARED = "fault_cleared"
    ONLINE = "online"  # the driver hears the gate (again)
    OFFLINE = "offline"  # no longer: port lost, or the gate stopped answering


_LOOP_KINDS = {
    LoopEvent.ARRIVED: GateEventKind.VEHICLE_ARRIVED,
    LoopEvent.PASSED: GateEventKind.VEHICLE_PASSED,
    LoopEvent.LEFT: GateEventKind.VEHICLE_LEFT,
}


@dataclass(frozen=True, slots=True)
class GateEvent:
    gate: str
    kind: GateEventKind
    at: datetime
    status: GateStatus | None  # the gate's status after the event; None if never heard
    fault: FaultCode = FaultCode.NONE


class GateNoReply(DeviceError):
    """No valid answer within the command's timeout (resends included)."""


class GateRefused(DeviceError):
    """The gate answered NAK: it is alive and will not do it; ``reason`` says why."""

    def __init__(self, gate: str, command: str, reason: NakReason) -> None:
        super().__init__(f"{gate}: {command} refused: {reason.name}")
        self.reason = reason


@dataclass(slots=True)
class GateDriverStats:
    commands: int = 0
    resends: int = 0  # the same command sent again after reply_timeout
    no_replies: int = 0  # commands that failed with GateNoReply
    refused: int = 0  # NAKs
    stale_replies: int = 0  # answers to a command no longer waited for (late, or resent)
    reports: int = 0
    reports_missed: int = 0  # gaps in the gate's report numbering: reports lost on the line
    other_address: int = 0  # good frames from another address on a shared line
    not_from_gate: int = 0  # good frames a gate does not send (another host on the line?)


class GateController:
    """Drives the gate at RS-485 ``address`` on the serial port ``port``."""

    def __init__(
        self,
        port: str,
        *,
        address: int = 1,
        name: str = "gate",
        baudrate: int = 9600,
        reply_timeout: float = 0.25,
        command_timeout: float = 2.0,
        poll_interval: float | None = 5.0,
        backoff: tuple[float, float] = (0.2, 10.0),
        max_events: int = 1000,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        if not 1 <= address <= 254:
            raise ValueError(f"gate address {address} not in 1..254")
        self.name = name
        self.address = address
        self.reply_timeout = reply_timeout
        self.command_timeout = command_timeout
        self.poll_interval = poll_interval
        self.state = GateState.CONNECTING
        self.last_status: GateStatus | None = None
        self.stats = GateDriverStats()
        self.events: EventQueue[GateEvent] = EventQueue(max_events)
        self._now = now or (lambda: datetime.now(UTC))
        self._line = SerialLine(name, port, baudrate, backoff)
        self._decoder = GateDecoder()
        self._lock = asyncio.Lock()
        self._seq = random.randrange(256)  # a restarted driver must not look like a resend
        self._waiting: tuple[Request, asyncio.Future[Reply]] | None = None
        self._report_seq: int | None = None
        self._poke = asyncio.Event()
        self._state_changed = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def decoder_stats(self) -> DecodeStats:
        """Frames from the line thrown away, by reason (bad checksum, bad length ...)."""
        return self._decoder.stats

    @property
    def reconnects(self) -> int:
        return self._line.reconnects

    async def __aenter__(self) -> Self:
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._group = group
        line = self._line.run(self._on_data, self._on_up, self._on_down)
        self._tasks = [
            group.create_task(line, name=f"{self.name}-line"),
            group.create_task(self._poll_loop(), name=f"{self.name}-poll"),
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the tasks and close the port; idempotent."""
        group, self._group = self._group, None
        if group is None:
            return
        for task in self._tasks:
            task.cancel()
        self._set_state(GateState.CLOSED)
        # the body's own exception is not the group's: it propagates as it is
        await group.__aexit__(None, None, None)

    async def wait_state(self, state: GateState) -> None:
        """Return once the driver is in ``state``; no timeout of its own."""
        while self.state is not state:
            await self._state_changed.wait()

    # commands

    async def open(self, timeout: float | None = None) -> None:
        """Raise the arm. Returns on ACK; GateRefused on NAK, GateNoReply when nothing
        valid came back within ``timeout`` (default ``command_timeout``), TransportError
        when the port is not open or fails."""
        await self._command(Command.OPEN, timeout)

    async def close(self, timeout: float | None = None) -> None:
        """Lower the arm (refused with VEHICLE_ON_LOOP while a vehicle is under it).
        Errors as :meth:`open`. To stop the driver, leave its ``async with``."""
        await self._command(Command.CLOSE, timeout)

    async def status(self, timeout: float | None = None) -> GateStatus:
        """Ask the gate; its answer (also in :attr:`last_status`). Errors as :meth:`open`."""
        reply = await self._transact(lambda seq: Query(self.address, seq), timeout)
        assert isinstance(reply, StatusReply)
        self.last_status = reply.status
        return reply.status

    async def _command(self, command: Command, timeout: float | None) -> None:
        kind = Open if command is Command.OPEN else Close
        reply = await self._transact(lambda seq: kind(self.address, seq), timeout)
        if isinstance(reply, Nak):
            self.stats.refused += 1
            raise GateRefused(self.name, command.name, reply.reason)

    async def _transact(self, make: Callable[[int], Request], timeout: float | None) -> Reply:
        limit = self.command_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        async with self._lock:
            deadline = loop.time() + limit
            self._seq = (self._seq + 1) & 0xFF
            request = make(self._seq)
            frame = encode(request)
            waiter: asyncio.Future[Reply] = loop.create_future()
            self._waiting = (request, waiter)
            self.stats.commands += 1
            try:
                for attempt in itertools.count():
                    self._line.write(frame)
                    self.stats.resends += attempt > 0
                    left = deadline - loop.time()
                    await asyncio.wait([waiter], timeout=max(0.0, min(self.reply_timeout, left)))
                    if waiter.done():
                        return waiter.result()
                    if loop.time() >= deadline:
                        break
            finally:
                self._waiting = None
                waiter.cancel()
        self.stats.no_replies += 1
        if self.state is GateState.ONLINE:
            self._set_state(GateState.SILENT)
        raise GateNoReply(f"{self.name}: no answer to {request!r} within {limit:.2f}s")

    async def _poll_loop(self) -> None:
        while True:
            self._poke.clear()  # a reconnect while we ask sets it again: we ask again
            if self._line.is_open:
                with contextlib.suppress(DeviceError, TransportError):
                    await self.status()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._poke.wait()

    # the line

    def _on_up(self) -> None:
        self._decoder.reset()
        self._report_seq = None
        self._set_state(GateState.SILENT)
        self._poke.set()  # ask for the status at once

    def _on_down(self, exc: TransportError) -> None:
        if self._waiting is not None and not self._waiting[1].done():
            self._waiting[1].set_exception(exc)
        self._set_state(GateState.CONNECTING)

    def _on_data(self, data: bytes) -> None:
        for msg in self._decoder.feed(data):
            if msg.addr != self.address:
                self.stats.other_address += 1
                continue
            self._on_message(msg)

    def _on_message(self, msg: GateMessage) -> None:
        match msg:
            case Ack() | Nak() | StatusReply():
                if isinstance(msg, StatusReply):
                    self.last_status = msg.status
                self._set_state(GateState.ONLINE)
                self._answer(msg)
            case ArmReport() | LoopReport() | FaultReport():
                self.last_status = msg.status
                self._set_state(GateState.ONLINE)
                self._report(msg)
            case _:
                self.stats.not_from_gate += 1

    def _answer(self, reply: Reply) -> None:
        if self._waiting is not None:
            request, waiter = self._waiting
            if reply.seq == request.seq and _answers(reply, request) and not waiter.done():
                waiter.set_result(reply)
                return
        self.stats.stale_replies += 1

    def _report(self, msg: ArmReport | LoopReport | FaultReport) -> None:
        self.stats.reports += 1
        if self._report_seq is not None:
            gap = (msg.seq - self._report_seq - 1) & 0xFF
            if 0 < gap < 128:  # a larger "gap" is a controller that restarted its count
                self.stats.reports_missed += gap
        self._report_seq = msg.seq
        self.last_status = msg.status
        match msg:
            case ArmReport():
                self._publish(GateEventKind.ARM)
            case LoopReport(event=event):
                self._publish(_LOOP_KINDS[event])
            case FaultReport(fault=FaultCode.NONE):
                self._publish(GateEventKind.FAULT_CLEARED)
            case FaultReport(fault=fault):
                log.warning("%s: fault %s", self.name, fault.name)
                self._publish(GateEventKind.FAULT, fault)

    def _set_state(self, state: GateState) -> None:
        before, self.state = self.state, state
        if state is before:
            return
        self._state_changed.set()
        self._state_changed = asyncio.Event()
        if state is GateState.ONLINE:
            log.info("%s: online", self.name)
            self._publish(GateEventKind.ONLINE)
        elif before is GateState.ONLINE:
            log.warning("%s: offline (%s)", self.name, state)
            self._publish(GateEventKind.OFFLINE)

    def _publish(self, kind: GateEventKind, fault: FaultCode = FaultCode.NONE) -> None:
        self.events.put(GateEvent(self.name, kind, self._now(), self.last_status, fault))


def _answers(reply: Reply, request: Request) -> bool:
    if isinstance(reply, StatusReply):
        return isinstance(request, Query)
    expected = {Open: Command.OPEN, Close: Command.CLOSE}.get(type(request))
    return isinstance(reply, Ack | Nak) and reply.command == expected
