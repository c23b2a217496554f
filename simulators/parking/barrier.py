"""The barrier gate's behaviour, without I/O: arm, vehicle loop, faults, resent commands.

The model never reads the wall clock; it is given one. Every call returns the messages the
controller sends because of it (replies first, then reports), and :meth:`BarrierModel.update`
returns the reports that came due as time passed (the arm reaching its end position, the
auto-close after a vehicle passed, a limit switch that never came).

Behaviour, as real controllers do it:

- OPEN raises the arm (also from half-way down); CLOSE lowers it; both are answered ACK.
- A vehicle on the loop keeps the arm up: CLOSE is refused (NAK VEHICLE_ON_LOOP) and an arm
  coming down goes back up (anti-smash).
- When the vehicle leaves the loop with the arm open it has passed: the arm closes after
  ``close_delay``. With the arm not open it backed away (LEFT) and nothing moves.
- ``auto_close_after`` (off by default) closes an open arm nobody drove through.
- While a fault is active OPEN and CLOSE are refused (NAK FAULTED).
- A command with the sequence number and command of the previous one, within
  ``dup_window`` seconds, is a resend: answered again, not carried out again.
- A stuck arm (fault injection) never reaches its end position; after ``stuck_limit`` the
  controller stops the motor and reports ARM_STUCK.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.parking.frames import (
    Ack,
    ArmReport,
    ArmState,
    Close,
    Command,
    FaultCode,
    FaultReport,
    GateMessage,
    GateStatus,
    LoopEvent,
    LoopReport,
    Nak,
    NakReason,
    Open,
    Query,
    Reply,
    Report,
    Request,
    StatusReply,
)
from simulators.clock import Clock


@dataclass(slots=True)
class _Last:
    seq: int
    command: Command
    at: float
    reply: Reply


class BarrierModel:
    """One barrier gate at RS-485 address ``addr``."""

    def __init__(
        self,
        clock: Clock,
        addr: int = 1,
        travel_time: float = 1.5,
        close_delay: float = 0.5,
        auto_close_after: float | None = None,
        stuck_limit: float | None = None,
        dup_window: float = 10.0,
    ) -> None:
        if travel_time <= 0:
            raise ValueError("travel_time must be positive")
        self.addr = addr
        self.travel_time = travel_time
        self.close_delay = close_delay
        self.auto_close_after = auto_close_after
        self.stuck_limit = stuck_limit if stuck_limit is not None else 2 * travel_time
        self.dup_window = dup_window
        self._clock = clock
        self.arm = ArmState.CLOSED
        self.position = 0.0  # 0 down, 1 up
        self.loop_occupied = False
        self.fault = FaultCode.NONE
        self.stuck = False  # fault injection: the motor runs, the arm does not move
        self.opens_count = 0  # OPEN commands carried out (resends not counted)
        self.closes_count = 0
        self.duplicates = 0  # resent commands recognised and not carried out again
        self.passes = 0  # vehicles that went through
        self._moved_at = clock()  # time ``position`` was last brought up to date
        self._motion_started = 0.0
        self._close_at: float | None = None
        self._last: _Last | None = None
        self._event_seq = 0

    @property
    def status(self) -> GateStatus:
        return GateStatus(self.arm, self.loop_occupied, self.fault)

    @property
    def moving(self) -> int:
        """+1 opening, -1 closing, 0 still."""
        return {ArmState.OPENING: 1, ArmState.CLOSING: -1}.get(self.arm, 0)

    # host commands

    def handle(self, request: Request) -> list[GateMessage]:
        """The controller's answer to ``request`` (and the reports it causes)."""
        out: list[GateMessage] = self.update()
        now = self._clock()
        if isinstance(request, Query):
            return [*out, StatusReply(self.addr, request.seq, self.status)]
        command = Command.OPEN if isinstance(request, Open) else Command.CLOSE
        last = self._last
        if (
            last is not None
            and (last.seq, last.command) == (request.seq, command)
            and now - last.at <= self.dup_window
        ):
            self.duplicates += 1
            return [*out, last.reply]
        reports: list[GateMessage] = []
        reply: Reply
        if self.fault is not FaultCode.NONE:
            reply = Nak(self.addr, request.seq, command, NakReason.FAULTED)
        elif isinstance(request, Close) and self.loop_occupied:
            reply = Nak(self.addr, request.seq, command, NakReason.VEHICLE_ON_LOOP)
        else:
            reply = Ack(self.addr, request.seq, command)
            reports = self._open(now) if isinstance(request, Open) else self._close(now)
        self._last = _Last(request.seq, command, now, reply)
        return [*out, reply, *reports]

    def _open(self, now: float) -> list[GateMessage]:
        self.opens_count += 1
        self._close_at = None
        if self.arm in (ArmState.OPEN, ArmState.OPENING):
            if self.arm is ArmState.OPEN and self.auto_close_after is not None:
                self._close_at = now + self.auto_close_after
            return []
        return [self._start(ArmState.OPENING, now)]

    def _close(self, now: float) -> list[GateMessage]:
        self.closes_count += 1
        self._close_at = None
        if self.arm in (ArmState.CLOSED, ArmState.CLOSING):
            return []
        return [self._start(ArmState.CLOSING, now)]

    def _start(self, arm: ArmState, now: float) -> Report:
        self.arm = arm
        self._motion_started = now
        return self._report_arm()

    # the world

    def vehicle_arrives(self) -> list[GateMessage]:
        out: list[GateMessage] = self.update()
        if self.loop_occupied:
            return out
        self.loop_occupied = True
        self._close_at = None
        out.append(self._report_loop(LoopEvent.ARRIVED))
        if self.arm is ArmState.CLOSING:  # anti-smash: back up
            out.append(self._start(ArmState.OPENING, self._clock()))
        return out

    def vehicle_leaves(self) -> list[GateMessage]:
        out: list[GateMessage] = self.update()
        if not self.loop_occupied:
            return out
        self.loop_occupied = False
        if self.arm is ArmState.OPEN:
            self.passes += 1
            self._close_at = self._clock() + self.close_delay
            out.append(self._report_loop(LoopEvent.PASSED))
        else:
            out.append(self._report_loop(LoopEvent.LEFT))
        return out

    def raise_fault(self, code: FaultCode) -> list[GateMessage]:
        """The controller detects ``code``: the motor stops where the arm is."""
        out: list[GateMessage] = self.update()
        if code is FaultCode.NONE:
            return out + self.clear_fault()
        return [*out, self._fault(code)]

    def _fault(self, code: FaultCode) -> Report:
        self.fault = code
        self._close_at = None
        # the motor stops where the arm is; half-way, it keeps the name of where it was going
        if self.position >= 1:
            self.arm = ArmState.OPEN
        elif self.position <= 0:
            self.arm = ArmState.CLOSED
        return self._report_fault(code)

    def clear_fault(self) -> list[GateMessage]:
        out: list[GateMessage] = self.update()
        if self.fault is FaultCode.NONE:
            return out
        self.fault = FaultCode.NONE
        self.stuck = False
        out.append(self._report_fault(FaultCode.NONE))
        if 0 < self.position < 1:  # the controller brings a half-way arm home: down
            out.append(self._start(ArmState.CLOSING, self._clock()))
        return out

    # time

    def next_deadline(self) -> float | None:
        """When :meth:`update` next has something to do, or None."""
        times = [] if self._close_at is None else [self._close_at]
        if self.moving and self.fault is FaultCode.NONE:
            if self.stuck:
                times.append(self._motion_started + self.stuck_limit)
            else:
                left = 1 - self.position if self.moving > 0 else self.position
                times.append(self._moved_at + left * self.travel_time)
        return min(times) if times else None

    def update(self) -> list[GateMessage]:
        """Catch up with the clock; the reports that came due, in time order."""
        now = self._clock()
        out: list[GateMessage] = []
        while (due := self.next_deadline()) is not None and due <= now:
            self._move_to(due)
            out += self._due(due)
        self._move_to(now)
        return out

    def _move_to(self, t: float) -> None:
        if self.moving and not self.stuck and self.fault is FaultCode.NONE and t > self._moved_at:
            left = 1 - self.position if self.moving > 0 else self.position
            done = (t - self._moved_at) / self.travel_time
            if done >= left - 1e-9:  # arrived: exactly, so rounding never leaves it short
                self.position = 1.0 if self.moving > 0 else 0.0
            else:
                self.position += self.moving * done
        self._moved_at = max(self._moved_at, t)

    def _due(self, t: float) -> list[GateMessage]:
        if self.moving and self.stuck and t >= self._motion_started + self.stuck_limit:
            return [self._fault(FaultCode.ARM_STUCK)]
        if self.arm is ArmState.OPENING and self.position >= 1:
            self.arm = ArmState.OPEN
            if self.auto_close_after is not None and not self.loop_occupied:
                self._close_at = t + self.auto_close_after
            return [self._report_arm()]
        if self.arm is ArmState.CLOSING and self.position <= 0:
            self.arm = ArmState.CLOSED
            return [self._report_arm()]
        if self._close_at is not None and t >= self._close_at:
            self._close_at = None
            if self.arm in (ArmState.OPEN, ArmState.OPENING) and not self.loop_occupied:
                return [self._start(ArmState.CLOSING, t)]
        return []

    # reports, numbered by the controller's own counter

    def _seq(self) -> int:
        self._event_seq = (self._event_seq + 1) & 0xFF
        return self._event_seq

    def _report_arm(self) -> Report:
        return ArmReport(self.addr, self._seq(), self.status)

    def _report_loop(self, event: LoopEvent) -> Report:
        return LoopReport(self.addr, self._seq(), event, self.status)

    def _report_fault(self, code: FaultCode) -> Report:
        return FaultReport(self.addr, self._seq(), code, self.status)
