"""Modbus PDU handling for a slave: requests in, responses (or exception responses) out.

No I/O here; shared by the TCP and RTU transports. Checks follow the order of the Modbus
application protocol 1.1b3, §6: function code (exception 01), quantity and shape (03),
address range (02). Writes to registers or coils that no writable point covers get 02:
to the master the address is not a writable one, the same as on most real meters.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from protocols.profile import Point
from protocols.registers import ExceptionCode, Table
from simulators.image import RegisterImage


class Function(IntEnum):
    READ_COILS = 0x01
    READ_DISCRETE_INPUTS = 0x02
    READ_HOLDING_REGISTERS = 0x03
    READ_INPUT_REGISTERS = 0x04
    WRITE_SINGLE_COIL = 0x05
    WRITE_SINGLE_REGISTER = 0x06
    WRITE_MULTIPLE_COILS = 0x0F
    WRITE_MULTIPLE_REGISTERS = 0x10


_TABLE = {
    Function.READ_COILS: Table.COIL,
    Function.READ_DISCRETE_INPUTS: Table.DISCRETE,
    Function.READ_HOLDING_REGISTERS: Table.HOLDING,
    Function.READ_INPUT_REGISTERS: Table.INPUT,
    Function.WRITE_SINGLE_COIL: Table.COIL,
    Function.WRITE_SINGLE_REGISTER: Table.HOLDING,
    Function.WRITE_MULTIPLE_COILS: Table.COIL,
    Function.WRITE_MULTIPLE_REGISTERS: Table.HOLDING,
}
_MAX_WRITE_COILS = 0x7B0
_MAX_WRITE_REGISTERS = 0x7B
_COIL_ON, _COIL_OFF = 0xFF00, 0x0000


@dataclass(frozen=True, slots=True)
class Outcome:
    """The response PDU and the points a write changed (empty for reads and refusals)."""

    response: bytes
    written: tuple[Point, ...] = ()

    @property
    def is_exception(self) -> bool:
        return bool(self.response) and self.response[0] & 0x80 != 0


class _Refused(Exception):
    """Internal: the request is answered with exception ``code``."""

    def __init__(self, code: ExceptionCode) -> None:
        super().__init__(code)
        self.code = code


def exception_response(function: int, code: int) -> bytes:
    """Exception response PDU for ``function`` (the function code with its high bit set)."""
    return bytes(((function | 0x80) & 0xFF, code))


def handle_request(image: RegisterImage, pdu: bytes) -> Outcome:
    """Answer request ``pdu`` from ``image``, applying writes to it.

    Never raises for a bad request: every refusal is an exception response. A function
    whose table the device lacks is illegal (01), like an unsupported function code.
    """
    if not pdu:
        return Outcome(exception_response(0, ExceptionCode.ILLEGAL_FUNCTION))
    code = pdu[0]
    try:
        function = Function(code)
    except ValueError:
        return Outcome(exception_response(code, ExceptionCode.ILLEGAL_FUNCTION))
    table = _TABLE[function]
    if not image.serves(table):
        return Outcome(exception_response(code, ExceptionCode.ILLEGAL_FUNCTION))
    try:
        if function in (Function.WRITE_SINGLE_COIL, Function.WRITE_SINGLE_REGISTER):
            return _write_single(image, table, pdu)
        if function in (Function.WRITE_MULTIPLE_COILS, Function.WRITE_MULTIPLE_REGISTERS):
            return _write_multiple(image, table, pdu)
        return _read(image, table, pdu)
    except _Refused as refusal:
        return Outcome(exception_response(code, refusal.code))


def _fields(pdu: bytes, fmt: str) -> tuple[int, ...]:
    """Unpack the fields after the function code; 03 if the PDU is too short."""
    size = struct.calcsize(fmt)
    if len(pdu) < 1 + size:
        raise _Refused(ExceptionCode.ILLEGAL_DATA_VALUE)
    return struct.unpack_from(fmt, pdu, 1)


def _check_range(image: RegisterImage, table: Table, address: int, count: int) -> None:
    if not image.covers(table, address, count):
        raise _Refused(ExceptionCode.ILLEGAL_DATA_ADDRESS)


def _read(image: RegisterImage, table: Table, pdu: bytes) -> Outcome:
    if len(pdu) != 5:
        raise _Refused(ExceptionCode.ILLEGAL_DATA_VALUE)
    address, count = _fields(pdu, ">HH")
    if not 1 <= count <= table.max_read:
        raise _Refused(ExceptionCode.ILLEGAL_DATA_VALUE)
    _check_range(image, table, address, count)
    items = image.read(table, address, count)
    data = pack_bits(items) if table.is_bits else struct.pack(f">{count}H", *items)
    return Outcome(bytes((pdu[0], len(data))) + data)


def _write_single(image: RegisterImage, table: Table, pdu: bytes) -> Outcome:
    if len(pdu) != 5:
        raise _Refused(ExceptionCode.ILLEGAL_DATA_VALUE)
    address, value = _fields(pdu, ">HH")
    if table.is_bits:
        if value not in (_COIL_ON, _COIL_OFF):
            raise _Refused(ExceptionCode.ILLEGAL_DATA_VALUE)
        value = int(value == _COIL_ON)
    _check_range(image, table, address, 1)
    if not image.writable(table, address, 1):
        raise _Refused(ExceptionCode.ILLEGAL_DATA_ADDRESS)
    written = image.write(table, address, [value])
    return Outcome(bytes(pdu), written)  # the normal response echoes the request


def _write_multiple(image: RegisterImage, table: Table, pdu: bytes) -> Outcome:
    address, count, byte_count = _fields(pdu, ">HHB")
    limit = _MAX_WRITE_COILS if table.is_bits else _MAX_WRITE_REGISTERS
    expected = (count + 7) // 8 if table.is_bits else 2 * count
    if not 1 <= count <= limit or byte_count != expected or len(pdu) != 6 + byte_count:
        raise _Refused(ExceptionCode.ILLEGAL_DATA_VALUE)
    _check_range(image, table, address, count)
    if not image.writable(table, address, count):
        raise _Refused(ExceptionCode.ILLEGAL_DATA_ADDRESS)
    data = pdu[6:]
    items = unpack_bits(data, count) if table.is_bits else list(struct.unpack(f">{count}H", data))
    written = image.write(table, address, items)
    return Outcome(pdu[:5], written)


def pack_bits(bits: list[int]) -> bytes:
    """Bits packed eight to a byte, the first one in the low bit of the first byte."""
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def unpack_bits(data: bytes, count: int) -> list[int]:
    """The first ``count`` bits of ``data``, as packed by :func:`pack_bits`."""
    return [(data[i // 8] >> (i % 8)) & 1 for i in range(count)]
