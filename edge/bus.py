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
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
)

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


def _byte_count(data: bytes) -> int:
    """The byte count a read reply's PDU carries, or -1 if it lies about the bytes after it."""
    return data[0] if data and data[0] == len(data) - 1 else -1


# pymodbus reads a reply's byte count and drops it (bits: ignores it): these keep it, so
# that a reply whose count disagrees with its bytes or with the request is refused
class _Coils(ReadCoilsResponse):
    byte_count = -1

    def decode(self, data: bytes) -> None:
        self.byte_count = _byte_count(data)
        super().decode(data)


class _DiscreteInputs(ReadDiscreteInputsResponse):
    byte_count = -1

    def decode(self, data: bytes) -> None:
        self.byte_count = _byte_count(data)
        super().decode(data)


class _HoldingRegisters(ReadHoldingRegistersResponse):
    byte_count = -1

    def decode(self, data: bytes) -> None:
        self.byte_count = _byte_count(data)
        super().decode(data)


class _InputRegisters(ReadInputRegistersResponse):
    byte_count = -1

    def decode(self, data: bytes) -> None:
        self.byte_count = _byte_count(data)
        super().decode(data)


def _not_cancelled() -> None:
    """Raise CancelledError if the task was asked to stop. pymodbus waits for a reply with
    ``asyncio.wait_for``, which before Python 3.12 swallows a cancellation that lands as
    the reply arrives: a poller on a busy bus would poll on, and an agent shutting down
    would wait for it forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class ModbusBus:
    """A Modbus TCP connection or RTU serial line, and the lock that serialises it."""

    def __init__(self, cfg: TcpBus | RtuBus, max_timeout: float) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._lock = asyncio.Lock()
        # pymodbus' own timeout sits above every device's, so ours always fires first;
        # retries are ours too (per device), so pymodbus retries nothing.
        common: dict[str, Any] = {
            "timeout": max_timeout + 1,
            "retries": 0,
            "reconnect_delay": 0,
            "trace_pdu": self._trace_pdu,
        }
        self._sent: tuple[int, int] | None = None  # function and transaction id of a request
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
        for reply in (_Coils, _DiscreteInputs, _HoldingRegisters, _InputRegisters):
            self._client.register(reply)
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
            self._sent = None
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
                _not_cancelled()
            if not self._answers(reply):
                await self._failed()
                raise NoReply(f"a reply that answers another request: {reply}")
            if reply.isError():
                raise ExceptionReply(getattr(reply, "exception_code", 0))
            return reply

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending:
            self._sent = (pdu.function_code, pdu.transaction_id)
        return pdu

    def _answers(self, reply: ModbusPDU) -> bool:
        """Whether ``reply`` answers the request just sent: its function (or that function's
        exception), and on TCP its transaction id. pymodbus takes any function, and a
        transaction id of 0 as an answer to every request: a late or confused reply would
        pass for this one's, values from another table or another time."""
        if self._sent is None:
            return False
        function, tid = self._sent
        return reply.function_code & 0x7F == function and reply.transaction_id == tid

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
        # bits come padded to whole bytes; the byte count must be the request's exactly, or
        # the reply belongs to another request (11 coils come in 2 bytes, never 3)
        size = (read.count + 7) // 8 if read.table.is_bits else 2 * read.count
        if getattr(reply, "byte_count", -1) != size:
            await self._failed()
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
