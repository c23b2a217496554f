"""Payment orders and notifications: the unit-of-work layer.

Every function here owns its transaction: it commits what it did (or rolls it all back)
before returning, so call it with no other pending work in the session.

Idempotency lives in the database, never in a cache that expires:

- an order is unique per (site, subject kind, idempotency key);
- an order moves to ``paid`` by one conditional UPDATE (``WHERE status IN ('created',
  'pending') AND amount_fen = :amount ...``); of two identical notifications arriving at
  once, one matches the row and the other matches nothing (PostgreSQL re-checks the WHERE
  after the winner commits; SQLite serialises writers), and (channel, channel_txn_id) is
  unique, so a transaction number credits one order at most;
- the subject is credited by the ``on_paid`` handlers inside that same transaction.

A notification is read in this order: signature (unsigned → 401, recorded, never parsed
further), shape (→ 400), then the database: a notification for an order this very
transaction already paid is a duplicate (200), however old; only a notification that would
credit must be signed within ``max_age_s`` (channels sign every resend anew, so a resend a
day later is fresh; a stale one is refused with 401 and the channel's next resend credits).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, func, select, update

from hub.models import utcnow
from hub.payments.channels import Notification, PaymentChannel
from hub.payments.errors import (
    ChannelError,
    IdempotencyConflict,
    MalformedNotification,
    OrderNotFound,
    OrderNotPayable,
    SignatureError,
)
from hub.payments.models import (
    FINAL,
    SOURCES,
    NotificationOutcome,
    PaymentNotification,
    PaymentOrder,
    PaymentStatus,
)

log = logging.getLogger(__name__)

OnPaid = Callable[[Session, PaymentOrder], None]
_on_paid: dict[str, list[OnPaid]] = {}

MAX_BODY = 64 * 1024  # a notification is a few hundred bytes
_KEPT_HEADERS = ("content-type", "user-agent")


def register_on_paid(subject_kind: str, handler: OnPaid) -> Callable[[], None]:
    """Call ``handler(session, order)`` when an order for ``subject_kind`` is paid.

    It runs inside the transaction that marks the order paid: whatever it writes commits
    with it, and if it raises, neither commits and the channel is asked to resend. An order
    whose kind has no handler is never marked paid. Returns a function that unregisters it.
    """
    _on_paid.setdefault(subject_kind, []).append(handler)

    def unregister() -> None:
        _on_paid[subject_kind].remove(handler)

    return unregister


@dataclass(frozen=True)
class Outcome:
    """What became of a notification, and the HTTP status the channel gets for it."""

    kind: NotificationOutcome
    reason: str
    http_status: int
    order_id: str | None = None


def create_order(
    session: Session,
    *,
    subject_kind: str,
    subject_id: str,
    site_id: str,
    amount_fen: int,
    idempotency_key: str,
    channel: str,
    payer: str | None = None,
    details: dict[str, Any] | None = None,
    currency: str = "CNY",
) -> PaymentOrder:
    """A new payment order, committed; or the one this idempotency key already made.

    The key is scoped by (site_id, subject_kind). Reusing it with any other field changed
    raises IdempotencyConflict; a bad amount or empty key raises ValueError.
    """
    if type(amount_fen) is not int or amount_fen <= 0:
        raise ValueError(f"amount_fen must be a positive integer of fen, not {amount_fen!r}")
    for name, value, most in (
        ("subject_kind", subject_kind, 32),
        ("subject_id", subject_id, 64),
        ("site_id", site_id, 64),
        ("idempotency_key", idempotency_key, 128),
        ("channel", channel, 32),
    ):
        if not 0 < len(value) <= most:
            raise ValueError(f"{name} must have 1 to {most} characters")
    request = {
        "subject_kind": subject_kind,
        "subject_id": subject_id,
        "site_id": site_id,
        "amount_fen": amount_fen,
        "currency": currency,
        "channel": channel,
        "payer": payer,
        "details": details or {},
    }
    digest = hashlib.sha256(
        json.dumps(request, sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()
    existing = _by_key(session, site_id, subject_kind, idempotency_key)
    if existing is None:
        session.commit()  # end the read before writing (SQLite: a fresh write transaction)
        order = PaymentOrder(
            id=uuid.uuid4().hex,
            idempotency_key=idempotency_key,
            request_hash=digest,
            **request,  # type: ignore[arg-type]
        )
        session.add(order)
        try:
            session.commit()
            return order
        except IntegrityError:
            session.rollback()  # the same key, committed by a concurrent request
            existing = _by_key(session, site_id, subject_kind, idempotency_key)
            if existing is None:
                raise
    session.commit()
    if existing.request_hash != digest:
        raise IdempotencyConflict(
            f"idempotency key {idempotency_key!r} was used for a different request"
            f" (order {existing.id})"
        )
    return existing


def _by_key(session: Session, site_id: str, kind: str, key: str) -> PaymentOrder | None:
    return session.exec(
        select(PaymentOrder).where(
            PaymentOrder.site_id == site_id,
            PaymentOrder.subject_kind == kind,
            PaymentOrder.idempotency_key == key,
        )
    ).first()


def prepare_payment(
    session: Session, channel: PaymentChannel, order: PaymentOrder
) -> dict[str, Any]:
    """Register ``order`` with its channel; what the payer needs (pay URL, QR payload).

    Marks the order pending (committed). Calling it again is harmless. Raises
    OrderNotPayable for a paid, failed or closed order and ChannelError when the channel
    cannot be reached (the order stays as it was; try again) or refuses (the order is then
    marked failed).
    """
    if channel.name != order.channel:
        raise ValueError(f"order {order.id} is for channel {order.channel}, not {channel.name}")
    if order.status in FINAL:
        raise OrderNotPayable(f"order {order.id} is {order.status}")
    try:
        info = channel.prepare(order)  # no transaction is open while we wait on the network
    except ChannelError as exc:
        if exc.refused:
            _transition(session, order.id, PaymentStatus.FAILED, closed_at=utcnow())
            session.commit()
        raise
    if _transition(session, order.id, PaymentStatus.PENDING):
        # the caller's copy (attached or not) follows, without becoming a pending write
        set_committed_value(order, "status", PaymentStatus.PENDING)
    session.commit()
    return info


def close_order(session: Session, order_id: str) -> PaymentOrder:
    """Give up on an unpaid order (expired, cancelled); committed. Returns it as it now is:
    ``closed``, or ``paid`` if a payment got there first. Raises OrderNotFound."""
    _transition(session, order_id, PaymentStatus.CLOSED, closed_at=utcnow())
    session.commit()
    return get_order(session, order_id)


def get_order(session: Session, order_id: str) -> PaymentOrder:
    order = session.get(PaymentOrder, order_id, populate_existing=True)
    if order is None:
        raise OrderNotFound(f"no payment order {order_id}")
    return order


def list_orders(
    session: Session,
    sites: Sequence[str] | None,
    status: PaymentStatus | None = None,
    limit: int = 100,
) -> Sequence[PaymentOrder]:
    """Newest first; ``sites=None`` means every site."""
    q = select(PaymentOrder)
    if sites is not None:
        q = q.where(col(PaymentOrder.site_id).in_(sites))
    if status is not None:
        q = q.where(PaymentOrder.status == status)
    return session.exec(
        q.order_by(col(PaymentOrder.created_at).desc(), col(PaymentOrder.id)).limit(limit)
    ).all()


def notification_counts(session: Session, since: datetime) -> dict[str, int]:
    """Notifications received since ``since`` by outcome, plus ``bad_signature``."""
    rows = session.exec(
        select(PaymentNotification.outcome, PaymentNotification.signature_ok, func.count())
        .where(col(PaymentNotification.received_at) >= since)
        .group_by(col(PaymentNotification.outcome), col(PaymentNotification.signature_ok))
    ).all()
    counts = dict.fromkeys([*NotificationOutcome, "bad_signature"], 0)
    for outcome, signature_ok, n in rows:
        counts[outcome] += n
        if not signature_ok:
            counts["bad_signature"] += n
    return {str(k): v for k, v in counts.items()}


def _transition(session: Session, order_id: str, to: PaymentStatus, **values: Any) -> bool:
    """Move the order to ``to`` if its status allows; True if this call moved it."""
    result = session.exec(
        update(PaymentOrder)
        .where(col(PaymentOrder.id) == order_id, col(PaymentOrder.status).in_(SOURCES[to]))
        .values(status=to, **values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def handle_notification(
    session: Session,
    channel: PaymentChannel,
    headers: Mapping[str, str],
    body: bytes,
    *,
    max_age_s: float = 300,
    now: datetime | None = None,
) -> Outcome:
    """Verify, record and apply one notification from ``channel``; committed.

    Credits the order at most once whatever arrives, however often, in whatever order.
    Never raises for a bad notification (the Outcome says why and which status to answer);
    database errors propagate (the channel then gets a 500 and resends).
    """
    now = now or utcnow()
    kept = {
        k.lower(): v
        for k, v in headers.items()
        if k.lower().startswith("x-wuye-") or k.lower() in _KEPT_HEADERS
    }
    record = PaymentNotification(
        channel=channel.name,
        received_at=now,
        signature_ok=False,
        outcome="",
        headers=kept,
        body=body[:MAX_BODY],
    )
    if len(body) > MAX_BODY:
        return _finish(session, record, NotificationOutcome.REFUSED, "body too large", 413)
    try:
        n = channel.verify(headers, body)
    except SignatureError as exc:
        log.warning("payment notification on %s refused: %s", channel.name, exc)
        return _finish(session, record, NotificationOutcome.REFUSED, f"signature: {exc}", 401)
    except MalformedNotification as exc:
        record.signature_ok = True
        return _finish(session, record, NotificationOutcome.REFUSED, str(exc), 400)
    record.signature_ok = True
    record.order_id, record.channel_txn_id = n.order_id, n.channel_txn_id
    stale = abs(now - n.signed_at) > timedelta(seconds=max_age_s)
    if not stale:
        try:
            credited = _mark_paid(session, channel.name, n)
        except IntegrityError:  # (channel, txn id) already credited another order
            session.rollback()
            other = session.exec(
                select(PaymentOrder.id).where(
                    PaymentOrder.channel == channel.name,
                    PaymentOrder.channel_txn_id == n.channel_txn_id,
                )
            ).first()
            reason = f"transaction {n.channel_txn_id} already paid order {other}"
            return _finish(session, record, NotificationOutcome.REFUSED, reason, 400)
        if credited:
            return _credit(session, record, n)
    order = session.get(PaymentOrder, n.order_id, populate_existing=True)
    kind, reason, status = _why_not(order, channel.name, n)
    if stale and kind == NotificationOutcome.ERROR:  # it would have credited
        kind, status = NotificationOutcome.REFUSED, 401
        age = int((now - n.signed_at).total_seconds())
        reason = f"stale: signed {age} s before it arrived (at most {max_age_s:g} s)"
    return _finish(session, record, kind, reason, status)


def _mark_paid(session: Session, channel: str, n: Notification) -> bool:
    # the first statement of the transaction is the write: on SQLite it waits for the
    # write lock instead of upgrading an older read snapshot
    result = session.exec(
        update(PaymentOrder)
        .where(
            col(PaymentOrder.id) == n.order_id,
            col(PaymentOrder.status).in_(SOURCES[PaymentStatus.PAID]),
            col(PaymentOrder.channel) == channel,
            col(PaymentOrder.amount_fen) == n.amount_fen,
            col(PaymentOrder.currency) == n.currency,
        )
        .values(status=PaymentStatus.PAID, channel_txn_id=n.channel_txn_id, paid_at=n.paid_at)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _credit(session: Session, record: PaymentNotification, n: Notification) -> Outcome:
    order = get_order(session, n.order_id)
    try:
        handlers = _on_paid.get(order.subject_kind)
        if not handlers:
            raise LookupError(f"no on_paid handler for {order.subject_kind!r}")
        for handler in list(handlers):
            handler(session, order)
        record.outcome, record.reason = NotificationOutcome.CREDITED, "credited"
        session.add(record)
        session.commit()
    except Exception as exc:
        session.rollback()  # neither paid nor credited; the channel resends
        log.exception("crediting payment order %s failed", n.order_id)
        reason = f"on_paid failed: {type(exc).__name__}: {exc}"[:500]
        return _finish(session, record, NotificationOutcome.ERROR, reason, 500)
    log.info("payment order %s paid (%s)", order.id, n.channel_txn_id)
    return Outcome(NotificationOutcome.CREDITED, "credited", 200, order.id)


def _why_not(
    order: PaymentOrder | None, channel: str, n: Notification
) -> tuple[NotificationOutcome, str, int]:
    """Why a notification did not credit: (outcome, reason, HTTP status)."""
    refused = NotificationOutcome.REFUSED
    if order is None:
        return refused, f"no order {n.order_id}", 400
    if order.channel != channel:
        return refused, f"order {order.id} is for channel {order.channel}", 400
    if (n.amount_fen, n.currency) != (order.amount_fen, order.currency):
        return (
            refused,
            f"amount {n.amount_fen} {n.currency} differs from the order's"
            f" {order.amount_fen} {order.currency}",
            400,
        )
    if order.status == PaymentStatus.PAID and order.channel_txn_id == n.channel_txn_id:
        return NotificationOutcome.DUPLICATE, "duplicate, already credited", 200
    # money reached the channel but cannot be credited: 200 stops the resends (they cannot
    # help); this record is what finance refunds from
    if order.status == PaymentStatus.PAID:
        return refused, f"paid twice: already paid by {order.channel_txn_id}; refund", 200
    if order.status in FINAL:
        return refused, f"order is {order.status}; refund", 200
    return NotificationOutcome.ERROR, f"order is {order.status}; try again", 503


def _finish(
    session: Session,
    record: PaymentNotification,
    kind: NotificationOutcome,
    reason: str,
    status: int,
) -> Outcome:
    record.outcome, record.reason = kind, reason
    session.add(record)
    session.commit()
    return Outcome(kind, reason, status, record.order_id)
