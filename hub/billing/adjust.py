"""Adjustments: waivers, bills recomputed after an area change, late fees.

None of them edits a bill: each adds a bill line (an adjustment, a late fee) or ledger
entries (a waiver, a credit note), with who, when and why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from sqlalchemy import Engine, func, update
from sqlmodel import Session, col, select

from hub.billing import fees, latefees
from hub.billing.errors import BillingError, Conflict, NotFound
from hub.billing.items import prices_of, spec_of
from hub.billing.models import (
    Account,
    Bill,
    BillKind,
    Entry,
    FeeItem,
    LedgerEntry,
)
from hub.billing.payments import credit as credit_prepaid
from hub.billing.periods import Month, Period, local_date
from hub.billing.runs import _insert
from hub.db import session_scope
from hub.models import utcnow
from hub.property import service as property_service

log = logging.getLogger(__name__)


def _entry(
    bill: Bill,
    kind: Entry,
    fen: int,
    now: datetime,
    actor: str,
    reason: str,
    approver: str | None = None,
    account: Account = Account.DUE,
) -> LedgerEntry:
    return LedgerEntry(
        site_id=bill.site_id,
        premises_id=bill.premises_id,
        account=account.value,
        category=bill.category if account is Account.DUE else "",
        kind=kind.value,
        amount_fen=fen,
        bill_id=bill.id if account is Account.DUE else None,
        item_id=bill.item_id,
        booked_at=now,
        booked_on=local_date(now),
        actor=actor,
        reason=reason[:200],
        approver=approver,
    )


# -- waivers ------------------------------------------------------------------------------------
def waive(
    s: Session,
    site: str,
    bill_id: int,
    fen: int,
    reason: str,
    actor: str,
    now: datetime | None = None,
) -> LedgerEntry:
    """Waive (减免) ``fen`` of what is open of a bill, approved by ``actor``; committed.
    BillingError without a reason or for a bad amount, Conflict if less is open."""
    if not reason.strip():
        raise BillingError("a waiver needs a reason")
    if type(fen) is not int or fen <= 0:
        raise BillingError("a waiver is a positive number of fen")
    now = now or utcnow()
    s.rollback()
    try:
        moved = s.exec(
            update(Bill)
            .where(col(Bill.id) == bill_id, col(Bill.site_id) == site, col(Bill.open_fen) >= fen)
            .values(open_fen=Bill.open_fen - fen)
        ).rowcount
        bill = s.get(Bill, bill_id, populate_existing=True)
        if bill is None or bill.site_id != site:
            raise NotFound(f"no bill {bill_id}")
        if moved != 1:
            raise Conflict(f"only {bill.open_fen / 100:.2f} 元 of bill {bill_id} is open")
        entry = _entry(bill, Entry.WAIVED, -fen, now, actor, reason.strip(), approver=actor)
        s.add(entry)
        s.commit()
    except BaseException:
        s.rollback()
        raise
    return entry


# -- area changes ---------------------------------------------------------------------------------
def adjust_for_area(
    s: Session,
    change: property_service.AreaChange,
    actor: str | None = None,
    now: datetime | None = None,
) -> list[Bill]:
    """Recompute the area-priced bills an area change touches, in the caller's transaction.

    A bill that now costs more gets an adjustment line for the difference (due as an item's
    bill issued today); one that costs less gets a credit note for it, and what of that was
    paid already goes to the prepaid balance. Bills are never edited; once-only per (bill,
    area change)."""
    now = now or change.new.recorded_at  # booked when the change was recorded
    actor = actor or change.new.recorded_by
    today = local_date(now)
    areas = [
        fees.Area(a.effective_from, Decimal(a.built_area), Decimal(a.interior_area))
        for a in change.history
    ]
    bills = s.exec(
        select(Bill)
        .where(
            Bill.premises_id == change.premises_id,
            Bill.kind == BillKind.CHARGE,
            col(Bill.period_end) > change.new.effective_from,
        )
        .order_by(col(Bill.id))
    ).all()
    items = {
        i.id: i
        for i in s.exec(
            select(FeeItem).where(
                col(FeeItem.id).in_({b.item_id for b in bills}), FeeItem.kind == fees.Kind.AREA
            )
        )
    }
    prices = prices_of(s, [i for i in items if i is not None])
    made = []
    for b in bills:
        item = items.get(b.item_id)
        if item is None or b.id is None:
            continue
        line = fees.periodic_line(
            spec_of(item, prices[b.item_id]), Period(b.period_start, b.period_end), areas
        )
        before = b.amount_fen + int(
            s.exec(
                select(func.coalesce(func.sum(Bill.amount_fen), 0)).where(
                    Bill.parent_id == b.id, Bill.kind == BillKind.ADJUSTMENT
                )
            ).one()
        )
        diff = line.amount_fen - before
        if diff == 0:
            continue
        key = f"a/{b.id}/{change.new.id}"
        why = (
            f"area {change.new.built_area} m² from {change.new.effective_from}"
            f" (change {change.new.id}): {before} → {line.amount_fen} fen"
        )
        basis = {
            "adjusts": b.id,
            "area_change": change.new.id,
            "billed_before_fen": before,
            "difference_fen": diff,
            "recomputed": line.basis(),
        }
        got = s.execute(
            _insert(s, Bill)
            .values(
                site_id=b.site_id,
                key=key,
                premises_id=b.premises_id,
                item_id=b.item_id,
                category=b.category,
                kind=BillKind.ADJUSTMENT.value,
                parent_id=b.id,
                period_start=b.period_start,
                period_end=b.period_end,
                month=str(Month.of(today)),
                issued_on=today,
                due_on=today + timedelta(days=item.due_days),
                amount_fen=diff,
                open_fen=max(diff, 0),
                payer_id=b.payer_id,
                basis=basis,
                created_by=actor,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["site_id", "key"])
            .returning(col(Bill.id))
        ).first()
        if got is None:
            continue  # this change adjusted this bill already
        adj = s.get(Bill, got[0])
        assert adj is not None
        if diff > 0:
            s.add(_entry(adj, Entry.BILL, diff, now, actor, why))
        else:
            _credit_note(s, b, -diff, now, actor, why)
        made.append(adj)
    return made


def _credit_note(s: Session, bill: Bill, fen: int, now: datetime, actor: str, why: str) -> None:
    """Less billed on ``bill`` by ``fen``: off what is open, the rest (paid already) to the
    premises' prepaid balance."""
    s.refresh(bill)
    off_open = min(fen, bill.open_fen)
    paid_back = fen - off_open
    s.exec(update(Bill).where(col(Bill.id) == bill.id).values(open_fen=Bill.open_fen - off_open))
    s.add(_entry(bill, Entry.CREDIT, -fen, now, actor, f"credit note: {why}"))
    if paid_back:
        s.add(_entry(bill, Entry.REFUND, paid_back, now, actor, f"overpaid to prepaid: {why}"))
        credit_prepaid(s, bill.site_id, bill.premises_id, "", paid_back)
        prepaid = _entry(
            bill, Entry.DEPOSIT, paid_back, now, actor, f"overpaid: {why}", account=Account.PREPAID
        )
        s.add(prepaid)


def install_area_adjustments() -> Callable[[], None]:
    """Adjust bills inside every area change's transaction; returns the uninstaller."""

    def hook(s: Session, change: property_service.AreaChange) -> None:
        adjust_for_area(s, change)

    return property_service.on_area_change(hook)


# -- late fees -------------------------------------------------------------------------------
def accrue_late_fees(
    engine: Engine,
    site: str,
    through: date,
    actor: str,
    *,
    premises_id: int | None = None,
    now: datetime | None = None,
    batch: int = 500,
) -> tuple[int, int]:
    """Bill the late fees accrued through ``through`` on the site's overdue bills (or one
    premises'); once-only per (bill, date). Returns (lines, fen)."""
    now = now or utcnow()
    with Session(engine) as s:
        items = {
            i.id: i
            for i in s.exec(
                select(FeeItem).where(FeeItem.site_id == site, col(FeeItem.late_fee_per_day) > 0)
            )
        }
        if not items:
            return 0, 0
        q = select(Bill.id).where(
            Bill.site_id == site,
            col(Bill.kind).in_([BillKind.CHARGE, BillKind.ADJUSTMENT]),
            col(Bill.item_id).in_(list(items)),
            col(Bill.open_fen) > 0,
            col(Bill.due_on) < through,
        )
        if premises_id is not None:
            q = q.where(Bill.premises_id == premises_id)
        ids = [i for i in s.exec(q.order_by(col(Bill.id))).all() if i is not None]
    lines = fen = 0
    for i in range(0, len(ids), batch):
        with session_scope(engine) as s:
            n, f = _late_fees(s, ids[i : i + batch], items, through, now, actor)
            lines, fen = lines + n, fen + f
    log.info("late fees of %s through %s: %d lines, %d fen", site, through, lines, fen)
    return lines, fen


def _late_fees(
    s: Session,
    ids: list[int],
    items: dict[int | None, FeeItem],
    through: date,
    now: datetime,
    actor: str,
) -> tuple[int, int]:
    """The late fees of a batch of bills: three reads, one insert of lines, one of entries."""
    bills = list(s.exec(select(Bill).where(col(Bill.id).in_(ids)).order_by(col(Bill.id))))
    moves: dict[int, list[tuple[date, int]]] = {i: [] for i in ids}
    for bill_id, on, fen in s.exec(
        select(
            col(LedgerEntry.bill_id), col(LedgerEntry.booked_on), col(LedgerEntry.amount_fen)
        ).where(
            col(LedgerEntry.bill_id).in_(ids),
            LedgerEntry.account == Account.DUE,
            col(LedgerEntry.booked_on) <= through,
        )
    ):
        moves[bill_id or 0].append((on, fen))
    before = dict(
        s.exec(
            select(col(Bill.parent_id), func.sum(Bill.amount_fen))
            .where(col(Bill.parent_id).in_(ids), Bill.kind == BillKind.LATE_FEE)
            .group_by(col(Bill.parent_id))
        ).all()
    )
    today = local_date(now)
    rows = []
    for bill in bills:
        item = items[bill.item_id]
        terms = latefees.Terms(
            Fraction(item.late_fee_per_day),
            item.late_fee_grace_days,
            None if item.late_fee_cap is None else Fraction(item.late_fee_cap),
        )
        assert bill.id is not None
        accrued = latefees.accrue(terms, bill.due_on, bill.amount_fen, moves[bill.id], through)
        had = int(before.get(bill.id, 0))
        more = accrued.fen - had
        if more <= 0:
            continue
        basis = {
            "late_fee_of": bill.id,
            "from": accrued.start.isoformat(),
            "through": through.isoformat(),
            "rate_per_day": str(item.late_fee_per_day),
            "grace_days": item.late_fee_grace_days,
            "cap": None if item.late_fee_cap is None else str(item.late_fee_cap),
            "days": accrued.days,
            "exact_fen": str(round(accrued.exact, 4)),
            "accrued_fen": accrued.fen,
            "billed_before_fen": had,
            "amount_fen": more,
        }
        rows.append(
            {
                "site_id": bill.site_id,
                "key": f"l/{bill.id}/{through.isoformat()}",
                "premises_id": bill.premises_id,
                "item_id": bill.item_id,
                "category": bill.category,
                "kind": BillKind.LATE_FEE.value,
                "parent_id": bill.id,
                "period_start": accrued.start,
                "period_end": through + timedelta(days=1),
                "month": str(Month.of(today)),
                "issued_on": today,
                "due_on": today,
                "amount_fen": more,
                "open_fen": more,
                "payer_id": bill.payer_id,
                "basis": basis,
                "run_id": None,
                "created_by": actor,
                "created_at": now,
            }
        )
    if not rows:
        return 0, 0
    inserted = s.execute(
        _insert(s, Bill)
        .on_conflict_do_nothing(index_elements=["site_id", "key"])
        .returning(col(Bill.id), col(Bill.key)),
        rows,
    ).all()
    by_key = {r["key"]: r for r in rows}
    entries = []
    for bill_id, key in inserted:
        r = by_key[key]
        entries.append(
            {
                "site_id": r["site_id"],
                "premises_id": r["premises_id"],
                "account": Account.DUE.value,
                "category": r["category"],
                "kind": Entry.BILL.value,
                "amount_fen": r["amount_fen"],
                "bill_id": bill_id,
                "item_id": r["item_id"],
                "payment_id": None,
                "booked_at": now,
                "booked_on": today,
                "actor": actor,
                "reason": f"late fee of bill {r['parent_id']} through {through}",
                "approver": None,
            }
        )
    if entries:
        s.execute(_insert(s, LedgerEntry), entries)
    return len(entries), sum(e["amount_fen"] for e in entries)
