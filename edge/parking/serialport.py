"""One serial line of a parking device: the only module of edge/parking that imports pyserial.

The port is opened non-blocking and read through the event loop (``add_reader``), so a
line costs no thread. :class:`SerialLine` keeps it open: when the port disappears (a USB
adapter pulled out, a cable cut on a pty) the read fails, the line says so, and it reopens
the same path with capped, jittered exponential back-off until the port is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

import serial

from protocols.errors import TransportError

log = logging.getLogger(__name__)


class SerialPort:
    """An open port at 8N1: :meth:`read` waits for bytes, :meth:`write` never blocks."""

    def __init__(self, path: str, baudrate: int = 9600) -> None:
        self.path = path
        self.baudrate = baudrate
        self._serial: serial.Serial | None = None

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def open(self) -> None:
        """TransportError if the port cannot be opened (missing, busy, not a tty)."""
        try:
            self._serial = serial.Serial(
                self.path,
                baudrate=self.baudrate,
                bytesize=serial.EIGHTBITS,
                parity=serial.PARITY_NONE,
                stopbits=serial.STOPBITS_ONE,
                timeout=0,
                write_timeout=0,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise TransportError(f"{self.path}: cannot open: {exc}") from exc

    def close(self) -> None:
        if self._serial is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                self._serial.close()
            self._serial = None

    async def read(self) -> bytes:
        """The bytes that arrived (at least one); TransportError if the port is gone."""
        ser = self._port()
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = ser.read(4096)
            except (serial.SerialException, OSError) as exc:
                raise TransportError(f"{self.path}: read failed: {exc}") from exc
            if data:
                return bytes(data)
            readable: asyncio.Future[None] = loop.create_future()
            fd = ser.fileno()
            loop.add_reader(fd, _set_done, readable)
            try:
                await readable
            finally:
                loop.remove_reader(fd)

    def write(self, data: bytes) -> None:
        """Queue ``data`` in the driver; TransportError if the port is gone or wedged."""
        try:
            written = self._port().write(data)
        except (serial.SerialException, OSError) as exc:
            raise TransportError(f"{self.path}: write failed: {exc}") from exc
        if written != len(data):
            raise TransportError(f"{self.path}: only {written} of {len(data)} bytes written")

    def _port(self) -> serial.Serial:
        if self._serial is None:
            raise TransportError(f"{self.path}: port not open")
        return self._serial


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class SerialLine:
    """Keeps ``path`` open and feeds what it reads to ``on_data``; run :meth:`run` as a task.

    ``on_up`` is called after each (re)open, ``on_down`` with the error after each loss.
    A missing port at start is not an error: the line waits for it like for a lost one.
    """

    def __init__(
        self,
        name: str,
        path: str,
        baudrate: int = 9600,
        backoff: tuple[float, float] = (0.2, 10.0),
    ) -> None:
        self.name = name
        self.port = SerialPort(path, baudrate)
        self.backoff = backoff
        self.reconnects = 0  # times the port was lost and opened again

    @property
    def is_open(self) -> bool:
        return self.port.is_open

    def write(self, data: bytes) -> None:
        """TransportError if the port is not open or the write fails."""
        self.port.write(data)

    async def run(
        self,
        on_data: Callable[[bytes], None],
        on_up: Callable[[], None],
        on_down: Callable[[TransportError], None],
    ) -> None:
        """Forever: open, read until the port fails, back off, reopen. Cancel to stop."""
        delay, ceiling = self.backoff
        failing = False  # log an outage once, then quietly until it ends
        ever_open = False
        try:
            while True:
                try:
                    self.port.open()
                except TransportError as exc:
                    if not failing:
                        log.error("%s: %s; retrying quietly", self.name, exc)
                        failing = True
                    await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                    delay = min(ceiling, delay * 2)
                    continue
                if ever_open:
                    self.reconnects += 1
                if failing:
                    log.warning("%s: %s open again", self.name, self.port.path)
                failing, ever_open = False, True
                on_up()
                try:
                    while True:
                        data = await self.port.read()
                        delay = self.backoff[0]  # only a port that works resets the back-off
                        on_data(data)
                except TransportError as exc:
                    self.port.close()
                    log.error("%s: %s", self.name, exc)
                    failing = True
                    on_down(exc)
                # a port that opens but fails at once must not spin
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(ceiling, delay * 2)
        finally:
            self.port.close()
