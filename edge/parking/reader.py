"""The IC-card reader driver: the one owner of the reader's serial line.

    async with CardReader("/dev/ttyUSB1", name="reader-in-1") as reader:
        async for read in reader.events:      # CardRead: one per card shown
            read.uid                          # "A1B2C3D4"

A reader repeats a card's frame every few hundred milliseconds for as long as it stays in
the field. Any frame of the same UID that comes within ``hold_gap`` seconds of the
previous one belongs to the same presentation: a card held for a minute is one read. Take
it away for longer than ``hold_gap`` and show it again, and that is a new read.

States: CONNECTING (port not open: not yet, or lost and being reopened), ONLINE (port
open; a reader says nothing until a card comes, so open is all we can know), CLOSED.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType
from typing import Self

from edge.parking.events import EventQueue
from edge.parking.serialport import SerialLine
from protocols.errors import TransportError
from protocols.parking.card import CardDecoder, CardType
from protocols.parking.framing import DecodeStats

log = logging.getLogger(__name__)


class ReaderState(StrEnum):
    CONNECTING = "connecting"
    ONLINE = "online"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class CardRead:
    reader: str
    uid: str  # upper-case hex, as on access lists
    card_type: CardType
    at: datetime


@dataclass(slots=True)
class ReaderStats:
    frames: int = 0  # good frames
    reads: int = 0  # presentations reported
    repeats: int = 0  # frames of a card still held, not reported again


class CardReader:
    """Reads cards from the reader on serial port ``port``."""

    def __init__(
        self,
        port: str,
        *,
        name: str = "reader",
        baudrate: int = 9600,
        hold_gap: float = 1.0,
        backoff: tuple[float, float] = (0.2, 10.0),
        max_events: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.name = name
        self.hold_gap = hold_gap
        self.state = ReaderState.CONNECTING
        self.stats = ReaderStats()
        self.events: EventQueue[CardRead] = EventQueue(max_events)
        self._clock = clock
        self._now = now or (lambda: datetime.now(UTC))
        self._line = SerialLine(name, port, baudrate, backoff)
        self._decoder = CardDecoder()
        self._last_seen: dict[bytes, float] = {}
        self._state_changed = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None

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
        self._task = group.create_task(line, name=f"{self.name}-line")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading and close the port; idempotent."""
        group, self._group = self._group, None
        if group is None:
            return
        if self._task is not None:
            self._task.cancel()
        self._set_state(ReaderState.CLOSED)
        # the body's own exception is not the group's: it propagates as it is
        await group.__aexit__(None, None, None)

    async def wait_state(self, state: ReaderState) -> None:
        """Return once the driver is in ``state``; no timeout of its own."""
        while self.state is not state:
            await self._state_changed.wait()

    def _set_state(self, state: ReaderState) -> None:
        if state is not self.state:
            self.state = state
            self._state_changed.set()
            self._state_changed = asyncio.Event()

    def _on_up(self) -> None:
        self._decoder.reset()
        self._set_state(ReaderState.ONLINE)

    def _on_down(self, exc: TransportError) -> None:
        self._set_state(ReaderState.CONNECTING)

    def _on_data(self, data: bytes) -> None:
        for frame in self._decoder.feed(data):
            self.stats.frames += 1
            t = self._clock()
            last = self._last_seen.get(frame.uid)
            self._last_seen[frame.uid] = t
            if last is not None and t - last <= self.hold_gap:
                self.stats.repeats += 1
                continue
            self.stats.reads += 1
            self.events.put(CardRead(self.name, frame.uid_hex, frame.card_type, self._now()))
        if len(self._last_seen) > 64:  # forget cards long gone
            now = self._clock()
            self._last_seen = {
                uid: t for uid, t in self._last_seen.items() if now - t <= self.hold_gap
            }
