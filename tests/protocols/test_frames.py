"""Parking wire formats: the doc's example frames, round trips, and garbage on the line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import DecodeError
from protocols.parking import card
from protocols.parking.camera import PlateColor, PushError, PushProblem, parse_push, push_json
from protocols.parking.frames import (
    Ack,
    ArmReport,
    ArmState,
    Close,
    Command,
    FaultCode,
    FaultReport,
    GateDecoder,
    GateMessage,
    GateStatus,
    LoopEvent,
    LoopReport,
    Nak,
    NakReason,
    Open,
    Query,
    StatusReply,
    decode_inside,
    encode,
    encode_raw,
    stuff,
    unstuff,
)
from protocols.parking.framing import FrameError, Problem, crc16_modbus
from protocols.parking.plates import PlateKind, check_plate, plate_kind

S = GateStatus
DOC_FRAMES: list[tuple[GateMessage, str]] = [
    (Open(1, 5), "02 01 05 31 00 04 49 03"),
    (Close(1, 6), "02 01 06 32 00 F4 B9 03"),
    (Query(1, 7), "02 01 07 33 00 A4 E9 03"),
    (Ack(1, 5, Command.OPEN), "02 01 05 06 01 31 39 49 03"),
    (Nak(1, 6, Command.CLOSE, NakReason.VEHICLE_ON_LOOP), "02 01 06 15 10 22 32 04 38 A5 03"),
    (Nak(1, 8, Command.OPEN, NakReason.FAULTED), "02 01 08 15 10 22 31 10 23 10 30 56 03"),
    (StatusReply(1, 7, S(ArmState.OPEN, True)), "02 01 07 B3 10 23 10 22 01 00 AF B9 03"),
    (ArmReport(1, 0x11, S(ArmState.OPENING, False)), "02 01 11 A1 10 23 01 00 00 E4 DC 03"),
    (ArmReport(1, 0x12, S(ArmState.OPEN, False)), "02 01 12 A1 10 23 10 22 00 00 14 EF 03"),
    (
        LoopReport(1, 0x13, LoopEvent.ARRIVED, S(ArmState.CLOSED, True)),
        "02 01 13 A2 04 01 00 01 00 4B E8 03",
    ),
    (
        LoopReport(1, 0x14, LoopEvent.PASSED, S(ArmState.OPEN, False)),
        "02 01 14 A2 04 10 22 10 22 00 00 9D 3C 03",
    ),
    (
        FaultReport(1, 0x15, FaultCode.ARM_STUCK, S(ArmState.CLOSED, False, FaultCode.ARM_STUCK)),
        "02 01 15 A3 04 04 00 00 04 2C A6 03",
    ),
    (Open(1, 2), "02 01 10 22 31 00 B5 88 03"),  # seq 2 is stuffed
    (Open(3, 0x10), "02 10 23 10 30 31 00 14 35 03"),  # address 3, seq DLE: both stuffed
]


def test_crc_check_value() -> None:
    assert crc16_modbus(b"123456789") == 0x4B37


@pytest.mark.parametrize(("msg", "wire"), DOC_FRAMES)
def test_gate_frames_match_the_doc(msg: GateMessage, wire: str) -> None:
    raw = bytes.fromhex(wire)
    assert encode(msg) == raw
    decoder = GateDecoder()
    assert decoder.feed(raw) == [msg]
    assert decoder.stats.frames == 1 and decoder.stats.bad_frames == 0


def test_gate_frame_byte_by_byte() -> None:
    decoder = GateDecoder()
    raw = b"".join(encode(m) for m, _ in DOC_FRAMES)
    got = [m for byte in raw for m in decoder.feed(bytes((byte,)))]
    assert got == [m for m, _ in DOC_FRAMES]


def test_stuffing_round_trip() -> None:
    data = bytes(range(256))
    stuffed = stuff(data)
    assert 0x02 not in stuffed and 0x03 not in stuffed
    assert unstuff(stuffed) == data


def _inside(wire: str) -> bytes:
    return bytes.fromhex(wire)[1:-1]


# (inside of a frame, problem): each check on its own
BAD_GATE = [
    ("01 05 31 00 04", Problem.BAD_LENGTH),  # CRC cut short
    ("01 05 31 01 04 49", Problem.BAD_LENGTH),  # len says 1, no payload
    ("01 05 31 00 04 48", Problem.BAD_CHECKSUM),
    ("01 05 31 00 10", Problem.BAD_ESCAPE),  # DLE at the end
    ("01 05 31 10 41 00 04 49", Problem.BAD_ESCAPE),  # DLE escaping nothing
    (encode_raw(1, 5, 0x77).hex(" ")[3:-3], Problem.UNKNOWN_COMMAND),
    (encode_raw(1, 5, Command.OPEN, b"\x01").hex(" ")[3:-3], Problem.BAD_PAYLOAD),
    (encode_raw(1, 5, Command.ARM, b"\x09\x00\x00").hex(" ")[3:-3], Problem.BAD_PAYLOAD),
    (encode_raw(1, 5, Command.LOOP, b"\x07\x00\x00\x00").hex(" ")[3:-3], Problem.BAD_PAYLOAD),
    (encode_raw(1, 5, Command.NAK, b"\x31\x63").hex(" ")[3:-3], Problem.BAD_PAYLOAD),
]


@pytest.mark.parametrize(("inside", "problem"), BAD_GATE)
def test_gate_frame_problems(inside: str, problem: Problem) -> None:
    body = bytes.fromhex(inside)
    with pytest.raises(FrameError) as caught:
        decode_inside(body)
    assert caught.value.problem is problem
    assert isinstance(caught.value, DecodeError)
    decoder = GateDecoder()
    assert decoder.feed(b"\x02" + body + b"\x03" + encode(Open(1, 9))) == [Open(1, 9)]
    assert getattr(decoder.stats, problem.value) == 1


def test_a_raw_stx_or_etx_inside_is_bad_stuffing() -> None:
    """Found by the fuzz: an inside handed to decode_inside with STX or ETX left unstuffed
    (here address 2) decoded as if stuffed, though the sender did not send that frame."""
    for addr in (0x02, 0x03):
        body = bytes((addr, 5, Command.OPEN, 0))
        inside = body + crc16_modbus(body).to_bytes(2, "little")
        with pytest.raises(FrameError) as caught:
            decode_inside(inside)
        assert caught.value.problem is Problem.BAD_ESCAPE
        assert decode_inside(stuff(inside)) == Open(addr, 5)


def test_unknown_fault_code_is_still_a_fault() -> None:
    raw = encode_raw(1, 1, Command.FAULT, bytes((0x42, 0, 0, 0x42)))
    (msg,) = GateDecoder().feed(raw)
    assert isinstance(msg, FaultReport)
    assert msg.fault is FaultCode.OTHER and msg.status.fault is FaultCode.OTHER


def test_bad_checksum_injection_is_counted() -> None:
    decoder = GateDecoder()
    assert decoder.feed(encode(Open(1, 5), bad_checksum=True)) == []
    assert decoder.stats.bad_checksum == 1


def test_splitter_counts_noise_truncation_and_overlong_frames() -> None:
    decoder = GateDecoder()
    good = encode(Query(1, 1))
    noise = b"\xff\x03\x00"  # outside a frame: 3 dropped bytes
    cut = b"\x02\x01\x05"  # a frame cut short by the next STX
    overlong = b"\x02" + b"\x41" * 100  # no ETX in time; the rest is noise
    got = decoder.feed(noise + cut + good + overlong + good)
    assert got == [Query(1, 1), Query(1, 1)]
    stats = decoder.stats
    assert (stats.truncated, stats.too_long, stats.frames) == (1, 1, 2)
    assert stats.dropped_bytes == 3 + (100 - 76)


def test_values_are_checked_on_construction() -> None:
    with pytest.raises(ValueError):
        Open(256, 1)
    with pytest.raises(ValueError):
        encode_raw(1, 1, Command.ARM, bytes(33))


# hypothesis: garbage interleaved with valid frames

_status = st.builds(
    GateStatus, st.sampled_from(ArmState), st.booleans(), st.sampled_from(FaultCode)
)
_addr = st.integers(0, 255)
_seq = st.integers(0, 255)
_messages = st.one_of(
    st.builds(Open, _addr, _seq),
    st.builds(Close, _addr, _seq),
    st.builds(Query, _addr, _seq),
    st.builds(Ack, _addr, _seq, st.sampled_from(Command)),
    st.builds(Nak, _addr, _seq, st.integers(0, 255), st.sampled_from(NakReason)),
    st.builds(StatusReply, _addr, _seq, _status),
    st.builds(ArmReport, _addr, _seq, _status),
    st.builds(LoopReport, _addr, _seq, st.sampled_from(LoopEvent), _status),
    st.builds(FaultReport, _addr, _seq, st.sampled_from(FaultCode), _status),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.binary(max_size=40), _messages), max_size=8),
    st.binary(max_size=40),
    st.integers(1, 64),
)
def test_gate_decoder_finds_every_frame_in_garbage(
    parts: list[tuple[bytes, GateMessage]], tail: bytes, chunk: int
) -> None:
    stream = b"".join(garbage + encode(msg) for garbage, msg in parts) + tail
    decoder = GateDecoder()
    got = [m for i in range(0, len(stream), chunk) for m in decoder.feed(stream[i : i + chunk])]
    assert got == [msg for _, msg in parts]
    assert decoder.stats.frames == len(parts)
    if any(garbage for garbage, _ in parts) or tail:
        # every noise byte is counted, or sits in a frame begun and not ended yet
        assert decoder.stats.dropped_bytes + decoder.stats.bad_frames + decoder.pending > 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_gate_decoder_never_raises(noise: bytes) -> None:
    decoder = GateDecoder()
    for msg in decoder.feed(noise):
        assert encode(msg)  # anything it does find is a well-formed message


# card reader

CT = card.CardType
CARD_FRAMES = [
    (CT.MIFARE_CLASSIC, "A1B2C3D4", "02 30 36 30 31 41 31 42 32 43 33 44 34 30 33 03"),
    (CT.MIFARE_ULTRALIGHT, "04A2B3C4D5E680", "02" + b"090204A2B3C4D5E68069".hex() + "03"),
    (CT.CPU_CARD, "1234ABCD", "02" + b"06041234ABCD42".hex() + "03"),
]


@pytest.mark.parametrize(("card_type", "uid", "wire"), CARD_FRAMES)
def test_card_frames_match_the_doc(card_type: card.CardType, uid: str, wire: str) -> None:
    frame = card.CardFrame(card_type, bytes.fromhex(uid))
    assert card.encode(frame) == bytes.fromhex(wire)
    (got,) = card.CardDecoder().feed(bytes.fromhex(wire))
    assert got == frame and got.uid_hex == uid


BAD_CARD = [
    (b"0601A1B2C3D4", Problem.BAD_LENGTH),  # BCC missing
    (b"0601A1B2C3D40", Problem.BAD_LENGTH),  # odd number of digits
    (b"0701A1B2C3D4A5B6", Problem.BAD_LENGTH),  # a 5-byte UID
    (b"0601A1B2C3D404", Problem.BAD_CHECKSUM),
    (b"0601A1B2C3G403", Problem.BAD_ESCAPE),  # G is not hex
    (b"0609A1B2C3D40B", Problem.UNKNOWN_COMMAND),  # card type 9
]


@pytest.mark.parametrize(("inside", "problem"), BAD_CARD)
def test_card_frame_problems(inside: bytes, problem: Problem) -> None:
    with pytest.raises(FrameError) as caught:
        card.decode_inside(inside)
    assert caught.value.problem is problem
    decoder = card.CardDecoder()
    good = card.encode(card.CardFrame(card.CardType.MIFARE_CLASSIC, b"\x01\x02\x03\x04"))
    assert len(decoder.feed(b"\x02" + inside + b"\x03" + good)) == 1
    assert getattr(decoder.stats, problem.value) == 1


def test_card_lower_case_hex_and_uid_parsing() -> None:
    assert card.decode_inside(b"0601a1b2c3d403").uid_hex == "A1B2C3D4"
    assert card.parse_uid("04:a2:b3:c4:d5:e6:80") == bytes.fromhex("04A2B3C4D5E680")
    for bad in ("A1B2C3", "xyz", "A1B2C3D4E5"):
        with pytest.raises(ValueError):
            card.parse_uid(bad)


_cards = st.builds(
    card.CardFrame,
    st.sampled_from(card.CardType),
    st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=7, max_size=7)),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.binary(max_size=30), _cards), max_size=8),
    st.binary(max_size=30),
    st.integers(1, 32),
)
def test_card_decoder_finds_every_frame_in_garbage(
    parts: list[tuple[bytes, card.CardFrame]], tail: bytes, chunk: int
) -> None:
    stream = b"".join(garbage + card.encode(frame) for garbage, frame in parts) + tail
    decoder = card.CardDecoder()
    got = [f for i in range(0, len(stream), chunk) for f in decoder.feed(stream[i : i + chunk])]
    assert got == [frame for _, frame in parts]
    if any(garbage for garbage, _ in parts) or tail:
        assert decoder.stats.dropped_bytes + decoder.stats.bad_frames + decoder.pending > 0


# plates


@pytest.mark.parametrize(
    ("text", "plate", "kind"),
    [
        ("浙A12345", "浙A12345", PlateKind.ORDINARY),
        ("粤B8C9D2", "粤B8C9D2", PlateKind.ORDINARY),
        ("浙AD12345", "浙AD12345", PlateKind.NEW_ENERGY),  # small, electric
        ("浙AFA1234", "浙AFA1234", PlateKind.NEW_ENERGY),  # small, hybrid, letter second
        ("沪A12345D", "沪A12345D", PlateKind.NEW_ENERGY),  # large
        ("京A1234学", "京A1234学", PlateKind.SPECIAL),
        ("粤B1234挂", "粤B1234挂", PlateKind.SPECIAL),
        (" 浙A·12345 ", "浙A12345", PlateKind.ORDINARY),  # as some cameras print it
        ("浙a12345", "浙A12345", PlateKind.ORDINARY),
    ],
)
def test_good_plates(text: str, plate: str, kind: PlateKind) -> None:
    assert check_plate(text) == plate
    assert plate_kind(plate) is kind


@pytest.mark.parametrize(
    "text",
    [
        "",
        "浙A1234",  # too short
        "浙A1234567",  # too long
        "浙A123456",  # 6 characters, but not a new-energy serial
        "浙AD1234A",  # new energy: the last 4 are digits
        "AA12345",  # no province
        "港A12345",  # not a province
        "浙112345",  # the authority is a letter
        "浙AI2345",  # no I in a serial
        "浙A0O345",  # no O in a serial
        "浙A1234警警",
        "浙A12345\n浙A12345",
        "浙Aſ1234",  # found by the fuzz: a long s upper-cased to S, and made a plate
        "浙Aﬀ123",  # and a ligature to FF
    ],
)
def test_bad_plates(text: str) -> None:
    with pytest.raises(ValueError):
        check_plate(text)


# camera push

CHINA = timezone(timedelta(hours=8))


def _push(**changes: Any) -> dict[str, Any]:
    body = push_json(
        camera_id="cam-in-1",
        event_id="cam-in-1-1",
        plate="浙AD12345",
        plate_color=PlateColor.GREEN,
        confidence=92,
        recognized_at=datetime(2024, 5, 1, 8, 30, tzinfo=CHINA),
        direction="in",
    )
    body.update(changes)
    return body


def test_push_round_trip() -> None:
    push = parse_push(json.dumps(_push(firmware="4.2"), ensure_ascii=False).encode())
    assert push.plate == "浙AD12345" and push.plate_kind is PlateKind.NEW_ENERGY
    assert push.confidence == 92 and push.direction == "in"
    assert push.recognized_at == datetime(2024, 5, 1, 0, 30, tzinfo=UTC)


def test_push_low_confidence_and_misread_are_still_pushes() -> None:
    assert parse_push(json.dumps(_push(confidence=0)).encode()).confidence == 0
    assert parse_push(json.dumps(_push(plate="浙A1Z345")).encode()).plate == "浙A1Z345"


@pytest.mark.parametrize(
    ("body", "problem", "says"),
    [
        (b"{not json", PushProblem.NOT_JSON, "not JSON"),
        (b"", PushProblem.NOT_JSON, "not JSON"),
        (b"\xff\xfe", PushProblem.NOT_JSON, "not JSON"),
        (b"[1, 2]", PushProblem.INVALID, "body"),
        ({"plate": None}, PushProblem.INVALID, "plate"),
        ({"plate": "浙A1234"}, PushProblem.INVALID, "not a Chinese plate"),
        ({"plate": 12345}, PushProblem.INVALID, "plate"),
        ({"confidence": "92"}, PushProblem.INVALID, "confidence"),
        ({"confidence": 92.5}, PushProblem.INVALID, "confidence"),
        ({"confidence": 101}, PushProblem.INVALID, "confidence"),
        ({"plate_color": "pink"}, PushProblem.INVALID, "plate_color"),
        ({"direction": "up"}, PushProblem.INVALID, "direction"),
        ({"recognized_at": "2024-05-01T08:30:00"}, PushProblem.INVALID, "timezone"),
        ({"recognized_at": 1714523400}, PushProblem.INVALID, "recognized_at"),
        # found by the fuzz: epoch seconds as text were read as UTC, and a time UTC cannot
        # hold was accepted
        ({"recognized_at": "1714523400"}, PushProblem.INVALID, "not an RFC 3339"),
        ({"recognized_at": "9999-12-31T23:59:59-23:59"}, PushProblem.INVALID, "UTC"),
        ({"camera_id": "Cam 1"}, PushProblem.INVALID, "camera_id"),
        ({"event_id": ""}, PushProblem.INVALID, "event_id"),
        (b"x" * (300 * 1024), PushProblem.TOO_LARGE, "bytes"),
    ],
)
def test_bad_pushes(body: bytes | dict[str, Any], problem: PushProblem, says: str) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(_push(**body)).encode()
    with pytest.raises(PushError) as caught:
        parse_push(raw)
    assert caught.value.problem is problem
    assert says in str(caught.value)


@pytest.mark.parametrize("field", ["camera_id", "event_id", "plate", "confidence", "direction"])
def test_push_missing_field_is_named(field: str) -> None:
    body = _push()
    del body[field]
    with pytest.raises(PushError, match=f"{field}: Field required"):
        parse_push(json.dumps(body).encode())
