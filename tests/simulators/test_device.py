"""A device answering PDUs in-process: lazy updates, faults, forced points, counts."""

from __future__ import annotations

import random

import pytest

from protocols.profile import Profile
from simulators.clock import ManualClock
from simulators.device import ReplyAction, SimDevice
from simulators.faults import Fault, FaultError, FaultKind
from simulators.models import make_model

READ_PRESSURE = bytes.fromhex("04 0000 0001")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def pumps(profiles: dict[str, Profile], clock: ManualClock) -> SimDevice:
    rng = random.Random(7)
    profile = profiles["pump-station"]
    return SimDevice("ps-1", 1, profile, make_model(profile, rng), clock, rng)


def test_values_change_only_when_the_clock_moves(pumps: SimDevice, clock: ManualClock) -> None:
    first = pumps.values()
    assert pumps.values() == first
    pumps.handle(READ_PRESSURE)
    assert pumps.values() == first
    clock.advance(1)
    assert pumps.values() != first


def test_a_read_answers_what_values_says(pumps: SimDevice, clock: ManualClock) -> None:
    clock.advance(5)
    reply = pumps.handle(READ_PRESSURE)
    assert reply.action is ReplyAction.SEND
    raw = int.from_bytes(reply.payload[2:4], "big")
    assert raw / 1000 == pumps.value("outlet_pressure")
    assert pumps.stats.requests == 1
    assert pumps.stats.replies == 1


def test_a_write_reaches_the_model(pumps: SimDevice, clock: ManualClock) -> None:
    pumps.handle(bytes.fromhex("05 0000 0000"))  # pump1_enable off
    clock.advance(120)
    assert pumps.value("pump1_running") is False
    assert float(pumps.value("outlet_pressure")) < 0.17


def test_silent_and_garbage(pumps: SimDevice) -> None:
    pumps.set_fault(Fault(FaultKind.SILENT))
    assert pumps.handle(READ_PRESSURE).action is ReplyAction.SILENCE
    pumps.set_fault(Fault(FaultKind.GARBAGE))
    reply = pumps.handle(READ_PRESSURE)
    assert reply.action is ReplyAction.GARBAGE
    assert 5 <= len(reply.payload) <= 24
    assert pumps.stats.faulted == 2
    pumps.clear_fault()
    assert pumps.handle(READ_PRESSURE).action is ReplyAction.SEND


def test_exception_answers_every_request_with_the_code(pumps: SimDevice) -> None:
    pumps.set_fault(Fault(FaultKind.EXCEPTION, code=6))
    assert pumps.handle(READ_PRESSURE).payload == bytes.fromhex("84 06")
    assert pumps.handle(bytes.fromhex("01 0000 0001")).payload == bytes.fromhex("81 06")
    assert pumps.stats.exceptions == 2


def test_bad_crc_carries_the_real_answer_for_the_transport_to_spoil(pumps: SimDevice) -> None:
    pumps.set_fault(Fault(FaultKind.BAD_CRC))
    reply = pumps.handle(READ_PRESSURE)
    assert reply.action is ReplyAction.BAD_CRC
    assert reply.payload[:2] == bytes.fromhex("04 02")


def test_stuck_freezes_the_registers_until_cleared(pumps: SimDevice, clock: ManualClock) -> None:
    pumps.set_fault(Fault(FaultKind.STUCK))
    frozen = pumps.values()
    clock.advance(60)
    assert pumps.values() == frozen
    pumps.clear_fault()
    assert pumps.values() != frozen


def test_out_of_range_defaults_to_the_first_measurement(pumps: SimDevice) -> None:
    pumps.set_fault(Fault(FaultKind.OUT_OF_RANGE))
    assert pumps.value("outlet_pressure") == 65.535
    reply = pumps.handle(READ_PRESSURE)
    assert reply.payload == bytes.fromhex("04 02 FFFF")


def test_out_of_range_on_a_named_point(pumps: SimDevice) -> None:
    pumps.set_fault(Fault(FaultKind.OUT_OF_RANGE, point="tank_level"))
    assert pumps.value("tank_level") == 655.35
    assert float(pumps.value("outlet_pressure")) < 1


@pytest.mark.parametrize("point", ["nope", "pump1_running"])
def test_out_of_range_refuses_points_without_an_absurd_value(pumps: SimDevice, point: str) -> None:
    with pytest.raises(FaultError):
        pumps.set_fault(Fault(FaultKind.OUT_OF_RANGE, point=point))
    assert pumps.fault is None


def test_force_pins_a_status_bit_and_the_model_follows(
    pumps: SimDevice, clock: ManualClock
) -> None:
    assert pumps.value("pump1_running") is True
    pumps.force("pump1_fault", True)
    clock.advance(10)
    assert pumps.value("pump1_fault") is True
    assert pumps.value("pump1_running") is False  # a tripped pump stops
    pumps.force("pump1_fault", None)
    assert pumps.value("pump1_fault") is False
    assert pumps.value("pump1_running") is True
    with pytest.raises(FaultError):
        pumps.force("pump1_fault", 3)


def test_force_pins_a_measurement(pumps: SimDevice, clock: ManualClock) -> None:
    pumps.force("tank_level", 0.5)
    clock.advance(10)
    assert pumps.value("tank_level") == 0.5
