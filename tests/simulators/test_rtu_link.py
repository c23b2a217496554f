"""Modbus RTU on a pty: pymodbus' serial client and raw bytes on the line."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ExceptionResponse

from simulators import Fault, FaultKind, ManualClock, ModbusSimulator, quick_config
from simulators.rtu import corrupt_crc, encode_frame
from simulators.rtu_link import RtuEndpoint
from tests.simulators.peers import RawLine

DEVICES = ["water-meter:1-3", "pump-station:10"]
READ_VOLUME = bytes.fromhex("03 0000 0002")


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[ModbusSimulator]:
    config = quick_config(rtu=tmp_path / "rtu0", devices=DEVICES)
    async with ModbusSimulator(config, clock=ManualClock()) as s:
        yield s


@pytest.fixture
async def client(sim: ModbusSimulator) -> AsyncIterator[AsyncModbusSerialClient]:
    c = AsyncModbusSerialClient(sim.rtu_path(), baudrate=19200, timeout=0.3, retries=0)
    assert await c.connect()
    yield c
    c.close()


async def test_the_link_points_at_the_pty_and_goes_away(tmp_path: Path) -> None:
    link = tmp_path / "rtu0"
    async with ModbusSimulator(quick_config(rtu=link, devices=DEVICES)) as sim:
        assert os.readlink(link) == sim.rtu_path()
        assert sim.rtu_path().startswith("/dev/pts/")
    assert not link.exists()
    assert not link.is_symlink()


async def test_read_and_write_through_pymodbus(
    sim: ModbusSimulator, client: AsyncModbusSerialClient
) -> None:
    volume = await client.read_holding_registers(0, count=2, device_id=2)
    raw = volume.registers[0] << 16 | volume.registers[1]
    assert raw / 1000 == sim.device("water-meter-2").value("volume")
    assert not (await client.write_register(0, 520, device_id=10)).isError()
    assert sim.device("pump-station-10").value("pressure_setpoint") == 0.52
    refused = await client.write_register(0, 1, device_id=1)
    assert isinstance(refused, ExceptionResponse)
    assert refused.exception_code == 2


async def test_a_client_may_close_and_reopen_the_port(sim: ModbusSimulator) -> None:
    for _ in range(2):
        c = AsyncModbusSerialClient(sim.rtu_path(), baudrate=9600, timeout=0.3, retries=0)
        assert await c.connect()
        assert not (await c.read_holding_registers(0, count=2, device_id=1)).isError()
        c.close()


async def test_silence_for_unknown_units_and_silent_devices(
    sim: ModbusSimulator, client: AsyncModbusSerialClient
) -> None:
    with pytest.raises(ModbusIOException):
        await client.read_holding_registers(0, count=2, device_id=99)
    sim.device("water-meter-1").set_fault(Fault(FaultKind.SILENT))
    with pytest.raises(ModbusIOException):
        await client.read_holding_registers(0, count=2, device_id=1)
    assert not (await client.read_holding_registers(0, count=2, device_id=2)).isError()
    endpoint = sim.endpoint("rtu0")
    assert isinstance(endpoint, RtuEndpoint)
    assert endpoint.stats.unknown_unit == 1


async def test_exception_fault(sim: ModbusSimulator, client: AsyncModbusSerialClient) -> None:
    sim.device("water-meter-3").set_fault(Fault(FaultKind.EXCEPTION, code=4))
    reply = await client.read_holding_registers(0, count=2, device_id=3)
    assert reply.isError()
    assert isinstance(reply, ExceptionResponse)
    assert reply.exception_code == 4


@pytest.mark.parametrize("kind", [FaultKind.BAD_CRC, FaultKind.GARBAGE])
async def test_a_spoiled_reply_fails_and_the_next_device_still_answers(
    sim: ModbusSimulator, client: AsyncModbusSerialClient, kind: FaultKind
) -> None:
    sim.device("water-meter-1").set_fault(Fault(kind))
    with pytest.raises(ModbusIOException):
        await client.read_holding_registers(0, count=2, device_id=1)
    reply = await client.read_holding_registers(0, count=2, device_id=2)
    assert not reply.isError()
    assert sim.device("water-meter-1").stats.faulted == 1


async def test_the_bad_crc_reply_is_the_right_frame_with_a_wrong_check(
    sim: ModbusSimulator,
) -> None:
    sim.device("water-meter-1").set_fault(Fault(FaultKind.BAD_CRC))
    line = RawLine(sim.rtu_path())
    try:
        line.send(encode_frame(1, READ_VOLUME))
        reply = await line.receive(9)
    finally:
        line.close()
    sim.device("water-meter-1").clear_fault()
    good = encode_frame(1, sim.device("water-meter-1").handle(READ_VOLUME).payload)
    assert reply[:-2] == good[:-2]
    assert reply[-2:] != good[-2:]


async def test_a_request_with_a_bad_crc_is_ignored_and_counted(sim: ModbusSimulator) -> None:
    line = RawLine(sim.rtu_path())
    try:
        # a corrupted request, noise, then a good request, all in one burst
        spoiled = corrupt_crc(encode_frame(1, READ_VOLUME))
        line.send(spoiled + b"\xff\x00" + encode_frame(2, READ_VOLUME))
        reply = await line.receive(9)
        assert reply[0] == 2
        with pytest.raises(TimeoutError):
            await line.receive(1, timeout=0.1)  # and nothing for unit 1
    finally:
        line.close()
    endpoint = sim.endpoint("rtu0")
    assert isinstance(endpoint, RtuEndpoint)
    assert endpoint.stats.bad_crc == 1
    assert sim.device("water-meter-1").stats.requests == 0


async def test_replies_take_the_wire_time_of_the_baud_rate() -> None:
    config = quick_config(rtu=True, baud=9600, devices=DEVICES)
    async with ModbusSimulator(config, clock=ManualClock()) as sim:
        line = RawLine(sim.rtu_path())
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            line.send(encode_frame(1, bytes.fromhex("03 0000 000A")))  # 10 registers
            await line.receive(25)
            elapsed = loop.time() - started
        finally:
            line.close()
    # (8 request + 25 reply bytes) * 11 bits / 9600 baud + 10 ms turnaround = 47.8 ms
    assert 0.0478 <= elapsed < 0.5
