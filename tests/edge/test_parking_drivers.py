"""Parking drivers against the simulators: real ptys, real local HTTP, no sleeps."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge.parking.camera import CameraReceiver, PlateEvent
from edge.parking.events import EventQueue
from edge.parking.gate import (
    GateController,
    GateEvent,
    GateEventKind,
    GateNoReply,
    GateRefused,
    GateState,
)
from edge.parking.reader import CardRead, CardReader, ReaderState
from protocols.errors import TransportError
from protocols.parking.card import CardType
from protocols.parking.frames import ArmState, FaultCode, NakReason
from simulators.clock import ManualClock
from simulators.parking import CardReaderSimulator, GateSimulator, LineFault, PlateCamera

K = GateEventKind


async def next_of(queue: EventQueue[GateEvent], *wanted: GateEventKind) -> GateEvent:
    """The next event of a wanted kind (others are skipped), within 2 s."""
    async with asyncio.timeout(2):
        while True:
            event = await queue.get()
            if event.kind in wanted:
                return event


async def arm_reaches(queue: EventQueue[GateEvent], arm: ArmState) -> GateEvent:
    async with asyncio.timeout(2):
        while True:
            event = await next_of(queue, K.ARM)
            assert event.status is not None
            if event.status.arm is arm:
                return event


# the barrier gate


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[GateSimulator]:
    async with GateSimulator(link=tmp_path / "gate", travel_time=0.02, close_delay=0.01) as gate:
        yield gate


@pytest.fixture
async def gate(sim: GateSimulator) -> AsyncIterator[GateController]:
    assert sim.link is not None
    controller = GateController(
        str(sim.link),
        name="gate-in-1",
        reply_timeout=0.05,
        command_timeout=1.0,
        poll_interval=None,  # it still asks on every (re)connect
        backoff=(0.02, 0.1),
    )
    async with controller:
        online = await next_of(controller.events, K.ONLINE)
        assert online.status is not None and online.status.arm is ArmState.CLOSED
        yield controller
    assert controller.state is GateState.CLOSED


async def test_open_and_see_the_arm_go_up(gate: GateController, sim: GateSimulator) -> None:
    await gate.open()
    opening = await next_of(gate.events, K.ARM)
    assert opening.status is not None and opening.status.arm is ArmState.OPENING
    assert opening.gate == "gate-in-1" and opening.at.utcoffset() is not None
    await arm_reaches(gate.events, ArmState.OPEN)
    assert sim.state is ArmState.OPEN and sim.opens_count == 1
    status = await gate.status()
    assert status.arm is ArmState.OPEN and gate.last_status == status


async def test_a_car_through_the_gate(gate: GateController, sim: GateSimulator) -> None:
    await sim.car_arrives()
    arrived = await next_of(gate.events, K.VEHICLE_ARRIVED)
    assert arrived.status is not None and arrived.status.loop_occupied
    await gate.open()
    await arm_reaches(gate.events, ArmState.OPEN)
    with pytest.raises(GateRefused) as refused:
        await gate.close()  # not on a car
    assert refused.value.reason is NakReason.VEHICLE_ON_LOOP
    await sim.car_leaves()
    await next_of(gate.events, K.VEHICLE_PASSED)
    await arm_reaches(gate.events, ArmState.CLOSING)  # by itself
    await arm_reaches(gate.events, ArmState.CLOSED)
    assert gate.stats.reports_missed == 0 and gate.stats.refused == 1


async def test_open_resent_after_a_lost_ack_opens_once(
    gate: GateController, sim: GateSimulator
) -> None:
    sim.drop_replies(1)
    await gate.open()
    assert gate.stats.resends >= 1
    assert sim.opens_count == 1 and sim.duplicates >= 1
    first, second = list(sim.received)[-2:]
    assert first == second  # the same seq
    await gate.open()  # a new command is carried out
    assert sim.opens_count == 2


async def test_noise_on_the_line_is_counted_and_the_next_command_works(
    gate: GateController, sim: GateSimulator
) -> None:
    sim.inject_garbage(b"\x00\xff\x02\x01\x31\x10")  # noise with a frame start in it
    sim.inject_bad_checksum()
    sim.inject_garbage()
    status = await gate.status()  # its reply came after the noise, on the same line
    assert status.arm is ArmState.CLOSED
    stats = gate.decoder_stats
    assert stats.bad_checksum == 1 and stats.truncated >= 1 and stats.dropped_bytes >= 2
    await gate.open()
    assert sim.opens_count == 1


async def test_a_gate_that_answers_garbled_times_out(
    gate: GateController, sim: GateSimulator
) -> None:
    sim.set_line_fault(LineFault.BAD_CHECKSUM)
    with pytest.raises(GateNoReply):
        await gate.open(timeout=0.2)
    assert gate.decoder_stats.bad_checksum >= 2  # the first answer and the resends'
    assert sim.opens_count == 1  # it heard and did it once; only the answers were spoilt
    assert gate.state is GateState.SILENT
    await next_of(gate.events, K.OFFLINE)
    sim.set_line_fault(LineFault.NONE)
    await gate.status()
    await next_of(gate.events, K.ONLINE)


async def test_a_silent_gate(gate: GateController, sim: GateSimulator) -> None:
    sim.set_line_fault(LineFault.SILENT)
    with pytest.raises(GateNoReply):
        await gate.open(timeout=0.15)
    assert gate.stats.no_replies == 1 and sim.opens_count == 0
    assert gate.state is GateState.SILENT


async def test_faults_are_events_and_refuse_commands(
    gate: GateController, sim: GateSimulator
) -> None:
    sim.stick_arm()
    await gate.open()
    fault = await next_of(gate.events, K.FAULT)  # after twice the travel time
    assert fault.fault is FaultCode.ARM_STUCK
    assert fault.status is not None and fault.status.arm is ArmState.CLOSED
    with pytest.raises(GateRefused) as refused:
        await gate.open()
    assert refused.value.reason is NakReason.FAULTED
    sim.clear_fault()
    cleared = await next_of(gate.events, K.FAULT_CLEARED)
    assert cleared.status is not None and cleared.status.fault is FaultCode.NONE
    await gate.open()
    await arm_reaches(gate.events, ArmState.OPEN)


async def test_port_lost_and_back(gate: GateController, sim: GateSimulator) -> None:
    sim.unplug()
    await next_of(gate.events, K.OFFLINE)
    assert gate.state is GateState.CONNECTING
    with pytest.raises(TransportError):
        await gate.open()
    sim.replug()
    back = await next_of(gate.events, K.ONLINE)  # reopened, asked the status, got it
    assert back.status is not None and gate.reconnects == 1
    await gate.open()
    await arm_reaches(gate.events, ArmState.OPEN)


async def test_a_port_missing_at_start_is_waited_for(tmp_path: Path) -> None:
    link = tmp_path / "later"
    async with GateController(str(link), backoff=(0.02, 0.05), poll_interval=None) as gate:
        assert gate.state is GateState.CONNECTING
        async with GateSimulator(link=link, travel_time=0.02):
            async with asyncio.timeout(2):
                await gate.wait_state(GateState.ONLINE)


# the card reader


@pytest.fixture
async def reader_sim(tmp_path: Path) -> AsyncIterator[CardReaderSimulator]:
    async with CardReaderSimulator(link=tmp_path / "reader", repeat_interval=0.01) as sim:
        yield sim


@pytest.fixture
def reader_clock() -> ManualClock:
    return ManualClock(1000.0)


@pytest.fixture
async def reader(
    reader_sim: CardReaderSimulator, reader_clock: ManualClock
) -> AsyncIterator[CardReader]:
    assert reader_sim.link is not None
    driver = CardReader(
        str(reader_sim.link), name="reader-in-1", clock=reader_clock, backoff=(0.02, 0.1)
    )
    async with driver:
        async with asyncio.timeout(2):
            await driver.wait_state(ReaderState.ONLINE)
        yield driver


async def next_read(reader: CardReader) -> CardRead:
    async with asyncio.timeout(2):
        return await reader.events.get()


async def test_a_card_is_one_read(reader: CardReader, reader_sim: CardReaderSimulator) -> None:
    await reader_sim.present("a1b2c3d4")
    read = await next_read(reader)
    assert (read.uid, read.card_type, read.reader) == (
        "A1B2C3D4",
        CardType.MIFARE_CLASSIC,
        "reader-in-1",
    )
    await reader_sim.present("04A2B3C4D5E680", CardType.DESFIRE)
    assert (await next_read(reader)).uid == "04A2B3C4D5E680"


async def test_a_held_card_is_one_read(
    reader: CardReader, reader_sim: CardReaderSimulator, reader_clock: ManualClock
) -> None:
    sent = await reader_sim.hold("A1B2C3D4", seconds=0.05)
    await reader_sim.present("11223344")  # a marker: everything before it has been read
    assert (await next_read(reader)).uid == "A1B2C3D4"
    assert (await next_read(reader)).uid == "11223344"
    assert reader.stats.repeats == sent - 1 and len(reader.events) == 0
    reader_clock.advance(reader.hold_gap + 0.1)  # taken away, and shown again
    await reader_sim.present("A1B2C3D4")
    assert (await next_read(reader)).uid == "A1B2C3D4"


async def test_reader_noise_is_counted(reader: CardReader, reader_sim: CardReaderSimulator) -> None:
    reader_sim.inject_garbage()
    await reader_sim.present("A1B2C3D4", bad_checksum=True)
    reader_sim.inject_garbage(b"\x02ZZ\x03")
    await reader_sim.present("55667788")
    assert (await next_read(reader)).uid == "55667788"
    assert reader.decoder_stats.bad_checksum == 1 and reader.decoder_stats.bad_escape == 1
    assert reader.stats.reads == 1


async def test_reader_port_lost_and_back(
    reader: CardReader, reader_sim: CardReaderSimulator
) -> None:
    reader_sim.unplug()
    async with asyncio.timeout(2):
        await reader.wait_state(ReaderState.CONNECTING)
    reader_sim.replug()
    async with asyncio.timeout(2):
        await reader.wait_state(ReaderState.ONLINE)
    await reader_sim.present("A1B2C3D4")
    assert (await next_read(reader)).uid == "A1B2C3D4"
    assert reader.reconnects == 1


# the plate camera


@pytest.fixture
async def receiver() -> AsyncIterator[CameraReceiver]:
    async with CameraReceiver("127.0.0.1", 0, cameras={"cam-in-1", "cam-out-1"}) as rx:
        yield rx


async def next_plate(rx: CameraReceiver) -> PlateEvent:
    async with asyncio.timeout(2):
        return await rx.events.get()


async def test_a_push_is_an_event(receiver: CameraReceiver) -> None:
    camera = PlateCamera(receiver.url, "cam-in-1", "in")
    result = await camera.recognize("浙AD12345", confidence=88)
    assert result.status == 200 and result.body == {"ok": True, "event_id": "cam-in-1-1"}
    event = await next_plate(receiver)
    push = event.push
    assert (push.plate, push.plate_color, push.confidence) == ("浙AD12345", "green", 88)
    assert push.direction == "in" and push.camera_id == "cam-in-1"
    assert event.peer == "127.0.0.1" and event.received_at.utcoffset() is not None


async def test_poor_and_wrong_reads_are_delivered(receiver: CameraReceiver) -> None:
    camera = PlateCamera(receiver.url, "cam-out-1", "out", seed=5)
    await camera.recognize("浙A12345", confidence=12)
    assert (await next_plate(receiver)).push.confidence == 12
    await camera.recognize("浙A12345", misread=True)
    assert (await next_plate(receiver)).push.plate != "浙A12345"


BAD_PUSHES: list[tuple[str, dict[str, Any], int, str]] = [
    ("bad json", {"raw": b'{"plate": "\xe6\xb5\x99A12345",'}, 400, "not JSON"),
    ("missing plate", {"omit": ("plate",)}, 400, "plate: Field required"),
    ("bad plate", {"override": {"plate": "浙A1234"}}, 400, "not a Chinese plate"),
    ("confidence as text", {"override": {"confidence": "92"}}, 400, "confidence"),
    ("time without zone", {"override": {"recognized_at": "2024-05-01T08:00:00"}}, 400, "timezone"),
    ("direction", {"override": {"direction": 1}}, 400, "direction"),
    ("not an object", {"raw": b"[]"}, 400, "object"),
    ("unknown camera", {"override": {"camera_id": "cam-9"}}, 403, "unknown camera"),
]


@pytest.mark.parametrize(("case", "how", "status", "says"), BAD_PUSHES)
async def test_a_bad_push_is_refused_and_the_next_arrives(
    receiver: CameraReceiver, case: str, how: dict[str, Any], status: int, says: str
) -> None:
    camera = PlateCamera(receiver.url, "cam-in-1")
    if "raw" in how:
        result = await camera.push_raw(how["raw"])
    else:
        result = await camera.recognize(
            "浙A12345", omit=how.get("omit", ()), override=how.get("override")
        )
    assert result.status == status
    assert result.body["ok"] is False and says in result.body["error"]
    assert receiver.stats.refused == 1 and receiver.stats.accepted == 0
    await camera.recognize("苏E99999")
    assert (await next_plate(receiver)).push.plate == "苏E99999"
    assert len(receiver.events) == 0


async def test_a_resent_push_is_delivered_once(receiver: CameraReceiver) -> None:
    camera = PlateCamera(receiver.url, "cam-in-1")
    await camera.recognize("浙A12345")
    again = await camera.resend_last()
    assert again.status == 200 and again.body["duplicate"] is True
    await camera.recognize("浙A54321")
    assert (await next_plate(receiver)).push.plate == "浙A12345"
    assert (await next_plate(receiver)).push.plate == "浙A54321"
    assert receiver.stats.duplicates == 1 and receiver.stats.accepted == 2


async def test_wrong_route_method_and_size(receiver: CameraReceiver) -> None:
    elsewhere = PlateCamera(receiver.url.replace("/api/plates", "/plates"), "cam-in-1")
    assert (await elsewhere.recognize("浙A12345")).status == 404
    too_big = await PlateCamera(receiver.url, "cam-in-1").push_raw(b" " * (300 * 1024))
    assert too_big.status == 413
    reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
    writer.write(b"GET /api/plates HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 405") and b"use POST" in answer
    assert (receiver.stats.not_found, receiver.stats.too_large) == (2, 1)


async def test_keep_alive_pushes(receiver: CameraReceiver) -> None:
    """Two pushes on one connection, as cameras with persistent connections send them."""
    reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
    for n, plate in enumerate(("浙A11111", "浙A22222")):
        body = json.dumps(
            {
                "camera_id": "cam-in-1",
                "event_id": f"keep-alive-{n}",
                "plate": plate,
                "plate_color": "blue",
                "confidence": 90,
                "recognized_at": "2024-05-01T08:00:00Z",
                "direction": "in",
            }
        ).encode()
        writer.write(
            b"POST /api/plates HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        assert (await next_plate(receiver)).push.plate == plate
    writer.close()


def _whole_push(event_id: str) -> bytes:
    body = {
        "camera_id": "cam-in-1",
        "event_id": event_id,
        "plate": "浙A12345",
        "plate_color": "blue",
        "confidence": 90,
        "recognized_at": "2024-05-01T08:00:00Z",
        "direction": "in",
    }
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: %d\r\n\r\n%s",  # 10 more bytes announced than sent
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n",  # no last chunk
    ],
    ids=["content-length", "chunked"],
)
async def test_a_body_cut_short_is_refused_though_it_parses(
    receiver: CameraReceiver, framing: bytes
) -> None:
    """The camera hung up before its body ended, so it never reads an answer and will
    resend: the whole JSON that came is not delivered, nor remembered as seen."""
    body = _whole_push("cut-1")
    size = len(body) + 10 if framing.startswith(b"Content-Length") else len(body)
    reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
    writer.write(b"POST /api/plates HTTP/1.1\r\nHost: x\r\n" + framing % (size, body))
    writer.write_eof()
    assert await reader.read() == b""  # nobody left to answer
    writer.close()
    resent = await PlateCamera(receiver.url, "cam-in-1").push_raw(body)
    assert resent.status == 200 and "duplicate" not in resent.body
    assert (await next_plate(receiver)).push.event_id == "cut-1"
    assert len(receiver.events) == 0
    assert (receiver.stats.cut_short, receiver.stats.accepted, receiver.stats.refused) == (1, 1, 1)


async def test_a_taken_port_is_a_transport_error(receiver: CameraReceiver) -> None:
    with pytest.raises(TransportError):
        async with CameraReceiver("127.0.0.1", receiver.port):
            pass
