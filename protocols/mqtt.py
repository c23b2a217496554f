"""The MQTT contract between edge and hub, version 1 (see protocols/README.md).

Topics:   wuye/v1/{site}/{gateway}/{kind}[/{device}]
Payloads: JSON objects with ``"v": 1``. Every message that carries data (data, event,
          ack) carries the gateway id and a per-gateway sequence number ``seq`` that is
          never reused, so the hub can de-duplicate and see gaps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from protocols.errors import MessageError

ROOT = "wuye/v1"
VERSION = 1
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_ID = re.compile(ID_PATTERN)
Ident = Annotated[str, Field(pattern=ID_PATTERN)]
# a profile's point name (protocols/profile.py): safe as a field key in every store
PointName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
# The ranges the contract states (protocols/README.md). Every number is exactly its JSON
# type: an integer field refuses true/false, 1.0 and "1"; nothing is coerced.
MAX_SEQ = 2**53 - 1  # seq and bdseq: exact in every JSON reader, far beyond any site's life
MAX_MILLIS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant a date holds
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Float = Annotated[float, Strict()]  # an integer is a valid float; a string is not
Millis = Annotated[int, Strict(), Field(ge=0, le=MAX_MILLIS)]
SeqNo = Annotated[int, Strict(), Field(ge=1, le=MAX_SEQ)]
BdSeq = Annotated[int, Strict(), Field(ge=0, le=MAX_SEQ)]
Scalar = Annotated[int, Strict()] | Annotated[float, Strict()] | Annotated[bool, Strict()]


class Kind(StrEnum):
    """The last-but-one topic level; says who publishes and with which QoS/retain."""

    BIRTH = "birth"  # edge -> hub, QoS 1, retained
    DEATH = "death"  # edge -> hub, the MQTT will (and clean-shutdown), QoS 1, retained
    DATA = "data"  # edge -> hub, QoS 1, sequenced, per device
    EVENT = "event"  # edge -> hub, QoS 1, sequenced, per device or gateway
    ACK = "ack"  # edge -> hub, QoS 1, sequenced: result of a command
    STATUS = "status"  # edge -> hub, QoS 0, retained: health and metrics snapshot
    CMD = "cmd"  # hub -> edge, QoS 1
    # parking (protocols/parking/messages.py)
    PARK = "park"  # edge -> hub, QoS 1, sequenced: entries, exits, booth payments
    SYNC = "sync"  # hub -> edge, QoS 1: a lot's passes, lists, policy and payments
    SYNCED = "synced"  # edge -> hub, QoS 1: the state version the edge now holds
    ASK = "ask"  # edge -> hub, QoS 1: has this session been paid?
    ANSWER = "answer"  # hub -> edge, QoS 1: the payments of the session asked about
    COMMITTED = "committed"  # hub -> edge, QoS 1: what the hub has committed (watermark)


def check_id(value: str, what: str) -> str:
    if not _ID.match(value):
        raise MessageError(f"{what} {value!r} must match {ID_PATTERN}")
    return value


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed v1 topic; construction validates every level."""

    site: str
    gateway: str
    kind: Kind
    device: str | None = None

    def __post_init__(self) -> None:
        check_id(self.site, "site")
        check_id(self.gateway, "gateway")
        if self.device is not None:
            check_id(self.device, "device")
            if self.kind not in (Kind.DATA, Kind.EVENT):
                raise MessageError(f"{self.kind} topics have no device level")
        elif self.kind is Kind.DATA:
            raise MessageError("data topics need a device level")

    def __str__(self) -> str:
        tail = f"/{self.device}" if self.device else ""
        return f"{ROOT}/{self.site}/{self.gateway}/{self.kind}{tail}"

    @classmethod
    def parse(cls, topic: str) -> Topic:
        parts = topic.split("/")
        if len(parts) not in (5, 6) or "/".join(parts[:2]) != ROOT:
            raise MessageError(f"topic {topic!r} is not a {ROOT} topic")
        try:
            kind = Kind(parts[4])
        except ValueError as exc:
            raise MessageError(f"topic {topic!r}: unknown kind {parts[4]!r}") from exc
        return cls(parts[2], parts[3], kind, parts[5] if len(parts) == 6 else None)


def gateway_filter(site: str, gateway: str) -> str:
    """Everything one gateway publishes or receives (what its ACL allows)."""
    return f"{ROOT}/{site}/{gateway}/#"


ALL_FROM_EDGES = f"{ROOT}/+/+/#"


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    v: Literal[1] = 1

    def dumps(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))


class Sequenced(_Message):
    gw: Ident
    seq: SeqNo
    ts: Millis
    hist: Bool = False  # replayed from the outbox after an outage or restart


class Data(Sequenced):
    """One poll of one device: every point that decoded, and why the others did not."""

    dev: Ident
    values: dict[PointName, Scalar]
    errors: dict[PointName, Annotated[str, Field(max_length=500)]] = Field(default_factory=dict)


class EventKind(StrEnum):
    DEVICE_ONLINE = "device_online"
    DEVICE_OFFLINE = "device_offline"
    OUTBOX_DROPPED = "outbox_dropped"  # capacity reached; detail says how many, which seqs


class Event(Sequenced):
    dev: Ident | None = None
    event: EventKind
    detail: dict[str, Any] = Field(default_factory=dict)


class AckStatus(StrEnum):
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"
    REJECTED = "rejected"  # malformed or not allowed: unknown device/point, read-only point


class Ack(Sequenced):
    id: Annotated[str, Field(min_length=1, max_length=64)]
    status: AckStatus
    detail: str = ""


class PointInfo(_Message):
    name: PointName
    unit: str = ""
    kind: str
    type: str
    writable: Bool = False


class DeviceInfo(_Message):
    id: Ident
    profile: str
    bus: str
    unit: Annotated[int, Strict(), Field(ge=0, le=255)]
    interval_s: Annotated[float, Strict(), Field(gt=0, le=86400)]
    points: tuple[PointInfo, ...]


class Birth(_Message):
    """Published (retained) on every connect, before any data of that connection."""

    gw: Ident
    site: Ident
    bdseq: BdSeq  # matches the will (Death) set for this connection
    stream: Annotated[str, Field(min_length=1, max_length=64)]  # the outbox's id: a new one
    # means sequence numbers restarted
    ts: Millis
    agent: str
    devices: tuple[DeviceInfo, ...]


class Death(_Message):
    gw: Ident
    bdseq: BdSeq


class Write(_Message):
    """Set a writable point to a value (engineering units)."""

    op: Literal["write"] = "write"
    dev: Ident
    point: str
    value: Scalar


class Command(_Message):
    id: Annotated[str, Field(min_length=1, max_length=64)]
    ts: Millis
    expires: Millis  # the edge refuses to act after this time (ack status expired)
    action: Write


class Status(_Message):
    gw: Ident
    ts: Millis
    metrics: dict[Annotated[str, Field(max_length=128)], Scalar]
    devices: dict[Ident, Literal["online", "offline", "unknown"]]


MAX_GAPS = 100  # gaps a committed message lists at most


class Committed(_Message):
    """hub -> edge: how much of the gateway's stream the hub has committed to its database.

    Every ``seq`` at or below ``seq`` is held by the hub (applied, a duplicate, a dead letter
    or announced as dropped): the edge may forget those, and only those. ``max`` is the
    highest seq the hub has seen; ``gaps`` the runs above ``seq`` it misses (oldest first,
    at most :data:`MAX_GAPS`, each older than the hub's grace), for the edge to send again.
    """

    stream: Annotated[str, Field(min_length=1, max_length=64)]
    seq: Annotated[int, Strict(), Field(ge=0, le=MAX_SEQ)]
    max: Annotated[int, Strict(), Field(ge=0, le=MAX_SEQ)]
    gaps: Annotated[tuple[tuple[SeqNo, SeqNo], ...], Field(max_length=MAX_GAPS)] = ()
    ts: Millis


_BY_KIND: dict[Kind, type[BaseModel]] = {
    Kind.BIRTH: Birth,
    Kind.DEATH: Death,
    Kind.DATA: Data,
    Kind.EVENT: Event,
    Kind.ACK: Ack,
    Kind.STATUS: Status,
    Kind.CMD: Command,
    Kind.COMMITTED: Committed,
}


def _model_of(kind: Kind) -> type[BaseModel]:
    if kind not in _BY_KIND:
        # imported on first use: the parking messages build on this module's types
        from protocols.parking import messages as pm

        _BY_KIND.update(
            {
                Kind.PARK: pm.ParkRecord,
                Kind.SYNC: pm.Sync,
                Kind.SYNCED: pm.Synced,
                Kind.ASK: pm.Ask,
                Kind.ANSWER: pm.Answer,
            }
        )
    return _BY_KIND[kind]


def parse(topic: str, payload: bytes) -> tuple[Topic, BaseModel]:
    """Topic and typed message of one MQTT publish; MessageError says what is wrong.

    A gateway publishing under another gateway's id (``gw`` field differing from the
    topic) is refused here, whatever the broker's ACL let through.
    """
    t = Topic.parse(topic)
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"payload is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise MessageError("payload is not a JSON object")
    if type(obj.get("v")) is not int or obj["v"] != VERSION:  # true == 1 in Python
        raise MessageError(f"unknown schema version {obj.get('v')!r}")
    try:
        msg = _model_of(t.kind).model_validate(obj)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise MessageError(f"{where}: {err['msg']}") from exc
    gw = getattr(msg, "gw", t.gateway)
    if gw != t.gateway:
        raise MessageError(f"gateway {gw!r} published on {t.gateway!r}'s topic")
    dev = getattr(msg, "dev", None)
    if t.device is not None and dev != t.device:
        raise MessageError(f"device {dev!r} published on {t.device!r}'s topic")
    return t, msg
