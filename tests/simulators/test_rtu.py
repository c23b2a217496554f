"""RTU framing: CRC-16/Modbus and request detection in a byte stream."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulators.rtu import RtuDecoder, RtuFrame, corrupt_crc, crc16, encode_frame

# Modbus over serial line 1.02, appendix B: unit 1, read holding registers 0..9
SPEC_FRAME = bytes.fromhex("01 03 00 00 00 0A C5 CD")


def test_crc_of_the_spec_example_is_sent_low_byte_first() -> None:
    assert crc16(SPEC_FRAME[:-2]) == 0xCDC5
    assert encode_frame(1, bytes.fromhex("03 00 00 00 0A")) == SPEC_FRAME


def test_crc_over_a_whole_good_frame_is_zero() -> None:
    assert crc16(SPEC_FRAME) == 0
    assert crc16(corrupt_crc(SPEC_FRAME)) != 0


@pytest.mark.parametrize(
    ("frame", "unit", "pdu"),
    [
        (SPEC_FRAME, 1, "03 00 00 00 0A"),
        # write multiple registers: addr 1, 2 regs, 4 bytes follow -> length from the count
        (
            encode_frame(17, bytes.fromhex("10 00 01 00 02 04 00 0A 01 02")),
            17,
            "10 00 01 00 02 04 00 0A 01 02",
        ),
        # write multiple coils: 10 coils in 2 bytes
        (encode_frame(5, bytes.fromhex("0F 00 13 00 0A 02 CD 01")), 5, "0F 00 13 00 0A 02 CD 01"),
        # report server id: no data, 4-byte frame
        (encode_frame(9, bytes.fromhex("11")), 9, "11"),
    ],
)
def test_a_whole_frame_is_decoded(frame: bytes, unit: int, pdu: str) -> None:
    decoder = RtuDecoder()
    assert decoder.feed(frame) == [RtuFrame(unit, bytes.fromhex(pdu))]
    assert decoder.pending == 0


def test_a_frame_fed_byte_by_byte_appears_on_its_last_byte() -> None:
    decoder = RtuDecoder()
    for b in SPEC_FRAME[:-1]:
        assert decoder.feed(bytes((b,))) == []
    assert decoder.feed(SPEC_FRAME[-1:]) == [RtuFrame(1, SPEC_FRAME[1:-2])]


def test_back_to_back_frames_in_one_read_are_all_found() -> None:
    second = encode_frame(2, bytes.fromhex("04 00 00 00 02"))
    frames = RtuDecoder().feed(SPEC_FRAME + second)
    assert [f.unit for f in frames] == [1, 2]


def test_a_bad_crc_is_dropped_counted_once_and_the_next_frame_still_found() -> None:
    decoder = RtuDecoder()
    good = encode_frame(2, bytes.fromhex("04 00 00 00 02"))
    assert decoder.feed(corrupt_crc(SPEC_FRAME) + good) == [RtuFrame(2, good[1:-2])]
    assert decoder.bad_crc == 1
    assert decoder.dropped == len(SPEC_FRAME)


def test_noise_before_a_frame_is_skipped() -> None:
    decoder = RtuDecoder()
    noise = bytes.fromhex("FF FE 00 99 41")  # units above 247 and unknown functions
    assert decoder.feed(noise + SPEC_FRAME) == [RtuFrame(1, SPEC_FRAME[1:-2])]
    assert decoder.dropped == len(noise)


def test_reset_drops_a_partial_frame() -> None:
    decoder = RtuDecoder()
    decoder.feed(SPEC_FRAME[:5])
    assert decoder.reset() == 5
    assert decoder.feed(SPEC_FRAME) == [RtuFrame(1, SPEC_FRAME[1:-2])]


@given(st.integers(1, 247), st.binary(min_size=5, max_size=5), st.binary(max_size=40))
def test_any_read_request_survives_leading_noise_once_the_line_resets(
    unit: int, fields: bytes, noise: bytes
) -> None:
    frame = encode_frame(unit, b"\x03" + fields[:4])
    decoder = RtuDecoder()
    decoder.feed(noise)
    decoder.reset()  # the silence a real line has between noise and the next request
    assert decoder.feed(frame) == [RtuFrame(unit, frame[1:-2])]
