"""Debian's mbpoll (libmodbus), an independent master, reads what the simulator says."""

from __future__ import annotations

import pytest

from protocols.registers import Table
from simulators import ManualClock, ModbusSimulator, quick_config
from tests.simulators.peers import decode_all, mbpoll, run_mbpoll

DEVICES = ["em-3p:1", "water-meter:2", "pump-station:3"]


async def test_tcp_registers_decode_to_the_simulator_values() -> None:
    clock = ManualClock()
    async with ModbusSimulator(
        quick_config(tcp="127.0.0.1:0", devices=DEVICES), clock=clock
    ) as sim:
        clock.advance(3600)
        tcp = ["-m", "tcp", "-p", str(sim.tcp_port())]
        em3p = sim.device("em-3p-1")
        # input 0..15 (refs 1..16): voltages, currents, power, power factor
        inputs = await mbpoll(*tcp, "-a", "1", "-r", "1", "-c", "16", "-t", "3:hex", "127.0.0.1")
        holding = await mbpoll(*tcp, "-a", "1", "-r", "257", "-c", "4", "-t", "4:hex", "127.0.0.1")
        expected = em3p.values()
        got = decode_all(em3p.profile, Table.INPUT, 0, [int(inputs[r], 16) for r in range(1, 17)])
        got |= decode_all(
            em3p.profile, Table.HOLDING, 256, [int(holding[r], 16) for r in range(257, 261)]
        )
        assert got == expected

        # mbpoll's own float decoding (big-endian word order) agrees too
        floats = await mbpoll(
            *tcp, "-a", "1", "-r", "1", "-c", "3", "-t", "3:float", "-B", "127.0.0.1"
        )
        for ref, name in ((1, "voltage_a"), (3, "voltage_b"), (5, "voltage_c")):
            assert float(floats[ref]) == pytest.approx(expected[name], abs=0.001)

        water = sim.device("water-meter-2")
        regs = await mbpoll(*tcp, "-a", "2", "-r", "1", "-c", "5", "-t", "4:hex", "127.0.0.1")
        got = decode_all(water.profile, Table.HOLDING, 0, [int(regs[r], 16) for r in range(1, 6)])
        assert got == water.values()


async def test_rtu_on_the_pty_decodes_to_the_simulator_values() -> None:
    clock = ManualClock()
    config = quick_config(rtu=True, baud=9600, devices=DEVICES)
    async with ModbusSimulator(config, clock=clock) as sim:
        clock.advance(60)
        rtu = ["-m", "rtu", "-b", "9600", "-P", "none"]
        regs = await mbpoll(*rtu, "-a", "2", "-r", "1", "-c", "5", "-t", "4:hex", sim.rtu_path())
        water = sim.device("water-meter-2")
        got = decode_all(water.profile, Table.HOLDING, 0, [int(regs[r], 16) for r in range(1, 6)])
        assert got == water.values()

        pumps = sim.device("pump-station-3")
        inputs = await mbpoll(*rtu, "-a", "3", "-r", "1", "-c", "4", "-t", "3", sim.rtu_path())
        discrete = await mbpoll(*rtu, "-a", "3", "-r", "1", "-c", "11", "-t", "1", sim.rtu_path())
        got = decode_all(pumps.profile, Table.INPUT, 0, [int(inputs[r]) for r in range(1, 5)])
        got |= decode_all(
            pumps.profile, Table.DISCRETE, 0, [int(discrete[r]) for r in range(1, 12)]
        )
        expected = pumps.values()
        assert got == {k: v for k, v in expected.items() if k in got}
        assert len(got) == 9


async def test_mbpoll_writes_a_coil_over_rtu() -> None:
    async with ModbusSimulator(quick_config(rtu=True, devices=DEVICES), clock=ManualClock()) as sim:
        args = ["-m", "rtu", "-b", "19200", "-P", "none", "-a", "3", "-r", "2", "-t", "0"]
        assert await mbpoll(*args, sim.rtu_path()) == {2: "0"}  # coil 1: pump2_enable
        assert "Written 1 references" in await run_mbpoll(*args, sim.rtu_path(), "1")
        assert sim.device("pump-station-3").value("pump2_enable") is True
