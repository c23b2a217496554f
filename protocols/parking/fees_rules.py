"""Temporary-parking fee rules (临停收费规则) as data: frozen models that round-trip JSON.

The hub syncs rules to the edge as JSON; a rule that cannot mean anything (negative
prices, empty steps, tier 2 before the first period ends, day segments with gaps or
overlaps) is refused here, naming the field, so the gate never prices with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import time
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_serializer,
    field_validator,
)

from protocols.errors import ConfigError
from protocols.profile import validate

Fen = Annotated[int, Field(strict=True, ge=0)]
CapFen = Annotated[int, Field(strict=True, ge=1)]
FreeMinutes = Annotated[int, Field(strict=True, ge=0, le=1440)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Period(_Frozen):
    """``fen`` for every started block of ``minutes``."""

    minutes: Annotated[int, Field(strict=True, ge=1, le=1440)]
    fen: Fen


class Tier2(_Frozen):
    """From ``after_minutes`` into a (24-h block of a) stay, steps are priced by ``step``."""

    after_minutes: Annotated[int, Field(strict=True, ge=1, le=1440)]
    step: Period


class StandardRule(_Frozen):
    """First period, then steps, then tier-2 steps; optional cap per 24 h.

    With a cap, each 24-h block from entry is priced afresh (first period again, no free
    minutes) and capped: full days x min(day fee, cap) + min(fee of the rest, cap). Without
    a cap the schedule simply runs on, tier 2 for ever.
    """

    kind: Literal["standard"] = "standard"
    free_minutes: FreeMinutes = 0
    first: Period
    step: Period
    tier2: Tier2 | None = None
    cap_fen: CapFen | None = None

    @field_validator("tier2")
    @classmethod
    def _tier2_fits(cls, tier2: Tier2 | None, info: ValidationInfo) -> Tier2 | None:
        first, step = info.data.get("first"), info.data.get("step")
        if tier2 is None or not isinstance(first, Period) or not isinstance(step, Period):
            return tier2
        if tier2.after_minutes < first.minutes:
            raise ValueError(
                f"after_minutes ({tier2.after_minutes}) is before the first period ends "
                f"({first.minutes} min)"
            )
        if (tier2.after_minutes - first.minutes) % step.minutes:
            raise ValueError(
                f"after_minutes ({tier2.after_minutes}) must end a whole step: first period "
                f"{first.minutes} min + n x {step.minutes} min, so no step straddles tier 2"
            )
        return tier2


class PerEntryRule(_Frozen):
    """``fen`` per entry (按次); with ``per_started_day``, ``fen`` per started 24 h."""

    kind: Literal["per_entry"] = "per_entry"
    free_minutes: FreeMinutes = 0
    fen: Fen
    per_started_day: Annotated[bool, Field(strict=True)] = False


class Segment(_Frozen):
    """A part of the day, local ``start`` (included) to ``end`` (excluded), with its prices.

    Each piece of a stay inside one occurrence of the segment (one evening, one day) is
    priced from its own start, first period then steps, and capped by ``cap_fen``.
    """

    start: time
    end: time
    first: Period
    step: Period
    cap_fen: CapFen | None = None

    @field_validator("start", "end")
    @classmethod
    def _whole_minute(cls, t: time) -> time:
        if t.second or t.microsecond or t.tzinfo is not None:
            raise ValueError("must be a local time on a whole minute, like '07:00'")
        return t

    @field_validator("end")
    @classmethod
    def _not_empty(cls, end: time, info: ValidationInfo) -> time:
        if end == info.data.get("start"):
            raise ValueError("equals start: a segment cannot be empty")
        return end

    @field_serializer("start", "end")
    def _hhmm(self, t: time) -> str:
        return t.strftime("%H:%M")

    @property
    def start_minute(self) -> int:
        return self.start.hour * 60 + self.start.minute

    @property
    def end_minute(self) -> int:
        return self.end.hour * 60 + self.end.minute


class DayNightRule(_Frozen):
    """Segments of the local day (day/night, peak/off-peak); optional cap per 24 h."""

    kind: Literal["day_night"] = "day_night"
    free_minutes: FreeMinutes = 0
    segments: tuple[Segment, ...] = Field(min_length=2)
    cap_fen: CapFen | None = None
    timezone: str = "Asia/Shanghai"

    @field_validator("segments")
    @classmethod
    def _cover_the_day(cls, segments: tuple[Segment, ...]) -> tuple[Segment, ...]:
        cover = [0] * 1440
        for seg in segments:
            m = seg.start_minute
            while m != seg.end_minute:
                cover[m] += 1
                m = (m + 1) % 1440
        gaps = {m for m in range(1440) if cover[m] == 0}
        overlaps = {m for m in range(1440) if cover[m] > 1}
        for problem, bad in (("leave a gap", gaps), ("overlap", overlaps)):
            if bad:
                first = end = min(bad)
                while end in bad:
                    end += 1
                raise ValueError(
                    f"{problem} from {_hhmm(first)} to {_hhmm(end)}: "
                    "segments must cover the 24 h exactly once"
                )
        return segments

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, key: str) -> str:
        try:
            ZoneInfo(key)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {key!r}") from exc
        return key

    # plain properties, not cached: model_copy(update=...) would carry a stale cache over
    # (ZoneInfo keeps its own cache of zones)
    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def by_start(self) -> tuple[Segment, ...]:
        return tuple(sorted(self.segments, key=lambda s: s.start))


FeeRule = Annotated[StandardRule | PerEntryRule | DayNightRule, Field(discriminator="kind")]


def _hhmm(minute: int) -> str:
    return f"{minute // 60 % 24:02d}:{minute % 60:02d}"


def parse_rule(data: Any, source: str = "fee rule") -> FeeRule:
    """``data`` (a JSON object) as a fee rule; ConfigError naming ``source`` and the field."""
    if not isinstance(data, Mapping):
        raise ConfigError(source, "", "a fee rule must be a mapping")
    if "kind" not in data:
        raise ConfigError(source, "kind", "required field is missing")
    match data["kind"]:
        case "standard":
            return validate(StandardRule, data, source, "a fee rule")
        case "per_entry":
            return validate(PerEntryRule, data, source, "a fee rule")
        case "day_night":
            return validate(DayNightRule, data, source, "a fee rule")
        case other:
            raise ConfigError(
                source, "kind", f"must be standard, per_entry or day_night, not {other!r}"
            )
