"""Fee payments: at the front desk, online through a payment channel, and voids.

A payment is one transaction that starts with a write: taking the site's next receipt number
(``UPDATE receipt_counter ... RETURNING``). That row lock orders the payments of a site, on
PostgreSQL (the next waits for the commit, then reads what it left) and on SQLite (one
writer), so the bills a payment reads are the bills as they are. Each bill is then paid by a
conditional UPDATE (``open_fen = open_fen - x WHERE open_fen >= x``): a bill that someone
else paid meanwhile fails the payment whole (Conflict), nothing half-applied. A rolled-back
payment gives its receipt number back: receipts have no gaps.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from hub.billing.allocation import Open, Policy, allocate
from hub.billing.errors import BillingError, Conflict, NotFound
from hub.billing.models import (
    Account,
    Bill,
    Entry,
    LedgerEntry,
    Method,
    Payment,
    PrepaidAccount,
    ReceiptCounter,
)
from hub.billing.periods import local_date
from hub.billing.runs import _insert
from hub.models import utcnow
from hub.payments.models import PaymentOrder
from hub.payments.service import create_order, register_on_paid
from hub.property.models import Premises

log = logging.getLogger(__name__)

DESK_METHODS = (Method.CASH, Method.POS, Method.TRANSFER)
MAX_PAYMENT_FEN = 10**11  # 10 亿元: anything above is a typing error


@dataclass(frozen=True)
class DeskPayment:
    """What a cashier takes: ``amount_fen`` by ``method`` for ``bill_ids`` of one premises
    (none listed: every open bill), oldest first unless ``policy`` says as listed. What is
    left over goes to the prepaid balance of ``to_prepaid`` ('' for any fee), and is refused
    when that is None."""

    premises_id: int
    method: Method
    amount_fen: int
    idempotency_key: str
    bill_ids: tuple[int, ...] = ()
    policy: Policy = Policy.OLDEST_FIRST
    to_prepaid: str | None = None
    payer_name: str = ""
    reference: str = ""
    note: str = ""


def _digest(p: DeskPayment) -> str:
    return hashlib.sha256(json.dumps(asdict(p), sort_keys=True, default=str).encode()).hexdigest()


def next_receipt(s: Session, site: str, year: int) -> str:
    """The site's next receipt number of ``year``, taken in the caller's transaction (the
    first write of it: it holds the site's payments in line until the commit)."""
    for _ in range(2):
        got = s.execute(
            update(ReceiptCounter)
            .where(col(ReceiptCounter.site_id) == site, col(ReceiptCounter.year) == year)
            .values(last=ReceiptCounter.last + 1)
            .returning(col(ReceiptCounter.last))
        ).first()
        if got is not None:
            return f"{year}-{got[0]:06d}"
        s.execute(
            _insert(s, ReceiptCounter)
            .values(site_id=site, year=year, last=0)
            .on_conflict_do_nothing()
        )
    raise RuntimeError("receipt counter could not be taken")  # pragma: no cover


def hold_site(s: Session, site: str, year: int) -> None:
    """Hold the site's payments in line (as taking a receipt number does) without taking
    one: for a void or a refund, which must see the payment and bills as they are."""
    s.execute(
        _insert(s, ReceiptCounter).values(site_id=site, year=year, last=0).on_conflict_do_nothing()
    )
    s.exec(
        update(ReceiptCounter)
        .where(col(ReceiptCounter.site_id) == site, col(ReceiptCounter.year) == year)
        .values(last=ReceiptCounter.last)
    )


def pay_at_desk(
    s: Session, site: str, p: DeskPayment, cashier: str, now: datetime | None = None
) -> Payment:
    """Take a payment at the desk; committed, with its receipt number. The same idempotency
    key again returns the first payment (Conflict if the request differs). Raises
    BillingError (bad amount, overpayment nowhere to go), NotFound, Conflict (a bill was
    paid meanwhile: nothing was taken)."""
    if p.method not in DESK_METHODS:
        raise BillingError(f"the desk takes {', '.join(DESK_METHODS)}, not {p.method}")
    if type(p.amount_fen) is not int or not 0 < p.amount_fen <= MAX_PAYMENT_FEN:
        raise BillingError("a payment is 1 fen to 10 亿元, in whole fen")
    if not 0 < len(p.idempotency_key) <= 128:
        raise BillingError("a desk payment needs an idempotency key (1 to 128 characters)")
    now = now or utcnow()
    digest = _digest(p)
    key = f"desk:{p.idempotency_key}"
    earlier = _by_key(s, site, key)
    if earlier is not None:
        return _same(earlier, digest)
    s.rollback()
    try:
        receipt = next_receipt(s, site, local_date(now).year)
        earlier = _by_key(s, site, key)  # committed while we waited in line
        if earlier is not None:
            s.rollback()  # the receipt number goes back
            return _same(earlier, digest)
        premises = s.get(Premises, p.premises_id)
        if premises is None or premises.site_id != site:
            raise NotFound(f"no premises {p.premises_id}")
        bills = _open_bills(s, site, p.premises_id, p.bill_ids)
        plan = allocate(p.amount_fen, bills, p.policy)
        if plan.rest_fen and p.to_prepaid is None:
            owed = sum(b.open_fen for b in bills)
            raise BillingError(
                f"{p.amount_fen / 100:.2f} 元 is more than the {owed / 100:.2f} 元 owed;"
                " put the rest on the prepaid balance or take less"
            )
        payment = Payment(
            site_id=site,
            receipt_no=receipt,
            method=p.method.value,
            amount_fen=p.amount_fen,
            premises_id=p.premises_id,
            payer_name=p.payer_name,
            cashier=cashier,
            paid_at=now,
            paid_on=local_date(now),
            idempotency_key=key,
            request_hash=digest,
            reference=p.reference,
            note=p.note,
            to_prepaid_fen=plan.rest_fen,
        )
        s.add(payment)
        s.flush()
        _book(s, payment, plan.parts, plan.rest_fen, p.to_prepaid or "", cashier, now)
        s.commit()
    except IntegrityError as exc:
        s.rollback()
        earlier = _by_key(s, site, key)
        if earlier is not None:  # the same key, committed by a concurrent request
            return _same(earlier, digest)
        raise Conflict(f"payment not taken: {exc.orig}") from exc
    except BaseException:
        s.rollback()
        raise
    log.info("payment %s at %s: %d fen by %s", payment.receipt_no, site, p.amount_fen, cashier)
    return payment


def _by_key(s: Session, site: str, key: str) -> Payment | None:
    return s.exec(
        select(Payment).where(Payment.site_id == site, Payment.idempotency_key == key)
    ).first()


def _same(earlier: Payment, digest: str) -> Payment:
    if earlier.request_hash != digest:
        raise Conflict(f"idempotency key used for another payment (receipt {earlier.receipt_no})")
    return earlier


def _open_bills(s: Session, site: str, premises: int, chosen: Sequence[int]) -> list[Open]:
    q = select(Bill).where(Bill.site_id == site, Bill.premises_id == premises)
    if chosen:
        rows = s.exec(q.where(col(Bill.id).in_(chosen))).all()
        found = {b.id: b for b in rows}
        missing = [i for i in chosen if i not in found]
        if missing:
            raise NotFound(f"no bill {missing[0]} of this premises")
        paid = [i for i in chosen if found[i].open_fen == 0]
        if paid:
            raise Conflict(f"bill {paid[0]} is paid already")
        ordered = [found[i] for i in dict.fromkeys(chosen)]
    else:
        ordered = list(s.exec(q.where(col(Bill.open_fen) > 0)).all())
    out = []
    for b in ordered:
        assert b.id is not None
        out.append(Open(b.id, b.due_on, b.open_fen))
    return out


def _book(
    s: Session,
    payment: Payment,
    parts: Sequence[tuple[int, int]],
    rest: int,
    category: str,
    actor: str,
    now: datetime,
) -> None:
    """The ledger entries of a payment and the caches they move, in the caller's
    transaction; Conflict if a bill no longer has what it is paid."""
    today = local_date(now)
    why = f"receipt {payment.receipt_no}"
    of = {
        b.id: b
        for b in s.exec(select(Bill).where(col(Bill.id).in_([bill_id for bill_id, _ in parts])))
    }
    entries: list[dict[str, object]] = []
    common = {
        "site_id": payment.site_id,
        "premises_id": payment.premises_id,
        "payment_id": payment.id,
        "booked_at": now,
        "booked_on": today,
        "actor": actor,
        "reason": why,
        "approver": None,
    }
    for bill_id, fen in parts:
        moved = s.exec(
            update(Bill)
            .where(col(Bill.id) == bill_id, col(Bill.open_fen) >= fen)
            .values(open_fen=Bill.open_fen - fen)
            .execution_options(synchronize_session=False)
        ).rowcount
        if moved != 1:
            raise Conflict(f"bill {bill_id} was paid meanwhile: nothing was taken")
        bill = of[bill_id]
        entries.append(
            common
            | {
                "account": Account.DUE.value,
                "category": bill.category,
                "kind": Entry.PAID.value,
                "amount_fen": -fen,
                "bill_id": bill_id,
                "item_id": bill.item_id,
            }
        )
    if rest:
        credit(s, payment.site_id, payment.premises_id, category, rest)
        entries.append(
            common
            | {
                "account": Account.PREPAID.value,
                "category": category,
                "kind": Entry.DEPOSIT.value,
                "amount_fen": rest,
                "bill_id": None,
                "item_id": None,
            }
        )
    if entries:
        s.execute(_insert(s, LedgerEntry), entries)


def credit(s: Session, site: str, premises: int, category: str, fen: int) -> None:
    """Add ``fen`` to a prepaid balance (made if missing), in the caller's transaction."""
    s.execute(
        _insert(s, PrepaidAccount)
        .values(premises_id=premises, category=category, site_id=site, balance_fen=0)
        .on_conflict_do_nothing()
    )
    s.exec(
        update(PrepaidAccount)
        .where(
            col(PrepaidAccount.premises_id) == premises, col(PrepaidAccount.category) == category
        )
        .values(balance_fen=PrepaidAccount.balance_fen + fen)
    )


def void_payment(
    s: Session, site: str, payment_id: int, actor: str, reason: str, now: datetime | None = None
) -> Payment:
    """Void (作废) a payment taken by mistake; committed. Its bills are owed again and its
    deposit leaves the prepaid balance, by new entries (the old ones stay). Refuses a
    payment voided or refunded already, and one whose deposit has been spent since."""
    if not reason.strip():
        raise BillingError("a void needs a reason")
    now = now or utcnow()
    s.rollback()
    try:
        hold_site(s, site, local_date(now).year)
        done = s.exec(
            update(Payment)
            .where(
                col(Payment.id) == payment_id,
                col(Payment.site_id) == site,
                col(Payment.voided_at).is_(None),
                col(Payment.refunded_fen) == 0,
            )
            .values(voided_at=now, voided_by=actor, void_reason=reason.strip()[:200])
        ).rowcount
        payment = s.get(Payment, payment_id, populate_existing=True)
        if payment is None or payment.site_id != site:
            raise NotFound(f"no payment {payment_id}")
        if done != 1:
            why = "voided" if payment.voided_at is not None else "refunded in part"
            raise Conflict(f"payment {payment.receipt_no} is {why} already")
        today = local_date(now)
        entries = s.exec(
            select(LedgerEntry)
            .where(LedgerEntry.payment_id == payment_id)
            .order_by(col(LedgerEntry.id))
        ).all()
        back = []
        for e in entries:
            if e.kind == Entry.PAID:
                s.exec(
                    update(Bill)
                    .where(col(Bill.id) == e.bill_id)
                    .values(open_fen=Bill.open_fen - e.amount_fen)
                )
                kind = Entry.UNPAID
            elif e.kind == Entry.DEPOSIT:
                taken = s.exec(
                    update(PrepaidAccount)
                    .where(
                        col(PrepaidAccount.premises_id) == e.premises_id,
                        col(PrepaidAccount.category) == e.category,
                        col(PrepaidAccount.balance_fen) >= e.amount_fen,
                    )
                    .values(balance_fen=PrepaidAccount.balance_fen - e.amount_fen)
                ).rowcount
                if taken != 1:
                    raise Conflict(
                        f"payment {payment.receipt_no} put {e.amount_fen / 100:.2f} 元 on the"
                        " prepaid balance, which has been spent since: refund instead"
                    )
                kind = Entry.VOID
            else:
                continue
            back.append(
                LedgerEntry(
                    site_id=e.site_id,
                    premises_id=e.premises_id,
                    account=e.account,
                    category=e.category,
                    kind=kind.value,
                    amount_fen=-e.amount_fen,
                    bill_id=e.bill_id,
                    item_id=e.item_id,
                    payment_id=payment_id,
                    booked_at=now,
                    booked_on=today,
                    actor=actor,
                    reason=f"void of receipt {payment.receipt_no}: {reason.strip()}"[:200],
                )
            )
        s.add_all(back)
        s.commit()
    except BaseException:
        s.rollback()
        raise
    return payment


# -- online -------------------------------------------------------------------------------
FEE_SUBJECT = "fee"


def order_for_bills(
    s: Session,
    site: str,
    premises_id: int,
    bill_ids: Sequence[int],
    *,
    channel: str,
    idempotency_key: str,
    payer: str,
) -> PaymentOrder:
    """A payment order for what is open of ``bill_ids`` now; committed (hub.payments). The
    same key and bills again return the same order."""
    if not bill_ids:
        raise BillingError("choose the bills to pay")
    bills = _open_bills(s, site, premises_id, bill_ids)
    amount = sum(b.open_fen for b in bills)
    s.commit()
    return create_order(
        s,
        subject_kind=FEE_SUBJECT,
        subject_id=str(premises_id),
        site_id=site,
        amount_fen=amount,
        idempotency_key=idempotency_key,
        channel=channel,
        payer=payer,
        details={"bills": [b.bill_id for b in bills]},
    )


def credit_order(s: Session, order: PaymentOrder) -> None:
    """The on_paid handler: book a paid order in the transaction that marked it paid.

    The money has arrived, so nothing is refused: what its bills still owe is paid, in the
    order chosen, and the rest (a bill paid at the desk meanwhile) goes to the premises'
    prepaid balance, where the statement shows it and a refund can take it back.
    """
    now = order.paid_at or utcnow()
    site, premises_id = order.site_id, int(order.subject_id)
    receipt = next_receipt(s, site, local_date(now).year)
    chosen = [int(b) for b in order.details.get("bills", [])]
    rows = s.exec(
        select(Bill).where(
            Bill.site_id == site, Bill.premises_id == premises_id, col(Bill.id).in_(chosen)
        )
    ).all()
    found = {b.id: b for b in rows}
    bills = [Open(i, found[i].due_on, found[i].open_fen) for i in chosen if i in found]
    plan = allocate(order.amount_fen, bills, Policy.AS_LISTED)
    payment = Payment(
        site_id=site,
        receipt_no=receipt,
        method=Method.ONLINE.value,
        amount_fen=order.amount_fen,
        premises_id=premises_id,
        payer_name=order.payer or "",
        cashier="online",
        paid_at=now,
        paid_on=local_date(now),
        order_id=order.id,
        reference=order.channel_txn_id or "",
        to_prepaid_fen=plan.rest_fen,
        note="paid meanwhile; the rest is on the prepaid balance" if plan.rest_fen else "",
    )
    s.add(payment)
    s.flush()
    _book(s, payment, plan.parts, plan.rest_fen, "", f"online:{order.payer or ''}"[:64], now)
    if plan.rest_fen:
        log.warning(
            "online payment %s: %d fen of bills %s were paid meanwhile; to the prepaid balance",
            order.id,
            plan.rest_fen,
            chosen,
        )


def register_payments() -> Callable[[], None]:
    """Credit paid fee orders; returns the function that unregisters the handler."""
    return register_on_paid(FEE_SUBJECT, credit_order)
