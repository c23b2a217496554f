"""The room generator: what a plan creates, and every plan it refuses (pure)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from hub.property.generator import Areas, RoomPlan, area, numbered, plan_rooms
from hub.property.models import PremisesKind, Use

A120 = Areas(Decimal("120.50"), Decimal("98.30"))
A89 = Areas(Decimal("89.00"), Decimal("72.00"))


def plan(**kw) -> RoomPlan:
    base = {
        "buildings": ("1",),
        "units": ("1",),
        "floors": 1,
        "rooms_per_floor": 1,
        "areas": (A120,),
    }
    return RoomPlan(**(base | kw))


def test_two_buildings_two_units_three_floors_four_rooms():
    rows = plan_rooms(
        plan(
            buildings=numbered(2),
            units=numbered(2, "units"),
            floors=3,
            rooms_per_floor=4,
            areas=(A120, A89, A89, A120),  # the end rooms are bigger
        )
    )
    assert len(rows) == 2 * 2 * 3 * 4
    assert [r.code for r in rows[:5]] == [
        "1-1-0101",
        "1-1-0102",
        "1-1-0103",
        "1-1-0104",
        "1-1-0201",
    ]
    assert rows[-1].code == "2-2-0304"
    third = next(r for r in rows if r.code == "1-2-0301")
    assert (third.building, third.unit, third.floor, third.room, third.number) == (
        "1",
        "2",
        3,
        1,
        "0301",
    )
    by_position = {r.room: r.areas for r in rows}
    assert by_position == {1: A120, 2: A89, 3: A89, 4: A120}
    assert {type(r.areas.built) for r in rows} == {Decimal}
    assert {r.kind for r in rows} == {PremisesKind.ROOM}


def test_one_area_for_all_and_custom_patterns():
    rows = plan_rooms(
        plan(
            buildings=("A",),
            floors=2,
            rooms_per_floor=2,
            number="{floor}{room:02d}",
            code="{building}{number}",
        )
    )
    assert [(r.code, r.number) for r in rows] == [
        ("A101", "101"),
        ("A102", "102"),
        ("A201", "201"),
        ("A202", "202"),
    ]
    assert {r.areas for r in rows} == {A120}


def test_parking_spaces_are_spaces():
    rows = plan_rooms(
        plan(use=Use.PARKING, code="P-{number}", number="{room:03d}", rooms_per_floor=3)
    )
    assert [(r.code, r.kind) for r in rows] == [(f"P-00{i}", PremisesKind.SPACE) for i in (1, 2, 3)]


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"floors": 0}, "floors must be at least 1, not 0"),
        ({"floors": -2}, "floors must be at least 1, not -2"),
        ({"rooms_per_floor": 0}, "rooms per floor must be at least 1"),
        ({"buildings": ()}, "at least one building"),
        ({"units": ("1", "1")}, "unit codes repeat"),
        ({"rooms_per_floor": 3, "areas": (A120, A89)}, "one per position on the floor (3), not 2"),
        ({"floors": 1000, "rooms_per_floor": 100}, "100000 rooms in one plan; at most 50000"),
        # the code does not tell rooms of a floor apart
        ({"rooms_per_floor": 2, "code": "{building}-{unit}-{floor}"}, "gives 1-1-1 twice"),
        # the number does not, and the code leans on it
        ({"rooms_per_floor": 2, "number": "{floor:02d}"}, "gives 1-1-01 twice"),
        ({"code": "{building}-{block}"}, "code pattern '{building}-{block}' is not usable"),
        ({"number": "{floor:d}{room:q}"}, "number pattern"),
        ({"code": "x" * 40}, "1 to 32 characters"),
    ],
)
def test_bad_plans_are_refused_with_the_reason(kw, words):
    with pytest.raises(ValueError, match=None) as info:
        plan_rooms(plan(**kw))
    assert words in str(info.value)


def test_numbered_refuses_zero():
    with pytest.raises(ValueError, match="at least 1, not 0"):
        numbered(0)


@pytest.mark.parametrize(
    ("built", "interior", "words"),
    [
        ("0", "1", "built area must be more than 0"),
        ("-5", "1", "built area must be more than 0"),
        ("100", "0", "interior area must be more than 0"),
        ("100", "100.01", "interior area 100.01 is more than built area 100.00"),
        ("100.555", "90", "at most 2 decimals"),
        ("abc", "90", "not a number"),
        ("NaN", "90", "not a number"),
        ("1E+999", "90", "more than any premises"),
        (100.5, "90", "not 100.5"),  # a float is refused: give text or Decimal
    ],
)
def test_bad_areas(built, interior, words):
    with pytest.raises(ValueError) as info:
        Areas(built, interior)
    assert words in str(info.value)


def test_areas_are_exact_with_two_places():
    a = Areas("89", Decimal("72.5"))
    assert (a.built, a.interior) == (Decimal("89.00"), Decimal("72.50"))
    assert str(a.built) == "89.00"
    assert area(7) == Decimal("7.00")
