"""Fuzz of the plate-camera push decoder (protocols/parking/camera.py).

Pushes are built from the doc's grammar (plates, ids, RFC 3339 times), then broken: fields
missing, of the wrong JSON type, spelt a little wrong (unicode look-alikes, case, stray
characters, times without an offset or outside what UTC can hold), not an object, and the
bytes mangled. What must hold:

- ``parse_push`` raises nothing but ``PushError``, and what it accepts is a recognition
  by every rule of the doc's field table;
- a body the doc says is a recognition is accepted, read as sent; one it says is not is
  refused, naming every bad field.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from protocols.parking.camera import MAX_PUSH_BYTES, PlatePush, PushError, PushProblem, parse_push
from tests.support.fuzz import TALLY, fuzz
from tests.support.pushes import (
    FIELDS,
    Good,
    bodies,
    good_pushes,
    serialise,
    verdict,
)
from tests.support.pushes import _field_ok as field_ok

NAME = "camera push (parse_push)"


def assert_a_recognition(push: PlatePush) -> None:
    """Every rule of the doc's field table holds for an accepted push."""
    seen = push.model_dump(mode="python")
    seen["recognized_at"] = push.recognized_at.isoformat()
    for field in FIELDS:
        assert field_ok(field, seen[field]) is not False, (field, seen[field])
    assert push.recognized_at.astimezone(UTC)  # an instant the edge can place


@fuzz(300)
@given(good_pushes(), st.booleans())
def test_a_good_push_is_read_as_sent(good: Good, ascii_only: bool) -> None:
    push = parse_push(serialise(good.body, ascii_only))
    assert push.plate == good.plate
    assert push.recognized_at == good.recognized_at
    for field in ("camera_id", "event_id", "plate_color", "confidence", "direction"):
        assert getattr(push, field) == good.body[field]
    assert_a_recognition(push)
    TALLY.add(NAME, examples=1, accepted=1)


def _standard_json(raw: bytes) -> tuple[bool, Any]:
    """(True, value) if ``raw`` is JSON by RFC 8259: UTF-8, no NaN, no lone surrogate."""

    def refuse(constant: str) -> None:
        raise ValueError(constant)

    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=refuse)
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # a lone surrogate fails
    except (UnicodeError, ValueError, RecursionError):
        return False, None
    return True, value


@fuzz(1500)
@given(bodies())
def test_any_body_is_a_recognition_or_a_push_error(raw: bytes) -> None:
    standard, value = _standard_json(raw)
    should, bad = verdict(value) if standard else (None, set())
    try:
        push = parse_push(raw)
    except PushError as exc:
        assert exc.problem in (PushProblem.NOT_JSON, PushProblem.INVALID)
        assert should is not True, f"refused a recognition: {exc}"
        if exc.problem is PushProblem.INVALID:
            for field in bad:
                assert f"{field}: " in str(exc), (field, str(exc))
        else:
            assert not standard or isinstance(value, list | dict)  # too deep for jiter
        TALLY.add(NAME, examples=1, **{f"refused {exc.problem}": 1})
        return
    assert should is not False, f"accepted, though {sorted(bad)} are wrong: {value!r}"
    assert_a_recognition(push)
    TALLY.add(NAME, examples=1, accepted=1)


@fuzz(20)
@given(good_pushes(), st.integers(-3, 3))
def test_the_size_limit_is_exact(good: Good, past: int) -> None:
    raw = serialise(good.body)
    pad = MAX_PUSH_BYTES + past - len(raw) - len(', "pad": ""')
    raw = raw[:-1] + b', "pad": "' + b"x" * pad + b'"}'
    assert len(raw) == MAX_PUSH_BYTES + past
    if past > 0:
        try:
            parse_push(raw)
        except PushError as exc:
            assert exc.problem is PushProblem.TOO_LARGE
        else:
            raise AssertionError("a push over the limit was accepted")
    else:
        assert parse_push(raw).plate == good.plate
    TALLY.add(NAME + " at the size limit", examples=1)
