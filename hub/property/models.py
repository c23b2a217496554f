"""The property registry as stored: buildings, premises (rooms and parking spaces), their
areas over time, people, and who occupies or owns what from when.

A *premises* is whatever fees are billed to: a room (房屋) in a building, unit and floor,
or a parking space (车位). Areas are never edited in place: a change is a new
``premises_area`` row from its date, and bills it touches are adjusted (hub/billing).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from hub.models import ts_field, utcnow

_ID = BigInteger().with_variant(Integer, "sqlite")
FIRST_DAY = date(2000, 1, 1)  # "from the beginning": the area a premises was registered with


class PremisesKind(StrEnum):
    ROOM = "room"
    SPACE = "space"  # a parking space


class Use(StrEnum):
    RESIDENCE = "residence"  # 住宅
    SHOP = "shop"  # 商铺
    OFFICE = "office"  # 办公
    PARKING = "parking"  # 车位


class State(StrEnum):
    VACANT = "vacant"  # 空置
    OCCUPIED = "occupied"  # 入住
    DECORATING = "decorating"  # 装修


class Role(StrEnum):
    OWNER = "owner"  # 业主
    RESIDENT = "resident"  # 住户 (family)
    TENANT = "tenant"  # 租户


class Building(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("site_id", "code", name="uq_building_site_code"),)
    id: int | None = Field(default=None, sa_column=Column(_ID, primary_key=True))
    site_id: str = Field(foreign_key="site.id", max_length=64)
    code: str = Field(max_length=16)  # "1", "A"
    name: str = Field(default="", max_length=64)  # "1栋"
    floors: int = Field(default=0)
    created_at: datetime = ts_field(nullable=False, default=utcnow)


class Premises(SQLModel, table=True):
    """A room or a parking space: what a bill is for."""

    __tablename__: ClassVar[Any] = "premises"
    __table_args__ = (
        UniqueConstraint("site_id", "code", name="uq_premises_site_code"),
        Index("ix_premises_building", "building_id", "unit", "floor"),
        CheckConstraint("built_area > 0", name="ck_premises_built_area"),
        CheckConstraint(
            "interior_area > 0 AND interior_area <= built_area", name="ck_premises_interior_area"
        ),
    )
    id: int | None = Field(default=None, sa_column=Column(_ID, primary_key=True))
    site_id: str = Field(foreign_key="site.id", max_length=64)
    kind: str = Field(max_length=8)  # PremisesKind
    code: str = Field(max_length=32)  # "1-2-0301" (building-unit-room) or "P-B1-017"
    building_id: int | None = Field(
        default=None, sa_column=Column(_ID, ForeignKey("building.id"), nullable=True)
    )
    unit: str = Field(default="", max_length=16)
    floor: int | None = None
    number: str = Field(default="", max_length=16)  # "0301"
    use: str = Field(max_length=16)  # Use
    state: str = Field(max_length=16)  # State
    # the current areas (m²); their history with dates is premises_area
    built_area: Decimal = Field(sa_column=Column(Numeric(10, 2), nullable=False))
    interior_area: Decimal = Field(sa_column=Column(Numeric(10, 2), nullable=False))
    created_at: datetime = ts_field(nullable=False, default=utcnow)


class PremisesArea(SQLModel, table=True):
    """The areas of a premises from a date on; the first row is the area as registered."""

    __tablename__: ClassVar[Any] = "premises_area"
    __table_args__ = (
        UniqueConstraint("premises_id", "effective_from", name="uq_premises_area_from"),
        CheckConstraint("built_area > 0", name="ck_premises_area_built"),
        CheckConstraint(
            "interior_area > 0 AND interior_area <= built_area", name="ck_premises_area_interior"
        ),
    )
    id: int | None = Field(default=None, sa_column=Column(_ID, primary_key=True))
    premises_id: int = Field(sa_column=Column(_ID, ForeignKey("premises.id"), nullable=False))
    effective_from: date = Field(sa_column=Column(Date, nullable=False))
    built_area: Decimal = Field(sa_column=Column(Numeric(10, 2), nullable=False))
    interior_area: Decimal = Field(sa_column=Column(Numeric(10, 2), nullable=False))
    reason: str = Field(default="", max_length=200)
    recorded_by: str = Field(max_length=64)
    recorded_at: datetime = ts_field(nullable=False, default=utcnow)


class Person(SQLModel, table=True):
    """An owner, resident or tenant. Kept minimal: a name, a phone for reminders, and of an
    ID number only its last four characters and a keyed hash (to recognise the same person
    in an import), never the number itself."""

    __table_args__ = (Index("ix_person_site_phone", "site_id", "phone"),)
    id: int | None = Field(default=None, sa_column=Column(_ID, primary_key=True))
    site_id: str = Field(foreign_key="site.id", max_length=64)
    name: str = Field(max_length=64)
    phone: str = Field(default="", max_length=20)
    id_last4: str = Field(default="", max_length=4)
    id_hash: str = Field(default="", max_length=64, index=True)
    username: str | None = Field(default=None, max_length=64, index=True)  # an owner account
    wechat_openid: str | None = Field(default=None, max_length=64)  # for reminders (WeChat)
    created_at: datetime = ts_field(nullable=False, default=utcnow)


class Occupancy(SQLModel, table=True):
    """A person's tie to a premises from a date until a date (None: still). The owner pays,
    unless a tenant is marked the payer for their dates."""

    __table_args__ = (
        Index("ix_occupancy_premises", "premises_id", "role", "start"),
        Index("ix_occupancy_person", "person_id"),
        CheckConstraint("until IS NULL OR until > start", name="ck_occupancy_dates"),
    )
    id: int | None = Field(default=None, sa_column=Column(_ID, primary_key=True))
    premises_id: int = Field(sa_column=Column(_ID, ForeignKey("premises.id"), nullable=False))
    person_id: int = Field(sa_column=Column(_ID, ForeignKey("person.id"), nullable=False))
    role: str = Field(max_length=16)  # Role
    start: date = Field(sa_column=Column(Date, nullable=False))
    until: date | None = Field(default=None, sa_column=Column(Date, nullable=True))  # first day not
    payer: bool = False  # a tenant who pays the fees of its dates
    recorded_by: str = Field(max_length=64)
    recorded_at: datetime = ts_field(nullable=False, default=utcnow)
