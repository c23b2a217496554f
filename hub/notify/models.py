"""Notifications: who is told what (subscriptions), and the durable outbox of messages.

A notification row is written in the transaction of the event that caused it (an alarm
raised, a work order assigned, an SLA missed), so it exists exactly when the event does,
and is sent afterwards by the sender (:mod:`hub.notify.sender`) until the channel answers
2xx. ``(key, recipient, channel)`` is unique: an event tells each person once per channel,
however many subscriptions match them and however often the event's code runs.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel

from hub.models import ts_field, utcnow


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # not yet answered 2xx: sent (again) when due
    DELIVERED = "delivered"  # the channel answered 2xx: final, never sent again
    EXPIRED = "expired"  # given up after NOTIFY_GIVE_UP_S: final
    SKIPPED = "skipped"  # not sent: no longer due (a reminder whose bills were paid): final
    FAILED = "failed"  # the provider refused this recipient (a bad number): final


class Subscription(SQLModel, table=True):
    """People with ``role`` at ``site_id`` (``*``: every site) hear of ``event``.

    ``event`` is a kind (``alarm.raised``, ``workorder.assigned`` ...) or ``*``;
    ``min_severity`` drops milder events (a work order's priority counts as a severity:
    urgent = critical, high = major, normal = minor, low = warning); ``only_assignee``
    limits work-order events to the engineer the order is assigned to.
    """

    __tablename__: ClassVar[Any] = "notify_subscription"
    __table_args__ = (
        UniqueConstraint("role", "site_id", "event", "channel", name="uq_notify_subscription"),
    )
    id: int | None = Field(default=None, primary_key=True)
    role: str = Field(max_length=16)
    site_id: str = Field(default="*", max_length=64)
    event: str = Field(max_length=32)
    min_severity: str | None = Field(default=None, max_length=16)
    only_assignee: bool = False
    channel: str = Field(default="webhook", max_length=16)
    enabled: bool = True
    updated_at: datetime = ts_field(nullable=False, default=utcnow)
    updated_by: str | None = Field(default=None, max_length=64)


class Notification(SQLModel, table=True):
    """One message to one person through one channel, and how its delivery went."""

    __tablename__: ClassVar[Any] = "notification"
    __table_args__ = (
        UniqueConstraint("key", "recipient", "channel", name="uq_notification_once"),
        Index("ix_notification_due", "status", "next_at"),
    )
    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    )
    key: str = Field(max_length=128)  # the event: "alarm:12:raised", "wo:7:sla:accept" ...
    event: str = Field(max_length=32)
    site_id: str = Field(max_length=64)
    severity: str | None = Field(default=None, max_length=16)
    recipient: str = Field(max_length=64)  # a username
    role: str = Field(max_length=16)
    channel: str = Field(max_length=16)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default=DeliveryStatus.PENDING, max_length=16)
    attempts: int = 0
    created_at: datetime = ts_field(nullable=False, default=utcnow)
    next_at: datetime = ts_field(nullable=False, default=utcnow)  # due for its next attempt
    lease_until: datetime | None = ts_field(nullable=True)  # a sender is sending it until then
    last_status: int | None = None  # the last HTTP status (None: no answer)
    last_error: str = ""
    delivered_at: datetime | None = ts_field(nullable=True)
    cost_fen: int | None = None  # what the provider charged for it (SMS); None: nothing
