"""The simulator as a whole: hundreds of devices, lifecycle, endpoint lookup."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from simulators import ModbusSimulator, SimState, SimulatorConfig, parse_config, quick_config


async def test_two_hundred_devices_cost_no_tasks_and_answer_quickly() -> None:
    config = quick_config(
        tcp="127.0.0.1:0",
        devices=["em-1p:1-100", "water-meter:101-150", "em-3p:151-190", "lift:191-200"],
    )
    tasks_before = len(asyncio.all_tasks())
    async with ModbusSimulator(config) as sim:  # the real clock: models catch up lazily
        assert len(sim.devices) == 200
        assert len(asyncio.all_tasks()) == tasks_before  # nothing ticks per device
        client = AsyncModbusTcpClient("127.0.0.1", port=sim.tcp_port(), timeout=1, retries=0)
        assert await client.connect()
        try:
            started = time.monotonic()
            for unit in range(1, 201):
                assert not (
                    await client.read_holding_registers(0, count=8, device_id=unit)
                ).isError()
            elapsed = time.monotonic() - started
        finally:
            client.close()
        assert all(d.stats.replies == 1 for d in sim.devices.values())
    assert elapsed < 5  # typically ~0.1 s; generous for loaded CI machines


async def test_lifecycle_states() -> None:
    sim = ModbusSimulator(quick_config(tcp="127.0.0.1:0", devices=["lift:1"]))
    states = [sim.state]
    async with sim:
        states.append(sim.state)
        with pytest.raises(RuntimeError):
            await sim.__aenter__()
    states.append(sim.state)
    assert states == [SimState.NEW, SimState.RUNNING, SimState.STOPPED]


def _lifts(**transports: dict[str, object]) -> SimulatorConfig:
    """A config with one lift (unit 1) on each named endpoint."""
    endpoints = [
        {"name": name, **transport, "devices": [{"profile": "lift", "unit": 1, "id": f"{name}-1"}]}
        for name, transport in transports.items()
    ]
    return parse_config({"endpoints": endpoints}, "test")


async def test_a_taken_port_fails_the_start_and_undoes_the_rest(tmp_path: Path) -> None:
    link = tmp_path / "rtu0"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _lifts(line={"rtu": {"link": str(link)}}, tcp={"tcp": {"port": port}})
        with pytest.raises(OSError):
            async with ModbusSimulator(config):
                pass
    assert not link.is_symlink()


async def test_endpoints_are_found_by_name_when_there_are_several() -> None:
    config = _lifts(a={"tcp": {"port": 0}}, b={"tcp": {"port": 0}})
    async with ModbusSimulator(config) as sim:
        assert sim.tcp_port("a") != sim.tcp_port("b")
        with pytest.raises(KeyError):
            sim.tcp_port()
        with pytest.raises(KeyError):
            sim.rtu_path()
        assert sim.device("b-1").endpoint == "b"
