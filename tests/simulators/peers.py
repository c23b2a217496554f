"""Helpers for tests that talk to the simulators through real Modbus masters."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tty
from collections.abc import Sequence

from protocols.codec import Value, decode_point
from protocols.profile import Profile
from protocols.registers import Table


def decode_all(
    profile: Profile, table: Table, start: int, items: Sequence[int | bool]
) -> dict[str, Value]:
    """Every point of ``table`` that lies wholly in ``items`` (read from ``start``), decoded."""
    words = {start + i: int(item) for i, item in enumerate(items)}
    end = start + len(items)
    return {
        p.name: decode_point(p, words)
        for p in profile.points
        if p.table is table and start <= p.address and p.address + p.type.width <= end
    }


_LINE = re.compile(r"^\[(\d+)\]:\s+(\S+)")


async def run_mbpoll(*args: str) -> str:
    """Output of ``mbpoll -1 ARGS`` (one poll); AssertionError with it if mbpoll fails."""
    proc = await asyncio.create_subprocess_exec(
        "mbpoll", "-1", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 0, text
    return text


async def mbpoll(*args: str) -> dict[int, str]:
    """Values mbpoll read, by 1-based reference; AssertionError if it read none."""
    text = await run_mbpoll(*args)
    found = {int(m[1]): m[2] for m in map(_LINE.match, text.splitlines()) if m}
    assert found, text
    return found


class RawLine:
    """The client side of a simulated RS-485 line, byte for byte (no Modbus library)."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self._fd)
        self._buf = bytearray()
        self._more = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._buf += os.read(self._fd, 4096)
            self._more.set()

    def send(self, data: bytes) -> None:
        os.write(self._fd, data)

    async def receive(self, size: int, timeout: float = 2.0) -> bytes:
        """Exactly ``size`` bytes; TimeoutError if they do not come."""
        async with asyncio.timeout(timeout):
            while len(self._buf) < size:
                self._more.clear()
                await self._more.wait()
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def close(self) -> None:
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
