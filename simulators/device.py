"""One simulated device: a profile's register image kept current by a behaviour model.

The model is advanced lazily, when the device is read, by however much the injected clock
moved since the last read; hundreds of idle devices cost nothing.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from protocols.codec import Value
from protocols.errors import DecodeError
from protocols.profile import Point, PointKind, Profile
from protocols.registers import DataType
from simulators.clock import Clock
from simulators.faults import Fault, FaultError, FaultKind
from simulators.image import RegisterImage, absurd
from simulators.models import Model
from simulators.pdu import exception_response, handle_request

# A device left unread for a day catches up in at most this many steps.
_MAX_STEPS = 2000


class ReplyAction(StrEnum):
    SEND = "send"  # send ``payload`` as the response PDU
    SILENCE = "silence"  # send nothing
    GARBAGE = "garbage"  # send ``payload`` raw: random bytes, not a frame
    BAD_CRC = "bad_crc"  # send ``payload`` framed, then spoil the frame's check


@dataclass(frozen=True, slots=True)
class Reply:
    action: ReplyAction
    payload: bytes = b""


@dataclass(slots=True)
class DeviceStats:
    """What a device has seen; counts only ever rise."""

    requests: int = 0  # addressed to this device, whatever became of them
    replies: int = 0  # normal responses sent
    exceptions: int = 0  # exception responses sent (refusals and injected ones)
    faulted: int = 0  # requests a silent/garbage/bad_crc fault swallowed or spoiled


class SimDevice:
    """A device on a simulated bus: answers PDUs, exposes values, takes faults."""

    def __init__(
        self,
        device_id: str,
        unit: int,
        profile: Profile,
        model: Model,
        clock: Clock,
        rng: random.Random,
        endpoint: str = "",
    ) -> None:
        self.id = device_id
        self.unit = unit
        self.profile = profile
        self.model = model
        self.endpoint = endpoint
        self.image = RegisterImage(profile)
        self.stats = DeviceStats()
        self._clock = clock
        self._rng = rng
        self._fault: Fault | None = None
        self._forced: dict[str, Value] = {}
        self._last = clock()
        self._publish()

    @property
    def fault(self) -> Fault | None:
        return self._fault

    def refresh(self) -> None:
        """Advance the model to the clock's now and publish it (unless stuck)."""
        now = self._clock()
        dt = now - self._last
        if dt <= 0:
            return
        self._last = now
        step = max(self.model.max_step, dt / _MAX_STEPS)
        steps = 1 if math.isinf(step) else math.ceil(dt / step)
        for _ in range(steps):
            self.model.advance(dt / steps)
        self._publish()

    def _publish(self) -> None:
        if self._fault is not None and self._fault.kind is FaultKind.STUCK:
            return
        values = self.model.sample() | self._forced
        for p in self.profile.points:
            if p.name in values:
                self.image.put(p, values[p.name])
        if self._fault is not None and self._fault.kind is FaultKind.OUT_OF_RANGE:
            target = self._out_of_range_point(self._fault)
            self.image.put(target, absurd(target))

    def handle(self, pdu: bytes) -> Reply:
        """What to send back for request ``pdu``, faults applied."""
        self.stats.requests += 1
        self.refresh()
        fault = self._fault.kind if self._fault is not None else None
        if fault is FaultKind.SILENT:
            self.stats.faulted += 1
            return Reply(ReplyAction.SILENCE)
        if fault is FaultKind.GARBAGE:
            self.stats.faulted += 1
            return Reply(ReplyAction.GARBAGE, self.garbage())
        if fault is FaultKind.EXCEPTION:
            assert self._fault is not None and self._fault.code is not None
            self.stats.exceptions += 1
            return Reply(
                ReplyAction.SEND, exception_response(pdu[0] if pdu else 0, self._fault.code)
            )
        outcome = handle_request(self.image, pdu)
        for point in outcome.written:
            self._written(point)
        if fault is FaultKind.BAD_CRC:
            self.stats.faulted += 1
            return Reply(ReplyAction.BAD_CRC, outcome.response)
        if outcome.is_exception:
            self.stats.exceptions += 1
        else:
            self.stats.replies += 1
        return Reply(ReplyAction.SEND, outcome.response)

    def _written(self, point: Point) -> None:
        try:
            value = self.image.get(point)
        except DecodeError:  # a master wrote a NaN: the model keeps its last good value
            return
        self.model.write(point.name, value)
        self._publish()

    def garbage(self) -> bytes:
        """A few random bytes, as a line with noise on it delivers."""
        return self._rng.randbytes(self._rng.randint(5, 24))

    def values(self) -> dict[str, Value]:
        """Every point's engineering value as a master reading now would decode it."""
        self.refresh()
        return {p.name: self.image.get(p) for p in self.profile.points}

    def value(self, name: str) -> Value:
        """One point's value as :meth:`values`; KeyError for a point the profile lacks."""
        self.refresh()
        return self.image.get(self.profile.point(name))

    def set_fault(self, fault: Fault | None) -> None:
        """Switch to ``fault`` (None clears); FaultError if it cannot apply to this device."""
        if fault is not None and fault.kind is FaultKind.OUT_OF_RANGE:
            self._out_of_range_point(fault)
        self.refresh()
        self._fault = fault
        self._publish()

    def clear_fault(self) -> None:
        self.set_fault(None)

    def force(self, name: str, value: Value | None) -> None:
        """Pin point ``name`` to ``value`` over what the model says (None releases it).

        For status bits a model never raises on its own (a pump fault, a trapped passenger).
        Raises FaultError for an unknown point or a value the point cannot hold.
        """
        try:
            point = self.profile.point(name)
        except KeyError as exc:
            raise FaultError(f"{self.profile.name} has no point {name!r}") from exc
        if value is not None:
            is_bool = point.type in (DataType.BOOL, DataType.BIT)
            if is_bool != isinstance(value, bool) or not isinstance(value, int | float):
                raise FaultError(f"{name} is a {point.type} point; {value!r} does not fit")
        self.refresh()
        self.model.force(name, value)
        if value is None:
            self._forced.pop(name, None)
        else:
            self._forced[name] = value
        self._publish()

    def _out_of_range_point(self, fault: Fault) -> Point:
        numeric = [p for p in self.profile.points if p.type not in (DataType.BOOL, DataType.BIT)]
        if fault.point is None:
            for p in numeric:
                if p.kind is PointKind.MEASUREMENT:
                    return p
            if numeric:
                return numeric[0]
            raise FaultError(f"{self.profile.name} has no numeric point to push out of range")
        for p in numeric:
            if p.name == fault.point:
                return p
        raise FaultError(f"{self.profile.name} has no numeric point {fault.point!r}")

    def summary(self) -> dict[str, Any]:
        """JSON-ready description: identity, fault and counts (values are separate)."""
        return {
            "id": self.id,
            "profile": self.profile.name,
            "endpoint": self.endpoint,
            "unit": self.unit,
            "fault": self._fault.to_json() if self._fault is not None else None,
            "forced": dict(self._forced),
            "stats": asdict(self.stats),
        }
