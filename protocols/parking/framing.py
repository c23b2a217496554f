"""What the parking devices' serial formats share: STX/ETX delimiting, CRC, error counts.

No I/O here. Both serial formats (barrier gate, card reader) keep the bytes STX (0x02) and
ETX (0x03) out of a frame's inside: the gate by byte stuffing, the reader by sending its
data as ASCII hex. So a raw STX always starts a frame and a raw ETX always ends one, and
resynchronising after noise never needs a timer or a guess: whatever garbage comes between
frames, every frame that arrives intact is found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Generic, TypeVar

from protocols.errors import DecodeError

T = TypeVar("T")

STX = 0x02
ETX = 0x03


class Problem(StrEnum):
    """Why a frame (or a byte) was thrown away; also the name of its counter."""

    DROPPED_BYTES = "dropped_bytes"  # bytes outside any frame: line noise
    TRUNCATED = "truncated"  # a frame cut short by the next STX
    TOO_LONG = "too_long"  # no ETX within the longest frame the format allows
    BAD_ESCAPE = "bad_escape"  # stuffing that cannot be undone, or not hex where hex belongs
    BAD_LENGTH = "bad_length"  # the length field disagrees with the bytes received
    BAD_CHECKSUM = "bad_checksum"
    UNKNOWN_COMMAND = "unknown_command"  # a command (or card type) this format does not have
    BAD_PAYLOAD = "bad_payload"  # a known command whose payload makes no sense


class FrameError(DecodeError):
    """One frame that cannot be decoded; ``problem`` says why."""

    def __init__(self, problem: Problem, detail: str) -> None:
        super().__init__(f"{problem}: {detail}")
        self.problem = problem


@dataclass(slots=True)
class DecodeStats:
    """Frames decoded and everything thrown away, by reason (see :class:`Problem`)."""

    frames: int = 0
    dropped_bytes: int = 0
    truncated: int = 0
    too_long: int = 0
    bad_escape: int = 0
    bad_length: int = 0
    bad_checksum: int = 0
    unknown_command: int = 0
    bad_payload: int = 0

    def count(self, problem: Problem, n: int = 1) -> None:
        setattr(self, problem.value, getattr(self, problem.value) + n)

    @property
    def bad_frames(self) -> int:
        """Frames thrown away for any reason (noise bytes outside frames not included)."""
        return sum(getattr(self, p.value) for p in Problem if p is not Problem.DROPPED_BYTES)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Splitter:
    """Cuts a byte stream into frame insides (the bytes between STX and ETX).

    Never raises: bytes outside frames, frames cut short by the next STX and frames longer
    than ``max_inside`` are counted in ``stats`` and skipped.
    """

    def __init__(self, max_inside: int, stats: DecodeStats) -> None:
        self.max_inside = max_inside
        self.stats = stats
        self._inside = bytearray()
        self._open = False

    @property
    def pending(self) -> int:
        """Bytes of a frame begun but not ended yet."""
        return len(self._inside) + 1 if self._open else 0

    def reset(self) -> None:
        """Forget a frame begun (e.g. after the port was reopened); it is counted truncated."""
        if self._open:
            self.stats.count(Problem.TRUNCATED)
        self._open = False
        self._inside.clear()

    def feed(self, data: bytes) -> list[bytes]:
        """The insides of every frame that ends within ``data``, in order."""
        out: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end:
            if not self._open:
                start = data.find(STX, pos)
                skipped = (end if start < 0 else start) - pos
                if skipped:
                    self.stats.count(Problem.DROPPED_BYTES, skipped)
                if start < 0:
                    break
                self._open = True
                pos = start + 1
                continue
            stop = _find_delimiter(data, pos)
            chunk = data[pos : end if stop < 0 else stop]
            room = self.max_inside - len(self._inside)
            if len(chunk) > room:
                # no ETX in time: whatever follows up to the next STX is noise
                self.stats.count(Problem.TOO_LONG)
                self._open = False
                self._inside.clear()
                pos += room
                continue
            self._inside += chunk
            if stop < 0:
                break
            self._open = False
            if data[stop] == ETX:
                out.append(bytes(self._inside))
                pos = stop + 1
            else:
                self.stats.count(Problem.TRUNCATED)
                pos = stop  # the next turn opens a frame at this STX
            self._inside.clear()
        return out


def _find_delimiter(data: bytes, pos: int) -> int:
    """Index of the first STX or ETX at or after ``pos``, or -1."""
    stx, etx = data.find(STX, pos), data.find(ETX, pos)
    if stx < 0:
        return etx
    if etx < 0:
        return stx
    return min(stx, etx)


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16_modbus(data: bytes) -> int:
    """CRC-16/Modbus (poly 0xA001 reflected, init 0xFFFF); ``b"123456789"`` gives 0x4B37."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def xor8(data: bytes) -> int:
    """XOR of every byte (the BCC card readers use)."""
    out = 0
    for byte in data:
        out ^= byte
    return out


class StreamDecoder(Generic[T]):
    """Incremental: feed bytes as they come, get what the frames that completed decode to.

    Never raises; each frame thrown away is counted in ``stats`` by its :class:`Problem`.
    """

    def __init__(self, max_inside: int, decode_inside: Callable[[bytes], T]) -> None:
        self.stats = DecodeStats()
        self._splitter = Splitter(max_inside, self.stats)
        self._decode = decode_inside

    @property
    def pending(self) -> int:
        return self._splitter.pending

    def reset(self) -> None:
        self._splitter.reset()

    def feed(self, data: bytes) -> list[T]:
        out: list[T] = []
        for inside in self._splitter.feed(data):
            try:
                out.append(self._decode(inside))
            except FrameError as exc:
                self.stats.count(exc.problem)
                continue
            self.stats.frames += 1
        return out
