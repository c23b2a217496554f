"""Reading the ledger: statements, balances, and the check that the caches are the entries.

Everything here is derived from ``ledger_entry``; ``Bill.open_fen`` and
``PrepaidAccount.balance_fen`` are only caches of sums of it. :func:`cache_drift` lists where
a cache differs from its entries and :func:`rebuild_caches` sets them from the entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import case, func, update
from sqlmodel import Session, col, select

from hub.billing.models import Account, Bill, Entry, LedgerEntry, Payment, PrepaidAccount


@dataclass(frozen=True)
class Totals:
    """A premises', project's or any set of entries' money to a date, in fen:
    billed = paid + waived + outstanding, always."""

    billed: int = 0  # bills, adjustments and late fees, less credit notes
    paid: int = 0  # payments and prepaid deductions, less refunds and voids
    waived: int = 0
    outstanding: int = 0
    prepaid: int = 0  # held on prepaid balances

    def balanced(self) -> bool:
        return self.billed == self.paid + self.waived + self.outstanding


_BILLED = (Entry.BILL, Entry.CREDIT)
_PAID = (Entry.PAID, Entry.REFUND, Entry.UNPAID)


def totals(
    s: Session, site: str, premises_id: int | None = None, through: date | None = None
) -> Totals:
    """Sums of the entries of a site (or one premises) booked on or before ``through``."""

    def part(kinds: tuple[Entry, ...]) -> object:
        return func.coalesce(
            func.sum(
                case(
                    (
                        (col(LedgerEntry.account) == Account.DUE)
                        & col(LedgerEntry.kind).in_([k.value for k in kinds]),
                        LedgerEntry.amount_fen,
                    ),
                    else_=0,
                )
            ),
            0,
        )

    q = select(
        part(_BILLED),  # type: ignore[call-overload]
        part(_PAID),
        part((Entry.WAIVED,)),
        part(tuple(Entry)),
        func.coalesce(
            func.sum(
                case(
                    (col(LedgerEntry.account) == Account.PREPAID, LedgerEntry.amount_fen),
                    else_=0,
                )
            ),
            0,
        ),
    ).where(LedgerEntry.site_id == site)
    if premises_id is not None:
        q = q.where(LedgerEntry.premises_id == premises_id)
    if through is not None:
        q = q.where(col(LedgerEntry.booked_on) <= through)
    billed, paid, waived, outstanding, prepaid = (int(v) for v in s.exec(q).one())
    return Totals(billed, -paid, -waived, outstanding, prepaid)


@dataclass
class Statement:
    """What a premises owes and has paid: its bills (open first), payments and balances."""

    bills: list[Bill] = field(default_factory=list)
    payments: list[Payment] = field(default_factory=list)
    prepaid: dict[str, int] = field(default_factory=dict)
    totals: Totals = field(default_factory=Totals)


def statement(s: Session, site: str, premises_id: int) -> Statement:
    bills = list(
        s.exec(
            select(Bill)
            .where(Bill.site_id == site, Bill.premises_id == premises_id)
            .order_by(col(Bill.due_on), col(Bill.id))
        ).all()
    )
    payments = list(
        s.exec(
            select(Payment)
            .where(Payment.site_id == site, Payment.premises_id == premises_id)
            .order_by(col(Payment.paid_at).desc(), col(Payment.id).desc())
        ).all()
    )
    prepaid = {
        a.category: a.balance_fen
        for a in s.exec(select(PrepaidAccount).where(PrepaidAccount.premises_id == premises_id))
    }
    return Statement(bills, payments, prepaid, totals(s, site, premises_id))


def cache_drift(s: Session, site: str) -> list[str]:
    """Where a cache differs from the sum of its entries (empty: none)."""
    out = []
    sums = dict(
        s.exec(
            select(LedgerEntry.bill_id, func.sum(LedgerEntry.amount_fen))
            .where(LedgerEntry.site_id == site, LedgerEntry.account == Account.DUE)
            .group_by(col(LedgerEntry.bill_id))
        ).all()
    )
    for bill_id, open_fen in s.exec(
        select(Bill.id, Bill.open_fen).where(Bill.site_id == site)
    ).all():
        if sums.get(bill_id, 0) != open_fen:
            out.append(f"bill {bill_id}: open {open_fen}, entries {sums.get(bill_id, 0)}")
    held = {
        (p, c): int(v)
        for p, c, v in s.exec(
            select(LedgerEntry.premises_id, LedgerEntry.category, func.sum(LedgerEntry.amount_fen))
            .where(LedgerEntry.site_id == site, LedgerEntry.account == Account.PREPAID)
            .group_by(col(LedgerEntry.premises_id), col(LedgerEntry.category))
        ).all()
    }
    for a in s.exec(select(PrepaidAccount).where(PrepaidAccount.site_id == site)).all():
        if held.pop((a.premises_id, a.category), 0) != a.balance_fen:
            out.append(f"prepaid {a.premises_id}/{a.category!r}: cache {a.balance_fen}")
    out += [f"prepaid {p}/{c!r}: no cache, entries {v}" for (p, c), v in held.items() if v]
    return out


def rebuild_caches(s: Session, site: str) -> int:
    """Set every cache of ``site`` from the entries, in the caller's transaction; how many
    differed."""
    drift = cache_drift(s, site)
    sums = (
        select(func.coalesce(func.sum(LedgerEntry.amount_fen), 0))
        .where(LedgerEntry.bill_id == Bill.id, LedgerEntry.account == Account.DUE)
        .scalar_subquery()
    )
    s.exec(update(Bill).where(col(Bill.site_id) == site).values(open_fen=sums))
    held = (
        select(func.coalesce(func.sum(LedgerEntry.amount_fen), 0))
        .where(
            LedgerEntry.premises_id == PrepaidAccount.premises_id,
            LedgerEntry.category == PrepaidAccount.category,
            LedgerEntry.account == Account.PREPAID,
        )
        .scalar_subquery()
    )
    s.exec(
        update(PrepaidAccount).where(col(PrepaidAccount.site_id) == site).values(balance_fen=held)
    )
    return len(drift)
