"""Work orders as stored: the order, its audit trail, engineers' duty and the round-robin turn.

The rules of what may happen to an order are in :mod:`hub.workorders.lifecycle`; these
tables keep what it returns. ``alarm_id`` is unique, so an alarm opens one order however
many processes try at once (insert-on-conflict-do-nothing), and every write of an order is
a conditional UPDATE on its ``version``, so two people acting at once cannot both move it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    Text,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from hub.models import ts_field, utcnow

_ID = BigInteger().with_variant(Integer, "sqlite")


class WorkOrderRecord(SQLModel, table=True):
    """A work order (工单): what :class:`lifecycle.WorkOrder` knows, and what people read."""

    __tablename__: ClassVar[Any] = "work_order"
    __table_args__ = (
        UniqueConstraint("alarm_id", name="uq_work_order_alarm"),  # one order per alarm
        Index("ix_work_order_site_state", "site_id", "state"),
        Index("ix_work_order_assignee", "assignee"),
        Index("ix_work_order_filed_by", "filed_by"),
        CheckConstraint("charge_fen >= 0", name="ck_work_order_charge"),
        CheckConstraint("rating IS NULL OR rating BETWEEN 1 AND 5", name="ck_work_order_rating"),
    )
    id: int | None = Field(default=None, sa_column=Column(_ID, primary_key=True))
    site_id: str = Field(max_length=64)
    source: str = Field(max_length=8)  # alarm | owner | staff
    alarm_id: int | None = Field(
        default=None, sa_column=Column(_ID, ForeignKey("alarm.id"), nullable=True)
    )
    title: str = Field(max_length=200)
    description: str = Field(default="", sa_column=Column(Text, nullable=False))
    location: str = Field(default="", max_length=200)  # "3-502 kitchen", "pump room B2"
    priority: str = Field(max_length=8)
    skill: str = Field(max_length=32)
    state: str = Field(max_length=20)
    assignee: str | None = Field(default=None, max_length=64)
    filed_by: str = Field(max_length=64)
    version: int = 1  # bumped by every write: the guard of the conditional UPDATE
    created_at: datetime = ts_field(nullable=False)
    updated_at: datetime = ts_field(nullable=False)
    accepted_at: datetime | None = ts_field(nullable=True)
    finished_at: datetime | None = ts_field(nullable=True)
    ended_at: datetime | None = ts_field(nullable=True)
    accept_due: datetime = ts_field(nullable=False)  # SLA deadlines from the priority
    finish_due: datetime = ts_field(nullable=False)
    accept_breached_at: datetime | None = ts_field(nullable=True)  # recorded once
    finish_breached_at: datetime | None = ts_field(nullable=True)
    charge_fen: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    paid: bool = False
    rating: int | None = None
    # [{"name", "content_type", "size", "sha256", "uploaded_by", "at"}]; files on disk
    attachments: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )


class WorkOrderAudit(SQLModel, table=True):
    """One step of an order's history: a transition (lifecycle.AuditEntry), or a note the
    hub adds without changing the state (``priority``, ``alarm_cleared``, ``sla_breached``,
    ``attachment``)."""

    __tablename__: ClassVar[Any] = "work_order_audit"
    __table_args__ = (Index("ix_work_order_audit_order", "order_id", "id"),)
    id: int | None = Field(default=None, sa_column=Column(_ID, primary_key=True))
    order_id: int = Field(sa_column=Column(_ID, ForeignKey("work_order.id"), nullable=False))
    at: datetime = ts_field(nullable=False)
    actor: str = Field(max_length=64)
    role: str = Field(max_length=16)
    action: str = Field(max_length=20)
    from_state: str | None = Field(default=None, max_length=20)
    to_state: str = Field(max_length=20)
    note: str = Field(default="", sa_column=Column(Text, nullable=False))
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class EngineerDuty(SQLModel, table=True):
    """An engineer's skills and whether on duty; the sites are the user's (``user.sites``)."""

    __tablename__: ClassVar[Any] = "engineer_duty"
    username: str = Field(primary_key=True, foreign_key="user.username", max_length=64)
    skills: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    on_duty: bool = False
    updated_at: datetime = ts_field(nullable=False, default=utcnow)
    updated_by: str | None = Field(default=None, max_length=64)


class DispatchTurn(SQLModel, table=True):
    """Who got the last round-robin pick for (site, skill): the next goes to the one after."""

    __tablename__: ClassVar[Any] = "dispatch_turn"
    site_id: str = Field(primary_key=True, max_length=64)
    skill: str = Field(primary_key=True, max_length=32)
    last: str | None = Field(default=None, max_length=64)
    updated_at: datetime = ts_field(nullable=False, default=utcnow)
