"""The HTTP control endpoint, driven by its own client, while the simulator runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from protocols.errors import TransportError
from simulators import ControlError, FaultKind, ManualClock, ModbusSimulator, quick_config
from simulators.control import call

DEVICES = ["pump-station:1", "lift:2"]


@pytest.fixture
async def sim() -> AsyncIterator[ModbusSimulator]:
    config = quick_config(tcp="127.0.0.1:0", devices=DEVICES, control="127.0.0.1:0")
    async with ModbusSimulator(config, clock=ManualClock()) as s:
        yield s


async def _call(sim: ModbusSimulator, method: str, path: str, body: Any = None) -> Any:
    address = sim.control_address
    assert address is not None
    # urllib blocks: run it beside the loop that serves it
    return await asyncio.to_thread(call, address, method, path, body)


async def test_ready_document_lists_endpoints_and_units(sim: ModbusSimulator) -> None:
    info = await _call(sim, "GET", "/")
    assert info == sim.info()
    assert info["endpoints"][0]["port"] == sim.tcp_port()
    assert info["endpoints"][0]["devices"] == {"pump-station-1": 1, "lift-2": 2}


async def test_set_and_clear_a_fault(sim: ModbusSimulator) -> None:
    summary = await _call(sim, "POST", "/devices/lift-2/fault", {"kind": "exception", "code": 6})
    assert summary["fault"] == {"kind": "exception", "code": 6}
    fault = sim.device("lift-2").fault
    assert fault is not None and fault.kind is FaultKind.EXCEPTION
    await _call(sim, "POST", "/devices/lift-2/fault", {"kind": "clear"})
    assert sim.device("lift-2").fault is None


async def test_device_values_and_forced_points(sim: ModbusSimulator) -> None:
    await _call(sim, "POST", "/devices/lift-2/force", {"point": "trapped", "value": True})
    shown = await _call(sim, "GET", "/devices/lift-2")
    assert shown["values"]["trapped"] is True
    assert shown["values"] == sim.device("lift-2").values()
    listed = await _call(sim, "GET", "/devices")
    assert [d["id"] for d in listed["devices"]] == ["pump-station-1", "lift-2"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/devices/nobody/fault", {"kind": "silent"}, 404),
        ("POST", "/devices/lift-2/fault", {"kind": "melted"}, 400),
        ("POST", "/devices/lift-2/fault", {"kind": "out_of_range", "point": "running"}, 400),
        ("POST", "/devices/lift-2/force", {"point": "nope", "value": 1}, 400),
        ("GET", "/devices/lift-2/fault", None, 405),
        ("GET", "/nothing", None, 404),
    ],
)
async def test_refusals(
    sim: ModbusSimulator, method: str, path: str, body: Any, status: int
) -> None:
    with pytest.raises(ControlError) as caught:
        await _call(sim, method, path, body)
    assert caught.value.status == status


async def test_an_absent_endpoint_is_a_transport_error() -> None:
    config = quick_config(tcp="127.0.0.1:0", devices=DEVICES, control="127.0.0.1:0")
    sim = ModbusSimulator(config)
    async with sim:
        address = sim.control_address
    assert address is not None
    with pytest.raises(TransportError):
        await asyncio.to_thread(call, address, "GET", "/", None, 1.0)
