"""Payment orders and the notifications channels send about them.

An order is one payment attempt for one subject (a parking session, a monthly pass, later a
property-fee bill). Its status only moves forward, and only through a conditional UPDATE
(``... WHERE status IN (allowed sources)``), so two concurrent notifications cannot both
move it to ``paid``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from hub.models import ts_field, utcnow


class PaymentStatus(StrEnum):
    CREATED = "created"  # stored, not yet registered with the channel
    PENDING = "pending"  # the channel knows it; the payer can pay
    PAID = "paid"  # final: money received and the subject credited
    FAILED = "failed"  # final: the channel refused it
    CLOSED = "closed"  # final: given up (expired, cancelled)


# status -> the statuses it may be reached from; nothing ever leaves a final status
SOURCES: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    PaymentStatus.PENDING: frozenset({PaymentStatus.CREATED}),
    # a payer may pay before the order is marked pending (the pay URL is out already)
    PaymentStatus.PAID: frozenset({PaymentStatus.CREATED, PaymentStatus.PENDING}),
    PaymentStatus.FAILED: frozenset({PaymentStatus.CREATED, PaymentStatus.PENDING}),
    PaymentStatus.CLOSED: frozenset({PaymentStatus.CREATED, PaymentStatus.PENDING}),
}
FINAL = frozenset({PaymentStatus.PAID, PaymentStatus.FAILED, PaymentStatus.CLOSED})


class NotificationOutcome(StrEnum):
    CREDITED = "credited"  # this notification moved the order to paid
    DUPLICATE = "duplicate"  # the order was already paid by this transaction
    REFUSED = "refused"  # not credited: bad signature, unknown order, wrong amount, ...
    ERROR = "error"  # an on_paid handler failed: nothing committed, the channel resends


class _StatusType(TypeDecorator[PaymentStatus]):
    """A status as a plain VARCHAR (no native enum to migrate), read back as the enum."""

    impl = String(16)
    cache_ok = True

    def process_bind_param(self, value: PaymentStatus | str | None, dialect: Any) -> str | None:
        return None if value is None else PaymentStatus(value).value

    def process_result_value(self, value: str | None, dialect: Any) -> PaymentStatus | None:
        return None if value is None else PaymentStatus(value)


_STATUSES = ", ".join(f"'{s.value}'" for s in PaymentStatus)


class PaymentOrder(SQLModel, table=True):
    __tablename__: ClassVar[Any] = "payment_order"
    __table_args__ = (
        # the caller's scope is (site, subject kind): parking at one site never meets
        # another site's or another module's keys
        UniqueConstraint(
            "site_id", "subject_kind", "idempotency_key", name="uq_payment_order_idempotency"
        ),
        # per channel: two providers may use the same transaction number
        UniqueConstraint("channel", "channel_txn_id", name="uq_payment_order_channel_txn"),
        Index("ix_payment_order_site_status", "site_id", "status"),
        Index("ix_payment_order_subject", "subject_kind", "subject_id"),
        CheckConstraint("amount_fen > 0", name="ck_payment_order_amount_positive"),
        CheckConstraint(f"status IN ({_STATUSES})", name="ck_payment_order_status"),
    )
    id: str = Field(primary_key=True, max_length=32)
    subject_kind: str = Field(max_length=32)
    subject_id: str = Field(max_length=64)
    site_id: str = Field(max_length=64)
    amount_fen: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field("CNY", max_length=3)
    channel: str = Field(max_length=32)
    status: PaymentStatus = Field(
        PaymentStatus.CREATED, sa_column=Column(_StatusType(), nullable=False)
    )
    idempotency_key: str = Field(max_length=128)
    request_hash: str = Field(max_length=64)  # what the key was first used for
    channel_txn_id: str | None = Field(default=None, max_length=128)
    payer: str | None = Field(default=None, max_length=64)  # a user id or a plate
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = ts_field(nullable=False, default=utcnow)
    paid_at: datetime | None = ts_field(nullable=True)
    closed_at: datetime | None = ts_field(nullable=True)  # failed or closed


class PaymentNotification(SQLModel, table=True):
    """Every notification a channel sent, as received, with what became of it."""

    __tablename__: ClassVar[Any] = "payment_notification"
    __table_args__ = (
        Index("ix_payment_notification_order", "order_id"),
        Index("ix_payment_notification_received_at", "received_at"),
    )
    # BIGINT on PostgreSQL; INTEGER on SQLite, where only that is an alias of the rowid
    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    )
    channel: str = Field(max_length=32)
    received_at: datetime = ts_field(nullable=False, default=utcnow)
    order_id: str | None = Field(default=None, max_length=64)  # as the body claims
    channel_txn_id: str | None = Field(default=None, max_length=128)
    signature_ok: bool
    outcome: str = Field(max_length=16)  # NotificationOutcome
    reason: str = ""
    headers: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
