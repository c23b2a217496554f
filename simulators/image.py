"""The register image of one simulated device: its four Modbus tables as its profile lays them out.

No I/O here. Values go in through ``protocols.codec.encode_point`` (so simulators and the
edge cannot disagree about encodings) and come out through ``decode_point``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from protocols.codec import Value, decode_point, encode_point, set_bit
from protocols.profile import Point, PointKind, Profile
from protocols.registers import DataType, Table, apply_scale

# Registers past the last defined point that still read as 0: masters merge adjacent reads
# and bridge holes, and real meters answer for their whole block, not only for mapped words.
SPARE = 200

_FLOAT32_MAX = 3.4028234663852886e38
_FLOAT64_MAX = 1.7976931348623157e308
_RAW_RANGE: dict[DataType, tuple[float, float]] = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
    DataType.FLOAT32: (-_FLOAT32_MAX, _FLOAT32_MAX),
    DataType.FLOAT64: (-_FLOAT64_MAX, _FLOAT64_MAX),
}


def fit(point: Point, value: Value) -> Value:
    """``value`` as the point can hold it: on its scale grid and inside its type's range.

    Counters are floored, so a published counter never runs ahead of the true total and
    never goes down while the total rises; other values are rounded.
    """
    if point.type in (DataType.BOOL, DataType.BIT):
        return bool(value)
    lo, hi = _RAW_RANGE[point.type]
    raw = (float(value) - point.offset) / point.scale
    if point.type in (DataType.FLOAT32, DataType.FLOAT64):
        return min(max(raw, lo), hi) * point.scale + point.offset
    steps = math.floor(raw + 1e-9) if point.kind is PointKind.COUNTER else round(raw)
    steps = int(min(max(steps, lo), hi))
    return apply_scale(steps, point.scale, point.offset, point.decimals)


def absurd(point: Point) -> Value:
    """An implausible reading for ``point``: its type's largest raw value, scaled.

    For a uint16 pressure at scale 0.001 that is 65.535 MPa. ValueError for bool points,
    which have no out-of-range value.
    """
    if point.type in (DataType.BOOL, DataType.BIT):
        raise ValueError(f"{point.name} is a {point.type} point: it has no absurd value")
    hi = _RAW_RANGE[point.type][1]
    if point.type in (DataType.FLOAT32, DataType.FLOAT64):
        return hi * point.scale + point.offset
    return apply_scale(int(hi), point.scale, point.offset, point.decimals)


class _Words(dict[int, int]):
    """A table in which every address exists: unwritten ones read 0."""

    def __missing__(self, key: int) -> int:
        return 0


class RegisterImage:
    """Holding, input, coil and discrete tables of one device.

    Registers hold 16-bit words and bit tables hold 0/1; anything never written reads 0.
    A table the profile defines no point in does not exist on this device.
    """

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._tables: dict[Table, _Words] = {t: _Words() for t in Table}
        self._limit: dict[Table, int] = {}
        self._writable: dict[Table, set[int]] = {t: set() for t in Table}
        self._at: dict[Table, dict[int, list[Point]]] = {t: {} for t in Table}
        for p in profile.points:
            end = p.address + p.type.width - 1
            self._limit[p.table] = max(self._limit.get(p.table, 0), min(65535, end + SPARE))
            for a in range(p.address, end + 1):
                self._at[p.table].setdefault(a, []).append(p)
                if p.writable:
                    self._writable[p.table].add(a)

    def serves(self, table: Table) -> bool:
        """Whether the device has this table at all."""
        return table in self._limit

    def limit(self, table: Table) -> int:
        """Highest address of ``table`` a master may read; KeyError if the table is absent."""
        return self._limit[table]

    def covers(self, table: Table, address: int, count: int) -> bool:
        """Whether every address of the range lies inside the device's register space."""
        return table in self._limit and address >= 0 and address + count - 1 <= self._limit[table]

    def writable(self, table: Table, address: int, count: int) -> bool:
        """Whether every address of the range belongs to a writable point."""
        allowed = self._writable[table]
        return all(a in allowed for a in range(address, address + count))

    def read(self, table: Table, address: int, count: int) -> list[int]:
        """Words (or 0/1 bits) of the range; unmapped addresses read 0."""
        items = self._tables[table]
        return [items[a] for a in range(address, address + count)]

    def write(self, table: Table, address: int, items: Sequence[int]) -> tuple[Point, ...]:
        """Store a master's write; returns the points it touched, in profile order."""
        store = self._tables[table]
        touched: dict[str, Point] = {}
        for a, item in enumerate(items, start=address):
            store[a] = item
            for p in self._at[table].get(a, ()):
                touched[p.name] = p
        return tuple(p for p in self.profile.points if p.name in touched)

    def put(self, point: Point, value: Value) -> None:
        """Make ``point`` read back as ``value`` (fitted to the point, see :func:`fit`).

        Raises DecodeError when the value cannot be encoded (a model bug).
        """
        encoded = encode_point(point, fit(point, value))
        store = self._tables[point.table]
        if isinstance(encoded, bool):
            if point.type is DataType.BIT:
                assert point.bit is not None  # the profile guarantees it for bit points
                store[point.address] = set_bit(store[point.address], point.bit, encoded)
            else:
                store[point.address] = int(encoded)
            return
        for a, word in enumerate(encoded, start=point.address):
            store[a] = word

    def get(self, point: Point) -> Value:
        """The engineering value a master reading ``point`` now would decode.

        Raises DecodeError if the registers hold no valid value (e.g. a NaN written by a master).
        """
        return decode_point(point, self._tables[point.table])
