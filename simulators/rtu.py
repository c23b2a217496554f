"""Modbus RTU framing: CRC-16/Modbus, and finding request frames in a byte stream.

No I/O here. A frame is ``unit | PDU | CRC`` with the CRC sent low byte first. RTU has no
length field: a slave knows where a request ends from its function code (and, for the
multiple-write functions, from the byte count inside it).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_FRAME = 256  # Modbus over serial line 1.02, 2.5.1
MAX_UNIT = 247  # 248..255 are reserved; a byte above this cannot start a request


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray) -> int:
    """CRC-16/Modbus of ``data``; 0 over a whole frame whose CRC is right."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def encode_frame(unit: int, pdu: bytes) -> bytes:
    """The RTU frame carrying ``pdu`` to or from ``unit``."""
    body = bytes((unit,)) + pdu
    return body + crc16(body).to_bytes(2, "little")


def corrupt_crc(frame: bytes) -> bytes:
    """``frame`` with a CRC that no longer matches (fault injection)."""
    return frame[:-1] + bytes((frame[-1] ^ 0x5A,))


@dataclass(frozen=True, slots=True)
class RtuFrame:
    """A request that arrived whole with a good CRC."""

    unit: int
    pdu: bytes

    @property
    def size(self) -> int:
        """Bytes on the wire, CRC included."""
        return len(self.pdu) + 3


# Request lengths, whole frame with unit and CRC, of every public function code.
_FIXED_LENGTH = {1: 8, 2: 8, 3: 8, 4: 8, 5: 8, 6: 8, 7: 4, 8: 8, 11: 4, 12: 4, 17: 4, 22: 10}
_FIXED_LENGTH |= {24: 6, 43: 7}
# Functions that carry a byte count: its index in the frame; the frame is index + 1 + count + 2.
_COUNT_AT = {15: 6, 16: 6, 20: 2, 21: 2, 23: 10}

_NEED_MORE = 0
_NOT_A_REQUEST = -1


def _frame_length(buf: bytearray) -> int:
    """Length of the request starting at ``buf[0]``, _NEED_MORE, or _NOT_A_REQUEST."""
    if len(buf) < 2:
        return _NEED_MORE
    if buf[0] > MAX_UNIT:
        return _NOT_A_REQUEST
    function = buf[1]
    if function in _FIXED_LENGTH:
        return _FIXED_LENGTH[function]
    at = _COUNT_AT.get(function)
    if at is None:
        # user-defined or invalid code: without a length we cannot frame it, so it is noise
        return _NOT_A_REQUEST
    if len(buf) <= at:
        return _NEED_MORE
    return at + 1 + buf[at] + 2


class RtuDecoder:
    """Splits the bytes a slave hears into request frames.

    Bytes that cannot start a request are dropped. A frame with a bad CRC is dropped and
    counted in ``bad_crc``; the decoder then resynchronises by dropping a byte at a time
    until a good frame starts (every dropped byte counts in ``dropped``; CRC failures while
    resynchronising are not counted again). ``reset`` throws away a
    partial frame, which the line owner calls after a silence longer than 3.5 chars.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._resyncing = False
        self.bad_crc = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[RtuFrame]:
        """Every whole, CRC-checked request completed by ``data``, in order."""
        self._buf += data
        frames: list[RtuFrame] = []
        while self._buf:
            length = _frame_length(self._buf)
            if length == _NEED_MORE or len(self._buf) < length:
                break
            if length != _NOT_A_REQUEST:
                if crc16(self._buf[:length]) == 0:
                    frames.append(RtuFrame(self._buf[0], bytes(self._buf[1 : length - 2])))
                    del self._buf[:length]
                    self._resyncing = False
                    continue
                if not self._resyncing:
                    self.bad_crc += 1
                self._resyncing = True
            del self._buf[0]
            self.dropped += 1
        return frames

    def reset(self) -> int:
        """Drop a partial frame (the line went quiet mid-frame); returns bytes dropped."""
        n = len(self._buf)
        self._buf.clear()
        self._resyncing = False
        self.dropped += n
        return n
