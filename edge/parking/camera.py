"""The plate-camera receiver: the HTTP endpoint cameras push their recognitions to.

    async with CameraReceiver(host="0.0.0.0", port=8088, cameras={"cam-in-1"}) as rx:
        # on each camera: push URL http://EDGE:8088/api/plates
        async for event in rx.events:        # PlateEvent: event.push.plate, .direction ...
            ...

A push is answered 200 ``{"ok": true, "event_id": ...}`` once it is queued. A push that is
not a recognition is answered with a clear error, ``{"ok": false, "error": "plate: not a
Chinese plate: '浙A1234'"}``: 400 (not JSON, a field missing, mistyped or malformed), 403
(a camera not in ``cameras``), 413 (too large), 404/405 (wrong path or method); it is
counted in :attr:`CameraReceiver.stats` and logged (once a minute per camera and reason),
and the server carries on. A camera resends an event it got no 200 for: a repeated
(camera, event id) is answered 200 again but delivered once. A body cut short (the camera
hung up before the end its Content-Length or chunking announced) is refused however much
of it parses: nobody is left to read a 200, so delivering it would count an event the
camera holds as unanswered.

HTTP is uvicorn's (already the hub's server): a real HTTP/1.1 stack with keep-alive, on
the running event loop. The agent owns the process's signals, so uvicorn installs none.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import uvicorn

from edge.parking.events import EventQueue
from protocols.errors import TransportError
from protocols.parking.camera import MAX_PUSH_BYTES, PlatePush, PushError, PushProblem, parse_push

log = logging.getLogger(__name__)
LOG_EVERY = 60.0  # seconds between two warnings about the same camera and reason


@dataclass(frozen=True, slots=True)
class PlateEvent:
    push: PlatePush
    received_at: datetime  # the edge's clock: camera clocks drift
    peer: str  # the camera's address


@dataclass(slots=True)
class ReceiverStats:
    requests: int = 0
    accepted: int = 0  # recognitions delivered
    duplicates: int = 0  # resent recognitions answered 200 and not delivered again
    not_json: int = 0
    invalid: int = 0
    too_large: int = 0
    unknown_camera: int = 0
    not_found: int = 0  # wrong path or method
    cut_short: int = 0  # the camera hung up before its body ended

    @property
    def refused(self) -> int:
        return (
            self.not_json
            + self.invalid
            + self.too_large
            + self.unknown_camera
            + self.not_found
            + self.cut_short
        )

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _Refused(Exception):
    def __init__(self, status: int, counter: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.counter = counter


_STATUS = {
    PushProblem.NOT_JSON: 400,
    PushProblem.INVALID: 400,
    PushProblem.TOO_LARGE: 413,
    PushProblem.UNKNOWN_CAMERA: 403,
}


class QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # signals belong to the agent, not to one of its receivers


class CameraReceiver:
    """Listens on ``host:port`` (port 0: any free port) for pushes to ``path``."""

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int = 8088,
        *,
        path: str = "/api/plates",
        cameras: Collection[str] | None = None,
        name: str = "cameras",
        max_events: int = 1000,
        remember: int = 4096,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.host = host
        self.path = path
        self.name = name
        self.cameras = frozenset(cameras) if cameras is not None else None
        self.stats = ReceiverStats()
        self.events: EventQueue[PlateEvent] = EventQueue(max_events)
        self._port = port
        self._remember = remember
        self._seen: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._logged: dict[tuple[str, str], float] = {}
        self._now = now or (lambda: datetime.now(UTC))
        self._socket: socket.socket | None = None
        self._server: QuietServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._socket is None:
            return self._port
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}{self.path}"

    async def __aenter__(self) -> Self:
        """Listen; TransportError if the address cannot be bound."""
        try:
            self._socket = socket.create_server((self.host, self._port), reuse_port=False)
        except OSError as exc:
            raise TransportError(
                f"{self.name}: cannot listen on {self.host}:{self._port}: {exc}"
            ) from exc
        self._socket.setblocking(False)
        config = uvicorn.Config(
            self._app,
            interface="asgi3",
            lifespan="off",
            proxy_headers=False,  # the peer is the camera: nobody forwards for it
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_keep_alive=10,
            timeout_graceful_shutdown=1,
        )
        self._server = QuietServer(config)
        # the socket already listens: a push that comes before uvicorn attaches waits
        self._task = asyncio.create_task(
            self._server.serve(sockets=[self._socket]), name=f"{self.name}-http"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop listening, let requests in progress finish (1 s at most); idempotent."""
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            await self._task
            self._task = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    # the ASGI application

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        client = scope.get("client")
        peer = str(client[0]) if client else "?"
        self.stats.requests += 1
        try:
            status, answer = 200, await self._handle(scope, receive, peer)
        except _Refused as exc:
            setattr(self.stats, exc.counter, getattr(self.stats, exc.counter) + 1)
            self._log_refusal(peer, exc.counter, str(exc))
            status, answer = exc.status, {"ok": False, "error": str(exc)}
        body = json.dumps(answer, ensure_ascii=False).encode()
        headers = [
            (b"content-type", b"application/json; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope: dict[str, Any], receive: Any, peer: str) -> dict[str, Any]:
        if scope["path"] != self.path:
            raise _Refused(404, "not_found", f"no route {scope['path']}; push to {self.path}")
        if scope["method"] != "POST":
            raise _Refused(405, "not_found", f"use POST for {self.path}")
        try:
            push = parse_push(await _read_body(receive))
            if self.cameras is not None and push.camera_id not in self.cameras:
                raise PushError(PushProblem.UNKNOWN_CAMERA, f"unknown camera {push.camera_id!r}")
        except PushError as exc:
            raise _Refused(_STATUS[exc.problem], exc.problem.value, exc.detail) from exc
        key = (push.camera_id, push.event_id)
        if key in self._seen:
            self.stats.duplicates += 1
            return {"ok": True, "event_id": push.event_id, "duplicate": True}
        self._seen[key] = None
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        self.stats.accepted += 1
        self.events.put(PlateEvent(push, self._now(), peer))
        return {"ok": True, "event_id": push.event_id}

    def _log_refusal(self, peer: str, counter: str, message: str) -> None:
        now = time.monotonic()
        key = (peer, counter)
        if now - self._logged.get(key, -LOG_EVERY) >= LOG_EVERY:
            self._logged[key] = now
            log.warning("%s: push from %s refused (%s): %s", self.name, peer, counter, message)
        else:
            log.debug("%s: push from %s refused (%s): %s", self.name, peer, counter, message)


async def _read_body(receive: Any) -> bytes:
    """The whole request body; PushError TOO_LARGE past MAX_PUSH_BYTES (the rest is not
    read), _Refused cut_short if the camera hangs up before the body ends."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # a prefix may still parse (a Content-Length too long, a chunked body without
            # its last chunk): it is not what the camera sent, and its answer is lost
            raise _Refused(400, "cut_short", f"body cut short after {size} bytes")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_PUSH_BYTES:
            raise PushError(PushProblem.TOO_LARGE, f"more than {MAX_PUSH_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
