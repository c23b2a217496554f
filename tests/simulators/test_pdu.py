"""PDU handling against a device's register image: answers and exception codes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.profile import Profile
from simulators.image import SPARE, RegisterImage
from simulators.pdu import handle_request, pack_bits, unpack_bits


def _pdu(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text)


@pytest.fixture
def pumps(profiles: dict[str, Profile]) -> RegisterImage:
    image = RegisterImage(profiles["pump-station"])
    image.put(image.profile.point("outlet_pressure"), 0.452)  # raw 452 = 0x01C4
    image.put(image.profile.point("pump1_running"), True)
    image.put(image.profile.point("low_water"), True)
    return image


@pytest.fixture
def meter(profiles: dict[str, Profile]) -> RegisterImage:
    image = RegisterImage(profiles["em-1p"])
    image.put(image.profile.point("energy_import"), 1234.56)  # raw 123456 = 0x0001E240
    return image


def test_read_input_registers(pumps: RegisterImage) -> None:
    # fn 04, address 0, 2 registers -> 4 bytes: pressure 0x01C4, then tank level 0
    assert handle_request(pumps, _pdu("04 0000 0002")).response == _pdu("04 04 01C4 0000")


def test_read_discrete_inputs_packs_the_first_bit_lowest(pumps: RegisterImage) -> None:
    # inputs 0..10: pump1_running (bit 0) and low_water (input 10 = bit 2 of byte 2)
    assert handle_request(pumps, _pdu("02 0000 000B")).response == _pdu("02 02 01 04")


def test_a_read_bridging_a_hole_between_points_succeeds(meter: RegisterImage) -> None:
    # input 0..13 spans voltage, a hole at 2..5, current, a hole, power: undefined reads 0
    response = handle_request(meter, _pdu("04 0000 000E")).response
    assert response[:2] == _pdu("04 1C")
    assert response[2 + 2 * 2 : 2 + 2 * 6] == bytes(8)


def test_a_read_up_to_the_spare_registers_after_the_last_point_succeeds(
    meter: RegisterImage,
) -> None:
    last = 257 + SPARE  # energy_import occupies 256..257
    assert not handle_request(meter, struct.pack(">BHH", 3, last, 1)).is_exception


@pytest.mark.parametrize(
    ("request_hex", "expected_hex", "why"),
    [
        ("2B 0E 01 00", "AB 01", "function we do not implement"),
        ("01 0000 0001", "81 01", "em-1p has no coils"),
        ("03 0000 0000", "83 03", "count 0"),
        ("03 0000 007E", "83 03", "count 126 > 125"),
        ("03 0000", "83 03", "truncated request"),
        ("03 01CA 0001", "83 02", "458 is past the last point (257) + 200"),
        ("03 FFFF 0002", "83 02", "runs past 65535"),
        ("04 0110 0001", "84 02", "272: the input table ends at 71 + 200"),
        ("06 0100 0001", "86 02", "energy_import is not writable"),
        ("10 0100 0002 04 0000 0001", "90 02", "nor with function 16"),
    ],
)
def test_refusals(meter: RegisterImage, request_hex: str, expected_hex: str, why: str) -> None:
    outcome = handle_request(meter, _pdu(request_hex))
    assert outcome.response == _pdu(expected_hex), why
    assert outcome.is_exception
    assert outcome.written == ()


@pytest.mark.parametrize(
    ("request_hex", "expected_hex", "why"),
    [
        ("05 0000 1234", "85 03", "a coil is FF00 or 0000"),
        ("0F 0000 0002 02 0300", "8F 03", "2 coils need 1 byte, not 2"),
        ("10 0000 0001 03 000000", "90 03", "1 register needs 2 bytes"),
        ("05 0002 FF00", "85 02", "coil 2 is no point"),
        ("01 0000 07D1", "81 03", "2001 coils > 2000"),
    ],
)
def test_write_refusals(
    pumps: RegisterImage, request_hex: str, expected_hex: str, why: str
) -> None:
    assert handle_request(pumps, _pdu(request_hex)).response == _pdu(expected_hex), why


def test_write_single_coil_echoes_and_reports_the_point(pumps: RegisterImage) -> None:
    outcome = handle_request(pumps, _pdu("05 0001 FF00"))
    assert outcome.response == _pdu("05 0001 FF00")
    assert [p.name for p in outcome.written] == ["pump2_enable"]
    assert pumps.get(pumps.profile.point("pump2_enable")) is True


def test_write_multiple_coils(pumps: RegisterImage) -> None:
    outcome = handle_request(pumps, _pdu("0F 0000 0002 01 02"))  # pump1 off, pump2 on
    assert outcome.response == _pdu("0F 0000 0002")
    assert [p.name for p in outcome.written] == ["pump1_enable", "pump2_enable"]
    assert handle_request(pumps, _pdu("01 0000 0002")).response == _pdu("01 01 02")


def test_write_registers_sets_the_setpoint(pumps: RegisterImage) -> None:
    outcome = handle_request(pumps, _pdu("10 0000 0001 02 0226"))  # 550 -> 0.55 MPa
    assert outcome.response == _pdu("10 0000 0001")
    assert pumps.get(pumps.profile.point("pressure_setpoint")) == 0.55
    assert handle_request(pumps, _pdu("06 0000 01F4")).response == _pdu("06 0000 01F4")
    assert pumps.get(pumps.profile.point("pressure_setpoint")) == 0.5


def test_a_32_bit_counter_reads_high_word_first(meter: RegisterImage) -> None:
    assert handle_request(meter, _pdu("03 0100 0002")).response == _pdu("03 04 0001 E240")


@given(st.lists(st.integers(0, 1), min_size=1, max_size=2000))
def test_bit_packing_round_trips(bits: list[int]) -> None:
    packed = pack_bits(bits)
    assert len(packed) == (len(bits) + 7) // 8
    assert unpack_bits(packed, len(bits)) == bits
