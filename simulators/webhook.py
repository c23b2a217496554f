"""A webhook receiver: the peer of the hub's notification channel, for tests and the demo.

It checks each POST's signature (``X-Wuye-Timestamp``, ``X-Wuye-Signature: hex(HMAC-SHA256(
secret, f"{timestamp}." + body))``, implemented here independently of the hub, as a real
receiver would), keeps what it got, and answers like a receiver with trouble when told to:
fail the next N requests (500), or hold a request without answering until released (the
hub may die meanwhile). A notification id (``X-Wuye-Delivery``) answered 2xx before is
answered 200 again and counted as a duplicate: receivers de-duplicate by that id.

    python -m simulators.webhook --port 8091 --secret-file var/notify-webhook-secret

prints ``READY {"url": ..., "pid": ...}`` and one JSON line per notification received.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Self

import typer
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from deploy.secrets import read_or_create_secret

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "x-wuye-signature"
TIMESTAMP_HEADER = "x-wuye-timestamp"
DELIVERY_HEADER = "x-wuye-delivery"


def signature_ok(secret: bytes, headers: dict[str, str], body: bytes) -> bool:
    ts, given = headers.get(TIMESTAMP_HEADER, ""), headers.get(SIGNATURE_HEADER, "")
    if not ts.isdigit() or not given:
        return False
    want = hmac.new(secret, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, given)


@dataclass
class Received:
    """One request as it arrived, and what it was answered (None: never answered)."""

    delivery: str | None
    at: float
    headers: dict[str, str]
    raw: bytes
    body: dict[str, Any] | None
    signed_ok: bool
    status: int | None = None
    duplicate: bool = False


class _QuietServer(uvicorn.Server):
    """No signal handling of its own: the owner decides when it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebhookReceiver:
    """The receiver as an async context manager serving HTTP in the current event loop."""

    def __init__(self, secret: bytes, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.secret = secret
        self.received: list[Received] = []
        self.fail = 0  # answer the next N requests 500
        self.holding = False  # hold the next request unanswered until release()
        self.on_receive: Callable[[Received], None] | None = None  # e.g. print it
        self._release = asyncio.Event()
        self._changed = asyncio.Condition()
        self._host, self._port = host, port
        self._server: _QuietServer | None = None
        self._serving: asyncio.Task[None] | None = None
        self.url = ""
        self.app = self._make_app()

    async def __aenter__(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        sock.listen(128)
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}/hooks/wuye"
        config = uvicorn.Config(
            self.app, lifespan="off", log_config=None, access_log=False, log_level="warning"
        )
        self._server = _QuietServer(config)
        self._serving = asyncio.create_task(self._server.serve(sockets=[sock]), name="webhook-http")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None and self._serving is not None
        self._release.set()
        self._server.should_exit = True
        await self._serving

    def release(self) -> None:
        """Let a held request be answered (200)."""
        self._release.set()

    def delivered(self) -> Counter[str]:
        """Notification ids answered 2xx, and how often (duplicates included)."""
        return Counter(
            r.delivery
            for r in self.received
            if r.delivery and r.status is not None and 200 <= r.status < 300
        )

    def first_deliveries(self) -> Counter[str]:
        """Ids answered 2xx as new (not as a duplicate): each should be 1."""
        return Counter(
            r.delivery for r in self.received if r.delivery and r.status == 200 and not r.duplicate
        )

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        """Return once ``predicate()`` holds; TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def _touch(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _receive(self, request: Request) -> JSONResponse:
        raw = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        r = Received(
            headers.get(DELIVERY_HEADER),
            time.time(),
            headers,
            raw,
            body,
            signature_ok(self.secret, headers, raw),
        )
        self.received.append(r)
        await self._touch()
        if self.holding:
            self.holding = False
            self._release.clear()
            await self._release.wait()
            if await request.is_disconnected():  # the sender died waiting: never answered
                await self._touch()
                return JSONResponse({}, status_code=599)
        if not r.signed_ok:
            r.status = 401
        elif self.fail > 0:
            self.fail -= 1
            r.status = 500
        else:
            r.duplicate = r.delivery in self.delivered()
            r.status = 200
        if self.on_receive is not None:
            self.on_receive(r)
        await self._touch()
        return JSONResponse({"duplicate": r.duplicate}, status_code=r.status)

    def _make_app(self) -> FastAPI:
        app = FastAPI(title="wuye webhook receiver")

        @app.post("/hooks/wuye")
        async def receive(request: Request) -> JSONResponse:
            return await self._receive(request)

        @app.get("/received")
        async def received() -> list[dict[str, Any]]:
            return [
                {
                    "delivery": r.delivery,
                    "at": r.at,
                    "signed_ok": r.signed_ok,
                    "status": r.status,
                    "duplicate": r.duplicate,
                    "body": r.body,
                }
                for r in self.received
            ]

        @app.post("/fail/{n}")
        async def fail(n: int) -> dict[str, int]:
            self.fail = n
            return {"fail": n}

        return app


app = typer.Typer(add_completion=False, help="Webhook receiver for the hub's notifications.")


@app.command()
def main(
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(help="0 picks a free port (see the READY line)")] = 8091,
    secret_file: Annotated[
        Path, typer.Option(help="shared with the hub (WUYE_HUB_NOTIFY_SECRET_FILE)")
    ] = Path("var/notify-webhook-secret"),
    secret_env: Annotated[
        str, typer.Option(help="a variable holding the secret; wins over --secret-file")
    ] = "WUYE_WEBHOOK_SECRET",
    fail_first: Annotated[int, typer.Option(help="answer the first N requests 500")] = 0,
) -> None:
    """Serve until SIGINT or SIGTERM; prints what arrives as JSON lines."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    env = os.environ.get(secret_env)
    secret = (env or read_or_create_secret(secret_file)).encode()

    def show(r: Received) -> None:
        line = {"status": r.status, "signed_ok": r.signed_ok, "duplicate": r.duplicate}
        print(json.dumps({**line, "body": r.body}, ensure_ascii=False), flush=True)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        receiver = WebhookReceiver(secret, host=host, port=port)
        receiver.fail = fail_first
        receiver.on_receive = show
        async with receiver:
            print("READY " + json.dumps({"url": receiver.url, "pid": os.getpid()}), flush=True)
            await stop.wait()

    try:
        asyncio.run(run())
    except OSError as exc:
        typer.echo(f"cannot listen on {host}:{port}: {exc}", err=True)
        raise typer.Exit(1) from exc


if __name__ == "__main__":
    app()
