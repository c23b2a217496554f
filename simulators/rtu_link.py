"""Modbus RTU slave endpoint on a pseudo-terminal, standing in for an RS-485 line.

The simulator owns both ends of the pty: it reads requests on the master side and keeps
the slave side open itself, so the master never sees EIO when a client closes the port
(clients come and go, as on a real bus). Clients open the slave's path (``/dev/pts/N``),
or the symlink made for them at a stable path.

Optionally each reply waits the wire time of request and reply (11 bits per character)
plus a turnaround, so a master's timing sees a real line at that baud rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.errors import ConfigError
from simulators.device import ReplyAction, SimDevice
from simulators.rtu import RtuDecoder, RtuFrame, corrupt_crc, encode_frame

log = logging.getLogger(__name__)

BITS_PER_CHAR = 11  # start, 8 data, parity or a second stop bit, stop
# Ptys deliver a frame at once, so the 3.5-character gap that ends a frame on a real line
# is meaningless at high baud rates; a partial frame older than this is stale.
MIN_SILENCE = 0.02


@dataclass(slots=True)
class RtuStats:
    frames: int = 0  # good requests for any unit
    unknown_unit: int = 0  # good requests for a unit nobody here serves (left unanswered)
    bad_crc: int = 0  # requests dropped for a wrong CRC
    dropped_bytes: int = 0  # noise and partial frames thrown away
    replies_lost: int = 0  # replies the pty had no room for (nobody reading)


class RtuEndpoint:
    """Serves ``devices`` (by unit id) on a fresh pty; ``link`` optionally names it."""

    def __init__(
        self,
        name: str,
        devices: Mapping[int, SimDevice],
        link: Path | None = None,
        baud: int | None = None,
        turnaround: float = 0.010,
    ) -> None:
        self.name = name
        self.devices = dict(devices)
        self.link = link
        self.baud = baud
        self._turnaround = turnaround
        self._decoder = RtuDecoder()
        self._stats = RtuStats()
        self._master = self._slave = -1
        self._path = ""
        self._last_rx = 0.0
        self._line_free = 0.0
        self._pending: set[asyncio.TimerHandle] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def path(self) -> str:
        """The pty's slave device (``/dev/pts/N``); empty before :meth:`start`."""
        return self._path

    @property
    def stats(self) -> RtuStats:
        self._stats.bad_crc = self._decoder.bad_crc
        self._stats.dropped_bytes = self._decoder.dropped
        return self._stats

    async def start(self) -> None:
        """Open the pty and start listening; ConfigError if ``link`` is taken by a non-link."""
        self._loop = asyncio.get_running_loop()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self._path = os.ttyname(self._slave)
        if self.link is not None:
            try:
                self._make_link(self.link)
            except BaseException:
                self._close_fds()
                raise
        self._loop.add_reader(self._master, self._readable)

    def _make_link(self, link: Path) -> None:
        if link.is_symlink():
            link.unlink()  # a leftover from a simulator that was killed
        elif link.exists():
            raise ConfigError(str(link), "rtu.link", "exists and is not a symlink")
        link.symlink_to(self._path)

    async def close(self) -> None:
        """Stop listening, drop unsent replies, close the pty and remove the link."""
        if self._loop is not None and self._master >= 0:
            self._loop.remove_reader(self._master)
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        if self.link is not None and self.link.is_symlink() and self._path:
            with contextlib.suppress(OSError):
                if os.readlink(self.link) == self._path:
                    self.link.unlink()
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "transport": "rtu",
            "path": self._path,
            "link": str(self.link) if self.link is not None else None,
            "baud": self.baud,
            "devices": {d.id: unit for unit, d in sorted(self.devices.items())},
        }

    def _char_time(self) -> float:
        return BITS_PER_CHAR / self.baud if self.baud else 0.0

    def _readable(self) -> None:
        assert self._loop is not None
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # EIO cannot happen while we hold the slave; be safe anyway
            log.warning("%s: read failed: %s", self.name, exc)
            return
        now = self._loop.time()
        silence = max(MIN_SILENCE, 3.5 * self._char_time())
        if self._decoder.pending and now - self._last_rx > silence:
            self._decoder.reset()
        self._last_rx = now
        for frame in self._decoder.feed(data):
            self._answer(frame, now)

    def _answer(self, frame: RtuFrame, now: float) -> None:
        self._stats.frames += 1
        device = self.devices.get(frame.unit)
        if device is None:
            # unit 0 (broadcast) included: nobody answers a broadcast
            self._stats.unknown_unit += 1
            return
        reply = device.handle(frame.pdu)
        if reply.action is ReplyAction.SILENCE:
            return
        if reply.action is ReplyAction.GARBAGE:
            out = reply.payload
        else:
            out = encode_frame(frame.unit, reply.payload)
            if reply.action is ReplyAction.BAD_CRC:
                out = corrupt_crc(out)
        char = self._char_time()
        delay = (frame.size + len(out)) * char + (self._turnaround if char else 0.0)
        self._send_at(max(now + delay, self._line_free), out)

    def _send_at(self, when: float, data: bytes) -> None:
        assert self._loop is not None
        self._line_free = when  # one talker at a time on the line: replies keep their order
        if when <= self._loop.time():
            self._write(data)
            return
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            assert handle is not None
            self._pending.discard(handle)
            self._write(data)

        handle = self._loop.call_at(when, fire)
        self._pending.add(handle)

    def _write(self, data: bytes) -> None:
        try:
            written = os.write(self._master, data)
        except (BlockingIOError, OSError):
            written = 0
        if written < len(data):
            # the pty buffer is full: nobody has been reading; a real line would lose it too
            self._stats.replies_lost += 1
