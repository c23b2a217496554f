"""Pure Modbus register arithmetic: decoding, encoding and merging of reads.

No I/O here. Registers are 16-bit unsigned ints as they come off the wire (each register
is sent big-endian, high byte first). A 32-bit value spans two registers: ``word_order``
says which register holds the high word, ``byte_order`` whether the bytes inside each
register are swapped (some meters send "CDAB" or "BADC").
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum, StrEnum

from protocols.errors import DecodeError


class Table(StrEnum):
    HOLDING = "holding"  # function 03, writable with 06/16
    INPUT = "input"  # function 04, read-only
    COIL = "coil"  # function 01, writable with 05/15
    DISCRETE = "discrete"  # function 02, read-only

    @property
    def is_bits(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE)

    @property
    def max_read(self) -> int:
        """Most items one read may ask for (Modbus application protocol 1.1b3)."""
        return 2000 if self.is_bits else 125


class ExceptionCode(IntEnum):
    """Modbus exception codes (application protocol 1.1b3, section 7)."""

    ILLEGAL_FUNCTION = 0x01
    ILLEGAL_DATA_ADDRESS = 0x02
    ILLEGAL_DATA_VALUE = 0x03
    SERVER_DEVICE_FAILURE = 0x04
    ACKNOWLEDGE = 0x05
    SERVER_DEVICE_BUSY = 0x06
    GATEWAY_PATH_UNAVAILABLE = 0x0A
    GATEWAY_TARGET_FAILED = 0x0B

    @staticmethod
    def describe(code: int) -> str:
        """``exception 2 (illegal data address)``; unknown codes say so."""
        try:
            name = ExceptionCode(code).name.lower().replace("_", " ")
        except ValueError:
            name = "unknown"
        return f"exception {code} ({name})"


class DataType(StrEnum):
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    BOOL = "bool"  # a coil or discrete input
    BIT = "bit"  # one bit of a holding or input register

    @property
    def width(self) -> int:
        """Registers (or bits, for BOOL) that one value occupies."""
        return _WIDTH[self]


_WIDTH = {
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.INT64: 4,
    DataType.UINT64: 4,
    DataType.FLOAT32: 2,
    DataType.FLOAT64: 4,
    DataType.BOOL: 1,
    DataType.BIT: 1,
}

# struct format of the big-endian byte string of each numeric type
_STRUCT = {
    DataType.INT16: ">h",
    DataType.UINT16: ">H",
    DataType.INT32: ">i",
    DataType.UINT32: ">I",
    DataType.INT64: ">q",
    DataType.UINT64: ">Q",
    DataType.FLOAT32: ">f",
    DataType.FLOAT64: ">d",
}


class Order(StrEnum):
    BIG = "big"
    LITTLE = "little"


def _to_bytes(registers: Sequence[int], word_order: Order, byte_order: Order) -> bytes:
    words = list(registers) if word_order is Order.BIG else list(reversed(registers))
    out = bytearray()
    for w in words:
        if not 0 <= w <= 0xFFFF:
            raise DecodeError(f"register value {w} is not a 16-bit unsigned int")
        hi, lo = w >> 8, w & 0xFF
        out += bytes((hi, lo)) if byte_order is Order.BIG else bytes((lo, hi))
    return bytes(out)


def _from_bytes(data: bytes, word_order: Order, byte_order: Order) -> list[int]:
    words = []
    for i in range(0, len(data), 2):
        a, b = data[i], data[i + 1]
        words.append((a << 8) | b if byte_order is Order.BIG else (b << 8) | a)
    return words if word_order is Order.BIG else list(reversed(words))


def decode(
    registers: Sequence[int],
    dtype: DataType,
    word_order: Order = Order.BIG,
    byte_order: Order = Order.BIG,
    bit: int | None = None,
) -> int | float | bool:
    """Raw value of ``dtype`` from exactly ``dtype.width`` registers.

    Raises DecodeError on a wrong register count or a NaN/infinite float (a meter that
    sends NaN is reporting a fault, and a NaN must never reach a bill).
    """
    if dtype is DataType.BOOL:
        raise DecodeError("BOOL values come from bit tables, not registers")
    if len(registers) != dtype.width:
        raise DecodeError(f"{dtype} needs {dtype.width} registers, got {len(registers)}")
    if dtype is DataType.BIT:
        if bit is None or not 0 <= bit <= 15:
            raise DecodeError(f"bit index {bit} is not 0..15")
        return bool((registers[0] >> bit) & 1)
    raw = _to_bytes(registers, word_order, byte_order)
    value: int | float = struct.unpack(_STRUCT[dtype], raw)[0]
    if isinstance(value, float) and not math.isfinite(value):
        raise DecodeError(f"{dtype} is {value}")
    if dtype is DataType.FLOAT32:
        return shortest_float32(float(value))
    return value


def shortest_float32(value: float) -> float:
    """The shortest decimal that is the same float32: 226.80975341796875 -> 226.80975.

    A float32 holds 6-9 significant digits; the rest of its float64 expansion is noise
    that would otherwise travel to the hub and into reports.
    """
    packed = struct.pack(">f", value)
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack(">f", candidate) == packed:
            return candidate
    return value


def encode(
    value: int | float,
    dtype: DataType,
    word_order: Order = Order.BIG,
    byte_order: Order = Order.BIG,
) -> list[int]:
    """Registers holding raw ``value`` as ``dtype``; the inverse of :func:`decode`.

    Raises DecodeError when the value does not fit the type.
    """
    if dtype in (DataType.BOOL, DataType.BIT):
        raise DecodeError(f"{dtype} is written as a bit, not registers")
    fmt = _STRUCT[dtype]
    if dtype not in (DataType.FLOAT32, DataType.FLOAT64):
        if isinstance(value, float) and not value.is_integer():
            raise DecodeError(f"{value} is not an integer for {dtype}")
        value = int(value)
    try:
        raw = struct.pack(fmt, value)
    except struct.error as exc:
        raise DecodeError(f"{value} does not fit {dtype}") from exc
    return _from_bytes(raw, word_order, byte_order)


def scale_decimals(scale: float) -> int:
    """Decimal places a scaled value can meaningfully have (0.01 -> 2, 10 -> 0)."""
    exponent = Decimal(repr(scale)).normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def apply_scale(raw: int | float, scale: float, offset: float, decimals: int) -> int | float:
    """Engineering value ``raw * scale + offset``, free of binary-float noise.

    A counter of 123456 at scale 0.01 becomes 1234.56, not 1234.5600000000001; integer
    raw values with an integer scale and offset stay ints.
    """
    if scale == 1 and offset == 0:
        return raw
    value = raw * scale + offset
    if isinstance(value, int) or (decimals == 0 and float(value).is_integer()):
        return int(value)
    return round(value, decimals)


def unscale(value: float, scale: float, offset: float) -> float:
    """Raw value that :func:`apply_scale` turns into ``value`` (for writes)."""
    return round((value - offset) / scale, 9)


@dataclass(frozen=True, slots=True)
class Span:
    """A point's footprint in one table: ``count`` items from ``address``."""

    table: Table
    address: int
    count: int


@dataclass(frozen=True, slots=True)
class Read:
    """One Modbus transaction: ``count`` items of ``table`` from ``address``."""

    table: Table
    address: int
    count: int

    @property
    def end(self) -> int:
        return self.address + self.count


def plan_reads(spans: Sequence[Span], max_gap: int = 0, max_count: int | None = None) -> list[Read]:
    """The fewest reads that cover every span, never reading more than the table allows.

    Spans of one table are merged when the hole between them is at most ``max_gap`` items
    (bridging a small hole costs a few bytes; another transaction costs a round trip).
    Greedy from the lowest address is optimal here: a span is never split, so the read
    that covers the first uncovered span can do no better than reach as far as it may.
    Overlapping spans (two points on one register, e.g. status bits) share a read.
    """
    reads: list[Read] = []
    for table in Table:
        limit = min(max_count or table.max_read, table.max_read)
        mine = sorted((s for s in spans if s.table is table), key=lambda s: s.address)
        start = end = -1
        for s in mine:
            if s.count > limit:
                raise DecodeError(f"a {s.count}-item value cannot be read in one transaction")
            s_end = s.address + s.count
            if start >= 0 and s.address - end <= max_gap and max(end, s_end) - start <= limit:
                end = max(end, s_end)
                continue
            if start >= 0:
                reads.append(Read(table, start, end - start))
            start, end = s.address, s_end
        if start >= 0:
            reads.append(Read(table, start, end - start))
    return reads
