"""Fuzz of the plate-camera receiver (edge/parking/camera.py) over real HTTP.

Each example starts a receiver (uvicorn, as in the agent) and sends it a batch of
requests: pushes whose bodies are good, broken or mangled (tests/support/pushes.py), pushes
of cameras it does not know, other paths and methods, chunked bodies with chunks cut
anywhere, bodies shorter than announced, bodies past the size limit, and whole requests
with their bytes mutated. What must hold:

- every answer is 200 or 4xx, never 5xx, and nothing is logged as an application error;
- a push is answered as ``parse_push`` judges its body (200, 400, 403, 413);
- every request that reaches the receiver is counted once, as accepted, a duplicate or a
  refusal;
- after all that, a good push is answered 200 and its event delivered.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.parking.camera import CameraReceiver
from protocols.parking.camera import MAX_PUSH_BYTES, PushError, PushProblem, parse_push
from tests.support.fuzz import TALLY, fuzz, mutated
from tests.support.pushes import bodies, good_pushes, serialise

CAMERAS = {"cam-in-1", "cam-out-1"}
PATH = "/api/plates"
NAME = "camera receiver (HTTP)"
_unique = itertools.count()
# near the push path: uvicorn decodes %61 to "a", and drops the query and the fragment
PATHS = ("/", "/api/plates/", "/api/plate", "/API/PLATES", "//api/plates", "/api/%ff")
PATHS += ("/api/plates%00", "/api/pl%61tes", "/api/plates?x=1", "/api/plates#x")


@dataclass(frozen=True)
class Request:
    kind: str
    wire: bytes  # the bytes sent, then the sending side is shut
    push: bytes | None = None  # the body of a well-framed POST to the push path


def _post(body: bytes, path: str = PATH, content_type: str = "application/json") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: edge:8088\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


@st.composite
def _known_camera(draw: Any) -> bytes:
    good = draw(good_pushes())
    return serialise({**good.body, "camera_id": draw(st.sampled_from(sorted(CAMERAS)))})


@st.composite
def _chunked(draw: Any, body: bytes) -> bytes:
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(body) - 1)), max_size=6)))
    edges = [0, *(c for c in cuts if c < len(body)), len(body)]
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (b - a, body[a:b]) for a, b in itertools.pairwise(edges) if b > a
    )
    head = f"POST {PATH} HTTP/1.1\r\nHost: edge\r\nTransfer-Encoding: chunked\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + chunks + b"0\r\n\r\n"


_bodies = st.one_of(bodies(), _known_camera())


@st.composite
def requests(draw: Any) -> Request:
    kind = draw(
        st.sampled_from(
            ["push", "push", "push", "route", "chunked", "short", "oversize", "mangled"]
        )
    )
    if kind == "push":
        body = draw(_bodies)
        return Request(kind, _post(body), push=body)
    if kind == "route":
        method = draw(st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "POST"]))
        path = draw(st.sampled_from(PATHS))
        body = draw(_known_camera())
        wire = _post(body, path).replace(b"POST", method.encode(), 1)
        framed_push = method == "POST" and path.split("?")[0].split("#")[0] in (
            PATH,
            "/api/pl%61tes",
        )
        return Request(kind, wire, push=body if framed_push else None)
    if kind == "chunked":
        body = draw(_bodies)
        wire = draw(_chunked(body))
        if draw(st.booleans()):
            return Request("chunked mangled", draw(mutated(wire, b"\r\n0123456789abcdef;")))
        return Request(kind, wire, push=body)
    if kind == "short":  # announces more than it sends, then the camera hangs up
        body = draw(_known_camera())
        wire = _post(body)
        return Request(kind, wire[: draw(st.integers(len(wire) - len(body), len(wire) - 1))])
    if kind == "oversize":
        body = draw(_known_camera())
        padded = body[:-1] + b', "picture": "' + b"A" * MAX_PUSH_BYTES + b'"}'
        return Request(kind, _post(padded), push=padded)
    wire = _post(draw(_known_camera()))
    return Request(kind, draw(mutated(wire, b'\r\n: /HTTP1.0{}"')))


def _answers(raw: bytes) -> list[tuple[int, bytes]]:
    """Status and body of each HTTP response in ``raw`` (as much of it as was sent)."""
    out = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, f"an answer cut short: {raw[:300]!r}"
        status_line, *lines = head.split(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 "), status_line
        headers = dict(line.lower().split(b":", 1) for line in lines)
        length = int(headers.get(b"content-length", b"0"))
        out.append((int(status_line.split()[1]), rest[:length]))
        raw = rest[length:]
    return out


def _expected(body: bytes) -> int:
    """What the doc's answers table says a push of ``body`` gets."""
    try:
        push = parse_push(body)
    except PushError as exc:
        return 413 if exc.problem is PushProblem.TOO_LARGE else 400
    return 200 if push.camera_id in CAMERAS else 403


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def _send(rx: CameraReceiver, wire: bytes) -> list[tuple[int, bytes]]:
    async with asyncio.timeout(10):  # a bound for a hung server, not a wait for an event
        reader, writer = await asyncio.open_connection("127.0.0.1", rx.port)
        try:
            writer.write(wire)
            writer.write_eof()
            raw = await reader.read()
        finally:
            writer.close()
    return _answers(raw)


@pytest.fixture
async def receiver() -> AsyncIterator[CameraReceiver]:
    errors = _Errors()
    logging.getLogger("uvicorn").addHandler(errors)
    try:
        async with CameraReceiver("127.0.0.1", 0, cameras=CAMERAS) as rx:
            yield rx
    finally:
        logging.getLogger("uvicorn").removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records]


# one receiver for every example (its start and stop cost more than a batch): what an
# example checks is the change it made to the receiver's counters
@settings(
    fuzz(150),
    suppress_health_check=[*fuzz(1).suppress_health_check, HealthCheck.function_scoped_fixture],
)
@given(batch=st.lists(requests(), min_size=1, max_size=8))
async def test_any_request_is_answered_200_or_4xx_and_a_good_push_still_gets_through(
    receiver: CameraReceiver, batch: list[Request]
) -> None:
    rx = receiver
    before = rx.stats.as_dict()
    answered: Counter[str] = Counter()
    for request in batch:
        answers = await _send(rx, request.wire)
        for status, body in answers:
            assert status == 200 or 400 <= status < 500, (request, status, body)
            answered[f"{status}"] += 1
        if request.push is not None:
            want = _expected(request.push)
            assert [s for s, _ in answers] == [want], (request, answers)
    made = {k: v - before[k] for k, v in rx.stats.as_dict().items()}
    assert made["accepted"] + made["duplicates"] == answered["200"]
    refused = made["not_json"] + made["invalid"] + made["too_large"] + made["unknown_camera"]
    refused += made["not_found"] + made["cut_short"]
    assert made["requests"] == made["accepted"] + made["duplicates"] + refused

    # and the next good push still gets through
    event_id = f"after-fuzz-{next(_unique)}"
    good = {
        "camera_id": "cam-in-1",
        "event_id": event_id,
        "plate": "浙AD12345",
        "plate_color": "green",
        "confidence": 90,
        "recognized_at": "2024-05-01T08:30:00+08:00",
        "direction": "in",
    }
    ((status, body),) = await _send(rx, _post(serialise(good)))
    assert (status, body) == (200, b'{"ok": true, "event_id": "%s"}' % event_id.encode())
    delivered = [rx.events.get_nowait() for _ in range(len(rx.events))]
    assert delivered[-1].push.event_id == event_id
    TALLY.add(NAME, examples=1, requests=len(batch) + 1, **answered)
    TALLY.add(NAME + " by kind", **Counter(r.kind for r in batch))
