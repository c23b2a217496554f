"""Modbus TCP endpoint against pymodbus' client: reads, writes, unknown units, faults."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ExceptionResponse

from protocols.registers import Table
from simulators import Fault, FaultKind, ManualClock, ModbusSimulator, quick_config
from tests.simulators.peers import decode_all

DEVICES = ["pump-station:1", "em-1p:2-3", "lift:4"]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def sim(clock: ManualClock) -> AsyncIterator[ModbusSimulator]:
    async with ModbusSimulator(quick_config(tcp="127.0.0.1:0", devices=DEVICES), clock=clock) as s:
        yield s


@pytest.fixture
async def client(sim: ModbusSimulator) -> AsyncIterator[AsyncModbusTcpClient]:
    c = AsyncModbusTcpClient("127.0.0.1", port=sim.tcp_port(), timeout=0.3, retries=0)
    assert await c.connect()
    yield c
    c.close()


async def test_reads_decode_to_the_simulator_values(
    sim: ModbusSimulator, client: AsyncModbusTcpClient, clock: ManualClock
) -> None:
    clock.advance(600)
    meter = sim.device("em-1p-2")
    inputs = await client.read_input_registers(0, count=72, device_id=2)  # bridges the holes
    holding = await client.read_holding_registers(256, count=2, device_id=2)
    got = decode_all(meter.profile, Table.INPUT, 0, inputs.registers)
    got |= decode_all(meter.profile, Table.HOLDING, 256, holding.registers)
    assert got == meter.values()
    assert meter.stats.replies == 2


async def test_writes_change_behaviour(
    sim: ModbusSimulator, client: AsyncModbusTcpClient, clock: ManualClock
) -> None:
    assert not (await client.write_coil(0, False, device_id=1)).isError()
    assert not (await client.write_register(0, 600, device_id=1)).isError()  # 0.6 MPa
    clock.advance(120)
    pumps = sim.device("pump-station-1")
    assert pumps.value("pressure_setpoint") == 0.6
    assert (await client.read_coils(0, count=2, device_id=1)).bits[:2] == [False, False]
    assert (await client.read_discrete_inputs(0, count=1, device_id=1)).bits[0] is False
    assert (await client.write_coil(1, True, device_id=1)).isError() is False  # pump 2 on
    clock.advance(60)
    pressure = (await client.read_input_registers(0, count=1, device_id=1)).registers[0]
    assert 580 <= pressure <= 620


async def test_refusals_come_back_as_exception_responses(client: AsyncModbusTcpClient) -> None:
    not_writable = await client.write_register(256, 1, device_id=2)
    assert isinstance(not_writable, ExceptionResponse)
    assert not_writable.exception_code == 2
    unknown_unit = await client.read_holding_registers(0, count=1, device_id=99)
    assert isinstance(unknown_unit, ExceptionResponse)
    assert unknown_unit.exception_code == 0x0B  # gateway target device failed to respond
    no_coils = await client.read_coils(0, count=1, device_id=4)
    assert isinstance(no_coils, ExceptionResponse)
    assert no_coils.exception_code == 1


async def test_silent_times_out_and_neighbours_still_answer(
    sim: ModbusSimulator, client: AsyncModbusTcpClient
) -> None:
    sim.device("em-1p-2").set_fault(Fault(FaultKind.SILENT))
    with pytest.raises(ModbusIOException):
        await client.read_holding_registers(256, count=2, device_id=2)
    assert not (await client.read_holding_registers(256, count=2, device_id=3)).isError()
    sim.device("em-1p-2").clear_fault()
    assert not (await client.read_holding_registers(256, count=2, device_id=2)).isError()


async def test_exception_fault(sim: ModbusSimulator, client: AsyncModbusTcpClient) -> None:
    sim.device("lift-4").set_fault(Fault(FaultKind.EXCEPTION, code=4))
    reply = await client.read_holding_registers(0, count=8, device_id=4)
    assert reply.isError()
    assert isinstance(reply, ExceptionResponse)
    assert reply.exception_code == 4


@pytest.mark.parametrize("kind", [FaultKind.GARBAGE, FaultKind.BAD_CRC])
async def test_garbage_is_an_error_and_the_connection_recovers(
    sim: ModbusSimulator, client: AsyncModbusTcpClient, kind: FaultKind
) -> None:
    sim.device("em-1p-2").set_fault(Fault(kind))
    with pytest.raises(ModbusIOException):
        await client.read_holding_registers(256, count=2, device_id=2)
    assert not (await client.read_holding_registers(256, count=2, device_id=3)).isError()


async def test_stuck_and_out_of_range_as_a_master_sees_them(
    sim: ModbusSimulator, client: AsyncModbusTcpClient, clock: ManualClock
) -> None:
    pumps = sim.device("pump-station-1")
    pumps.set_fault(Fault(FaultKind.STUCK))
    before = (await client.read_input_registers(0, count=4, device_id=1)).registers
    clock.advance(30)
    assert (await client.read_input_registers(0, count=4, device_id=1)).registers == before
    pumps.set_fault(Fault(FaultKind.OUT_OF_RANGE))
    pressure = (await client.read_input_registers(0, count=1, device_id=1)).registers[0]
    assert pressure == 0xFFFF  # 65.535 MPa
