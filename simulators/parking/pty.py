"""A serial device's end of a pseudo-terminal, standing in for an RS-232/RS-485 line.

As in simulators/rtu_link.py, the simulator owns both ends: it reads and writes the master
side and keeps the slave side open itself, so clients may close and reopen the port
without the simulator seeing EIO. Clients open :attr:`PtyLine.path` (``/dev/pts/N``) or
the symlink at ``link``, which stays put when the line is unplugged and plugged back in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from collections.abc import Callable
from pathlib import Path

from protocols.errors import ConfigError

log = logging.getLogger(__name__)


class PtyLine:
    """Calls ``on_data`` with whatever a client writes; :meth:`write` sends to the client."""

    def __init__(self, name: str, on_data: Callable[[bytes], None], link: Path | None) -> None:
        self.name = name
        self.link = link
        self._on_data = on_data
        self._master = self._slave = -1
        self._path = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self.bytes_lost = 0  # written while unplugged, or with nobody reading

    @property
    def path(self) -> str:
        """The pty's slave device (``/dev/pts/N``); empty while unplugged."""
        return self._path

    @property
    def plugged(self) -> bool:
        return self._master >= 0

    async def start(self) -> None:
        """Open the pty; ConfigError if ``link`` exists and is not a symlink."""
        self._loop = asyncio.get_running_loop()
        if self.link is not None and self.link.exists() and not self.link.is_symlink():
            raise ConfigError(str(self.link), "link", "exists and is not a symlink")
        self._open()

    def _open(self) -> None:
        assert self._loop is not None
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self._path = os.ttyname(self._slave)
        if self.link is not None:
            if self.link.is_symlink():
                self.link.unlink()  # a leftover, or our own from before an unplug
            self.link.symlink_to(self._path)
        self._loop.add_reader(self._master, self._readable)

    def unplug(self) -> None:
        """Close the pty as a USB adapter pulled out would: clients' reads fail with EIO.

        The link stays, dangling, until :meth:`replug`.
        """
        if self._loop is not None and self._master >= 0:
            self._loop.remove_reader(self._master)
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1
        self._path = ""

    def replug(self) -> None:
        """A fresh pty (a new ``path``) behind the same link."""
        if not self.plugged:
            self._open()

    async def close(self) -> None:
        """Close the pty and remove the link if it still points at us; idempotent."""
        path = self._path
        self.unplug()
        if self.link is not None and self.link.is_symlink():
            with contextlib.suppress(OSError):
                if not path or os.readlink(self.link) == path:
                    self.link.unlink()

    def write(self, data: bytes) -> None:
        if self._master < 0:
            self.bytes_lost += len(data)
            return
        try:
            written = os.write(self._master, data)
        except OSError:
            written = 0
        # a full pty buffer means nobody has been reading: a real line loses it too
        self.bytes_lost += len(data) - written

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # cannot happen while we hold the slave; be safe anyway
            log.warning("%s: read failed: %s", self.name, exc)
            return
        if data:
            self._on_data(data)
