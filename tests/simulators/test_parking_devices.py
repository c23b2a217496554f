"""Parking simulators on their own: the barrier model by the clock, the devices over ptys
and HTTP with a bare client (the edge drivers against them: tests/edge/test_parking_drivers.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import tty
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest

from protocols.parking import card
from protocols.parking.camera import parse_push
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
    LoopReport,
    Nak,
    Open,
    Query,
    StatusReply,
    encode,
)
from protocols.parking.plates import check_plate
from simulators.clock import ManualClock
from simulators.parking import (
    BarrierModel,
    CardReaderSimulator,
    GateSimulator,
    LineFault,
    PlateCamera,
    misread,
)

# the barrier model, by a manual clock


def kinds(messages: list[GateMessage]) -> list[str]:
    """A compact view: ACK OPEN, ARM opening, LOOP passed, FAULT arm_stuck ..."""
    out = []
    for m in messages:
        match m:
            case Ack(command=c):
                out.append(f"ACK {Command(c).name}")
            case Nak(reason=r):
                out.append(f"NAK {r.name}")
            case StatusReply():
                out.append("STATUS")
            case ArmReport(status=s):
                out.append(f"ARM {s.arm.name}")
            case LoopReport(event=e):
                out.append(f"LOOP {e.name}")
            case FaultReport(fault=f):
                out.append(f"FAULT {f.name}")
    return out


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(100.0)


@pytest.fixture
def model(clock: ManualClock) -> BarrierModel:
    return BarrierModel(clock, travel_time=2.0, close_delay=1.0)


def test_open_pass_and_close_by_itself(model: BarrierModel, clock: ManualClock) -> None:
    assert kinds(model.vehicle_arrives()) == ["LOOP ARRIVED"]
    assert kinds(model.handle(Open(1, 1))) == ["ACK OPEN", "ARM OPENING"]
    clock.advance(1.0)
    assert model.update() == [] and model.position == pytest.approx(0.5)
    clock.advance(1.0)
    assert kinds(model.update()) == ["ARM OPEN"]
    clock.advance(30)
    assert model.update() == []  # stays open while the car is on the loop
    assert kinds(model.vehicle_leaves()) == ["LOOP PASSED"]
    clock.advance(0.9)
    assert model.update() == []
    clock.advance(0.1)
    assert kinds(model.update()) == ["ARM CLOSING"]
    clock.advance(5)
    assert kinds(model.update()) == ["ARM CLOSED"]
    assert (model.opens_count, model.passes) == (1, 1)


def test_a_long_gap_reports_everything_in_order(model: BarrierModel, clock: ManualClock) -> None:
    model.vehicle_arrives()
    model.handle(Open(1, 1))
    clock.advance(2.0)
    model.vehicle_leaves()  # update() inside: ARM OPEN first
    clock.advance(60)
    assert kinds(model.update()) == ["ARM CLOSING", "ARM CLOSED"]


def test_resend_is_answered_not_carried_out(model: BarrierModel, clock: ManualClock) -> None:
    first = model.handle(Open(1, 7))
    clock.advance(0.3)
    assert model.handle(Open(1, 7)) == first[:1]  # the same ACK, no new movement
    assert (model.opens_count, model.duplicates) == (1, 1)
    model.handle(Open(1, 8))
    assert model.opens_count == 2  # a new seq is a new command
    clock.advance(20)  # outside the window the same seq is new again
    model.update()
    model.handle(Open(1, 8))
    assert model.opens_count == 3


def test_close_refused_on_a_vehicle_and_anti_smash(model: BarrierModel, clock: ManualClock) -> None:
    model.handle(Open(1, 1))
    clock.advance(2)
    model.vehicle_arrives()
    assert kinds(model.handle(Close(1, 2))) == ["NAK VEHICLE_ON_LOOP"]
    model.vehicle_leaves()
    clock.advance(1.5)  # close_delay 1 s, then closing for half a second
    assert kinds(model.update()) == ["ARM CLOSING"]
    clock.advance(0.5)  # half-way down
    assert kinds(model.vehicle_arrives()) == ["LOOP ARRIVED", "ARM OPENING"]
    clock.advance(0.9)
    assert model.update() == []
    clock.advance(0.1)  # back up the half it came down
    assert kinds(model.update()) == ["ARM OPEN"]


def test_a_car_that_backs_away_leaves_the_arm_alone(model: BarrierModel) -> None:
    model.vehicle_arrives()
    assert kinds(model.vehicle_leaves()) == ["LOOP LEFT"]
    assert model.next_deadline() is None and model.passes == 0


def test_stuck_arm_reports_and_refuses_until_cleared(
    model: BarrierModel, clock: ManualClock
) -> None:
    model.stuck = True
    assert kinds(model.handle(Open(1, 1))) == ["ACK OPEN", "ARM OPENING"]
    clock.advance(3.9)
    assert model.update() == []
    clock.advance(0.1)  # stuck_limit: twice the travel time
    (fault,) = model.update()
    assert isinstance(fault, FaultReport) and fault.fault is FaultCode.ARM_STUCK
    assert fault.status.arm is ArmState.CLOSED  # it never left
    assert kinds(model.handle(Open(1, 2))) == ["NAK FAULTED"]
    assert kinds(model.clear_fault()) == ["FAULT NONE"]
    assert kinds(model.handle(Open(1, 3))) == ["ACK OPEN", "ARM OPENING"]


def test_fault_half_way_then_cleared_brings_the_arm_down(
    model: BarrierModel, clock: ManualClock
) -> None:
    model.handle(Open(1, 1))
    clock.advance(1)
    assert kinds(model.raise_fault(FaultCode.ARM_HIT)) == ["FAULT ARM_HIT"]
    clock.advance(10)
    assert model.update() == [] and model.position == pytest.approx(0.5)
    assert kinds(model.clear_fault()) == ["FAULT NONE", "ARM CLOSING"]
    clock.advance(1)
    assert kinds(model.update()) == ["ARM CLOSED"]


def test_auto_close_when_nobody_drives_through(clock: ManualClock) -> None:
    model = BarrierModel(clock, travel_time=1.0, auto_close_after=10.0)
    model.handle(Open(1, 1))
    clock.advance(1)
    assert kinds(model.update()) == ["ARM OPEN"]
    clock.advance(10)
    assert kinds(model.update()) == ["ARM CLOSING"]


def test_report_numbers_count_up(model: BarrierModel, clock: ManualClock) -> None:
    out = model.vehicle_arrives() + model.handle(Open(1, 9))
    clock.advance(2)
    out += model.update()
    seqs = [m.seq for m in out if not isinstance(m, Ack)]
    assert seqs == [1, 2, 3]


# devices on ptys, with a bare client

T = TypeVar("T")


class PtyClient(Generic[T]):
    """The host's end of a pty, opened raw, decoding what arrives."""

    def __init__(self, path: str, feed: Callable[[bytes], list[T]]) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self._feed = feed
        self.got: list[T] = []
        self.bytes = 0
        self.error: OSError | None = None
        self._more = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 4096)
            if not data:  # what a pty whose other end is gone reads (or EIO)
                raise OSError("end of file")
        except BlockingIOError:
            return
        except OSError as exc:
            self.error = exc
            asyncio.get_running_loop().remove_reader(self.fd)
        else:
            self.bytes += len(data)
            self.got += self._feed(data)
        self._more.set()

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, checked after each read (2 s at most)."""
        async with asyncio.timeout(2):
            while not predicate():
                self._more.clear()
                await self._more.wait()

    async def wait(self, count: int) -> list[T]:
        """Once ``count`` items arrived in all (or the port failed): all of them."""
        await self.until(lambda: len(self.got) >= count or self.error is not None)
        return self.got

    def close(self) -> None:
        if self.fd >= 0:
            asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


@pytest.fixture
async def gate_and_client(
    clock: ManualClock, tmp_path: Path
) -> AsyncIterator[tuple[GateSimulator, PtyClient[GateMessage], GateDecoder]]:
    async with GateSimulator(link=tmp_path / "gate0", clock=clock, travel_time=2.0) as gate:
        decoder = GateDecoder()
        client = PtyClient(str(tmp_path / "gate0"), decoder.feed)
        yield gate, client, decoder
        client.close()
    assert not (tmp_path / "gate0").exists()  # the link goes with the simulator


async def test_gate_on_a_pty(
    gate_and_client: tuple[GateSimulator, PtyClient[GateMessage], GateDecoder],
    clock: ManualClock,
) -> None:
    gate, client, _ = gate_and_client
    client.write(encode(Open(1, 1)))
    got = await client.wait(2)
    assert kinds(got) == ["ACK OPEN", "ARM OPENING"]
    clock.advance(2)
    gate.tick()
    await gate.car_arrives()
    got = await client.wait(4)
    assert kinds(got[2:]) == ["ARM OPEN", "LOOP ARRIVED"]
    assert gate.state is ArmState.OPEN and gate.status.loop_occupied
    client.write(encode(Query(1, 2)) + encode(Open(2, 3)))  # the second is for another gate
    (reply,) = (await client.wait(5))[4:]
    assert isinstance(reply, StatusReply) and reply.status == gate.status
    assert gate.stats.other_address == 1 and gate.stats.requests == 2


async def test_gate_line_faults(
    gate_and_client: tuple[GateSimulator, PtyClient[GateMessage], GateDecoder],
) -> None:
    gate, client, decoder = gate_and_client
    gate.set_line_fault(LineFault.BAD_CHECKSUM)
    client.write(encode(Query(1, 1)))
    await client.until(lambda: decoder.stats.bad_checksum == 1)
    gate.set_line_fault(LineFault.GARBAGE)
    client.write(encode(Query(1, 2)))
    await client.until(lambda: client.bytes > 13)  # noise instead of the 13-byte STATUS
    gate.set_line_fault(LineFault.SILENT)
    client.write(encode(Query(1, 3)))
    async with asyncio.timeout(2):
        await gate.wait_until(lambda: gate.stats.bytes_ignored > 0)
    gate.set_line_fault(LineFault.NONE)
    gate.inject_bad_checksum()
    gate.inject_garbage(b"\x02\x01\xff\x03")
    client.write(encode(Query(1, 4)))
    (reply,) = await client.wait(1)
    assert isinstance(reply, StatusReply) and reply.seq == 4
    assert decoder.stats.bad_checksum == 2 and decoder.stats.bad_length >= 1
    assert gate.stats.requests == 3  # SILENT: the third query was never heard


async def test_gate_drops_a_reply_but_does_the_work(
    gate_and_client: tuple[GateSimulator, PtyClient[GateMessage], GateDecoder],
) -> None:
    gate, client, _ = gate_and_client
    gate.drop_replies(1)
    client.write(encode(Open(1, 4)))
    assert kinds(await client.wait(1)) == ["ARM OPENING"]
    client.write(encode(Open(1, 4)))  # the host resends
    assert kinds(await client.wait(2)) == ["ARM OPENING", "ACK OPEN"]
    assert (gate.opens_count, gate.duplicates, gate.stats.replies_dropped) == (1, 1, 1)
    assert [type(r) for r in gate.received] == [Open, Open]


async def test_gate_unplug_and_replug(
    gate_and_client: tuple[GateSimulator, PtyClient[GateMessage], GateDecoder],
    tmp_path: Path,
) -> None:
    gate, client, _ = gate_and_client
    gate.unplug()
    await client.wait(1)
    assert client.error is not None  # EIO, as when a USB adapter is pulled out
    client.close()
    gate.replug()
    assert gate.path  # a fresh pty (the kernel may reuse the number)
    assert os.readlink(tmp_path / "gate0") == gate.path
    again = PtyClient(str(tmp_path / "gate0"), GateDecoder().feed)
    again.write(encode(Query(1, 1)))
    assert len(await again.wait(1)) == 1
    again.close()


async def test_gate_real_time_arm(tmp_path: Path) -> None:
    async with GateSimulator(travel_time=0.02, close_delay=0.01) as gate:
        client = PtyClient(gate.path, GateDecoder().feed)
        client.write(encode(Open(1, 1)))
        async with asyncio.timeout(2):
            await gate.wait_arm(ArmState.OPEN)
            await gate.car_arrives()
            await gate.car_leaves()
            await gate.wait_arm(ArmState.CLOSED)
        got = await client.wait(7)
        assert kinds(got) == [
            "ACK OPEN",
            "ARM OPENING",
            "ARM OPEN",
            "LOOP ARRIVED",
            "LOOP PASSED",
            "ARM CLOSING",
            "ARM CLOSED",
        ]
        client.close()


async def test_card_reader_on_a_pty() -> None:
    async with CardReaderSimulator(repeat_interval=0.01) as reader:
        decoder = card.CardDecoder()
        client = PtyClient(reader.path, decoder.feed)
        await reader.present("A1B2C3D4")
        await reader.present("04A2B3C4D5E680", card.CardType.MIFARE_ULTRALIGHT)
        await reader.present("A1B2C3D4", bad_checksum=True)
        reader.inject_garbage()
        sent = await reader.hold(bytes.fromhex("11223344"), seconds=0.03)
        got = await client.wait(2 + sent)
        assert [f.uid_hex for f in got] == ["A1B2C3D4", "04A2B3C4D5E680"] + ["11223344"] * sent
        assert sent == 4 and decoder.stats.bad_checksum == 1
        client.write(b"hello")  # a reader ignores the host
        client.close()
        with pytest.raises(ValueError):
            await reader.present("A1B2C3")


# the camera


class Recorder:
    """A receiver that records pushes and answers 200 (or what it is told)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.status = 200
        self.got = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        self.bodies.append(await reader.readexactly(length))
        answer = json.dumps({"ok": self.status == 200}).encode()
        writer.write(
            b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (self.status, len(answer), answer)
        )
        await writer.drain()
        writer.close()
        self.got.set()


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    rec = Recorder()
    server = await asyncio.start_server(rec.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield rec, f"http://127.0.0.1:{port}/api/plates"
    server.close()
    await server.wait_closed()


async def test_camera_pushes(recorder: tuple[Recorder, str]) -> None:
    rec, url = recorder
    camera = PlateCamera(url, "cam-out-1", "out", seed=3)
    result = await camera.recognize("浙AD12345", confidence=40)
    assert result.status == 200 and result.body == {"ok": True}
    push = parse_push(rec.bodies[0])
    assert (push.plate, push.plate_color, push.direction) == ("浙AD12345", "green", "out")
    assert push.confidence == 40 and push.recognized_at.utcoffset() is not None
    await camera.recognize("浙A12345", misread=True)
    wrong = parse_push(rec.bodies[1]).plate
    assert wrong != "浙A12345" and check_plate(wrong) == wrong
    await camera.recognize("浙A12345", omit=("plate",), override={"confidence": "high"})
    body: dict[str, Any] = json.loads(rec.bodies[2])
    assert "plate" not in body and body["confidence"] == "high"
    await camera.push_raw(b'{"plate": ')
    await camera.resend_last()
    assert rec.bodies[3] == rec.bodies[4] == b'{"plate": '
    rec.status = 400
    assert (await camera.recognize("浙A12345")).status == 400
    assert camera.pushes == 6


def test_misread_is_a_different_well_formed_plate() -> None:
    rng = random.Random(1)
    for plate in ["浙A12345", "浙AD12345", "沪A12345D", "京A1234学", "粤BCDEFG"]:
        for _ in range(20):
            wrong = misread(plate, rng)
            assert wrong != plate and check_plate(wrong) == wrong


async def test_camera_unreachable_is_a_transport_error() -> None:
    from protocols.errors import TransportError

    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(TransportError):
        await PlateCamera(f"http://127.0.0.1:{port}/", "cam-1").recognize("浙A12345")
