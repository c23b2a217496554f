"""Refuse, before any route runs, text that no database can store: answered 422.

PostgreSQL refuses a NUL character in any text (psycopg raises before the query is sent,
even for a lookup), and neither database can encode a lone UTF-16 surrogate (``"\\ud800"``
is valid JSON to Python's parser, not to UTF-8). Such text can come in a path, a query, a
form or a JSON body; it is refused here once instead of failing as a 500 in whichever
statement meets it first. JSON bodies are parsed with orjson, which also refuses ``NaN``
and ``Infinity`` (not JSON, and not storable in a JSON column).

Routes that keep the raw body (a payment channel's notification, recorded as it came) and
multipart uploads (photos: binary) are left to their routes.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

RAW_BODY_PATHS = ("/api/v1/payments/notify/",)


class RefuseUnstorableText:
    """ASGI middleware: 422 for NUL anywhere, and for JSON bodies that are not strict JSON."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query: bytes = scope.get("query_string", b"")
        if "\x00" in scope["path"] or b"\x00" in query or b"%00" in query:
            await _refuse(send, "a NUL character in the address")
            return
        kind = _content_type(scope)
        if kind not in ("application/json", "application/x-www-form-urlencoded") or scope[
            "path"
        ].startswith(RAW_BODY_PATHS):
            await self.app(scope, receive, send)
            return
        body, more = await _read(receive)
        why = _unstorable_json(body) if kind == "application/json" else _unstorable_form(body)
        if why is not None:
            await _refuse(send, why)
            return
        await self.app(scope, _replay(body, more), send)


def _content_type(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"content-type":
            kind: bytes = value.split(b";", 1)[0].strip().lower()
            return kind.decode("latin-1")
    return ""


async def _read(receive: Receive) -> tuple[bytes, list[Message]]:
    """The whole body, and any message that came after it (a disconnect)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), [message]
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), []


def _replay(body: bytes, after: list[Message]) -> Receive:
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}, *after]

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return {"type": "http.disconnect"}

    return receive


def _unstorable_json(body: bytes) -> str | None:
    if not body.strip():
        return None  # no body: the route says whether it needs one
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return f"the body is not strict JSON (UTF-8, no NaN or Infinity): {exc}"
    return "a NUL character in the body" if _has_nul(value) else None


def _unstorable_form(body: bytes) -> str | None:
    return "a NUL character in the form" if b"%00" in body or b"\x00" in body else None


def _has_nul(value: Any) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if "\x00" in v:
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


async def _refuse(send: Send, why: str) -> None:
    body = orjson.dumps({"detail": why})
    await send(
        {
            "type": "http.response.start",
            "status": 422,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
