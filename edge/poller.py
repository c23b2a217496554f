"""One scheduler per bus: polls each device at its interval, one transaction at a time.

A device that stops answering is quarantined with exponential back-off: while offline it
is probed with a single attempt (no retries) once per back-off period, so a dead meter
costs its bus at most one timeout per period and the other devices keep their rhythm.

Bound on the delay a dead device adds to the others on its bus: when it first fails,
``(retries + 1) * (timeout + settle)`` for each of its reads until the first failure
(it is abandoned at the first read that gets no reply); after that, at most one
``timeout + settle`` per back-off period (2 s doubling to ``backoff_max``).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from edge.bus import ExceptionReply, ModbusBus
from edge.config import DeviceConfig, Report
from protocols.codec import Value, decode_point
from protocols.errors import DecodeError, DeviceError, TransportError
from protocols.mqtt import EventKind
from protocols.profile import PointKind, Profile
from protocols.registers import Read, Table

log = logging.getLogger(__name__)
BACKOFF_START = 2.0


class DeviceState(StrEnum):
    UNKNOWN = "unknown"
    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(slots=True)
class Sample:
    """One poll of one device, ready to publish."""

    device: str
    ts: int  # ms since epoch
    values: dict[str, Value]
    errors: dict[str, str]
    critical: bool  # carries a billing-grade counter, or a status that changed
    alert: bool = False  # a status point (fault bit, trip, door) changed: commit at once


@dataclass(eq=False, slots=True)
class Device:
    cfg: DeviceConfig
    profile: Profile
    reads: list[Read]
    state: DeviceState = DeviceState.UNKNOWN
    backoff: float = 0.0
    next_due: float = 0.0
    polls: int = 0
    failures: int = 0
    last_ok: float | None = None
    last_error: str = ""
    # report by exception: point -> (value, monotonic time it was last published)
    published: dict[str, tuple[Value, float]] = field(default_factory=dict)
    statuses: dict[str, Value] = field(default_factory=dict)  # last value of status points

    @property
    def id(self) -> str:
        return self.cfg.id


class BusPoller:
    """Polls the devices of one bus forever; use :meth:`run` as a task."""

    def __init__(
        self,
        bus: ModbusBus,
        devices: list[Device],
        on_sample: Callable[[Sample], None],
        on_event: Callable[[str, EventKind, dict[str, object]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.devices = devices
        self.on_sample = on_sample
        self.on_event = on_event
        self.clock = clock
        self.values_read = 0
        self._outage_logged: set[str] = set()

    async def run(self) -> None:
        now = self.clock()
        # spread first polls over the first interval so a big bus does not burst at start
        queue: list[tuple[float, int, Device]] = []
        for i, d in enumerate(self.devices):
            d.next_due = now + d.cfg.interval * i / max(1, len(self.devices))
            heapq.heappush(queue, (d.next_due, i, d))
        while queue:
            due, i, dev = heapq.heappop(queue)
            delay = due - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.poll(dev)
            heapq.heappush(queue, (dev.next_due, i, dev))

    async def poll(self, dev: Device) -> None:
        """Poll one device once and schedule its next poll."""
        started = self.clock()
        dev.polls += 1
        try:
            sample = await self._read_device(dev)
        except (DeviceError, TransportError) as exc:
            self._failed(dev, exc, started)
            return
        if dev.state is not DeviceState.ONLINE:
            if dev.state is DeviceState.OFFLINE:
                log.info("device %s is back on %s", dev.id, self.bus.name)
                self._outage_logged.discard(dev.id)
            dev.state = DeviceState.ONLINE
            self.on_event(dev.id, EventKind.DEVICE_ONLINE, {"bus": self.bus.name})
        dev.backoff = 0.0
        dev.last_ok = started
        # keep the rhythm: next poll one interval after this one was due, not after it ended
        dev.next_due = max(dev.next_due + dev.cfg.interval, started)
        if dev.cfg.report is not None:
            self._filter(dev, sample, dev.cfg.report, started)
        if sample.values or sample.errors:
            self.values_read += len(sample.values)
            self.on_sample(sample)

    async def _read_device(self, dev: Device) -> Sample:
        ts = int(time.time() * 1000)
        tables: dict[Table, dict[int, int | bool]] = {t: {} for t in Table}
        errors: dict[str, str] = {}
        refused: dict[Table, list[tuple[Read, str]]] = {}
        attempts = 1 if dev.state is DeviceState.OFFLINE else 1 + dev.cfg.retries
        for read in dev.reads:
            for attempt in range(attempts):
                try:
                    tables[read.table].update(
                        await self.bus.read(dev.cfg.unit, read, dev.cfg.timeout)
                    )
                    break
                except ExceptionReply as exc:
                    # alive but refusing this block: its points get the error, others go on
                    refused.setdefault(read.table, []).append((read, str(exc)))
                    break
                except DeviceError:
                    if attempt + 1 == attempts:
                        raise
        values: dict[str, Value] = {}
        critical = alert = False
        for p in dev.profile.points:
            why = next(
                (m for r, m in refused.get(p.table, ()) if r.address <= p.address < r.end), None
            )
            if why is not None:
                errors[p.name] = why
                continue
            try:
                values[p.name] = decode_point(p, tables[p.table])
            except DecodeError as exc:
                errors[p.name] = str(exc)
                continue
            critical = critical or p.kind is PointKind.COUNTER
            if p.kind is PointKind.STATUS and dev.statuses.get(p.name) != values[p.name]:
                # a fault bit set or cleared, a pump tripped: the alarm should not wait for
                # the next group commit, and the record is about safety
                alert = p.name in dev.statuses
                dev.statuses[p.name] = values[p.name]
        if refused and not values:
            raise DeviceError(f"every read refused: {next(iter(errors.values()))}")
        return Sample(dev.id, ts, values, errors, critical or alert, alert)

    def _failed(self, dev: Device, exc: Exception, started: float) -> None:
        dev.failures += 1
        dev.last_error = str(exc)
        dev.backoff = min(dev.cfg.backoff_max, dev.backoff * 2 if dev.backoff else BACKOFF_START)
        dev.next_due = self.clock() + dev.backoff
        if dev.state is not DeviceState.OFFLINE:
            dev.state = DeviceState.OFFLINE
            # once at error level per outage, then quiet until it recovers
            if dev.id not in self._outage_logged:
                log.error("device %s on %s stopped answering: %s", dev.id, self.bus.name, exc)
                self._outage_logged.add(dev.id)
            self.on_event(
                dev.id, EventKind.DEVICE_OFFLINE, {"bus": self.bus.name, "error": str(exc)}
            )
        else:
            log.debug("device %s still offline: %s", dev.id, exc)

    @staticmethod
    def _filter(dev: Device, sample: Sample, report: Report, now: float) -> None:
        """Drop points that neither moved past the deadband nor stayed silent too long."""
        keep: dict[str, Value] = {}
        for name, value in sample.values.items():
            last = dev.published.get(name)
            if last is not None and now - last[1] < report.max_silence:
                old = last[0]
                same_kind = isinstance(old, bool) == isinstance(value, bool)
                if same_kind and not isinstance(value, bool):
                    if abs(float(value) - float(old)) <= report.deadband:
                        continue
                elif value == old:
                    continue
            keep[name] = value
            dev.published[name] = (value, now)
        sample.values = keep
        sample.critical = sample.alert or (
            sample.critical and any(dev.profile.point(n).kind is PointKind.COUNTER for n in keep)
        )
