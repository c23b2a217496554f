"""A TCP forwarder between edges and their broker that a test can shut and open.

Shut, it refuses new connections and cuts the ones it carries: the edges behind it are
away from the broker while everything else (the hub) is not. That decides who reconnects
first after a broker restart, which nothing else can.
"""

from __future__ import annotations

import asyncio
import contextlib

from deploy.mosquitto import free_port


class Gate:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def open(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._carry, "127.0.0.1", self.port)

    async def shut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for t in list(self._pipes):
            t.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _carry(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            w.close()
            return
        pipes = [asyncio.create_task(_pump(r, uw)), asyncio.create_task(_pump(ur, w))]
        self._pipes.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for p in pipes:
                p.cancel()
                self._pipes.discard(p)
            for writer in (w, uw):
                writer.close()


async def _pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
