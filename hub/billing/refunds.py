"""Refunds (退款) as credit notes against the payment they give money back from.

Asked for by one person, approved by another (a site manager or HQ): never more than the
payment, never twice. The amount comes from the stored payment's entries, never from the
request alone: a refund of a bill's part is at most what this payment paid of that bill
(less what was refunded of it already); a refund of the prepaid part is at most what the
payment put there, and only while the balance still holds it.

Approved, a bill refund writes a credit note (due ``credit`` −x: less billed) and the refund
(due ``refund`` +x: less paid), so what the premises owes does not change; a prepaid refund
writes prepaid ``refund`` −x. The payment's ``refunded_fen`` rises by a conditional UPDATE
(``refunded_fen + x <= amount_fen``), so two approvals at once cannot both pass.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from hub.billing.errors import BillingError, Conflict, NotFound
from hub.billing.models import (
    Account,
    Bill,
    Entry,
    LedgerEntry,
    Payment,
    PrepaidAccount,
    Refund,
)
from hub.billing.payments import hold_site
from hub.billing.periods import local_date
from hub.models import utcnow


def _sum(s: Session, *where: Any) -> int:
    return int(
        s.exec(select(func.coalesce(func.sum(LedgerEntry.amount_fen), 0)).where(*where)).one()
    )


def refundable(s: Session, payment: Payment, bill_id: int | None) -> int:
    """What of ``payment`` may still be refunded: of one bill it paid, or of its prepaid part."""
    pending = int(
        s.exec(
            select(func.coalesce(func.sum(Refund.amount_fen), 0)).where(
                Refund.payment_id == payment.id,
                Refund.status == "requested",
                Refund.bill_id == bill_id if bill_id is not None else col(Refund.bill_id).is_(None),
            )
        ).one()
    )
    if bill_id is None:
        held = _sum(s, LedgerEntry.payment_id == payment.id, LedgerEntry.account == Account.PREPAID)
        return held - pending
    paid = -_sum(
        s,
        LedgerEntry.payment_id == payment.id,
        LedgerEntry.bill_id == bill_id,
        col(LedgerEntry.kind).in_([Entry.PAID, Entry.REFUND, Entry.UNPAID]),
    )
    return paid - pending


def request_refund(
    s: Session,
    site: str,
    payment_id: int,
    amount_fen: int,
    reason: str,
    actor: str,
    bill_id: int | None = None,
    now: datetime | None = None,
) -> Refund:
    """Ask for a refund; committed, waiting for approval. BillingError for a bad amount or no
    reason, Conflict if more than may still be refunded, NotFound."""
    if not reason.strip():
        raise BillingError("a refund needs a reason")
    if type(amount_fen) is not int or amount_fen <= 0:
        raise BillingError("a refund is a positive number of fen")
    now = now or utcnow()
    s.rollback()
    try:
        hold_site(s, site, local_date(now).year)
        payment = s.get(Payment, payment_id)
        if payment is None or payment.site_id != site:
            raise NotFound(f"no payment {payment_id}")
        if payment.voided_at is not None:
            raise Conflict(f"payment {payment.receipt_no} is voided: nothing to refund")
        most = refundable(s, payment, bill_id)
        if amount_fen > most:
            what = f"bill {bill_id}" if bill_id is not None else "its prepaid part"
            raise Conflict(
                f"at most {max(most, 0) / 100:.2f} 元 of payment {payment.receipt_no} ({what})"
                " may still be refunded"
            )
        refund = Refund(
            site_id=site,
            payment_id=payment_id,
            bill_id=bill_id,
            amount_fen=amount_fen,
            reason=reason.strip()[:200],
            requested_by=actor,
            requested_at=now,
        )
        s.add(refund)
        s.commit()
    except BaseException:
        s.rollback()
        raise
    return refund


def decide_refund(
    s: Session,
    site: str,
    refund_id: int,
    approve: bool,
    actor: str,
    note: str = "",
    now: datetime | None = None,
) -> Refund:
    """Approve (and book) or reject a refund; committed. The approver must not be the one who
    asked. Conflict if decided already, or if the money is no longer there to give back."""
    now = now or utcnow()
    s.rollback()
    try:
        hold_site(s, site, local_date(now).year)
        refund = s.get(Refund, refund_id, populate_existing=True)
        if refund is None or refund.site_id != site:
            raise NotFound(f"no refund {refund_id}")
        if refund.status != "requested":
            raise Conflict(f"refund {refund_id} is {refund.status} already")
        if approve and refund.requested_by == actor:
            raise BillingError("a refund is approved by someone other than who asked for it")
        moved = s.exec(
            update(Refund)
            .where(col(Refund.id) == refund_id, col(Refund.status) == "requested")
            .values(
                status="approved" if approve else "rejected",
                decided_by=actor,
                decided_at=now,
                decision_note=note[:200],
            )
        ).rowcount
        if moved != 1:
            raise Conflict(f"refund {refund_id} was decided meanwhile")
        if approve:
            _book(s, refund, actor, now)
        s.commit()
        s.refresh(refund)
    except BaseException:
        s.rollback()
        raise
    return refund


def _book(s: Session, refund: Refund, actor: str, now: datetime) -> None:
    payment = s.get(Payment, refund.payment_id)
    assert payment is not None
    x = refund.amount_fen
    taken = s.exec(
        update(Payment)
        .where(
            col(Payment.id) == payment.id,
            col(Payment.voided_at).is_(None),
            col(Payment.refunded_fen) + x <= col(Payment.amount_fen),
        )
        .values(refunded_fen=Payment.refunded_fen + x)
    ).rowcount
    if taken != 1:
        raise Conflict(f"payment {payment.receipt_no} cannot give back {x / 100:.2f} 元 more")
    why = f"refund {refund.id} of receipt {payment.receipt_no}: {refund.reason}"[:200]
    common: dict[str, Any] = dict(
        site_id=payment.site_id,
        premises_id=payment.premises_id,
        payment_id=payment.id,
        booked_at=now,
        booked_on=local_date(now),
        actor=actor,
        reason=why,
        approver=actor,
    )
    if refund.bill_id is None:
        category = (
            s.exec(
                select(LedgerEntry.category).where(
                    LedgerEntry.payment_id == payment.id, LedgerEntry.kind == Entry.DEPOSIT
                )
            ).first()
            or ""
        )
        left = s.exec(
            update(PrepaidAccount)
            .where(
                col(PrepaidAccount.premises_id) == payment.premises_id,
                col(PrepaidAccount.category) == category,
                col(PrepaidAccount.balance_fen) >= x,
            )
            .values(balance_fen=PrepaidAccount.balance_fen - x)
        ).rowcount
        if left != 1:
            raise Conflict("the prepaid balance no longer holds it (spent on bills since)")
        s.add(
            LedgerEntry(
                account=Account.PREPAID.value,
                category=category,
                kind=Entry.REFUND.value,
                amount_fen=-x,
                **common,
            )
        )
        return
    bill = s.get(Bill, refund.bill_id)
    assert bill is not None
    for kind, fen in ((Entry.CREDIT, -x), (Entry.REFUND, x)):
        s.add(
            LedgerEntry(
                account=Account.DUE.value,
                category=bill.category,
                kind=kind.value,
                amount_fen=fen,
                bill_id=bill.id,
                item_id=bill.item_id,
                **common,
            )
        )
