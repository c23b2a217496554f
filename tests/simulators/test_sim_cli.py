"""The command line as a separate process: READY line, fault command, clean shutdown."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.pdu import ExceptionResponse

ROOT = Path(__file__).resolve().parents[2]


class Running:
    """A simulator process and the READY document it printed."""

    def __init__(self, proc: asyncio.subprocess.Process, ready: dict[str, Any]) -> None:
        self.proc = proc
        self.ready = ready


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators", *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@asynccontextmanager
async def _start(*args: str) -> AsyncIterator[Running]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators", "modbus", *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(15):
            line = await proc.stdout.readline()  # the event we wait on: no sleeping
        if not line.startswith(b"READY "):
            raise AssertionError(line.decode() + (await proc.stderr.read()).decode())
        yield Running(proc, json.loads(line[len("READY ") :]))
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                await proc.wait()


@pytest.fixture
async def tcp_sim() -> AsyncIterator[Running]:
    args = ["--tcp", "127.0.0.1:0", "--control", "127.0.0.1:0"]
    async with _start(*args, "--device", "em-1p:1-3", "--device", "pump-station:7") as running:
        yield running


async def test_ready_line_then_faults_from_another_process(tcp_sim: Running) -> None:
    ready = tcp_sim.ready
    (endpoint,) = ready["endpoints"]
    assert endpoint["transport"] == "tcp"
    assert endpoint["devices"] == {"em-1p-1": 1, "em-1p-2": 2, "em-1p-3": 3, "pump-station-7": 7}
    control = ready["control"]

    client = AsyncModbusTcpClient("127.0.0.1", port=endpoint["port"], timeout=0.5, retries=0)
    assert await client.connect()
    try:
        assert not (await client.read_holding_registers(256, count=2, device_id=2)).isError()
        code, out, err = await _cli("fault", "em-1p-2", "exception", "3", "--control", control)
        assert code == 0, err
        assert json.loads(out)["fault"] == {"kind": "exception", "code": 3}
        reply = await client.read_holding_registers(256, count=2, device_id=2)
        assert isinstance(reply, ExceptionResponse)
        assert reply.exception_code == 3

        code, _, err = await _cli("fault", "em-1p-2", "clear", "--control", control)
        assert code == 0, err
        assert not (await client.read_holding_registers(256, count=2, device_id=2)).isError()

        code, out, _ = await _cli("show", "em-1p-2", "--control", control)
        assert json.loads(out)["stats"]["requests"] == 3
    finally:
        client.close()

    code, _, err = await _cli("fault", "em-1p-9", "silent", "--control", control)
    assert code == 1
    assert "no device" in err


async def test_sigterm_stops_it_cleanly(tcp_sim: Running) -> None:
    tcp_sim.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(10):
        assert await tcp_sim.proc.wait() == 0


async def test_a_config_file_with_an_rtu_line(tmp_path: Path) -> None:
    link = tmp_path / "rtu0"
    config = tmp_path / "sim.yaml"
    config.write_text(
        "schema: wuye.simulator/1\n"
        "control: {port: 0}\n"
        "endpoints:\n"
        f"  - {{name: rs485-1, rtu: {{link: {link}, baud: 19200}},"
        " devices: [{profile: water-meter, unit: 1-5}]}\n"
    )
    async with _start("--config", str(config)) as running:
        (endpoint,) = running.ready["endpoints"]
        assert endpoint["link"] == str(link)
        assert endpoint["path"].startswith("/dev/pts/")
        client = AsyncModbusSerialClient(str(link), baudrate=19200, timeout=0.5, retries=0)
        assert await client.connect()
        try:
            assert not (await client.read_holding_registers(0, count=5, device_id=5)).isError()
        finally:
            client.close()
        running.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await running.proc.wait() == 0
    assert not link.is_symlink()


async def test_a_bad_command_line_says_why(tmp_path: Path) -> None:
    code, _, err = await _cli("modbus", "--tcp", "127.0.0.1:0", "--device", "boiler:1")
    assert code == 2
    assert "unknown profile" in err
