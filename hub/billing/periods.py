"""Calendar arithmetic of billing: months, cycles and the dates a bill is issued and due.

Pure: dates in, dates out. Billing dates are local dates in Asia/Shanghai; a caller turns an
instant into one with :func:`local_date`.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")
CYCLES = (1, 2, 3, 4, 6, 12)  # months; each divides a year, so cycles line up with years


def local_date(t: datetime) -> date:
    """The Shanghai calendar date of an aware instant (ValueError for a naive one)."""
    if t.tzinfo is None:
        raise ValueError("naive datetime: billing dates come from timezone-aware instants")
    return t.astimezone(SHANGHAI).date()


def days_in_month(d: date) -> int:
    return calendar.monthrange(d.year, d.month)[1]


def month_start(d: date) -> date:
    return d.replace(day=1)


def add_months(d: date, n: int) -> date:
    """``d`` moved by ``n`` months; a day past the end of the new month becomes its last day
    (31 Jan + 1 month = 28 or 29 Feb)."""
    index = d.year * 12 + d.month - 1 + n
    year, month = divmod(index, 12)
    month += 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True, order=True)
class Month:
    """An accounting month (账期), e.g. ``Month(2026, 7)`` shown as ``2026-07``."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12 or not 2000 <= self.year <= 2999:
            raise ValueError(f"no month {self.year}-{self.month:02d}")

    @classmethod
    def parse(cls, text: str) -> Month:
        """``YYYY-MM``; ValueError otherwise."""
        try:
            year, month = text.split("-")
            if len(year) != 4 or len(month) != 2:
                raise ValueError
            return cls(int(year), int(month))
        except ValueError as exc:
            raise ValueError(f"a month is written YYYY-MM, not {text!r}") from exc

    @classmethod
    def of(cls, d: date) -> Month:
        return cls(d.year, d.month)

    @property
    def first(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def end(self) -> date:
        """The first day after the month."""
        return add_months(self.first, 1)

    @property
    def last(self) -> date:
        return self.end - timedelta(days=1)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


@dataclass(frozen=True)
class Period:
    """Service days ``[start, end)``: the end is the first day not covered."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"a period ends after it starts: {self.start} .. {self.end}")

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def last(self) -> date:
        return self.end - timedelta(days=1)

    def __str__(self) -> str:
        return f"{self.start}..{self.last}"


def cycle_periods(
    cycle_months: int, start: date, until: date, anchor_month: int = 1
) -> list[Period]:
    """The cycles of ``cycle_months`` that a payer starting on ``start`` owes, up to ``until``.

    Cycles begin on the first day of a month counted from ``anchor_month`` (January: quarters
    are calendar quarters, years calendar years). The first period runs from ``start`` to the
    next cycle boundary, so a room taken over on 15 March pays 15–31 March of a monthly fee,
    or 15 March–30 June of a quarterly one. Every period that starts before ``until``.
    """
    if cycle_months not in CYCLES:
        raise ValueError(f"a cycle is one of {CYCLES} months, not {cycle_months}")
    if not 1 <= anchor_month <= 12:
        raise ValueError(f"anchor month 1..12, not {anchor_month}")
    offset = (start.month - anchor_month) % cycle_months
    boundary = add_months(month_start(start), cycle_months - offset)
    periods = []
    s = start
    while s < until:
        periods.append(Period(s, boundary))
        s, boundary = boundary, add_months(boundary, cycle_months)
    return periods


class Timing(StrEnum):
    PREPAID = "prepaid"  # 预收: billed before the cycle, due at its start
    POSTPAID = "postpaid"  # billed once the cycle is over


@dataclass(frozen=True)
class Schedule:
    """When the bill of a period is issued and when it falls due.

    Prepaid: issued ``advance_days`` before the period starts, due ``due_days`` after it
    starts. Postpaid: issued the day after the period ends, due ``due_days`` later.
    """

    timing: Timing = Timing.PREPAID
    advance_days: int = 0
    due_days: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.advance_days <= 366 or not 0 <= self.due_days <= 366:
            raise ValueError("advance and due days are 0 to 366")

    def issued_on(self, p: Period) -> date:
        if self.timing is Timing.PREPAID:
            return p.start - timedelta(days=self.advance_days)
        return p.end

    def due_on(self, p: Period) -> date:
        if self.timing is Timing.PREPAID:
            return p.start + timedelta(days=self.due_days)
        return p.end + timedelta(days=self.due_days)
