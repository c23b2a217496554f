"""Parking at the hub: lots and what is synced to their edges, sessions and records.

The hub owns passes, lists and each lot's policy; every change bumps the lot's version and
is logged in ``parking_change``, from which the sync sender builds change sets for edges
(or a full snapshot). Sessions are built from the edge's ``park`` records, which may arrive
late, twice (de-duplicated upstream by gateway and sequence) or out of order.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel

from hub.models import ts_field, utcnow


class ParkingLot(SQLModel, table=True):
    __tablename__: ClassVar[Any] = "parking_lot"
    id: str = Field(primary_key=True, max_length=64)
    site_id: str = Field(foreign_key="site.id", index=True, max_length=64)
    gateway_id: str = Field(max_length=64)  # the edge that runs the lot's gates
    name: str = ""
    policy: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    version: int = 0  # of the state synced to the edge; bumped by every change
    created_at: datetime = ts_field(nullable=False, default=utcnow)


class ParkingPass(SQLModel, table=True):
    __tablename__: ClassVar[Any] = "parking_pass"
    __table_args__ = (Index("ix_parking_pass_lot_plate", "lot_id", "plate"),)
    id: str = Field(primary_key=True, max_length=64)
    lot_id: str = Field(foreign_key="parking_lot.id", max_length=64)
    plate: str | None = Field(default=None, max_length=16)
    card: str | None = Field(default=None, max_length=32)
    lease: str = Field(default="monthly", max_length=16)
    start: datetime = ts_field(nullable=False)
    end: datetime = ts_field(nullable=False)
    owner: str | None = Field(default=None, max_length=64)  # username of an owner
    updated_at: datetime = ts_field(nullable=False, default=utcnow)


class ParkingListEntry(SQLModel, table=True):
    __tablename__: ClassVar[Any] = "parking_list_entry"
    id: str = Field(primary_key=True, max_length=64)
    lot_id: str = Field(foreign_key="parking_lot.id", index=True, max_length=64)
    plate: str = Field(max_length=16)
    kind: str = Field(max_length=8)  # allow | deny
    start: datetime = ts_field(nullable=False)
    end: datetime | None = ts_field(nullable=True)
    note: str = ""


class ParkingChange(SQLModel, table=True):
    """One change of a lot's state, at the version it produced (the sync log)."""

    __tablename__: ClassVar[Any] = "parking_change"
    __table_args__ = (UniqueConstraint("lot_id", "version", name="uq_parking_change_version"),)
    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    )
    lot_id: str = Field(foreign_key="parking_lot.id", max_length=64)
    version: int
    kind: str = Field(max_length=8)  # pass | list | policy | paid
    key: str = Field(max_length=64)
    value: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = ts_field(nullable=False, default=utcnow)


class ParkingSync(SQLModel, table=True):
    """Where each lot's edge stands: what it confirmed, what was last sent and when."""

    __tablename__: ClassVar[Any] = "parking_sync"
    lot_id: str = Field(foreign_key="parking_lot.id", primary_key=True, max_length=64)
    confirmed: int = 0  # the version the edge holds durably (from its ``synced``)
    sent: int = 0  # the version last sent
    sent_at: datetime | None = ts_field(nullable=True)
    attempts: int = 0  # sends of the current version without a confirmation
    confirmed_at: datetime | None = ts_field(nullable=True)


class SessionStatus(StrEnum):
    INSIDE = "inside"
    EXITED = "exited"
    NO_EXIT = "no_exit"  # the car came in again while recorded inside: the exit was missed


class ParkingSession(SQLModel, table=True):
    """One stay, keyed by the session id the edge made; built from its records."""

    __tablename__: ClassVar[Any] = "parking_session"
    __table_args__ = (
        Index("ix_parking_session_lot_plate", "lot_id", "plate"),
        Index("ix_parking_session_lot_status", "lot_id", "status"),
    )
    id: str = Field(primary_key=True, max_length=64)
    lot_id: str = Field(foreign_key="parking_lot.id", max_length=64)
    plate: str | None = Field(default=None, max_length=16)
    card: str | None = Field(default=None, max_length=32)
    corrected_from: str | None = Field(default=None, max_length=16)
    lease: str = Field(default="temporary", max_length=16)
    status: str = Field(default=SessionStatus.INSIDE, max_length=8)
    entry_at: datetime | None = ts_field(nullable=True)
    entry_gate: str | None = Field(default=None, max_length=64)
    exit_at: datetime | None = ts_field(nullable=True)
    exit_gate: str | None = Field(default=None, max_length=64)
    fee_fen: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    paid_online_fen: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    paid_booth_fen: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    unpaid_fen: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    no_entry: bool = False  # the exit came with no entry record at the edge
    updated_at: datetime = ts_field(nullable=False, default=utcnow)


class ParkingRecord(SQLModel, table=True):
    """Every record the edges sent (entries, exits, refusals, booth payments, corrections)."""

    __tablename__: ClassVar[Any] = "parking_record"
    __table_args__ = (
        Index("ix_parking_record_lot_at", "lot_id", "at"),
        Index("ix_parking_record_session", "session_id"),
    )
    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    )
    lot_id: str = Field(max_length=64)
    gateway_id: str = Field(max_length=64)
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    session_id: str = Field(max_length=64)
    kind: str = Field(max_length=16)
    action: str | None = Field(default=None, max_length=8)
    at: datetime = ts_field(nullable=False)
    plate: str | None = Field(default=None, max_length=16)
    paid_fen: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    operator: str | None = Field(default=None, max_length=64)
    body: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
