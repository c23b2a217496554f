"""Late fees (滞纳金): pure.

A bill that is still owed after its due date and a grace period accrues, each day, a share
of what is owed of it that day (0.05 % a day is common), up to a cap (a share of the bill).
What is owed on a day is read from the bill's ledger: the open amount at the start of the
day. The total is summed exactly and rounded once (half-up, to the fen); a run bills only
what that total adds to the late fees billed before, so accruing daily or monthly comes to
the same fen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from fractions import Fraction
from itertools import pairwise

from hub.billing.fees import Rounding, round_fen


@dataclass(frozen=True)
class Terms:
    rate_per_day: Fraction  # of the open amount
    grace_days: int
    cap: Fraction | None  # of the bill's amount; None: no cap

    def __post_init__(self) -> None:
        if not 0 <= self.rate_per_day <= Fraction(1, 100):
            raise ValueError("a late fee is 0 to 1 % a day")
        if not 0 <= self.grace_days <= 366:
            raise ValueError("grace is 0 to 366 days")
        if self.cap is not None and not 0 <= self.cap <= 1:
            raise ValueError("a late-fee cap is 0 to 100 % of the bill")


def open_on(moves: Sequence[tuple[date, int]], day: date) -> int:
    """What is owed at the start of ``day``: the sum of the moves booked before it."""
    return sum(fen for on, fen in moves if on < day)


@dataclass(frozen=True)
class Accrued:
    start: date  # the first day that accrues
    days: int  # days that accrued something
    exact: Fraction
    fen: int  # the total, capped and rounded once


def accrue(
    terms: Terms, due_on: date, amount_fen: int, moves: Sequence[tuple[date, int]], through: date
) -> Accrued:
    """The late fee of a bill accrued from after its grace through ``through`` (inclusive).

    ``moves`` are the bill's ledger movements (booked date, signed fen). Days are counted
    from the later of the due date and the day the bill was booked (a bill issued late is
    not late before it exists), plus the grace days.
    """
    booked = min((on for on, _ in moves), default=due_on)
    start = max(due_on, booked) + timedelta(days=terms.grace_days + 1)
    total, days = Fraction(0), 0
    if through >= start and terms.rate_per_day:
        # the open amount only changes on days with moves: sum over runs of equal amount
        cuts = sorted(
            {start, through + timedelta(days=1)}
            | {
                on + timedelta(days=1)
                for on, _ in moves
                if start < on + timedelta(days=1) <= through
            }
        )
        for a, b in pairwise(cuts):
            owed = open_on(moves, a)
            if owed > 0:
                n = (b - a).days
                total += terms.rate_per_day * owed * n
                days += n
    if terms.cap is not None:
        total = min(total, terms.cap * amount_fen)
    return Accrued(start, days, total, round_fen(total, Rounding.HALF_UP))
