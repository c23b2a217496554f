"""The booth's local HTTP interface: see the car held at each exit, take its fee, correct
a misread plate. Bound to 127.0.0.1 by default (the booth PC, or a reverse proxy with the
site's own login in front); every payment is recorded with the operator's name.

    GET  /booth                    per gate: the last vehicle, its verdict and what is due
    GET  /booth/lot                the lot: state version held (0: nothing synced yet), inside
    POST /booth/{gate}/pay         {"fen": 700, "operator": "li"}: record and let it out
    POST /booth/correct            {"session": "...", "plate": "浙A12345", "operator": "li"}
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Annotated, Any

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from edge.parking.camera import QuietServer
from protocols.errors import TransportError

if TYPE_CHECKING:
    from edge.parking.site import ParkingSite


class BoothPayment(BaseModel):
    fen: Annotated[int, Field(ge=0, le=10_000_000)]
    operator: Annotated[str, Field(min_length=1, max_length=64)]


class Correction(BaseModel):
    session: Annotated[str, Field(min_length=1, max_length=64)]
    plate: Annotated[str, Field(min_length=2, max_length=16)]
    operator: Annotated[str, Field(min_length=1, max_length=64)]


def booth_app(site: ParkingSite) -> FastAPI:
    app = FastAPI(title="wuye booth", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/booth")
    async def lanes() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for gate, (v, plate, card) in site.last.items():
            out[gate] = {
                "plate": plate,
                "card": card,
                "session": v.session,
                "action": v.action,
                "reason": v.reason,
                "fee_fen": v.fee_fen,
                "paid_fen": v.paid_fen,
                "due_fen": v.due_fen,
            }
        return out

    @app.get("/booth/lot")
    async def lot() -> dict[str, Any]:
        st = site.service.state
        return {"lot": st.lot, "version": st.version, "inside": len(st.sessions)}

    @app.post("/booth/{gate}/pay")
    async def pay(gate: str, body: BoothPayment) -> dict[str, Any]:
        if gate not in site.gates:
            raise HTTPException(404, f"no gate {gate!r}")
        try:
            v = await site.booth_payment(gate, body.fen, body.operator)
        except LookupError as exc:
            raise HTTPException(409, str(exc)) from exc
        return {"session": v.session, "action": v.action, "reason": v.reason}

    @app.post("/booth/correct")
    async def correct(body: Correction) -> dict[str, str]:
        try:
            await site.service.correct_plate(body.session, body.plate, body.operator)
        except KeyError as exc:
            raise HTTPException(404, str(exc)) from exc
        return {"session": body.session, "plate": body.plate}

    return app


class Booth:
    """Serves :func:`booth_app` on ``host:port`` in the running loop (port 0: any free one)."""

    def __init__(self, site: ParkingSite, host: str, port: int) -> None:
        self.app = booth_app(site)
        self.host, self._port = host, port
        self._socket: socket.socket | None = None
        self._server: QuietServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1]) if self._socket else self._port

    async def __aenter__(self) -> Booth:
        try:
            self._socket = socket.create_server((self.host, self._port))
        except OSError as exc:
            raise TransportError(
                f"booth: cannot listen on {self.host}:{self._port}: {exc}"
            ) from exc
        config = uvicorn.Config(
            self.app, lifespan="off", log_config=None, access_log=False, server_header=False
        )
        self._server = QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]), name="booth")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            await self._task
        if self._socket is not None:
            self._socket.close()
