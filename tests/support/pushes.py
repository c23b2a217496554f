"""Plate-camera pushes for the fuzz tests: good ones built from the doc's grammar, the
ways firmware gets them wrong, and an oracle written from the doc's field table
(protocols/PARKING-DEVICES.md, "Plate camera push") that says which must be accepted."""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from protocols.parking.plates import PROVINCES, SPECIAL_SUFFIXES
from tests.support.fuzz import mutated

FIELDS = (
    "camera_id",
    "event_id",
    "plate",
    "plate_color",
    "confidence",
    "recognized_at",
    "direction",
)
COLORS = ("blue", "yellow", "green", "white", "black")
SERIAL = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"  # no I, no O
_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_PLATE = re.compile(
    f"[{PROVINCES}][A-Z](?:[{SERIAL}]{{5}}|[DF][{SERIAL}][0-9]{{4}}|[0-9]{{5}}[DF]"
    f"|[{SERIAL}]{{4}}[{SPECIAL_SUFFIXES}])"
)
_PLATE_CHARS = set(PROVINCES + SPECIAL_SUFFIXES + string.ascii_letters + string.digits)
# what the camera firmware sends: RFC 3339, seconds and fraction, an offset or Z
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)")
_DATE_TIME = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d")
_OFFSET = re.compile(r"(?:[Zz]|[+-](\d\d):?(\d\d))\Z")


_PRINTABLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)


def _serial(n: int) -> SearchStrategy[str]:
    return st.text(SERIAL, min_size=n, max_size=n)


_digits = st.text("0123456789", min_size=1, max_size=1)
plates = st.one_of(
    st.tuples(_serial(5)).map("".join),  # ordinary
    st.tuples(st.sampled_from("DF"), _serial(1), *[_digits] * 4).map("".join),  # small NEV
    st.tuples(*[_digits] * 5, st.sampled_from("DF")).map("".join),  # large NEV
    st.tuples(_serial(4), st.sampled_from(SPECIAL_SUFFIXES)).map("".join),  # special
).flatmap(
    lambda serial: st.tuples(
        st.sampled_from(PROVINCES), st.sampled_from(string.ascii_uppercase)
    ).map(lambda head: "".join(head) + serial)
)


@st.composite
def _as_printed(draw: Any, plate: str) -> str:
    """``plate`` as cameras print it: a middle dot, spaces, lower-case letters."""
    if draw(st.booleans()):
        plate = plate[:2] + "·" + plate[2:]
    if draw(st.booleans()):
        plate = f" {plate} "
    if draw(st.booleans()):
        plate = plate.lower()
    return plate


_offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=_offsets
)


def _rfc3339(t: datetime, zulu: bool) -> str:
    text = t.isoformat()
    return text.replace("+00:00", "Z") if zulu else text


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@dataclass(frozen=True)
class Good:
    """A push the doc says must be accepted, and what it must be read as."""

    body: dict[str, Any]
    plate: str  # normalised
    recognized_at: datetime


@st.composite
def good_pushes(draw: Any) -> Good:
    plate = draw(plates)
    when = draw(times)
    body = {
        "camera_id": draw(st.from_regex(_ID, fullmatch=True)),
        "event_id": draw(st.text(_PRINTABLE, min_size=1, max_size=64)),
        "plate": draw(_as_printed(plate)),
        "plate_color": draw(st.sampled_from(COLORS)),
        "confidence": draw(st.integers(0, 100)),
        "recognized_at": _rfc3339(when, draw(st.booleans())),
        "direction": draw(st.sampled_from(("in", "out"))),
    }
    # fields a newer firmware adds are ignored
    extra = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3))
    return Good({**{k: v for k, v in extra.items() if k not in FIELDS}, **body}, plate, when)


_unicode = st.sampled_from(
    [
        "ſ",  # long s: upper-cases to S
        "ı",  # dotless i: upper-cases to I
        "ﬀ",  # ligature: upper-cases to FF
        "Ａ",  # full-width A
        "１",  # full-width 1
        "А",  # Cyrillic A
        "\u3000",  # ideographic space
        "\u200b",  # zero-width space
        "\x00",
        "\n",
        "\ud800",  # a lone surrogate (sent as \\ud800 in JSON, or as raw bytes)
        "💩",
        "浙",
        "·",
    ]
)


@st.composite
def _near_miss(draw: Any, field: str, value: Any) -> Any:
    """A value of ``field`` a little off: the right type spelt wrong, or the wrong type."""
    if field == "confidence":
        return draw(
            st.sampled_from([-1, 101, 10**30, True, False, 92.0, "92", None])
            | st.integers()
            | st.floats()
        )
    if field == "recognized_at":
        return draw(
            st.sampled_from(
                [
                    "2024-05-01T08:30:00",  # no offset
                    "2024-05-01",
                    "08:30:00+08:00",
                    "1714523400",  # epoch seconds, as text
                    "1714523400250",
                    "2024-05-01T08:30:00+24:00",
                    "9999-12-31T23:59:59-23:59",  # a time UTC cannot hold
                    "0001-01-01T00:00:00+23:59",
                    "2024-02-30T08:30:00+08:00",
                    "2024-05-01T08:30:00+08:00\n",
                    1714523400,
                ]
            )
        )
    if not isinstance(value, str):
        return draw(json_values)
    text = list(value)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(("insert", "replace", "drop", "case", "other")))
        if op == "insert" or not text:
            text.insert(at, draw(_unicode | st.characters()))
        elif op == "replace":
            text[min(at, len(text) - 1)] = draw(_unicode | st.characters())
        elif op == "drop":
            del text[min(at, len(text) - 1)]
        elif op == "case":
            text = list("".join(text).swapcase())
        else:
            return draw(json_values)
    return "".join(text)


@st.composite
def bad_pushes(draw: Any) -> Any:
    """A good push with one to three fields missing, mistyped or malformed; or not an
    object at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values.filter(lambda v: not isinstance(v, dict)))
    body = dict(draw(good_pushes()).body)
    for field in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True)):
        if draw(st.integers(0, 4)) == 0:
            del body[field]
        else:
            body[field] = draw(_near_miss(field, body[field]))
    return body


@st.composite
def bodies(draw: Any) -> bytes:
    """What arrives as a push body: JSON of a good or bad push, maybe mangled as bytes."""
    value = draw(st.one_of(good_pushes().map(lambda g: g.body), bad_pushes()))
    raw = serialise(value, ascii_only=draw(st.booleans()))
    if draw(st.booleans()):
        raw = draw(mutated(raw, b'{}[]",:\\ \xe6\xb5\x99'))
    return raw


def serialise(value: Any, ascii_only: bool = False) -> bytes:
    """JSON as a camera sends it; a lone surrogate goes out as the bytes firmware makes."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def verdict(body: Any) -> tuple[bool | None, set[str]]:
    """Whether the doc says ``body`` (parsed JSON) is a recognition, and the fields it says
    are wrong; None where the doc does not decide (a time in a form the firmware does not
    send, an unknown field that is not standard JSON)."""
    if not isinstance(body, dict):
        return False, set()
    bad, unsure = set(), False
    for field in FIELDS:
        if field not in body:
            bad.add(field)
            continue
        ok = _field_ok(field, body[field])
        if ok is None:
            unsure = True
        elif not ok:
            bad.add(field)
    if bad:
        return False, bad
    return (None if unsure else True), bad


def _field_ok(field: str, v: Any) -> bool | None:
    if field == "camera_id":
        return isinstance(v, str) and _ID.fullmatch(v) is not None
    if field == "event_id":
        return isinstance(v, str) and 1 <= len(v) <= 64 and all("!" <= c <= "~" for c in v)
    if field == "plate":
        if not isinstance(v, str):
            return False
        # spaces and the middle dot are removed; letters may come in lower case
        text = "".join(c for c in v if not c.isspace() and c not in "·•")
        if not set(text) <= _PLATE_CHARS:
            return False
        return _PLATE.fullmatch(text.upper()) is not None
    if field == "plate_color":
        return v in COLORS
    if field == "confidence":
        return type(v) is int and 0 <= v <= 100
    if field == "recognized_at":
        offset = _OFFSET.search(v) if isinstance(v, str) else None
        if offset is None or not _DATE_TIME.match(v):
            return False  # not a date and time, or no offset: a clock the edge cannot place
        if offset[1] and (int(offset[1]) > 23 or int(offset[2]) > 59):
            return False  # RFC 3339: an offset of at most 23:59
        if not _RFC3339.fullmatch(v):
            return None  # a looser form with an offset (no seconds, "+0800"): not decided
        try:
            datetime.fromisoformat(v).astimezone(UTC)
        except (ValueError, OverflowError):
            return False
        return True
    return v in ("in", "out")
