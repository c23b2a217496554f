"""How a payment is spread over the bills it pays: pure.

Oldest first by default (due date, then issue order), or in the order the payer listed
them. The last bill reached may be paid in part; what is left after every bill is the
overpayment, which only a prepaid balance may take.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum


class Policy(StrEnum):
    OLDEST_FIRST = "oldest_first"
    AS_LISTED = "as_listed"


@dataclass(frozen=True)
class Open:
    """A bill still owed: its id, due date and what is open of it (fen > 0)."""

    bill_id: int
    due_on: date
    open_fen: int


@dataclass(frozen=True)
class Allocation:
    parts: tuple[tuple[int, int], ...]  # (bill id, fen)
    rest_fen: int  # not needed by any bill

    @property
    def allocated_fen(self) -> int:
        return sum(fen for _, fen in self.parts)


def allocate(
    amount_fen: int, bills: Sequence[Open], policy: Policy = Policy.OLDEST_FIRST
) -> Allocation:
    """Spread ``amount_fen`` over ``bills``; every fen ends up in a part or in the rest."""
    if type(amount_fen) is not int or amount_fen <= 0:
        raise ValueError(f"a payment is a positive number of fen, not {amount_fen!r}")
    ordered = list(bills)
    if policy is Policy.OLDEST_FIRST:
        ordered.sort(key=lambda b: (b.due_on, b.bill_id))
    parts = []
    left = amount_fen
    for b in ordered:
        if left == 0:
            break
        if b.open_fen <= 0:
            continue
        take = min(left, b.open_fen)
        parts.append((b.bill_id, take))
        left -= take
    return Allocation(tuple(parts), left)
