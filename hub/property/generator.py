"""The rooms of new buildings from a plan: buildings × units × floors × rooms per floor,
numbered by a pattern (pure, no I/O).

``number`` is formatted with ``floor`` and ``room`` (the position on the floor, from 1), e.g.
``{floor:02d}{room:02d}`` -> ``0301``; ``code`` with ``building``, ``unit``, ``floor``,
``room`` and ``number``, e.g. ``{building}-{unit}-{number}`` -> ``1-2-0301``. Areas are for
all rooms alike or one per position on the floor. Every refusal is a ValueError saying what
to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from hub.property.models import PremisesKind, State, Use

MAX_ROOMS = 50_000  # one plan; as many as an import may hold
MAX_AREA = Decimal("99999999.99")  # NUMERIC(10, 2)
CODE_LEN, NUMBER_LEN, PART_LEN = 32, 16, 16  # the columns' widths


def area(value: object, what: str = "area") -> Decimal:
    """An area in m² as an exact Decimal with 2 places. Takes a Decimal, an int or text;
    never a float (a float is not the number written). ValueError if not > 0, more than
    2 decimals or wider than the column."""
    if isinstance(value, float | bool):
        raise ValueError(f"{what}: give an exact number (text or Decimal), not {value!r}")
    try:
        d = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)  # type: ignore[arg-type]
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise ValueError(f"{what}: {value!r} is not a number") from exc
    if not d.is_finite():
        raise ValueError(f"{what}: {value!r} is not a number")
    if d <= 0:
        raise ValueError(f"{what} must be more than 0, not {d}")
    if d > MAX_AREA:  # before quantize, which cannot hold 1E+999
        raise ValueError(f"{what}: {d} m² is more than any premises")
    if d != d.quantize(Decimal("0.01")):
        raise ValueError(f"{what}: at most 2 decimals (m²), not {d}")
    return d.quantize(Decimal("0.01"))


@dataclass(frozen=True, slots=True)
class Areas:
    """Built-up (建筑面积) and interior (套内面积) area; interior ≤ built, both > 0."""

    built: Decimal
    interior: Decimal

    def __post_init__(self) -> None:
        object.__setattr__(self, "built", area(self.built, "built area"))
        object.__setattr__(self, "interior", area(self.interior, "interior area"))
        if self.interior > self.built:
            raise ValueError(f"interior area {self.interior} is more than built area {self.built}")


@dataclass(frozen=True, slots=True)
class RoomPlan:
    buildings: tuple[str, ...]  # building codes, e.g. ("1", "2") or numbered(2)
    units: tuple[str, ...]  # unit codes in each building
    floors: int
    rooms_per_floor: int
    areas: tuple[Areas, ...]  # one for all rooms, or one per position on the floor
    use: Use = Use.RESIDENCE
    state: State = State.VACANT
    first_floor: int = 1
    number: str = "{floor:02d}{room:02d}"
    code: str = "{building}-{unit}-{number}"


@dataclass(frozen=True, slots=True)
class RoomRow:
    """One premises to create."""

    building: str
    unit: str
    floor: int
    room: int  # the position on the floor, from 1
    number: str
    code: str
    kind: PremisesKind
    use: Use
    state: State
    areas: Areas


def numbered(count: int, what: str = "buildings") -> tuple[str, ...]:
    """``"1"``, ``"2"``, ... ``str(count)``; ValueError unless count ≥ 1."""
    if count < 1:
        raise ValueError(f"the number of {what} must be at least 1, not {count}")
    return tuple(str(i) for i in range(1, count + 1))


def _codes(values: Sequence[str], what: str) -> tuple[str, ...]:
    if not values:
        raise ValueError(f"at least one {what} is needed")
    codes = tuple(v.strip() for v in values)
    for c in codes:
        if not c or len(c) > PART_LEN:
            raise ValueError(f"a {what} code is 1 to {PART_LEN} characters, not {c!r}")
    if len(set(codes)) != len(codes):
        raise ValueError(f"{what} codes repeat: {', '.join(codes)}")
    return codes


def _format(pattern: str, what: str, **values: object) -> str:
    try:
        return pattern.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        names = ", ".join("{" + k + "}" for k in values)
        raise ValueError(
            f"{what} pattern {pattern!r} is not usable ({exc!r}); use {names}"
        ) from exc


def plan_rooms(plan: RoomPlan) -> list[RoomRow]:
    """Every room of the plan, building by building, unit, floor, position. ValueError for
    counts below 1, more than MAX_ROOMS rooms, areas that are not one or one per position,
    a pattern that does not format, a number or code too long, or a code pattern that gives
    two rooms the same code."""
    buildings = _codes(plan.buildings, "building")
    units = _codes(plan.units, "unit")
    if plan.floors < 1:
        raise ValueError(f"the number of floors must be at least 1, not {plan.floors}")
    if plan.rooms_per_floor < 1:
        raise ValueError(f"rooms per floor must be at least 1, not {plan.rooms_per_floor}")
    total = len(buildings) * len(units) * plan.floors * plan.rooms_per_floor
    if total > MAX_ROOMS:
        raise ValueError(f"{total} rooms in one plan; at most {MAX_ROOMS}")
    if len(plan.areas) not in (1, plan.rooms_per_floor):
        raise ValueError(
            f"give one area for every room or one per position on the floor "
            f"({plan.rooms_per_floor}), not {len(plan.areas)}"
        )
    kind = PremisesKind.SPACE if plan.use is Use.PARKING else PremisesKind.ROOM
    rows: list[RoomRow] = []
    seen: dict[str, RoomRow] = {}
    for b in buildings:
        for u in units:
            for floor in range(plan.first_floor, plan.first_floor + plan.floors):
                for room in range(1, plan.rooms_per_floor + 1):
                    number = _format(plan.number, "number", floor=floor, room=room)
                    code = _format(
                        plan.code, "code", building=b, unit=u, floor=floor, room=room, number=number
                    )
                    if not 1 <= len(number) <= NUMBER_LEN:
                        raise ValueError(f"room number {number!r}: 1 to {NUMBER_LEN} characters")
                    if not 1 <= len(code) <= CODE_LEN:
                        raise ValueError(f"code {code!r}: 1 to {CODE_LEN} characters")
                    row = RoomRow(
                        building=b,
                        unit=u,
                        floor=floor,
                        room=room,
                        number=number,
                        code=code,
                        kind=kind,
                        use=plan.use,
                        state=plan.state,
                        areas=plan.areas[0 if len(plan.areas) == 1 else room - 1],
                    )
                    if (first := seen.get(code)) is not None:
                        raise ValueError(
                            f"code pattern {plan.code!r} with number {plan.number!r} gives "
                            f"{code} twice (building {first.building} unit {first.unit} floor "
                            f"{first.floor} room {first.room}, and building {b} unit {u} floor "
                            f"{floor} room {room}): it must tell every room apart"
                        )
                    seen[code] = row
                    rows.append(row)
    return rows
