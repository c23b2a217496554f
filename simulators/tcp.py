"""Modbus TCP slave endpoint: MBAP framing over an asyncio streams server.

Many unit ids share one port, as behind a Modbus gateway. A request for a unit id the
endpoint does not serve gets exception 0x0B (gateway target device failed to respond),
which is what a real RS-485 gateway answers, so a master can tell "nobody there" from a
dead connection without waiting out a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocols.registers import ExceptionCode
from simulators.device import ReplyAction, SimDevice
from simulators.pdu import exception_response

log = logging.getLogger(__name__)

_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id (0), length, unit id
MAX_PDU = 253


def encode_adu(transaction: int, unit: int, pdu: bytes) -> bytes:
    """MBAP header plus ``pdu``; the length field counts the unit id and the PDU."""
    return _MBAP.pack(transaction, 0, len(pdu) + 1, unit) + pdu


@dataclass(slots=True)
class TcpStats:
    connections: int = 0
    requests: int = 0
    unknown_unit: int = 0
    bad_headers: int = 0


class TcpEndpoint:
    """Serves ``devices`` (by unit id) on ``host:port``; port 0 picks a free one."""

    def __init__(
        self,
        name: str,
        devices: Mapping[int, SimDevice],
        host: str,
        port: int,
        latency: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.name = name
        self.host = host
        self.devices = dict(devices)
        self.stats = TcpStats()
        self._port = port
        self._latency = latency
        self._rng = random.Random(f"{seed}/{name}")
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def port(self) -> int:
        """The bound port (the OS's pick when configured as 0)."""
        if self._server is None:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen; OSError (e.g. the port is taken) propagates."""
        self._server = await asyncio.start_server(self._serve, self.host, self._port)

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        # Closing the transports ends each conversation with an IncompleteReadError; tasks
        # are not cancelled because Python 3.11's streams callback chokes on a cancelled one.
        for writer in self._connections.values():
            writer.transport.abort()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "transport": "tcp",
            "host": self.host,
            "port": self.port,
            "devices": {d.id: unit for unit, d in sorted(self.devices.items())},
        }

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        self.stats.connections += 1
        try:
            await self._converse(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the master hung up, possibly mid-frame
        finally:
            del self._connections[task]
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            header = await reader.readexactly(_MBAP.size)
            transaction, protocol, length, unit = _MBAP.unpack(header)
            if protocol != 0 or not 2 <= length <= MAX_PDU + 1:
                # without a trustworthy length the stream cannot be re-framed: drop it
                self.stats.bad_headers += 1
                log.info("%s: bad MBAP header %s, closing", self.name, header.hex())
                return
            pdu = await reader.readexactly(length - 1)
            self.stats.requests += 1
            out = self._answer(transaction, unit, pdu)
            if out is None:
                continue
            if self._latency:
                await asyncio.sleep(self._latency)  # emulating a slow gateway, not waiting
            writer.write(out)
            await writer.drain()

    def _answer(self, transaction: int, unit: int, pdu: bytes) -> bytes | None:
        device = self.devices.get(unit)
        if device is None:
            self.stats.unknown_unit += 1
            refusal = exception_response(pdu[0], ExceptionCode.GATEWAY_TARGET_FAILED)
            return encode_adu(transaction, unit, refusal)
        reply = device.handle(pdu)
        if reply.action is ReplyAction.SILENCE:
            return None
        if reply.action is ReplyAction.SEND:
            return encode_adu(transaction, unit, reply.payload)
        # garbage, and bad_crc (TCP has no CRC to spoil): bytes that are not an ADU
        return reply.payload if reply.action is ReplyAction.GARBAGE else device.garbage()
