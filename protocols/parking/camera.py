"""Plate-camera push (车牌识别 推送): the JSON a camera POSTs for each recognition.

Modelled on what ANPR cameras (Zhenshi, Dahua, Hikvision) push to a URL configured on
the camera: one HTTP POST per recognised vehicle, JSON body, answered with 200 and a small
JSON document; a camera that gets no 200 resends the same event. The schema is strict
(no type coercion, every field required, timestamps with a timezone), except that
unknown fields are ignored: a firmware upgrade that adds one must not stop the gates.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

from protocols.errors import DecodeError
from protocols.mqtt import ID_PATTERN
from protocols.parking.plates import PlateKind, check_plate, plate_kind

MAX_PUSH_BYTES = 256 * 1024  # cameras that attach a picture stay well under this


class Direction(StrEnum):
    IN = "in"
    OUT = "out"


class PlateColor(StrEnum):
    BLUE = "blue"  # ordinary small vehicles
    YELLOW = "yellow"  # large vehicles, learner cars
    GREEN = "green"  # new energy
    WHITE = "white"  # police, military
    BLACK = "black"  # foreign-owned, Hong Kong and Macau crossing


Plate = Annotated[str, AfterValidator(check_plate)]

_DATE_AND_TIME = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d")


def _date_and_time(value: object) -> object:
    # pydantic reads a number, or a string of digits, as Unix time in UTC: a coercion the
    # schema refuses (and in strict mode it would refuse the string this hands on)
    if not isinstance(value, str) or not _DATE_AND_TIME.match(value):
        raise ValueError("not an RFC 3339 date and time")
    return value


def _an_instant(value: datetime) -> datetime:
    # 9999-12-31T23:59:59-23:59 parses, but no UTC time (nor timestamp) is that instant
    try:
        value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("outside the times UTC can hold") from exc
    return value


Timestamp = Annotated[
    AwareDatetime,
    Field(strict=False),  # only strings reach it: _date_and_time refuses anything else
    BeforeValidator(_date_and_time),
    AfterValidator(_an_instant),
]


class PlatePush(BaseModel):
    """One recognition, as the camera sends it."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    camera_id: Annotated[str, Field(pattern=ID_PATTERN)]
    event_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]
    plate: Plate
    plate_color: PlateColor
    confidence: Annotated[int, Field(ge=0, le=100)]
    recognized_at: Timestamp
    direction: Direction

    @property
    def plate_kind(self) -> PlateKind:
        return plate_kind(self.plate)


class PushProblem(StrEnum):
    """Why a push was refused; also the name of its counter."""

    NOT_JSON = "not_json"
    INVALID = "invalid"  # JSON, but not a recognition: a field missing, mistyped or malformed
    TOO_LARGE = "too_large"
    UNKNOWN_CAMERA = "unknown_camera"


class PushError(DecodeError):
    """A push that cannot be accepted; ``problem`` says why, the message says what."""

    def __init__(self, problem: PushProblem, detail: str) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail


def parse_push(body: bytes) -> PlatePush:
    """The recognition in ``body``; PushError (NOT_JSON, INVALID, TOO_LARGE) if it is not one."""
    if len(body) > MAX_PUSH_BYTES:
        raise PushError(PushProblem.TOO_LARGE, f"{len(body)} bytes, at most {MAX_PUSH_BYTES}")
    try:
        return PlatePush.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if errors and errors[0]["type"] in ("json_invalid", "json_type"):
            raise PushError(PushProblem.NOT_JSON, f"body is not JSON: {errors[0]['msg']}") from exc
        raise PushError(PushProblem.INVALID, describe(errors)) from exc


def describe(errors: list[Any]) -> str:
    """One line naming every bad field: ``plate: not a Chinese plate: '浙A1234'; ...``."""
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e["loc"]) or "body"
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def push_json(
    *,
    camera_id: str,
    event_id: str,
    plate: str,
    plate_color: PlateColor | str,
    confidence: int,
    recognized_at: datetime,
    direction: Direction | str,
) -> dict[str, Any]:
    """The JSON object a camera sends (what simulators and tests build pushes from)."""
    return {
        "camera_id": camera_id,
        "event_id": event_id,
        "plate": plate,
        "plate_color": str(plate_color),
        "confidence": confidence,
        "recognized_at": recognized_at.isoformat(),
        "direction": str(direction),
    }
