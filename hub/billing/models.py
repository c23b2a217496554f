"""Fee billing as stored: fee items and their dated prices, what each premises is billed,
bill runs, bills, payments, receipts and the ledger.

The ledger (``ledger_entry``) is the truth: rows are only ever added. A bill's ``open_fen``
and a prepaid account's ``balance_fen`` are caches kept in the same transaction as the
entries that change them (so that "pay this bill" is one conditional UPDATE that two
cashiers cannot both win); :func:`hub.billing.ledger.rebuild_caches` recomputes them from
the entries, and a test checks they never differ.

Entries on the ``due`` account are what a premises owes, per bill (``bill`` +, ``paid`` −,
``waived`` −, ``credit`` − with its ``refund`` +, ``unpaid`` + when a payment is voided).
Entries on the ``prepaid`` account are money held for the premises (``deposit`` +,
``deduct`` − paying a bill, ``refund`` −, ``void`` − of a voided deposit).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from hub.models import ts_field, utcnow

_ID = BigInteger().with_variant(Integer, "sqlite")


def _fen(**kw: Any) -> Any:
    return Field(default=0, sa_column=Column(BigInteger, nullable=False, **kw))


class Category(StrEnum):
    PROPERTY = "property"  # 物业费
    PARKING = "parking"  # 车位费
    UTILITIES = "utilities"  # 水电 (collected at cost)
    DEPOSIT = "deposit"  # 押金, 装修保证金
    RENT = "rent"  # 租金
    OTHER = "other"


class BillKind(StrEnum):
    CHARGE = "charge"  # a fee item's line for a period (or a one-off)
    ADJUSTMENT = "adjustment"  # the difference a later fact (an area change) makes
    LATE_FEE = "late_fee"  # 滞纳金 on an overdue bill


class Account(StrEnum):
    DUE = "due"
    PREPAID = "prepaid"


class Entry(StrEnum):
    BILL = "bill"
    PAID = "paid"
    WAIVED = "waived"
    CREDIT = "credit"
    REFUND = "refund"
    UNPAID = "unpaid"
    DEPOSIT = "deposit"
    DEDUCT = "deduct"
    VOID = "void"


class Method(StrEnum):
    CASH = "cash"  # 现金
    POS = "pos"  # 刷卡
    TRANSFER = "transfer"  # 转账
    ONLINE = "online"  # through a payment channel (hub/payments)


class FeeItem(SQLModel, table=True):
    """A fee item (收费项目) of a site, as data: what it charges and on what calendar."""

    __tablename__: ClassVar[Any] = "fee_item"
    __table_args__ = (
        UniqueConstraint("site_id", "code", name="uq_fee_item_site_code"),
        CheckConstraint("cycle_months IN (1, 2, 3, 4, 6, 12)", name="ck_fee_item_cycle"),
        CheckConstraint("step IN (1, 10, 100)", name="ck_fee_item_step"),
    )
    id: int | None = Field(default=None, sa_column=Column(_ID, primary_key=True))
    site_id: str = Field(foreign_key="site.id", max_length=64)
    code: str = Field(max_length=32)
    name: str = Field(max_length=64)
    category: str = Field(max_length=16)  # Category
    kind: str = Field(max_length=16)  # hub.billing.fees.Kind
    area_basis: str = Field(default="built", max_length=16)
    cycle_months: int = 1
    timing: str = Field(default="prepaid", max_length=16)  # hub.billing.periods.Timing
    advance_days: int = 0
    due_days: int = 0
    rounding: str = Field(default="half_up", max_length=16)
    step: int = 1
    refundable: bool = False  # a deposit paid back at the end
    # late fee: a share of the overdue amount per day after the grace days, capped at a share
    late_fee_per_day: Decimal = Field(
        default=Decimal(0), sa_column=Column(Numeric(10, 8), nullable=False)
    )
    late_fee_grace_days: int = 0
    late_fee_cap: Decimal | None = Field(default=None, sa_column=Column(Numeric(10, 8)))
    vacant_discount_pct: Decimal = Field(
        default=Decimal(0), sa_column=Column(Numeric(5, 2), nullable=False)
    )
    created_by: str = Field(max_length=64)
    created_at: datetime = ts_field(nullable=False, default=utcnow)


class FeePrice(SQLModel, table=True):
    """A price of a fee item from a date on: every price has one (never a silent 0)."""

    __tablename__: ClassVar[Any] = "fee_price"
    __table_args__ = (
        UniqueConstraint("item_id", "effective_from", name="uq_fee_price_from"),
        CheckConstraint("unit >= 0 AND fixed >= 0", name="ck_fee_price_positive"),
    )
    id: int | None = Field(default=None, sa_column=Column(_ID, primary_key=True))
    item_id: int = Field(sa_column=Column(_ID, ForeignKey("fee_item.id"), nullable=False))
    effective_from: date = Field(sa_column=Column(Date, nullable=False))
    unit: Decimal = Field(sa_column=Column(Numeric(14, 4), nullable=False))  # fen
    fixed: Decimal = Field(default=Decimal(0), sa_column=Column(Numeric(14, 4), nullable=False))
    created_by: str = Field(max_length=64)
    created_at: datetime = ts_field(nullable=False, default=utcnow)


class FeeBinding(SQLModel, table=True):
    """A fee item billed to a premises from its start date (缴费起始日期), with a rent
    contract's terms for rent items."""

    __tablename__: ClassVar[Any] = "fee_binding"
    __table_args__ = (
        UniqueConstraint("premises_id", "item_id", name="uq_fee_binding"),
        Index("ix_fee_binding_item", "item_id"),
        CheckConstraint("until IS NULL OR until > start", name="ck_fee_binding_dates"),
    )
    id: int | None = Field(default=None, sa_column=Column(_ID, primary_key=True))
    site_id: str = Field(max_length=64)
    premises_id: int = Field(sa_column=Column(_ID, ForeignKey("premises.id"), nullable=False))
    item_id: int = Field(sa_column=Column(_ID, ForeignKey("fee_item.id"), nullable=False))
    start: date = Field(sa_column=Column(Date, nullable=False))
    until: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    rent_monthly: Decimal | None = Field(default=None, sa_column=Column(Numeric(14, 4)))
    rent_step_pct: Decimal = Field(
        default=Decimal(0), sa_column=Column(Numeric(6, 2), nullable=False)
    )
    rent_every_months: int = 12
    created_by: str = Field(max_length=64)
    created_at: datetime = ts_field(nullable=False, default=utcnow)


class BillRun(SQLModel, table=True):
    """One bill run of a site for an accounting month; a rerun resumes, adding nothing twice."""

    __tablename__: ClassVar[Any] = "bill_run"
    __table_args__ = (Index("ix_bill_run_site_month", "site_id", "month"),)
    id: int | None = Field(default=None, sa_column=Column(_ID, primary_key=True))
    site_id: str = Field(max_length=64)
    month: str = Field(max_length=7)  # YYYY-MM
    status: str = Field(default="running", max_length=16)  # running | done | failed
    started_by: str = Field(max_length=64)
    started_at: datetime = ts_field(nullable=False, default=utcnow)
    finished_at: datetime | None = ts_field(nullable=True)
    premises_total: int = 0
    premises_done: int = 0
    lines: int = 0
    total_fen: int = _fen()
    deducted_fen: int = _fen()  # taken from prepaid balances as the bills were issued
    problems: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))


class ClosedMonth(SQLModel, table=True):
    """An accounting month finance has closed (关账): no bill run adds to it."""

    __tablename__: ClassVar[Any] = "closed_month"
    site_id: str = Field(primary_key=True, max_length=64)
    month: str = Field(primary_key=True, max_length=7)
    closed_by: str = Field(max_length=64)
    closed_at: datetime = ts_field(nullable=False, default=utcnow)


class Bill(SQLModel, table=True):
    """One bill line: a premises owes ``amount_fen`` for a fee item over a period.

    ``key`` makes it once-only: ``c/{binding}/{period start}`` for a charge,
    ``a/{bill}/{area change}`` for an adjustment, ``l/{bill}/{through}`` for a late fee.
    Never updated but for ``open_fen``, the cache of what is still owed.
    """

    __table_args__ = (
        UniqueConstraint("site_id", "key", name="uq_bill_key"),
        Index("ix_bill_premises", "premises_id", "due_on"),
        Index("ix_bill_site_month", "site_id", "month"),
        Index("ix_bill_site_due", "site_id", "due_on"),
        Index(
            "ix_bill_site_open",
            "site_id",
            "id",
            postgresql_where=text("open_fen > 0"),
            sqlite_where=text("open_fen > 0"),
        ),
        CheckConstraint("open_fen >= 0", name="ck_bill_open_not_negative"),
    )
    id: int | None = Field(default=None, sa_column=Column(_ID, primary_key=True))
    site_id: str = Field(max_length=64)
    key: str = Field(max_length=96)
    premises_id: int = Field(sa_column=Column(_ID, ForeignKey("premises.id"), nullable=False))
    item_id: int = Field(sa_column=Column(_ID, ForeignKey("fee_item.id"), nullable=False))
    category: str = Field(max_length=16)
    kind: str = Field(max_length=16)  # BillKind
    parent_id: int | None = Field(default=None, sa_column=Column(_ID, nullable=True))
    period_start: date = Field(sa_column=Column(Date, nullable=False))
    period_end: date = Field(sa_column=Column(Date, nullable=False))  # first day after
    month: str = Field(max_length=7)  # the accounting month it is booked in
    issued_on: date = Field(sa_column=Column(Date, nullable=False))
    due_on: date = Field(sa_column=Column(Date, nullable=False))
    amount_fen: int = _fen()
    open_fen: int = _fen()
    payer_id: int | None = Field(default=None, sa_column=Column(_ID, nullable=True))  # person
    basis: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    run_id: int | None = Field(default=None, sa_column=Column(_ID, nullable=True))
    created_by: str = Field(max_length=64)
    created_at: datetime = ts_field(nullable=False, default=utcnow)


class Payment(SQLModel, table=True):
    """Money received: at the desk (with cashier and receipt number) or online."""

    __table_args__ = (
        UniqueConstraint("site_id", "receipt_no", name="uq_payment_receipt"),
        UniqueConstraint("site_id", "idempotency_key", name="uq_payment_idempotency"),
        UniqueConstraint("order_id", name="uq_payment_order"),
        Index("ix_payment_site_on", "site_id", "paid_on"),
        Index("ix_payment_paid_on", "paid_on"),
        Index("ix_payment_cashier_on", "cashier", "paid_on"),
        CheckConstraint("amount_fen > 0", name="ck_payment_amount"),
        CheckConstraint(
            "refunded_fen >= 0 AND refunded_fen <= amount_fen", name="ck_payment_refunded"
        ),
    )
    id: int | None = Field(default=None, sa_column=Column(_ID, primary_key=True))
    site_id: str = Field(max_length=64)
    receipt_no: str = Field(max_length=32)  # {site}-{year}-{sequence}, gap-free per site
    method: str = Field(max_length=16)  # Method
    amount_fen: int = _fen()
    premises_id: int = Field(sa_column=Column(_ID, ForeignKey("premises.id"), nullable=False))
    payer_name: str = Field(default="", max_length=64)
    cashier: str = Field(max_length=64)  # the user, or "online"
    paid_at: datetime = ts_field(nullable=False)
    paid_on: date = Field(sa_column=Column(Date, nullable=False))  # Shanghai date
    idempotency_key: str | None = Field(default=None, max_length=128)
    request_hash: str = Field(default="", max_length=64)  # what the key was first used for
    order_id: str | None = Field(default=None, max_length=32)  # payment_order, online
    reference: str = Field(default="", max_length=64)  # POS slip, bank transfer number
    note: str = Field(default="", max_length=200)
    to_prepaid_fen: int = _fen()  # the part that went to the prepaid balance
    refunded_fen: int = _fen()
    voided_at: datetime | None = ts_field(nullable=True)
    voided_by: str | None = Field(default=None, max_length=64)
    void_reason: str = Field(default="", max_length=200)


class ReceiptCounter(SQLModel, table=True):
    """The last receipt number of a site and year; taken in the payment's transaction, so a
    payment rolled back gives its number back and the sequence has no gaps."""

    __tablename__: ClassVar[Any] = "receipt_counter"
    site_id: str = Field(primary_key=True, max_length=64)
    year: int = Field(primary_key=True)
    last: int = 0


class PrepaidAccount(SQLModel, table=True):
    """The cache of a premises' prepaid balance (预存) in a category ('' = any fee)."""

    __tablename__: ClassVar[Any] = "prepaid_account"
    __table_args__ = (CheckConstraint("balance_fen >= 0", name="ck_prepaid_not_negative"),)
    premises_id: int = Field(sa_column=Column(_ID, ForeignKey("premises.id"), primary_key=True))
    category: str = Field(primary_key=True, max_length=16)
    site_id: str = Field(max_length=64)
    balance_fen: int = _fen()


class LedgerEntry(SQLModel, table=True):
    """One movement of money; never updated, never deleted."""

    __tablename__: ClassVar[Any] = "ledger_entry"
    __table_args__ = (
        Index("ix_ledger_site_on", "site_id", "booked_on"),
        Index("ix_ledger_bill", "bill_id"),
        Index("ix_ledger_premises", "premises_id", "account"),
        Index("ix_ledger_payment", "payment_id"),
    )
    id: int | None = Field(default=None, sa_column=Column(_ID, primary_key=True))
    site_id: str = Field(max_length=64)
    premises_id: int = Field(sa_column=Column(_ID, nullable=False))
    account: str = Field(max_length=8)  # Account
    category: str = Field(max_length=16)  # of the bill, or of the prepaid account
    kind: str = Field(max_length=8)  # Entry
    amount_fen: int = _fen()
    bill_id: int | None = Field(default=None, sa_column=Column(_ID, nullable=True))
    item_id: int | None = Field(default=None, sa_column=Column(_ID, nullable=True))
    payment_id: int | None = Field(default=None, sa_column=Column(_ID, nullable=True))
    booked_at: datetime = ts_field(nullable=False, default=utcnow)
    booked_on: date = Field(sa_column=Column(Date, nullable=False))  # Shanghai date
    actor: str = Field(max_length=64)  # who
    reason: str = Field(default="", max_length=200)  # why
    approver: str | None = Field(default=None, max_length=64)


class Refund(SQLModel, table=True):
    """A refund (退款) asked for against one payment, and the decision on it: a credit note on
    the bill it paid (or money back from the prepaid part of the payment), approved by a
    manager other than the one who asked."""

    __table_args__ = (
        Index("ix_refund_payment", "payment_id"),
        Index("ix_refund_site_status", "site_id", "status"),
        CheckConstraint("amount_fen > 0", name="ck_refund_amount"),
    )
    id: int | None = Field(default=None, sa_column=Column(_ID, primary_key=True))
    site_id: str = Field(max_length=64)
    payment_id: int = Field(sa_column=Column(_ID, ForeignKey("payment.id"), nullable=False))
    bill_id: int | None = Field(default=None, sa_column=Column(_ID, nullable=True))
    amount_fen: int = _fen()
    reason: str = Field(max_length=200)
    status: str = Field(default="requested", max_length=16)  # requested | approved | rejected
    requested_by: str = Field(max_length=64)
    requested_at: datetime = ts_field(nullable=False, default=utcnow)
    decided_by: str | None = Field(default=None, max_length=64)
    decided_at: datetime | None = ts_field(nullable=True)
    decision_note: str = Field(default="", max_length=200)
