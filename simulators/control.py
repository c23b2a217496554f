"""Control endpoint: switch faults and inspect devices of a running simulator over HTTP.

A deliberately tiny HTTP/1.1 server on asyncio streams (stdlib only), JSON in and out,
one request per connection, meant for localhost:

    GET  /                      the READY document (endpoints, pty paths, device units)
    GET  /devices               summaries of every device
    GET  /devices/{id}          one summary plus its current engineering ``values``
    POST /devices/{id}/fault    {"kind": "silent" | "exception" | ... | "clear", "code"?, "point"?}
    POST /devices/{id}/force    {"point": NAME, "value": VALUE | null}

Errors come back as ``{"error": "..."}`` with 400 (bad request), 404 (no such device or
route) or 405. :func:`call` is the matching client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from protocols.errors import TransportError, WuyeError
from simulators.device import SimDevice
from simulators.faults import Fault, FaultError

log = logging.getLogger(__name__)

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_MAX_BODY = 64 * 1024


class ControlError(WuyeError):
    """The control endpoint refused a request; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControlServer:
    """Serves the routes above for ``devices``; ``info`` gives the READY document."""

    def __init__(
        self,
        devices: Mapping[str, SimDevice],
        info: Callable[[], dict[str, Any]],
        host: str,
        port: int,
    ) -> None:
        self.host = host
        self._devices = devices
        self._info = info
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen; OSError (e.g. the port is taken) propagates."""
        self._server = await asyncio.start_server(self._serve, self.host, self._port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                method, path, body = await _read_request(reader)
            status, result = 200, self.route(method, path, body)
        except _HttpError as exc:
            status, result = exc.status, {"error": str(exc)}
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
            writer.close()
            return
        payload = json.dumps(result).encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + payload)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    def route(self, method: str, path: str, body: Any) -> Any:
        """The JSON answer to one request; _HttpError for a refusal."""
        parts = [p for p in path.split("?")[0].split("/") if p]
        if parts == [] and method == "GET":
            return self._info()
        if parts == ["devices"] and method == "GET":
            return {"devices": [d.summary() for d in self._devices.values()]}
        if len(parts) < 2 or parts[0] != "devices":
            raise _HttpError(404, f"no route {path}")
        device = self._devices.get(parts[1])
        if device is None:
            raise _HttpError(404, f"no device {parts[1]!r}")
        action = parts[2:]
        if not action:
            if method != "GET":
                raise _HttpError(405, f"use GET for {path}")
            return device.summary() | {"values": device.values()}
        if action not in (["fault"], ["force"]):
            raise _HttpError(404, f"no route {path}")
        if method != "POST":
            raise _HttpError(405, f"use POST for {path}")
        if not isinstance(body, dict):
            raise _HttpError(400, "expected a JSON object")
        try:
            if action == ["fault"]:
                device.set_fault(Fault.from_json(body))
            else:
                device.force(str(body.get("point")), body.get("value"))
        except FaultError as exc:
            raise _HttpError(400, str(exc)) from exc
        return device.summary()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, Any]:
    """Method, path and JSON body (None if empty); _HttpError for a malformed request."""
    line = (await reader.readline()).decode("latin-1").split()
    if len(line) != 3:
        raise _HttpError(400, "malformed request line")
    method, path, _ = line
    length = 0
    while True:
        header = (await reader.readline()).decode("latin-1").strip()
        if not header:
            break
        name, _, value = header.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if not 0 <= length <= _MAX_BODY:
        raise _HttpError(400, "body too large")
    raw = await reader.readexactly(length) if length else b""
    try:
        body = json.loads(raw) if raw else None
    except json.JSONDecodeError as exc:
        raise _HttpError(400, f"body is not JSON: {exc}") from exc
    return method, path, body


def call(address: str, method: str, path: str, body: Any = None, timeout: float = 5.0) -> Any:
    """One request to the control endpoint at ``host:port``; the decoded JSON answer.

    Raises ControlError when the endpoint refuses (bad fault, unknown device), and
    TransportError when it cannot be reached.
    """
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://{address}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except (ValueError, AttributeError):
            message = str(exc.reason)
        raise ControlError(exc.code, message) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise TransportError(f"control endpoint {address}: {exc}") from exc
