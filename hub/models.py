"""The hub's tables. Schema changes go through Alembic (hub/migrations), never create_all.

Times are timezone-aware UTC in Python and stored as UTC; billing cuts periods in
Asia/Shanghai when it reads them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Integer, LargeBinary, Numeric
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on SQLite (no tz) and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: every time in wuye is timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def ts_field(**kw: Any) -> Any:
    return Field(sa_column=Column(UtcDateTime(), **kw))


class Site(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    name: str = ""
    created_at: datetime = ts_field(nullable=False, default=utcnow)


class Gateway(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    site_id: str = Field(foreign_key="site.id", index=True, max_length=64)
    stream: str = ""  # the outbox id of its current sequence
    bdseq: int = -1
    online: bool = False
    agent: str = ""
    last_seen: datetime | None = ts_field(nullable=True)
    birth_at: datetime | None = ts_field(nullable=True)
    max_seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    messages: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    duplicates: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    # sequence numbers missing (lost upstream, or not yet arrived), and those its outbox
    # announced it dropped (deliberate: never counted as missing)
    gaps: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    dropped: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    # dead letters attributed to it
    bad: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    # its latest retained status message: agent metrics and per-device online/offline
    status: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    status_at: datetime | None = ts_field(nullable=True)


class Device(SQLModel, table=True):
    __table_args__ = (Index("ix_device_gw_dev", "gateway_id", "device_id", unique=True),)
    id: int | None = Field(default=None, primary_key=True)
    gateway_id: str = Field(foreign_key="gateway.id", max_length=64)
    device_id: str = Field(max_length=64)
    site_id: str = Field(index=True, max_length=64)
    profile: str = ""
    points: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    online: bool | None = None
    last_seen: datetime | None = ts_field(nullable=True)


class Latest(SQLModel, table=True):
    """The newest value of every point of a device: ``{point: [value, ts_ms, seq]}``.

    One row per device (not per point) so that ingest writes one row per device and batch;
    each point keeps its own time, and an older value never replaces a newer one.
    """

    device: int = Field(foreign_key="device.id", primary_key=True)
    points: dict[str, list[float]] = Field(
        default_factory=dict, sa_column=Column(JSON().with_variant(JSONB(), "postgresql"))
    )


class Reading(SQLModel, table=True):
    """Billing-grade counter readings: always in SQL, exact decimals, once per (device, ts)."""

    __table_args__ = (Index("ix_reading_dev_point_ts", "device", "point", "ts", unique=True),)
    id: int | None = Field(default=None, primary_key=True)
    device: int = Field(foreign_key="device.id")
    point: str = Field(max_length=64)
    ts: datetime = ts_field(nullable=False)
    value: Decimal = Field(sa_column=Column(Numeric(24, 6), nullable=False))


class Telemetry(SQLModel, table=True):
    """Telemetry kept in SQL when no time-series server is configured (with a retention).

    One row per message (a device's poll): ``values`` maps point -> value. Fifty times fewer
    rows than one per value, which is what lets PostgreSQL keep up with ingest; history
    extracts one point with a JSON accessor.
    """

    __table_args__ = (Index("ix_telemetry_device_ts", "device", "ts"),)
    # BIGINT on PostgreSQL; INTEGER on SQLite, where only that is an alias of the rowid
    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    )
    device: int
    ts: datetime = ts_field(nullable=False)
    values: dict[str, float] = Field(
        default_factory=dict, sa_column=Column(JSON().with_variant(JSONB(), "postgresql"))
    )


class Seen(SQLModel, table=True):
    """(gateway, stream, seq) already applied: a redelivery takes effect once."""

    gateway_id: str = Field(primary_key=True, max_length=64)
    stream: str = Field(primary_key=True, max_length=64)
    seq: int = Field(sa_column=Column(BigInteger, primary_key=True))
    at: datetime = ts_field(nullable=False, default=utcnow)


class Gap(SQLModel, table=True):
    """Sequence numbers a gateway skipped: lost upstream, dropped by its outbox, or late."""

    id: int | None = Field(default=None, primary_key=True)
    gateway_id: str = Field(index=True, max_length=64)
    stream: str = Field(max_length=64)
    first_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    detected_at: datetime = ts_field(nullable=False, default=utcnow)
    reason: str = "missing"  # missing | dropped_by_edge


class DeadLetter(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    received_at: datetime = ts_field(nullable=False, default=utcnow, index=True)
    topic: str = Field(max_length=512)
    gateway_id: str | None = Field(default=None, max_length=64, index=True)
    reason: str
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Command(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    gateway_id: str = Field(foreign_key="gateway.id", index=True, max_length=64)
    site_id: str = Field(max_length=64)
    device_id: str = Field(max_length=64)
    point: str = Field(max_length=64)
    value: Any = Field(sa_column=Column(JSON, nullable=False))
    status: str = "pending"  # pending | done | failed | expired | rejected
    detail: str = ""
    created_by: str = ""
    created_at: datetime = ts_field(nullable=False, default=utcnow)
    expires_at: datetime = ts_field(nullable=False)
    acked_at: datetime | None = ts_field(nullable=True)


class User(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(unique=True, index=True, max_length=64)
    password_hash: str
    role: str  # hq_admin | site_manager | finance | engineer | owner
    sites: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    devices: list[str] = Field(default_factory=list, sa_column=Column(JSON))  # owners: own meters
    active: bool = True
