"""A plate camera that POSTs recognitions to a URL, as ANPR cameras do.

The push format is protocols/parking/camera.py.

    camera = PlateCamera("http://127.0.0.1:8088/api/plates", "cam-in-1", "in")
    result = await camera.recognize("浙A12345")           # 200, {"ok": true, ...}
    await camera.recognize("浙AD12345", confidence=35)     # a poor read
    await camera.recognize("浙A12345", misread=True)       # a well-formed but wrong plate
    await camera.recognize("浙A12345", omit=("plate",))    # a push missing a field
    await camera.recognize("浙A12345", override={"confidence": "high"})   # wrong type
    await camera.push_raw(b'{"plate": ')                   # not JSON at all
    await camera.resend_last()                             # the same event again

Stdlib HTTP/1.1 over asyncio streams, one connection per push, like most camera firmware.
"""

from __future__ import annotations

import asyncio
import json
import random
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from protocols.errors import TransportError
from protocols.parking.camera import Direction, PlateColor, push_json
from protocols.parking.plates import PROVINCES, PlateKind, check_plate, plate_kind

CHINA = timezone(timedelta(hours=8))

# characters ANPR engines confuse most
_LOOKALIKE = {"0": "D", "D": "0", "8": "B", "B": "8", "1": "7", "7": "1", "2": "Z", "Z": "2"}
_LOOKALIKE |= {"5": "S", "S": "5", "6": "G", "G": "6", "Q": "0"}


def misread(plate: str, rng: random.Random) -> str:
    """A well-formed plate that differs from ``plate`` by one look-alike character."""
    candidates = []
    for i, char in enumerate(plate):
        swap = _LOOKALIKE.get(char)
        if i >= 2 and swap is not None:
            candidates.append(plate[:i] + swap + plate[i + 1 :])
    candidates += [p + plate[1:] for p in PROVINCES if p != plate[0]][:3]  # 浙 read as 湘 ...
    valid = [c for c in candidates if _valid(c)]
    return rng.choice(valid)


def _valid(plate: str) -> bool:
    try:
        check_plate(plate)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class PushResult:
    status: int
    body: Any  # the receiver's JSON answer, or its raw text if it is not JSON
    sent: bytes  # what was posted


class PlateCamera:
    """A camera watching one lane (``direction`` in or out) that pushes to ``url``."""

    def __init__(
        self,
        url: str,
        camera_id: str,
        direction: Direction | str = Direction.IN,
        *,
        seed: int = 0,
        now: Callable[[], datetime] | None = None,
        timeout: float = 5.0,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"need an http:// URL, not {url!r}")
        self.url = url
        self.camera_id = camera_id
        self.direction = Direction(direction)
        self.timeout = timeout
        self.pushes = 0
        self._host = parts.hostname
        self._port = parts.port or 80
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._rng = random.Random(seed)
        self._now = now or (lambda: datetime.now(CHINA))
        self._events = 0
        self._last = b""

    async def recognize(
        self,
        plate: str,
        *,
        color: PlateColor | str | None = None,
        confidence: int = 95,
        misread: bool = False,
        event_id: str | None = None,
        omit: Iterable[str] = (),
        override: Mapping[str, Any] | None = None,
    ) -> PushResult:
        """Push one recognition of ``plate`` (the colour follows the plate unless given)."""
        shown = _misread(plate, self._rng) if misread else plate
        self._events += 1
        body = push_json(
            camera_id=self.camera_id,
            event_id=event_id or f"{self.camera_id}-{self._events}",
            plate=shown,
            plate_color=color or _colour_of(shown),
            confidence=confidence,
            recognized_at=self._now(),
            direction=self.direction,
        )
        for key in omit:
            body.pop(key, None)
        body.update(override or {})
        return await self.push(body)

    async def push(self, body: Any) -> PushResult:
        """POST any JSON value."""
        return await self.push_raw(json.dumps(body, ensure_ascii=False).encode())

    async def resend_last(self) -> PushResult:
        """The last push again, byte for byte (as a camera does when no 200 came)."""
        return await self.push_raw(self._last)

    async def push_raw(
        self, body: bytes, content_type: str = "application/json; charset=utf-8"
    ) -> PushResult:
        """POST ``body`` as it is; TransportError if the receiver cannot be reached."""
        self._last = body
        self.pushes += 1
        head = (
            f"POST {self._path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(self._host, self._port)
                try:
                    writer.write(head.encode() + body)
                    await writer.drain()
                    status, answer = await _read_response(reader)
                finally:
                    writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            raise TransportError(f"push to {self.url}: {exc!r}") from exc
        try:
            parsed: Any = json.loads(answer)
        except ValueError:
            parsed = answer.decode(errors="replace")
        return PushResult(status, parsed, body)


def _misread(plate: str, rng: random.Random) -> str:
    return misread(plate, rng)


def _colour_of(plate: str) -> PlateColor:
    try:
        kind = plate_kind(plate)
    except ValueError:
        return PlateColor.BLUE
    if kind is PlateKind.NEW_ENERGY:
        return PlateColor.GREEN
    if plate.endswith(("学", "挂")):
        return PlateColor.YELLOW
    if plate.endswith("警"):
        return PlateColor.WHITE
    if plate.endswith(("港", "澳", "领")):
        return PlateColor.BLACK
    return PlateColor.BLUE


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response; ValueError if it is not one."""
    status_line = (await reader.readline()).decode("latin-1").split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise ValueError(f"not an HTTP response: {status_line!r}")
    length: int | None = None
    chunked = False
    while header := (await reader.readline()).decode("latin-1").strip():
        name, _, value = header.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
        elif name.strip().lower() == "transfer-encoding":
            chunked = "chunked" in value.lower()
    if chunked:
        body = bytearray()
        while size := int((await reader.readline()).split(b";")[0].strip() or b"0", 16):
            body += await reader.readexactly(size)
            await reader.readline()
        return int(status_line[1]), bytes(body)
    body_bytes = await (reader.readexactly(length) if length is not None else reader.read())
    return int(status_line[1]), body_bytes
