"""The register image: fitting values to points, bit merging, absurd values."""

from __future__ import annotations

import pytest

from protocols.profile import Point, Profile
from simulators.image import RegisterImage, absurd, fit


def _point(profiles: dict[str, Profile], profile: str, name: str) -> Point:
    return profiles[profile].point(name)


@pytest.mark.parametrize(
    ("profile", "name", "value", "expected"),
    [
        ("em-1p", "energy_import", 1234.5678, 1234.56),  # counters floor: never ahead
        ("em-1p", "energy_import", 1234.57, 1234.57),  # ...and exact steps stay put
        ("pump-station", "outlet_pressure", 0.4526, 0.453),  # measurements round
        ("pump-station", "outlet_pressure", -0.01, 0.0),  # uint16 cannot go negative
        ("pump-station", "outlet_pressure", 99.0, 65.535),  # ...nor past 0xFFFF
        ("em-3p", "power_factor", 0.9234, 0.923),
        ("lift", "floor", -2, -2),
        ("lift", "running", 1, True),
    ],
)
def test_fit(
    profiles: dict[str, Profile], profile: str, name: str, value: float, expected: object
) -> None:
    assert fit(_point(profiles, profile, name), value) == expected


def test_absurd_pressure_is_65_535_mpa(profiles: dict[str, Profile]) -> None:
    assert absurd(_point(profiles, "pump-station", "outlet_pressure")) == 65.535


def test_bool_points_have_no_absurd_value(profiles: dict[str, Profile]) -> None:
    with pytest.raises(ValueError, match="no absurd value"):
        absurd(_point(profiles, "lift", "running"))


def test_bits_sharing_a_register_are_merged(profiles: dict[str, Profile]) -> None:
    image = RegisterImage(profiles["lift"])
    p = profiles["lift"]
    image.put(p.point("running"), True)
    image.put(p.point("in_service"), True)
    image.put(p.point("running"), False)
    assert image.read(p.point("running").table, 3, 1) == [0b10]
    assert image.get(p.point("in_service")) is True


def test_values_round_trip_through_the_codec(profiles: dict[str, Profile]) -> None:
    image = RegisterImage(profiles["em-3p"])
    voltage = profiles["em-3p"].point("voltage_a")
    image.put(voltage, 229.5)  # exactly representable in float32
    assert image.get(voltage) == 229.5
    assert image.read(voltage.table, 0, 2) == [0x4365, 0x8000]
