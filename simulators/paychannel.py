"""A sandbox payment provider: the hub's ``sandbox`` channel talks to it over real HTTP.

It behaves like a Chinese payment provider's merchant API, reduced to what matters for
crediting: the hub registers an order (signed request), the payer pays it (scans the QR
code, or a test calls ``POST /orders/{id}/pay``), and the provider notifies the hub's
notify URL asynchronously, signed, resending with capped, jittered exponential back-off
until the hub answers 2xx or the attempts run out. Every (re)send is signed anew with the
current time over the same body, as WeChat Pay does.

    python -m simulators.paychannel --port 8090 --secret-file var/pay-sandbox-secret

Faults are chosen per payment, in the pay request (see :class:`Faults`): several copies at
once, resends after the hub already answered, bad signatures, a wrong amount, a delay.

Signing (implemented here independently of the hub, like a real provider would):
``X-Wuye-Timestamp: <unix seconds>``, ``X-Wuye-Signature: hex(HMAC-SHA256(secret,
f"{timestamp}." + body))``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import json
import logging
import os
import random
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Self
from urllib.parse import urlsplit

import typer
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from deploy.secrets import read_or_create_secret as shared_secret

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Wuye-Signature"
TIMESTAMP_HEADER = "X-Wuye-Timestamp"


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class RetryPolicy:
    """Resend after ``first_s``, doubling up to ``cap_s`` (±20 % jitter), ``attempts`` in all."""

    first_s: float = 1.0
    cap_s: float = 300.0
    attempts: int = 15
    timeout_s: float = 10.0  # no reply within this counts as a failed attempt

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.cap_s, self.first_s * 2.0 ** (attempt - 1))
        return base * random.uniform(0.8, 1.2)


class Faults(BaseModel):
    """What to get wrong when notifying about one payment."""

    model_config = ConfigDict(extra="forbid")
    copies: int = Field(
        default=1, ge=1, le=20
    )  # identical notifications sent at once, each attempt
    resend_after_ack: int = Field(default=0, ge=0, le=20)  # more sends after the hub answered 2xx
    bad_signature: int = Field(default=0, ge=0)  # the first N attempts are signed with a wrong key
    amount_fen: int | None = None  # claim this amount instead of the order's
    delay_s: float = Field(default=0.0, ge=0, le=3600)  # before the first attempt


class _OrderIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    order_id: str = Field(min_length=1, max_length=64)
    amount_fen: int = Field(gt=0)
    currency: str = "CNY"
    subject: str = ""
    notify_url: str = Field(pattern=r"^https?://")


class _PayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    payer: str | None = None
    faults: Faults = Field(default_factory=Faults)


@dataclass
class Delivery:
    attempt: int
    at: float  # time.time()
    status: int | None  # None: no reply (refused, reset, timed out)
    answer: str
    signed_ok: bool


@dataclass
class SimOrder:
    order_id: str
    amount_fen: int
    currency: str
    subject: str
    notify_url: str
    registered_at: float
    status: str = "unpaid"  # unpaid | paid
    txn_id: str | None = None
    payer: str | None = None
    paid_at: str | None = None
    faults: Faults = field(default_factory=Faults)
    deliveries: list[Delivery] = field(default_factory=list)
    acknowledged: bool = False  # the hub answered 2xx at least once
    settled: bool = False  # nothing more will be sent (acknowledged, or attempts used up)

    def public(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "amount_fen": self.amount_fen,
            "currency": self.currency,
            "subject": self.subject,
            "status": self.status,
            "txn_id": self.txn_id,
            "payer": self.payer,
            "paid_at": self.paid_at,
            "acknowledged": self.acknowledged,
            "settled": self.settled,
            "deliveries": [d.__dict__ for d in self.deliveries],
        }

    def notification(self) -> bytes:
        return json.dumps(
            {
                "v": 1,
                "event": "payment.succeeded",
                "order_id": self.order_id,
                "txn_id": self.txn_id,
                "amount_fen": self.amount_fen
                if self.faults.amount_fen is None
                else self.faults.amount_fen,
                "currency": self.currency,
                "paid_at": self.paid_at,
            },
            separators=(",", ":"),
        ).encode()


class PayChannelSimulator:
    """The provider as an async context manager serving HTTP in the current event loop.

    ``url`` is its base URL once entered. Notifications run as named tasks in a task group
    and are cancelled on exit. ``wait_for(predicate)`` waits for a state change, no polling.
    """

    def __init__(
        self,
        secret: bytes,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        retry: RetryPolicy | None = None,
        public_url: str | None = None,
    ) -> None:
        self.secret = secret
        self.retry = retry or RetryPolicy()
        self.orders: dict[str, SimOrder] = {}
        self._host, self._port = host, port
        self._public_url = public_url
        self._changed = asyncio.Condition()
        self._tasks = asyncio.TaskGroup()
        self._senders: set[asyncio.Task[None]] = set()
        self._server: uvicorn.Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self.url = ""
        self.app = self._make_app()

    async def __aenter__(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        sock.listen(128)  # connections queue from here on, before uvicorn accepts them
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        self._public_url = self._public_url or self.url
        config = uvicorn.Config(
            self.app, lifespan="off", log_config=None, access_log=False, log_level="warning"
        )
        self._server = _QuietServer(config)
        await self._tasks.__aenter__()
        self._serving = asyncio.create_task(
            self._server.serve(sockets=[sock]), name="paychannel-http"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None and self._serving is not None
        self._server.should_exit = True
        for task in self._senders:
            task.cancel()
        await self._tasks.__aexit__(None, None, None)
        await self._serving

    def order(self, order_id: str) -> SimOrder:
        return self.orders[order_id]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        """Return once ``predicate()`` holds; TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def _touch(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- what the HTTP routes do --------------------------------------------------------

    def register(self, body: bytes, headers: dict[str, str]) -> SimOrder:
        ts, given = headers.get(TIMESTAMP_HEADER.lower()), headers.get(SIGNATURE_HEADER.lower())
        if not ts or not ts.isdigit() or not given:
            raise HTTPException(401, "unsigned request")
        if not hmac.compare_digest(sign(self.secret, int(ts), body), given):
            raise HTTPException(401, "bad signature")
        req = _OrderIn.model_validate_json(body)
        old = self.orders.get(req.order_id)
        if old is not None:
            if (old.amount_fen, old.currency) != (req.amount_fen, req.currency):
                raise HTTPException(409, f"order {req.order_id} exists with another amount")
            old.notify_url = req.notify_url
            return old
        order = SimOrder(
            order_id=req.order_id,
            amount_fen=req.amount_fen,
            currency=req.currency,
            subject=req.subject,
            notify_url=req.notify_url,
            registered_at=time.time(),
        )
        self.orders[order.order_id] = order
        return order

    def pay(self, order_id: str, req: _PayIn) -> SimOrder:
        order = self.orders.get(order_id)
        if order is None:
            raise HTTPException(404, f"no order {order_id}")
        if order.status == "paid":
            raise HTTPException(409, f"order {order_id} is already paid")
        now = datetime.now(UTC)
        order.status, order.payer, order.faults = "paid", req.payer, req.faults
        order.txn_id = f"sbx{now:%Y%m%d%H%M%S}{uuid.uuid4().hex[:12]}"
        order.paid_at = now.isoformat(timespec="seconds")
        self._spawn(self._notify(order), f"paychannel-notify-{order_id}")
        return order

    def resend(self, order_id: str) -> None:
        """Send the notification of a paid order once more, as after the hub answered."""
        order = self.orders.get(order_id)
        if order is None or order.status != "paid":
            raise HTTPException(409, f"order {order_id} is not paid")
        self._spawn(self._send_once(order), f"paychannel-resend-{order_id}")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = self._tasks.create_task(self._logged(work), name=name)
        self._senders.add(task)
        task.add_done_callback(self._senders.discard)

    @staticmethod
    async def _logged(work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception:  # one order's trouble must not stop the provider
            log.exception("notification task failed")

    async def _notify(self, order: SimOrder) -> None:
        if order.faults.delay_s:
            await asyncio.sleep(order.faults.delay_s)
        for attempt in range(1, self.retry.attempts + 1):
            statuses = await asyncio.gather(
                *(self._deliver(order, attempt) for _ in range(order.faults.copies))
            )
            if any(s is not None and 200 <= s < 300 for s in statuses):
                order.acknowledged = True
                break
            if attempt < self.retry.attempts:
                await asyncio.sleep(self.retry.delay(attempt))
        else:
            log.warning("order %s: no 2xx after %d attempts", order.order_id, attempt)
        for _ in range(order.faults.resend_after_ack if order.acknowledged else 0):
            await self._deliver(order, len(order.deliveries) + 1)
        order.settled = True
        await self._touch()

    async def _send_once(self, order: SimOrder) -> None:
        await self._deliver(order, len(order.deliveries) + 1)

    async def _deliver(self, order: SimOrder, attempt: int) -> int | None:
        body = order.notification()
        ts = int(time.time())
        signed_ok = attempt > order.faults.bad_signature
        key = self.secret if signed_ok else b"not-" + self.secret
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "wuye-paychannel-sandbox/1",
            TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: sign(key, ts, body),
        }
        try:
            status, answer = await _post(order.notify_url, headers, body, self.retry.timeout_s)
        except (OSError, TimeoutError, ValueError) as exc:
            status, answer = None, f"{type(exc).__name__}: {exc}"
        order.deliveries.append(Delivery(attempt, time.time(), status, answer, signed_ok))
        log.info("order %s attempt %d: %s %s", order.order_id, attempt, status, answer)
        await self._touch()
        return status

    def _make_app(self) -> FastAPI:
        app = FastAPI(title="wuye sandbox payment provider")

        @app.get("/")
        async def info() -> dict[str, Any]:
            return {"url": self.url, "orders": len(self.orders)}

        @app.post("/orders")
        async def register(request: Request) -> dict[str, Any]:
            body = await request.body()
            order = self.register(body, {k.lower(): v for k, v in request.headers.items()})
            pay_url = f"{self._public_url}/pay/{order.order_id}"
            return {"order_id": order.order_id, "pay_url": pay_url, "qr": pay_url}

        @app.get("/orders/{order_id}")
        async def show(order_id: str) -> dict[str, Any]:
            order = self.orders.get(order_id)
            if order is None:
                raise HTTPException(404, f"no order {order_id}")
            return order.public()

        @app.post("/orders/{order_id}/pay")
        async def pay(order_id: str, request: Request) -> dict[str, Any]:
            raw = await request.body()
            req = _PayIn.model_validate_json(raw) if raw.strip() else _PayIn()
            order = self.pay(order_id, req)
            await self._touch()
            return {"order_id": order.order_id, "txn_id": order.txn_id}

        @app.post("/orders/{order_id}/notify")
        async def notify_again(order_id: str) -> dict[str, Any]:
            self.resend(order_id)
            return {"order_id": order_id, "resending": True}

        @app.get("/pay/{order_id}", response_class=HTMLResponse)
        async def pay_page(order_id: str) -> str:
            order = self.orders.get(order_id)
            if order is None:
                raise HTTPException(404, f"no order {order_id}")
            yuan = f"{order.amount_fen // 100}.{order.amount_fen % 100:02d}"
            state = "paid" if order.status == "paid" else "unpaid"
            return (
                "<!doctype html><meta charset=utf-8><title>sandbox pay</title>"
                f"<p>{html.escape(order.subject)}: ¥{yuan} ({state})</p>"
                f"<form method=post action='/pay/{html.escape(order_id)}'>"
                "<button>Pay (sandbox)</button></form>"
            )

        @app.post("/pay/{order_id}", response_class=HTMLResponse)
        async def pay_form(order_id: str) -> str:
            self.pay(order_id, _PayIn())
            await self._touch()
            return "<!doctype html><meta charset=utf-8><p>Paid (sandbox).</p>"

        @app.exception_handler(ValueError)
        async def bad_request(request: Request, exc: ValueError) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=400)

        return app


class _QuietServer(uvicorn.Server):
    """No signal handling of its own: the owner decides when it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _post(url: str, headers: dict[str, str], body: bytes, timeout: float) -> tuple[int, str]:
    """One HTTP/1.1 POST on a fresh connection: (status, first 200 characters of the body)."""
    u = urlsplit(url)
    if u.scheme != "http" or not u.hostname:
        raise ValueError(f"only http:// notify URLs are supported, not {url!r}")
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    head = [f"POST {target} HTTP/1.1", f"Host: {u.netloc}", f"Content-Length: {len(body)}"]
    head += ["Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(u.hostname, u.port or 80)
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    status_line, _, rest = raw.partition(b"\r\n")
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {status_line[:60]!r}")
    return int(parts[1]), rest.partition(b"\r\n\r\n")[2][:200].decode("utf-8", "replace")


def read_or_create_secret(path: Path) -> bytes:
    """The shared secret in ``path`` (the hub's WUYE_HUB_PAY_SECRET_FILE), made if missing."""
    return shared_secret(path).encode()


app = typer.Typer(add_completion=False, help="Sandbox payment provider for the hub.")


@app.command()
def main(
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(help="0 picks a free port (see the READY line)")] = 8090,
    secret_file: Annotated[
        Path, typer.Option(help="shared with the hub (WUYE_HUB_PAY_SECRET_FILE)")
    ] = Path("var/pay-sandbox-secret"),
    secret_env: Annotated[
        str, typer.Option(help="a variable holding the secret; wins over --secret-file")
    ] = "WUYE_PAYCHANNEL_SECRET",
    public_url: Annotated[str | None, typer.Option(help="base of the pay links")] = None,
    retry_first_s: float = 1.0,
    retry_cap_s: float = 300.0,
    attempts: int = 15,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Serve until SIGINT or SIGTERM; prints ``READY {"url": ..., "pid": ...}`` once listening."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    env = os.environ.get(secret_env)
    secret = env.encode() if env else read_or_create_secret(secret_file)
    retry = RetryPolicy(retry_first_s, retry_cap_s, attempts)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        sim = PayChannelSimulator(secret, host=host, port=port, retry=retry, public_url=public_url)
        async with sim:
            print("READY " + json.dumps({"url": sim.url, "pid": os.getpid()}), flush=True)
            await stop.wait()

    try:
        asyncio.run(run())
    except OSError as exc:
        typer.echo(f"cannot listen on {host}:{port}: {exc}", err=True)
        raise typer.Exit(1) from exc


if __name__ == "__main__":
    app()
