"""What the API returns: public models, never table rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from protocols.mqtt import Ident, Scalar


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"


class UserPublic(BaseModel):
    username: str
    role: str
    sites: list[str]
    devices: list[str]


class SitePublic(BaseModel):
    id: str
    name: str


class GatewayPublic(BaseModel):
    id: str
    site_id: str
    online: bool
    last_seen: datetime | None
    agent: str
    bdseq: int
    messages: int
    duplicates: int
    gaps: int  # sequence numbers missing (lost, or not yet arrived)
    dropped: int  # sequence numbers its outbox announced it dropped (deliberate)
    bad: int
    status: dict[str, Any] | None = None  # its last status: agent metrics, device states
    status_at: datetime | None = None


class DevicePublic(BaseModel):
    gateway_id: str
    device_id: str
    site_id: str
    profile: str
    online: bool | None
    last_seen: datetime | None
    points: list[dict[str, Any]]


class LatestPublic(BaseModel):
    point: str
    value: float
    unit: str = ""
    ts: datetime


class HistoryPoint(BaseModel):
    ts: datetime
    value: float  # mean over the bucket
    min: float
    max: float
    count: int


class DeadLetterPublic(BaseModel):
    id: int
    received_at: datetime
    topic: str
    gateway_id: str | None
    reason: str
    payload: str  # as text, undecodable bytes replaced


class CommandCreate(BaseModel):
    gateway: Ident
    device: Ident
    point: str = Field(min_length=1, max_length=64)
    value: Scalar
    ttl_s: int = Field(60, ge=1, le=86400)

    @field_validator("value", mode="before")
    @classmethod
    def _fits_64_bits(cls, v: Any) -> Any:
        # JSON columns and the edge's JSON hold 64-bit integers; wider is refused, not rounded
        if type(v) is int and not -(2**63) <= v < 2**63:
            raise ValueError("an integer value must fit in 64 bits")
        return v


class CommandPublic(BaseModel):
    id: str
    gateway_id: str
    device_id: str
    point: str
    value: Any
    status: str
    detail: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    acked_at: datetime | None
