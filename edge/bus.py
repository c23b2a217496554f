"""One owner per physical bus: the only module that imports pymodbus.

Every request goes through :meth:`ModbusBus.transact`, which holds the bus lock (one
transaction at a time on RS-485), applies the device's own timeout, and keeps the line
quiet after a failure so a late reply cannot be mistaken for the next request's answer
(RTU frames carry no transaction id). Failures come back as typed errors, never ``None``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException

from edge.config import RtuBus, TcpBus
from protocols.errors import DeviceError, TransportError
from protocols.registers import ExceptionCode, Read, Table

log = logging.getLogger(__name__)


class ExceptionReply(DeviceError):
    """The device answered with a Modbus exception: it is alive but refused the request."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(ExceptionCode.describe(code))


class NoReply(DeviceError):
    """No valid reply within the timeout: silent, garbled, or a bad CRC."""


class ModbusBus:
    """A Modbus TCP connection or RTU serial line, and the lock that serialises it."""

    def __init__(self, cfg: TcpBus | RtuBus, max_timeout: float) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._lock = asyncio.Lock()
        # pymodbus' own timeout sits above every device's, so ours always fires first;
        # retries are ours too (per device), so pymodbus retries nothing.
        common: dict[str, Any] = {"timeout": max_timeout + 1, "retries": 0, "reconnect_delay": 0}
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if isinstance(cfg, TcpBus):
            self._client = AsyncModbusTcpClient(cfg.host, port=cfg.port, **common)
            self._settle = 0.0
        else:
            self._client = AsyncModbusSerialClient(
                cfg.port,
                baudrate=cfg.baudrate,
                parity=cfg.parity,
                stopbits=cfg.stopbits,
                bytesize=cfg.bytesize,
                **common,
            )
            # after a failure, wait out any late reply: its longest frame plus two gaps
            self._settle = 256 * cfg.char_time + 2 * cfg.frame_gap
        self.busy_seconds = 0.0
        self.transactions = 0
        self.failures = 0

    async def close(self) -> None:
        self._client.close()

    async def _ensure_connected(self, timeout: float) -> None:
        if self._client.connected:
            return
        try:
            async with asyncio.timeout(timeout):
                ok = await self._client.connect()
        except (TimeoutError, OSError, ConnectionException) as exc:
            raise TransportError(f"{self.name}: cannot connect: {exc!r}") from exc
        if not ok:
            raise TransportError(f"{self.name}: cannot connect")

    async def transact(self, call: Callable[[], Awaitable[Any]], timeout: float) -> Any:
        """Run one request under the bus lock; the reply PDU, or a DeviceError/TransportError."""
        async with self._lock:
            started = time.perf_counter()
            self.transactions += 1
            try:
                await self._ensure_connected(timeout)
                async with asyncio.timeout(timeout):
                    reply = await call()
            except TimeoutError as exc:
                await self._failed()
                raise NoReply(f"no reply within {timeout:.3f}s") from exc
            except ConnectionException as exc:
                await self._failed()
                raise TransportError(f"{self.name}: {exc}") from exc
            except ModbusException as exc:
                await self._failed()
                raise NoReply(f"bad reply: {exc}") from exc
            except TransportError:
                self.failures += 1
                raise
            finally:
                self.busy_seconds += time.perf_counter() - started
            if reply.isError():
                raise ExceptionReply(getattr(reply, "exception_code", 0))
            return reply

    async def _failed(self) -> None:
        self.failures += 1
        if self._settle:
            await asyncio.sleep(self._settle)

    async def read(self, unit: int, read: Read, timeout: float) -> dict[int, int | bool]:
        """Values of one planned read, keyed by address."""
        c = self._client
        fn = {
            Table.HOLDING: c.read_holding_registers,
            Table.INPUT: c.read_input_registers,
            Table.COIL: c.read_coils,
            Table.DISCRETE: c.read_discrete_inputs,
        }[read.table]
        reply = await self.transact(
            lambda: fn(read.address, count=read.count, device_id=unit), timeout
        )
        values: list[int] | list[bool] = reply.bits if read.table.is_bits else reply.registers
        # bits come padded to whole bytes; registers must match exactly, or the reply
        # belongs to another request
        if len(values) < read.count or (not read.table.is_bits and len(values) != read.count):
            raise NoReply(f"asked for {read.count} items, got {len(values)}")
        return {read.address + i: values[i] for i in range(read.count)}

    async def write(
        self, unit: int, table: Table, address: int, value: list[int] | bool, timeout: float
    ) -> None:
        c = self._client
        if table is Table.COIL:
            assert isinstance(value, bool)
            await self.transact(lambda: c.write_coil(address, value, device_id=unit), timeout)
        elif isinstance(value, list) and len(value) == 1:
            word = value[0]
            await self.transact(lambda: c.write_register(address, word, device_id=unit), timeout)
        else:
            assert isinstance(value, list)
            await self.transact(lambda: c.write_registers(address, value, device_id=unit), timeout)
