"""Point-level codec: engineering values <-> the registers and bits of a profile's points.

The edge decodes what it read; simulators encode what they serve; a write command encodes
the value it is asked to write. Both directions live here so that they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping

from protocols.errors import DecodeError
from protocols.profile import Point
from protocols.registers import DataType, apply_scale, decode, encode, unscale

Value = int | float | bool


def decode_point(point: Point, table: Mapping[int, int | bool]) -> Value:
    """Engineering value of ``point`` from ``table`` (address -> register word or bit).

    Raises DecodeError when an address the point needs is missing or the raw value is
    not a number (NaN float).
    """
    try:
        if point.type is DataType.BOOL:
            return bool(table[point.address])
        words = [int(table[a]) for a in range(point.address, point.address + point.type.width)]
    except KeyError as exc:
        raise DecodeError(f"{point.name}: register {exc.args[0]} was not read") from exc
    raw = decode(words, point.type, point.word_order, point.byte_order, point.bit)
    if isinstance(raw, bool):
        return raw
    return apply_scale(raw, point.scale, point.offset, point.decimals)


def encode_point(point: Point, value: Value) -> list[int] | bool:
    """Registers (or the bit) that make ``point`` read back as ``value``.

    BIT points return the bit; the caller merges it into the register it shares.
    Raises DecodeError when the value does not fit the point's type.
    """
    if point.type in (DataType.BOOL, DataType.BIT):
        if not isinstance(value, bool) and value not in (0, 1):
            raise DecodeError(f"{point.name}: {value!r} is not a bool")
        return bool(value)
    if isinstance(value, bool):
        raise DecodeError(f"{point.name}: a bool cannot be written to a {point.type} point")
    raw = unscale(float(value), point.scale, point.offset)
    if point.type not in (DataType.FLOAT32, DataType.FLOAT64):
        rounded = round(raw)
        if abs(raw - rounded) > 1e-6:
            raise DecodeError(f"{point.name}: {value} is not a multiple of the scale {point.scale}")
        return encode(rounded, point.type, point.word_order, point.byte_order)
    return encode(raw, point.type, point.word_order, point.byte_order)


def set_bit(word: int, bit: int, on: bool) -> int:
    return word | (1 << bit) if on else word & ~(1 << bit)
