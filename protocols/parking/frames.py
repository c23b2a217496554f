"""Barrier-gate controller frames (道闸控制器, RS-485/RS-232 at 9600 8N1): pure encode/decode.

On the wire (see protocols/PARKING-DEVICES.md for every byte and example frames)::

    STX 0x02 | stuffed( addr | seq | cmd | len | payload | CRC lo | CRC hi ) | ETX 0x03

CRC-16/Modbus over ``addr .. payload``, low byte first. Inside the frame the bytes 0x02,
0x03 and 0x10 are sent as DLE 0x10 followed by the byte XOR 0x20, so STX and ETX only ever
delimit frames. The host sends OPEN, CLOSE and STATUS? with a sequence number; the gate
answers ACK, NAK or STATUS with the same number, and a resent command (same seq) is not
carried out twice. The gate reports arm movements, the vehicle loop and faults on its
own, numbered by its own counter; every report carries the whole gate status.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from protocols.parking.framing import (
    ETX,
    STX,
    FrameError,
    Problem,
    StreamDecoder,
    crc16_modbus,
)

DLE = 0x10
ESCAPED = frozenset((STX, ETX, DLE))
MAX_PAYLOAD = 32
_HEAD = 4  # addr, seq, cmd, len
_CRC = 2


class Command(IntEnum):
    OPEN = 0x31  # host -> gate
    CLOSE = 0x32
    QUERY = 0x33  # STATUS?
    ACK = 0x06  # gate -> host, answers (ASCII ACK and NAK)
    NAK = 0x15
    STATUS = 0xB3  # the answer to QUERY
    ARM = 0xA1  # gate -> host, reports
    LOOP = 0xA2
    FAULT = 0xA3


class ArmState(IntEnum):
    CLOSED = 0
    OPENING = 1
    OPEN = 2
    CLOSING = 3


class LoopEvent(IntEnum):
    ARRIVED = 1  # a vehicle is on the loop
    PASSED = 2  # it left the loop with the arm open: it went through
    LEFT = 3  # it left the loop with the arm not open: it backed away


class FaultCode(IntEnum):
    NONE = 0
    MOTOR_OVERCURRENT = 1
    ARM_HIT = 2  # the arm struck something and stopped
    LOOP_FAULT = 3  # loop detector open or shorted: vehicles are not seen
    ARM_STUCK = 4  # the limit switch was not reached in time
    ARM_MISSING = 5  # arm broken off
    OTHER = 0xFF  # any code this host does not know (newer firmware): still a fault

    @classmethod
    def _missing_(cls, value: object) -> FaultCode:
        return cls.OTHER


class NakReason(IntEnum):
    UNKNOWN_COMMAND = 1
    BAD_PAYLOAD = 2
    FAULTED = 3  # the arm cannot move until the fault is cleared
    VEHICLE_ON_LOOP = 4  # CLOSE refused: the arm would come down on a vehicle


def _byte(name: str, value: int) -> None:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{name} must fit a byte, not {value}")


@dataclass(frozen=True, slots=True)
class GateStatus:
    arm: ArmState
    loop_occupied: bool
    fault: FaultCode = FaultCode.NONE

    def encode(self) -> bytes:
        return bytes((self.arm, int(self.loop_occupied), self.fault))

    @classmethod
    def decode(cls, data: bytes) -> GateStatus:
        """The status in the last three bytes of a payload; FrameError if they make no sense."""
        arm, loop, fault = data
        if arm not in ArmState._value2member_map_ or loop > 1:
            raise FrameError(Problem.BAD_PAYLOAD, f"status {data.hex(' ')}")
        return cls(ArmState(arm), bool(loop), FaultCode(fault))


@dataclass(frozen=True, slots=True)
class _Frame:
    addr: int
    seq: int

    def __post_init__(self) -> None:
        _byte("addr", self.addr)
        _byte("seq", self.seq)


@dataclass(frozen=True, slots=True)
class Open(_Frame):
    """Raise the arm; after the vehicle has passed the loop the gate closes by itself."""


@dataclass(frozen=True, slots=True)
class Close(_Frame):
    """Lower the arm (refused with NAK VEHICLE_ON_LOOP while a vehicle is on the loop)."""


@dataclass(frozen=True, slots=True)
class Query(_Frame):
    """STATUS?: the gate answers with :class:`StatusReply`."""


@dataclass(frozen=True, slots=True)
class Ack(_Frame):
    command: Command


@dataclass(frozen=True, slots=True)
class Nak(_Frame):
    command: int  # as received by the gate: it may be one it does not know
    reason: NakReason


@dataclass(frozen=True, slots=True)
class StatusReply(_Frame):
    status: GateStatus


@dataclass(frozen=True, slots=True)
class ArmReport(_Frame):
    """The arm changed state (``status.arm`` is the new one); seq is the gate's own."""

    status: GateStatus


@dataclass(frozen=True, slots=True)
class LoopReport(_Frame):
    event: LoopEvent
    status: GateStatus


@dataclass(frozen=True, slots=True)
class FaultReport(_Frame):
    """A fault was raised, or cleared (``fault`` NONE)."""

    fault: FaultCode
    status: GateStatus


Request = Open | Close | Query
Reply = Ack | Nak | StatusReply
Report = ArmReport | LoopReport | FaultReport
GateMessage = Request | Reply | Report


def _command_and_payload(msg: GateMessage) -> tuple[int, bytes]:
    match msg:
        case Open():
            return Command.OPEN, b""
        case Close():
            return Command.CLOSE, b""
        case Query():
            return Command.QUERY, b""
        case Ack(command=command):
            return Command.ACK, bytes((command,))
        case Nak(command=command, reason=reason):
            return Command.NAK, bytes((command, reason))
        case StatusReply(status=status):
            return Command.STATUS, status.encode()
        case ArmReport(status=status):
            return Command.ARM, status.encode()
        case LoopReport(event=event, status=status):
            return Command.LOOP, bytes((event,)) + status.encode()
        case FaultReport(fault=fault, status=status):
            return Command.FAULT, bytes((fault,)) + status.encode()
    raise TypeError(f"not a gate message: {msg!r}")


def encode(msg: GateMessage, *, bad_checksum: bool = False) -> bytes:
    """The frame carrying ``msg``; ``bad_checksum`` spoils the CRC (fault injection)."""
    command, payload = _command_and_payload(msg)
    return encode_raw(msg.addr, msg.seq, command, payload, bad_checksum=bad_checksum)


def encode_raw(
    addr: int, seq: int, command: int, payload: bytes = b"", *, bad_checksum: bool = False
) -> bytes:
    """A frame with any command byte and payload (a gate this host does not know, tests)."""
    for name, value in (("addr", addr), ("seq", seq), ("command", command)):
        _byte(name, value)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes, at most {MAX_PAYLOAD}")
    body = bytes((addr, seq, command, len(payload))) + payload
    crc = crc16_modbus(body) ^ (0x5A5A if bad_checksum else 0)
    return bytes((STX,)) + stuff(body + crc.to_bytes(2, "little")) + bytes((ETX,))


def stuff(data: bytes) -> bytes:
    """``data`` with STX, ETX and DLE each sent as DLE, byte XOR 0x20."""
    out = bytearray()
    for byte in data:
        if byte in ESCAPED:
            out += bytes((DLE, byte ^ 0x20))
        else:
            out.append(byte)
    return bytes(out)


def unstuff(data: bytes) -> bytes:
    """The inverse of :func:`stuff`; FrameError (BAD_ESCAPE) for a DLE that escapes nothing,
    or a raw STX or ETX (a sender that does not stuff: the frame is not the one it meant)."""
    out = bytearray()
    it = iter(data)
    for byte in it:
        if byte in (STX, ETX):
            raise FrameError(Problem.BAD_ESCAPE, f"raw 0x{byte:02x} inside a frame")
        if byte == DLE:
            nxt = next(it, None)
            if nxt is None or nxt ^ 0x20 not in ESCAPED:
                raise FrameError(Problem.BAD_ESCAPE, "DLE not followed by an escaped byte")
            byte = nxt ^ 0x20
        out.append(byte)
    return bytes(out)


def decode_inside(inside: bytes) -> GateMessage:
    """The message between one STX and ETX; FrameError says what is wrong with it.

    Checks, in order: stuffing, length, CRC, command, payload.
    """
    body = unstuff(inside)
    if len(body) < _HEAD + _CRC or body[3] != len(body) - _HEAD - _CRC:
        raise FrameError(Problem.BAD_LENGTH, f"{len(body)} bytes: {body.hex(' ')}")
    if crc16_modbus(body) != 0:  # the CRC over data and CRC together is 0 when it is right
        raise FrameError(Problem.BAD_CHECKSUM, body.hex(" "))
    addr, seq, command = body[0], body[1], body[2]
    payload = body[_HEAD:-_CRC]
    if command not in Command._value2member_map_:
        raise FrameError(Problem.UNKNOWN_COMMAND, f"command 0x{command:02x}")
    return _message(addr, seq, Command(command), payload)


_PAYLOAD_SIZE = {
    Command.OPEN: 0,
    Command.CLOSE: 0,
    Command.QUERY: 0,
    Command.ACK: 1,
    Command.NAK: 2,
    Command.STATUS: 3,
    Command.ARM: 3,
    Command.LOOP: 4,
    Command.FAULT: 4,
}


def _message(addr: int, seq: int, command: Command, p: bytes) -> GateMessage:
    if len(p) != _PAYLOAD_SIZE[command]:
        raise FrameError(Problem.BAD_PAYLOAD, f"{command.name} with {len(p)} payload bytes")
    try:
        match command:
            case Command.OPEN:
                return Open(addr, seq)
            case Command.CLOSE:
                return Close(addr, seq)
            case Command.QUERY:
                return Query(addr, seq)
            case Command.ACK:
                return Ack(addr, seq, Command(p[0]))
            case Command.NAK:
                return Nak(addr, seq, p[0], NakReason(p[1]))
            case Command.STATUS:
                return StatusReply(addr, seq, GateStatus.decode(p))
            case Command.ARM:
                return ArmReport(addr, seq, GateStatus.decode(p))
            case Command.LOOP:
                return LoopReport(addr, seq, LoopEvent(p[0]), GateStatus.decode(p[1:]))
            case Command.FAULT:
                return FaultReport(addr, seq, FaultCode(p[0]), GateStatus.decode(p[1:]))
    except ValueError as exc:  # an enum value the format does not have
        raise FrameError(Problem.BAD_PAYLOAD, f"{command.name} {p.hex(' ')}") from exc
    raise AssertionError(command)  # pragma: no cover - every Command is matched above


class GateDecoder(StreamDecoder[GateMessage]):
    """Incremental: feed bytes as they come, get the messages that completed.

    Never raises; each frame thrown away is counted in ``stats`` by its :class:`Problem`.
    """

    def __init__(self) -> None:
        super().__init__(2 * (_HEAD + MAX_PAYLOAD + _CRC), decode_inside)
