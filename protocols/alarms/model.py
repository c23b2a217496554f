"""Alarm rules as data: frozen models of what raises an alarm on a device, and how bad it is.

A rule set (``protocols/alarms/rules/{profile}.yaml``) lists the rules of one device profile.
Each rule has an ``id`` (what overrides name it by) and an alarm ``type`` (what "one active
alarm per device and type" keys on), a condition, and optionally a duration (``for_s``), a
number of samples in a row (``count``) and a schedule. Conditions that cannot mean anything
(levels out of order, a clear value that would clear before the alarm raises, a code that is
both normal and a fault) are refused here; the loader (``loading.py``) names file and place.

How rules are evaluated over time is ``engine.py``; the format is documented in docs/ALARMS.md.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)

RULES_SCHEMA = "wuye.alarms/1"
PointName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
RuleId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")]
AlarmType = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
Text = Annotated[str, Field(min_length=1, max_length=200)]
MAX_FOR_S = 7 * 86_400


class Severity(StrEnum):
    """How bad an alarm is: critical > major > minor > warning > indeterminate."""

    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    WARNING = "warning"
    INDETERMINATE = "indeterminate"

    @property
    def rank(self) -> int:
        """0 for indeterminate up to 4 for critical: compare severities by rank."""
        return _RANK[self]


_RANK = {
    Severity.INDETERMINATE: 0,
    Severity.WARNING: 1,
    Severity.MINOR: 2,
    Severity.MAJOR: 3,
    Severity.CRITICAL: 4,
}


def worst(*severities: Severity) -> Severity:
    """The highest of ``severities`` (at least one)."""
    return max(severities, key=_RANK.__getitem__)


def _ascending(severities: set[Severity]) -> tuple[Severity, ...]:
    return tuple(sorted(severities, key=_RANK.__getitem__))


class _Frozen(BaseModel):
    # derived values are plain properties, not cached: model_copy(update=...) would carry a
    # stale cache over
    model_config = ConfigDict(frozen=True, extra="forbid")


class Fault(_Frozen):
    """What one fault code or bit means, and how bad it is."""

    text: Text
    severity: Severity


class Flag(Fault):
    """A bool or bit point that means a fault when it reads ``value``."""

    value: bool = True


Number = Annotated[float, Field(allow_inf_nan=False)]


class Threshold(_Frozen):
    """``point`` above (or below) a limit; one limit per severity for escalation.

    ``above: {major: 0.8, critical: 0.95}`` triggers major above 0.8 and critical above 0.95
    (strictly). ``clear`` is the hysteresis: an active alarm clears only below it (above it,
    for ``below``); without it, as soon as the value is back at or inside the lowest limit.
    """

    kind: Literal["threshold"] = "threshold"
    point: PointName
    above: dict[Severity, Number] | None = None
    below: dict[Severity, Number] | None = None
    clear: Number | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Threshold:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of 'above' and 'below'")
        limits = self.limits
        if not limits:
            raise ValueError("needs at least one severity: limit")
        values = [v for _, v in limits]
        rising = self.above is not None
        for (s1, v1), (s2, v2) in pairwise(limits):
            if (v2 <= v1) if rising else (v2 >= v1):
                word = "above" if rising else "below"
                raise ValueError(
                    f"{s2} ({v2:g}) must be further {word} than {s1} ({v1:g}): "
                    "a worse severity needs a worse value"
                )
        if self.clear is not None:
            if rising and self.clear > values[0]:
                raise ValueError(
                    f"clear ({self.clear:g}) must be at or below the lowest limit ({values[0]:g})"
                )
            if not rising and self.clear < values[0]:
                raise ValueError(
                    f"clear ({self.clear:g}) must be at or above the highest limit ({values[0]:g})"
                )
        return self

    @property
    def rising(self) -> bool:
        return self.above is not None

    @property
    def limits(self) -> tuple[tuple[Severity, float], ...]:
        """(severity, limit) from the mildest severity to the worst."""
        levels = self.above if self.above is not None else self.below or {}
        return tuple((s, levels[s]) for s in _ascending(set(levels)))

    @property
    def severities(self) -> tuple[Severity, ...]:
        return tuple(s for s, _ in self.limits)


class Range(_Frozen):
    """``point`` outside ``[lo, hi]``; ``clear: [a, b]`` (inside it) is the hysteresis."""

    kind: Literal["range"] = "range"
    point: PointName
    lo: Number
    hi: Number
    severity: Severity = Severity.MAJOR
    clear: tuple[Number, Number] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Range:
        if self.lo >= self.hi:
            raise ValueError(f"lo ({self.lo:g}) must be below hi ({self.hi:g})")
        if self.clear is not None:
            a, b = self.clear
            if not self.lo <= a < b <= self.hi:
                raise ValueError(
                    f"clear [{a:g}, {b:g}] must be a band inside [{self.lo:g}, {self.hi:g}]"
                )
        return self

    @property
    def severities(self) -> tuple[Severity, ...]:
        return (self.severity,)


class FaultCode(_Frozen):
    """``point`` holds a code: listed ``codes`` are faults, each with its text and severity.

    With ``other``, any value that is neither listed nor ``normal`` is a fault too (a lift
    controller has hundreds of codes; list the ones that matter, catch the rest).
    """

    kind: Literal["fault_code"] = "fault_code"
    point: PointName
    codes: dict[int, Fault] = Field(default_factory=dict)
    other: Fault | None = None
    normal: tuple[int, ...] = (0,)

    @model_validator(mode="after")
    def _consistent(self) -> FaultCode:
        if not self.codes and self.other is None:
            raise ValueError("needs 'codes', 'other' or both")
        both = sorted(set(self.codes) & set(self.normal))
        if both:
            raise ValueError(f"code {both[0]} is both normal and a fault")
        return self

    @property
    def severities(self) -> tuple[Severity, ...]:
        found = {f.severity for f in self.codes.values()}
        if self.other is not None:
            found.add(self.other.severity)
        return _ascending(found)


class FaultBits(_Frozen):
    """Bits of an integer status register, each a fault with its text and severity."""

    kind: Literal["fault_bits"] = "fault_bits"
    point: PointName
    bits: dict[Annotated[int, Field(ge=0, le=63)], Fault] = Field(min_length=1)

    @property
    def severities(self) -> tuple[Severity, ...]:
        return _ascending({f.severity for f in self.bits.values()})


class Flags(_Frozen):
    """Bool or bit points (a profile's decoded fault bits), each a fault when it reads ``value``."""

    kind: Literal["flags"] = "flags"
    points: dict[PointName, Flag] = Field(min_length=1)

    @property
    def severities(self) -> tuple[Severity, ...]:
        return _ascending({f.severity for f in self.points.values()})


class NoData(_Frozen):
    """No sample of the device (or of ``point``) for the rule's ``for_s`` seconds."""

    kind: Literal["no_data"] = "no_data"
    point: PointName | None = None
    severity: Severity = Severity.MAJOR

    @property
    def severities(self) -> tuple[Severity, ...]:
        return (self.severity,)


class Offline(_Frozen):
    """The edge reported the device offline (``device_offline``), for ``for_s`` seconds."""

    kind: Literal["offline"] = "offline"
    severity: Severity = Severity.MAJOR

    @property
    def severities(self) -> tuple[Severity, ...]:
        return (self.severity,)


Condition = Annotated[
    Threshold | Range | FaultCode | FaultBits | Flags | NoData | Offline,
    Field(discriminator="kind"),
]
CONDITION_KINDS = ("threshold", "range", "fault_code", "fault_bits", "flags", "no_data", "offline")


class Day(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


_DAYS = tuple(Day)  # Monday first, as datetime.weekday()
_DAY = timedelta(days=1)


class Window(_Frozen):
    """Local ``start`` (included) to ``end`` (excluded) on ``days``.

    An ``end`` at or before ``start`` runs past midnight into the next day (22:00-06:00);
    ``start == end`` is 24 hours. A window belongs to the day it starts on.
    """

    days: tuple[Day, ...] = tuple(Day)
    start: time
    end: time

    @field_validator("start", "end")
    @classmethod
    def _whole_minute(cls, t: time) -> time:
        if t.second or t.microsecond or t.tzinfo is not None:
            raise ValueError("must be a local time on a whole minute, like '22:00'")
        return t

    @field_validator("days")
    @classmethod
    def _some_days(cls, days: tuple[Day, ...]) -> tuple[Day, ...]:
        if not days:
            raise ValueError("needs at least one day")
        return days

    @field_serializer("start", "end")
    def _hhmm(self, t: time) -> str:
        return t.strftime("%H:%M")


class Schedule(_Frozen):
    """When a rule may raise: local time windows (Asia/Shanghai unless told)."""

    timezone: str = "Asia/Shanghai"
    windows: tuple[Window, ...] = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, key: str) -> str:
        try:
            ZoneInfo(key)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {key!r}") from exc
        return key

    def window_end(self, ts_ms: int) -> int | None:
        """End (epoch ms) of the window that contains ``ts_ms``; None outside every window.

        Overlapping windows: the latest end among those containing ``ts_ms``.
        """
        tz = ZoneInfo(self.timezone)
        local = datetime.fromtimestamp(ts_ms / 1000, tz)
        best: int | None = None
        for w in self.windows:
            for start_day in (local.date() - _DAY, local.date()):
                if _DAYS[start_day.weekday()] not in w.days:
                    continue
                start = datetime.combine(start_day, w.start, tz)
                end_day = start_day + _DAY if w.end <= w.start else start_day
                end = datetime.combine(end_day, w.end, tz)
                if start <= local < end:
                    end_ms = int(end.timestamp()) * 1000
                    best = end_ms if best is None else max(best, end_ms)
        return best


class Rule(_Frozen):
    """One alarm rule: a condition, how long it must hold, when it may raise."""

    id: RuleId
    type: AlarmType
    title: Text
    description: str = ""
    enabled: bool = True
    condition: Condition
    for_s: Annotated[float, Field(ge=0, le=MAX_FOR_S, allow_inf_nan=False)] = 0
    count: Annotated[int, Field(ge=1, le=10_000)] = 1
    schedule: Schedule | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        kind = self.condition.kind
        if kind == "no_data" and self.for_s <= 0:
            raise ValueError("a no_data rule needs for_s > 0: the silence that raises it")
        if kind in ("no_data", "offline"):
            if self.count != 1:
                raise ValueError(f"count does not apply to a {kind} rule")
            if self.schedule is not None:
                raise ValueError(f"a {kind} rule cannot have a schedule")
        return self

    @property
    def for_ms(self) -> int:
        return round(self.for_s * 1000)

    @property
    def severities(self) -> tuple[Severity, ...]:
        """Severities the rule can raise, mildest first."""
        return self.condition.severities

    @property
    def points(self) -> tuple[str, ...]:
        """Profile points the rule reads."""
        c = self.condition
        if isinstance(c, Flags):
            return tuple(c.points)
        if isinstance(c, Offline):
            return ()
        return () if c.point is None else (c.point,)


class RuleSet(_Frozen):
    """The alarm rules of one device profile (after overrides: of one device)."""

    schema_: Literal["wuye.alarms/1"] = Field(alias="schema")
    profile: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
    description: str = ""
    rules: tuple[Rule, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> RuleSet:
        ids: set[str] = set()
        types: dict[str, str] = {}
        for r in self.rules:
            if r.id in ids:
                raise ValueError(f"rule id {r.id!r} appears twice")
            ids.add(r.id)
            if r.type in types:
                raise ValueError(
                    f"rules {types[r.type]!r} and {r.id!r} share alarm type {r.type!r}: "
                    "one rule per type, so one active alarm per device and type"
                )
            types[r.type] = r.id
        return self

    def rule(self, rule_id: str) -> Rule:
        """The rule with id ``rule_id``; KeyError if there is none."""
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)

    @property
    def enabled_rules(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.enabled)
