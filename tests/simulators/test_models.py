"""Behaviour models with an injected clock: counters rise, pumps push, lifts travel."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.profile import Profile
from simulators.clock import ManualClock
from simulators.device import SimDevice
from simulators.models import MODELS, PumpStation, make_model


def _device(
    profiles: dict[str, Profile], name: str, clock: ManualClock, seed: int = 1
) -> SimDevice:
    rng = random.Random(seed)
    return SimDevice(f"{name}-1", 1, profiles[name], make_model(profiles[name], rng), clock, rng)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_point_of_the_profile_is_driven(profiles: dict[str, Profile], name: str) -> None:
    sample = MODELS[name](random.Random(0)).sample()
    assert set(sample) == {p.name for p in profiles[name].points}


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(["em-1p", "em-3p", "water-meter"]),
    seed=st.integers(0, 1000),
    steps=st.lists(st.floats(0, 7200), min_size=1, max_size=30),
)
def test_meter_counters_never_go_down(
    profiles: dict[str, Profile], name: str, seed: int, steps: list[float]
) -> None:
    clock = ManualClock()
    device = _device(profiles, name, clock, seed)
    counters = [p.name for p in profiles[name].points if p.kind == "counter"]
    last = {c: device.value(c) for c in counters}
    for dt in steps:
        clock.advance(dt)
        now = {c: device.value(c) for c in counters}
        assert all(now[c] >= last[c] for c in counters)
        last = now


def test_energy_follows_power(profiles: dict[str, Profile]) -> None:
    clock = ManualClock()
    device = _device(profiles, "em-1p", clock)
    before = device.value("energy_import")
    clock.advance(24 * 3600)
    gained = float(device.value("energy_import")) - float(before)
    # a flat draws between standby (60 W) and 3.5 kW: between 1.4 and 84 kWh a day
    assert 1.4 < gained < 84


def test_voltages_sit_around_220(profiles: dict[str, Profile]) -> None:
    clock = ManualClock()
    device = _device(profiles, "em-3p", clock)
    for _ in range(20):
        clock.advance(1)
        values = device.values()
        assert all(205 < float(values[f"voltage_{p}"]) < 240 for p in "abc")


def test_a_water_meter_counts_what_flows(profiles: dict[str, Profile]) -> None:
    clock = ManualClock()
    device = _device(profiles, "water-meter", clock)
    before = float(device.value("volume"))
    for _ in range(600):
        clock.advance(10)
        device.refresh()
    assert 0.05 < float(device.value("volume")) - before < 3.0  # 100 minutes of a household


def test_a_running_pump_raises_pressure_and_draws_the_tank_down(
    profiles: dict[str, Profile],
) -> None:
    clock = ManualClock()
    device = _device(profiles, "pump-station", clock)
    model = device.model
    assert isinstance(model, PumpStation)
    model.write("pump1_enable", False)
    clock.advance(120)
    idle = device.values()
    assert idle["pump1_running"] is False
    assert float(idle["outlet_pressure"]) < 0.17  # the mains alone
    model.write("pressure_setpoint", 0.6)
    model.write("pump1_enable", True)
    clock.advance(300)
    pumping = device.values()
    assert pumping["pump1_running"] is True
    assert 0.58 < float(pumping["outlet_pressure"]) < 0.62
    assert float(pumping["tank_level"]) < float(idle["tank_level"]) - 0.05
    assert float(pumping["motor_current_1"]) > 5


def test_the_tank_refills_and_a_dry_tank_stops_the_pumps(profiles: dict[str, Profile]) -> None:
    clock = ManualClock()
    device = _device(profiles, "pump-station", clock)
    model = device.model
    assert isinstance(model, PumpStation)
    model.level = 0.25  # below the dry-run limit
    clock.advance(1)
    assert device.values()["low_water"] is True
    assert device.values()["pump1_running"] is False
    clock.advance(3600)  # the float valve refills it
    values = device.values()
    assert values["low_water"] is False
    assert float(values["tank_level"]) > 2.0


def test_a_lift_travels_opens_and_closes_and_counts_trips(profiles: dict[str, Profile]) -> None:
    clock = ManualClock()
    device = _device(profiles, "lift", clock)
    trips = int(device.value("trips"))
    floors, doors, directions = set(), set(), set()
    for _ in range(3000):  # 5 minutes in 0.1 s steps
        clock.advance(0.1)
        values = device.values()
        floors.add(values["floor"])
        doors.add(values["door_state"])
        directions.add(values["direction"])
        assert values["running"] == (values["direction"] != 0)
        assert values["door_state"] == 0 or values["direction"] == 0  # never moves with doors open
    assert 0 not in floors
    assert len(floors) > 2
    assert doors == {0, 1, 2, 3}
    assert directions == {0, 1, 2}
    assert int(device.value("trips")) > trips


def test_a_day_unread_costs_a_bounded_number_of_steps(profiles: dict[str, Profile]) -> None:
    clock = ManualClock()
    device = _device(profiles, "pump-station", clock)
    calls = 0
    advance = device.model.advance

    def counting(dt: float) -> None:
        nonlocal calls
        calls += 1
        advance(dt)

    device.model.advance = counting  # type: ignore[method-assign]
    clock.advance(86400)
    device.refresh()
    assert calls <= 2000
