"""Alarms: rule state per (device, rule), the alarms themselves, their audit trail.

At most one active alarm per (device, alarm type) is enforced by a partial unique index, so
two ingest processes (or a tick and a sample) raising at the same moment make one alarm.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, text
from sqlmodel import Field, SQLModel

from hub.models import ts_field, utcnow


class AlarmRuleState(SQLModel, table=True):
    """The engine's state of one rule on one device (protocols.alarms.engine.RuleState)."""

    __tablename__: ClassVar[Any] = "alarm_rule_state"
    device: int = Field(foreign_key="device.id", primary_key=True)
    rule: str = Field(primary_key=True, max_length=64)
    state: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    timed: bool = False  # the rule completes on time alone (durations, no data): ticked
    updated_at: datetime = ts_field(nullable=False, default=utcnow)


class Alarm(SQLModel, table=True):
    __tablename__: ClassVar[Any] = "alarm"
    __table_args__ = (
        Index(
            "uq_alarm_active",
            "device",
            "alarm_type",
            unique=True,
            sqlite_where=text("active"),
            postgresql_where=text("active"),
        ),
        Index("ix_alarm_site_active", "site_id", "active"),
    )
    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    )
    device: int = Field(foreign_key="device.id")
    site_id: str = Field(max_length=64)
    gateway_id: str = Field(max_length=64)
    device_id: str = Field(max_length=64)
    alarm_type: str = Field(max_length=64)
    rule: str = Field(max_length=64)
    severity: str = Field(max_length=16)
    active: bool = True
    acknowledged: bool = False
    message: str = ""
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    started_at: datetime = ts_field(nullable=False)
    last_seen_at: datetime = ts_field(nullable=False)
    acked_at: datetime | None = ts_field(nullable=True)
    acked_by: str | None = Field(default=None, max_length=64)
    cleared_at: datetime | None = ts_field(nullable=True)
    work_order_id: int | None = None


class AlarmEvent(SQLModel, table=True):
    """The audit trail: raised, escalated, acknowledged, commented, cleared (who, when)."""

    __tablename__: ClassVar[Any] = "alarm_event"
    __table_args__ = (Index("ix_alarm_event_alarm", "alarm_id"),)
    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    )
    alarm_id: int
    at: datetime = ts_field(nullable=False)
    kind: str = Field(max_length=16)
    severity: str | None = Field(default=None, max_length=16)
    who: str | None = Field(default=None, max_length=64)  # None: the system
    note: str = ""


class AlarmOverride(SQLModel, table=True):
    """Per-site or per-device overrides of a profile's rules (protocols.alarms merge patches)."""

    __tablename__: ClassVar[Any] = "alarm_override"
    scope: str = Field(primary_key=True, max_length=8)  # site | device
    target: str = Field(primary_key=True, max_length=130)  # site id, or gateway/device
    profile: str = Field(primary_key=True, max_length=64)
    rules: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = ts_field(nullable=False, default=utcnow)
    updated_by: str | None = Field(default=None, max_length=64)
