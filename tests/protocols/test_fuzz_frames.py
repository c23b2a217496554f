"""Fuzz of the serial frame decoders: the barrier gate's stuffed STX/ETX frames and the
card reader's ASCII-hex frames (protocols/PARKING-DEVICES.md, "Finding frames").

Frames are built with the project's encoders, then mutated (bytes flipped, lost,
inserted, repeated, cut), buried in noise and cut into reads at arbitrary points. What
must hold whatever comes down the line:

- the incremental decoder never raises, and accounts for every byte: each one is in a
  frame decoded, in a frame thrown away and counted by its reason, counted as noise, or in
  the frame still open; a byte-at-a-time reference model written from the doc gives the
  same frames and the same counts however the stream is cut;
- a valid frame in any garbage, split across reads, is decoded exactly once;
- ``decode_inside`` raises only ``FrameError`` with one of the frame problems, and what it
  accepts is what the encoder would have sent (the wire form is canonical);
- encode then decode gives the message back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from protocols.parking import card, frames
from protocols.parking.frames import (
    Ack,
    ArmReport,
    ArmState,
    Close,
    Command,
    FaultCode,
    FaultReport,
    GateStatus,
    LoopEvent,
    LoopReport,
    Nak,
    NakReason,
    Open,
    Query,
    StatusReply,
)
from protocols.parking.framing import ETX, STX, FrameError, Problem, StreamDecoder
from tests.support.fuzz import TALLY, chunks, fuzz, mutated

# problems decode_inside may report; the others belong to the splitter
FRAME_PROBLEMS = {
    Problem.BAD_ESCAPE,
    Problem.BAD_LENGTH,
    Problem.BAD_CHECKSUM,
    Problem.UNKNOWN_COMMAND,
    Problem.BAD_PAYLOAD,
}

_status = st.builds(
    GateStatus, st.sampled_from(ArmState), st.booleans(), st.sampled_from(FaultCode)
)
_byte = st.integers(0, 255)
_gate_messages = st.one_of(
    st.builds(Open, _byte, _byte),
    st.builds(Close, _byte, _byte),
    st.builds(Query, _byte, _byte),
    st.builds(Ack, _byte, _byte, st.sampled_from(Command)),
    st.builds(Nak, _byte, _byte, _byte, st.sampled_from(NakReason)),
    st.builds(StatusReply, _byte, _byte, _status),
    st.builds(ArmReport, _byte, _byte, _status),
    st.builds(LoopReport, _byte, _byte, st.sampled_from(LoopEvent), _status),
    st.builds(FaultReport, _byte, _byte, st.sampled_from(FaultCode), _status),
)
_cards = st.builds(
    card.CardFrame,
    st.sampled_from(card.CardType),
    st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=7, max_size=7)),
)


def _spelled(inside: bytes, sep: str, mixed: bool) -> bytes:
    pairs = [inside[i : i + 2].decode() for i in range(0, len(inside), 2)]
    if mixed:
        pairs = [p.lower() if i % 2 else p for i, p in enumerate(pairs)]
    return (sep + sep.join(pairs) if sep == "0x" else sep.join(pairs)).encode()


def _lower_hex(wire: bytes) -> bytes:
    return wire.lower()  # STX and ETX have no case: only the hex digits change


@dataclass(frozen=True)
class Format:
    name: str
    decoder: Callable[[], StreamDecoder[Any]]
    decode_inside: Callable[[bytes], Any]
    max_inside: int  # the most bytes between STX and ETX the doc allows
    frames: SearchStrategy[tuple[Any, bytes]]  # (message, a wire form of it)
    bad_frames: SearchStrategy[bytes]  # whole frames that must be refused
    near_misses: SearchStrategy[bytes]  # insides a sloppy sender makes: right but for the form
    delimiters: bytes  # bytes the framing is made of, for mutations
    canonical: Callable[[Any, bytes], bool]  # decoded from this inside: is it the sent form?

    def __repr__(self) -> str:
        return self.name


def _gate_canonical(msg: Any, inside: bytes) -> bool:
    # an unknown fault code decodes as OTHER, which is sent as 0xFF: the one lossy spot
    faults = {getattr(msg, "fault", None), getattr(getattr(msg, "status", None), "fault", None)}
    return frames.encode(msg)[1:-1] == inside or FaultCode.OTHER in faults


GATE = Format(
    name="gate",
    decoder=frames.GateDecoder,
    decode_inside=frames.decode_inside,
    max_inside=76,  # 38 bytes unstuffed (header 4, payload 32, CRC 2), each stuffed to two
    frames=_gate_messages.map(lambda m: (m, frames.encode(m))),
    bad_frames=st.one_of(
        _gate_messages.map(lambda m: frames.encode(m, bad_checksum=True)),
        # any command byte and payload: unknown commands, payloads of the wrong size
        st.builds(frames.encode_raw, _byte, _byte, _byte, st.binary(max_size=32)).filter(
            lambda w: not _decodes(frames.decode_inside, w[1:-1])
        ),
    ),
    # a sender that forgets to stuff: the right bytes and CRC, STX, ETX or DLE left raw
    near_misses=_gate_messages.map(lambda m: frames.unstuff(frames.encode(m)[1:-1])),
    delimiters=bytes((STX, ETX, frames.DLE)),
    canonical=_gate_canonical,
)
CARD = Format(
    name="card",
    decoder=card.CardDecoder,
    decode_inside=card.decode_inside,
    max_inside=20,  # len, type, a 7-byte UID and BCC: 10 bytes, two hex digits each
    frames=st.one_of(
        _cards.map(lambda f: (f, card.encode(f))),
        _cards.map(lambda f: (f, _lower_hex(card.encode(f)))),  # lower case is accepted
    ),
    bad_frames=st.one_of(
        _cards.map(lambda f: card.encode(f, bad_checksum=True)),
        # unicode where hex belongs: full-width digits, CJK, accents
        st.text(max_size=12).map(lambda t: b"\x02" + t.encode() + b"\x03"),
        st.binary(max_size=12)
        .map(lambda b: b"\x02" + b.hex().encode() + b"\x03")
        .filter(lambda w: not _decodes(card.decode_inside, w[1:-1])),
    ),
    # mixed case, and hex as people write it: spaced, colons, a 0x prefix
    near_misses=st.tuples(_cards, st.sampled_from([" ", ":", "0x", "\t"]), st.booleans()).map(
        lambda t: _spelled(card.encode(t[0])[1:-1], t[1], t[2])
    ),
    delimiters=b"\x02\x030aAfFgG",
    canonical=lambda frame, inside: card.encode(frame)[1:-1] == inside.upper(),
)
FORMATS = [GATE, CARD]


def _decodes(decode: Callable[[bytes], Any], inside: bytes) -> bool:
    try:
        decode(inside)
    except FrameError:
        return False
    return True


def _overlong(fmt: Format) -> SearchStrategy[bytes]:
    """A frame begun that reaches no ETX in time: hex-like filler past the longest frame."""
    return st.integers(fmt.max_inside + 1, 2 * fmt.max_inside).map(lambda n: b"\x02" + b"A" * n)


def _garbage(fmt: Format) -> SearchStrategy[bytes]:
    """Line noise that holds no valid frame, even followed by one (which starts at STX)."""
    return st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"\x02", b"\x03", b"\x10", b"\x02\x02", b"\x03\x02"]),
        fmt.frames.flatmap(lambda f: st.integers(1, len(f[1]) - 1).map(lambda n: f[1][:n])),
        fmt.bad_frames,
        _overlong(fmt),
    )


def _any_piece(fmt: Format) -> SearchStrategy[bytes]:
    """Anything a line may carry: good frames, broken ones, noise."""
    return st.one_of(
        fmt.frames.map(lambda f: f[1]),
        fmt.frames.flatmap(lambda f: mutated(f[1], fmt.delimiters)),
        _garbage(fmt),
    )


@dataclass
class Expected:
    """What a decoder must have made of a stream: the reference model's answer."""

    insides: list[bytes]
    truncated: int = 0
    too_long: int = 0
    dropped: int = 0
    pending: int = 0


def reference(reads: list[bytes], resets: set[int], max_inside: int) -> Expected:
    """The doc's framing rules, one byte at a time: a raw STX always starts a frame (cutting
    short one begun), a raw ETX ends one; past ``max_inside`` bytes a frame is too long and
    what follows up to the next STX is noise; a reset (port reopened) after read ``i`` in
    ``resets`` cuts short a frame begun. Checks that every byte is accounted for."""
    out = Expected(insides=[])
    in_frames = 0  # bytes of frames decoded or thrown away, delimiters included
    inside: bytearray | None = None  # None: between frames
    for i, read in enumerate(reads):
        for byte in read:
            if inside is None:
                if byte == STX:
                    inside = bytearray()
                else:
                    out.dropped += 1
            elif byte == STX:
                out.truncated += 1
                in_frames += 1 + len(inside)
                inside = bytearray()
            elif byte == ETX:
                out.insides.append(bytes(inside))
                in_frames += 2 + len(inside)
                inside = None
            elif len(inside) == max_inside:
                out.too_long += 1
                in_frames += 1 + len(inside)
                out.dropped += 1  # this byte, and the rest up to the next STX
                inside = None
            else:
                inside.append(byte)
        if i in resets and inside is not None:
            out.truncated += 1
            in_frames += 1 + len(inside)
            inside = None
    out.pending = 0 if inside is None else 1 + len(inside)
    assert in_frames + out.dropped + out.pending == sum(map(len, reads))
    return out


def _feed(fmt: Format, reads: list[bytes], resets: set[int]) -> tuple[list[Any], Any]:
    decoder = fmt.decoder()
    got = []
    for i, read in enumerate(reads):
        got += decoder.feed(read)
        if i in resets:
            decoder.reset()
    return got, decoder


@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
@fuzz(300)
@given(data=st.data())
def test_every_byte_is_accounted_for_however_the_stream_is_cut(
    fmt: Format, data: st.DataObject
) -> None:
    pieces = data.draw(st.lists(_any_piece(fmt), max_size=10), label="pieces")
    stream = b"".join(pieces)
    reads = chunks(data.draw, stream)
    resets = data.draw(st.sets(st.integers(0, len(reads) - 1), max_size=2), label="resets")

    got, decoder = _feed(fmt, reads, resets)

    ref = reference(reads, resets, fmt.max_inside)
    want, problems = [], dict.fromkeys(FRAME_PROBLEMS, 0)
    for inside in ref.insides:
        try:
            want.append(fmt.decode_inside(inside))
        except FrameError as exc:
            problems[exc.problem] += 1
    assert got == want
    assert decoder.stats.as_dict() == {
        "frames": len(want),
        "dropped_bytes": ref.dropped,
        "truncated": ref.truncated,
        "too_long": ref.too_long,
        **{p.value: n for p, n in problems.items()},
    }
    assert decoder.pending == ref.pending
    TALLY.add(
        f"{fmt.name} decoder (stream)",
        examples=1,
        pieces=len(pieces),
        bytes=len(stream),
        reads=len(reads),
        decoded=len(got),
        refused=decoder.stats.bad_frames,
    )


@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
@fuzz(200)
@given(data=st.data())
def test_a_valid_frame_in_any_garbage_is_decoded_exactly_once(
    fmt: Format, data: st.DataObject
) -> None:
    parts = data.draw(st.lists(st.tuples(_garbage(fmt), fmt.frames), max_size=6), label="parts")
    tail = data.draw(st.binary(max_size=40), label="tail")
    stream = b"".join(garbage + wire for garbage, (_, wire) in parts) + tail
    reads = chunks(data.draw, stream)

    got, decoder = _feed(fmt, reads, set())

    assert got == [msg for _, (msg, _) in parts]
    assert decoder.stats.frames == len(parts)
    TALLY.add(
        f"{fmt.name} decoder (in garbage)",
        examples=1,
        frames=len(parts),
        bytes=len(stream),
        reads=len(reads),
    )


@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
@fuzz(500)
@given(data=st.data())
def test_decode_inside_refuses_with_a_frame_error_or_gives_what_was_sent(
    fmt: Format, data: st.DataObject
) -> None:
    frame = data.draw(
        st.one_of(
            st.binary(max_size=2 * fmt.max_inside),
            _any_piece(fmt),
            fmt.near_misses,
            fmt.frames.flatmap(lambda f: mutated(f[1], fmt.delimiters)),
        ),
        label="frame",
    )
    inside = frame[1:-1] if frame[:1] == b"\x02" and frame[-1:] == b"\x03" else frame
    try:
        msg = fmt.decode_inside(inside)
    except FrameError as exc:
        assert exc.problem in FRAME_PROBLEMS
        TALLY.add(f"{fmt.name} decode_inside", examples=1, refused=1)
        return
    assert fmt.canonical(msg, inside), f"{inside.hex(' ')} decoded to {msg!r}"
    TALLY.add(f"{fmt.name} decode_inside", examples=1, decoded=1)


@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
@fuzz(100)
@given(data=st.data())
def test_encode_then_decode_gives_the_message_back(fmt: Format, data: st.DataObject) -> None:
    msg, wire = data.draw(fmt.frames, label="frame")
    assert fmt.decode_inside(wire[1:-1]) == msg
    assert fmt.decoder().feed(wire) == [msg]
    TALLY.add(f"{fmt.name} round trip", examples=1)
