"""IC-card reader frames (IC卡读头 on RS-232/RS-485 at 9600 8N1): pure encode/decode.

Like most readers that report a card number on a serial line, the reader sends its data
as ASCII hex between STX and ETX, so those two bytes never occur inside a frame::

    STX 0x02 | hex( len | type | uid (4 or 7 bytes) | BCC ) | ETX 0x03

``len`` counts the bytes after it (type, uid and BCC: 6 or 9); BCC is the XOR of len,
type and uid. A reader in continuous mode repeats the frame every few hundred
milliseconds while a card stays in the field: telling a held card from a new tap is the
driver's job, not this module's.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from enum import IntEnum

from protocols.parking.framing import (
    ETX,
    STX,
    FrameError,
    Problem,
    StreamDecoder,
    xor8,
)

UID_SIZES = (4, 7)


class CardType(IntEnum):
    MIFARE_CLASSIC = 0x01  # "M1 card", S50/S70: most community access cards
    MIFARE_ULTRALIGHT = 0x02
    DESFIRE = 0x03
    CPU_CARD = 0x04  # ISO 14443-4 "CPU card"


@dataclass(frozen=True, slots=True)
class CardFrame:
    """One read of a card: its type and UID (4 or 7 bytes)."""

    card_type: CardType
    uid: bytes

    def __post_init__(self) -> None:
        if len(self.uid) not in UID_SIZES:
            raise ValueError(f"a UID has 4 or 7 bytes, not {len(self.uid)}")

    @property
    def uid_hex(self) -> str:
        """The UID as printed on access lists: upper-case hex, ``"A1B2C3D4"``."""
        return self.uid.hex().upper()


def parse_uid(text: str) -> bytes:
    """The UID written as hex (``"a1b2c3d4"``, spaces and colons allowed); ValueError."""
    cleaned = text.replace(" ", "").replace(":", "")
    try:
        uid = bytes.fromhex(cleaned)
    except ValueError as exc:
        raise ValueError(f"UID {text!r} is not hex") from exc
    if len(uid) not in UID_SIZES:
        raise ValueError(f"UID {text!r} has {len(uid)} bytes, not 4 or 7")
    return uid


def encode(frame: CardFrame, *, bad_checksum: bool = False) -> bytes:
    """The bytes the reader sends for ``frame``; ``bad_checksum`` spoils the BCC."""
    data = bytes((len(frame.uid) + 2, frame.card_type)) + frame.uid
    bcc = xor8(data) ^ (0x5A if bad_checksum else 0)
    return bytes((STX,)) + (data + bytes((bcc,))).hex().upper().encode() + bytes((ETX,))


def decode_inside(inside: bytes) -> CardFrame:
    """The read between one STX and ETX; FrameError says what is wrong with it."""
    if len(inside) % 2:
        raise FrameError(Problem.BAD_LENGTH, f"odd number of hex digits: {inside!r}")
    try:
        data = binascii.unhexlify(inside)
    except (binascii.Error, ValueError) as exc:
        raise FrameError(Problem.BAD_ESCAPE, f"not hex: {inside!r}") from exc
    if len(data) < 3 or data[0] != len(data) - 1 or data[0] - 2 not in UID_SIZES:
        raise FrameError(Problem.BAD_LENGTH, data.hex(" "))
    if xor8(data) != 0:  # the BCC makes the XOR of the whole frame 0
        raise FrameError(Problem.BAD_CHECKSUM, data.hex(" "))
    if data[1] not in CardType._value2member_map_:
        raise FrameError(Problem.UNKNOWN_COMMAND, f"card type 0x{data[1]:02x}")
    return CardFrame(CardType(data[1]), data[2:-1])


class CardDecoder(StreamDecoder[CardFrame]):
    """Incremental: feed bytes as they come, get the reads that completed.

    Never raises; each frame thrown away is counted in ``stats`` by its :class:`Problem`.
    """

    def __init__(self) -> None:
        super().__init__(2 * (3 + max(UID_SIZES)), decode_inside)
