"""Parking over the v1 MQTT contract: what the edge records, and the state the hub syncs.

Topics (``wuye/v1/{site}/{gateway}/{kind}``, see protocols/README.md):

- ``park``   edge -> hub, sequenced, from the outbox (critical): one :class:`ParkRecord`
             per decision at a gate, booth payment or plate correction.
- ``sync``   hub -> edge: :class:`Sync`, the lot's state as a full snapshot or the changes
             since a version the edge confirmed. Sent again until confirmed.
- ``synced`` edge -> hub: :class:`Synced`, the version the edge holds now (durably).
- ``ask``    edge -> hub: :class:`Ask`, at an exit, "has this session been paid?", when
             the hub is reachable but the edge has not heard of a payment.
- ``answer`` hub -> edge: :class:`Answer` to an ask.

Times are epoch milliseconds (UTC); money is integer fen.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict

from protocols.mqtt import Bool, Ident, Millis, Sequenced

MAX_FEN = 10**12  # ten billion yuan: more than any parking stay, in range of every column
Fen = Annotated[int, Strict(), Field(ge=0, le=MAX_FEN)]
Version = Annotated[int, Strict(), Field(ge=0, le=2**53 - 1)]
Plate = Annotated[str, Field(min_length=1, max_length=16)]
Key = Annotated[str, Field(min_length=1, max_length=64)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Direction(StrEnum):
    IN = "in"
    OUT = "out"


class Action(StrEnum):
    """What the gate did (or was told to do) for a vehicle."""

    OPEN = "open"
    REFUSE = "refuse"
    BOOTH = "booth"  # the booth operator decides (full lot, unpaid, unknown plate)


class Lease(StrEnum):
    MONTHLY = "monthly"
    OWNED = "owned"
    STAFF = "staff"
    FREE = "free"
    RESERVED = "reserved"
    TEMPORARY = "temporary"  # no pass: charged by the lot's fee rule


class RecordKind(StrEnum):
    ENTRY = "entry"  # a vehicle went in (action open) or was turned away (refuse/booth)
    EXIT = "exit"  # a vehicle went out, or was held at the exit
    BOOTH_PAYMENT = "booth_payment"  # paid at the booth, recorded by the edge with the operator
    CORRECTION = "correction"  # a misread plate corrected at the booth


# -- state the hub syncs to the edge ----------------------------------------------------------
class Pass(_Frozen):
    """A vehicle allowed in and out without paying, from ``start`` until ``end``."""

    id: Key
    plate: Plate | None = None
    card: Annotated[str, Field(max_length=32)] | None = None  # IC-card uid, hex
    lease: Lease = Lease.MONTHLY
    start: Millis
    end: Millis


class ListKind(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class ListEntry(_Frozen):
    id: Key
    plate: Plate
    kind: ListKind
    start: Millis = 0
    end: Millis | None = None  # None: no end
    note: str = ""


class OfflineExit(StrEnum):
    """What an exit does for an unpaid temporary car while the hub is unreachable."""

    BOOTH = "booth"  # the booth takes the fee and the edge records it (default)
    OPEN_UNPAID = "open_unpaid"  # let it out, recorded as an unpaid exit to chase later


class Policy(_Frozen):
    """A lot's rules. ``rule`` is a fee rule (protocols.parking.parse_rule validates it)."""

    capacity: Annotated[int, Strict(), Field(ge=0, le=1_000_000)]
    accept_temporary: Bool = True
    when_full: Literal["refuse", "booth"] = "booth"
    offline_exit: OfflineExit = OfflineExit.BOOTH
    grace_minutes: Annotated[int, Strict(), Field(ge=0, le=240)] = 15
    rule: dict[str, Any]
    monthly_fen: Annotated[int, Strict(), Field(ge=1, le=MAX_FEN)] | None = (
        None  # price of a month's pass, if sold
    )


class Paid(_Frozen):
    """A payment the hub took for a session (the edge opens the exit within the grace)."""

    id: Key  # the payment order
    session: Key
    plate: Plate
    fen: Annotated[int, Strict(), Field(ge=1, le=MAX_FEN)]
    at: Millis


class ChangeKind(StrEnum):
    PASS = "pass"
    LIST = "list"
    POLICY = "policy"
    PAID = "paid"


class Change(_Frozen):
    """Put or delete one item of the lot's state; ``key`` is the item's id."""

    kind: ChangeKind
    key: Key
    value: dict[str, Any] | None = None  # None: delete


class Sync(_Frozen):
    """The lot's state: the whole of it (``base`` None) or the changes after ``base``."""

    v: Literal[1] = 1
    lot: Ident
    version: Annotated[int, Strict(), Field(ge=1, le=2**53 - 1)]
    base: Version | None = None
    changes: tuple[Change, ...]


class Synced(_Frozen):
    v: Literal[1] = 1
    gw: Ident
    lot: Ident
    version: Version  # what the edge holds (0: nothing yet)
    ts: Millis


# -- what the edge records ---------------------------------------------------------------------
class ParkRecord(Sequenced):
    """One thing that happened at a lot, made at the edge, durable before the gate moves."""

    lot: Ident
    kind: RecordKind
    session: Key  # the stay; made at the edge on entry (or on an exit with no entry)
    at: Millis
    gate: Ident | None = None
    plate: Plate | None = None
    card: Annotated[str, Field(max_length=32)] | None = None
    action: Action | None = None
    reason: Annotated[str, Field(max_length=500)] = ""
    lease: Lease = Lease.TEMPORARY
    entry_at: Millis | None = None  # on an exit: when the session started, if known
    fee_fen: Fen = 0  # on an exit: the fee of the stay as the edge computed it
    paid_fen: Fen = 0  # on a booth payment: the amount taken; on an exit: all paid
    unpaid_fen: Fen = 0  # on an exit let out unpaid (offline policy): what is owed
    operator: Annotated[str, Field(max_length=64)] | None = None  # booth payments and corrections
    corrected_from: Plate | None = None  # on a correction: the plate as misread


class Ask(_Frozen):
    v: Literal[1] = 1
    gw: Ident
    id: Key
    lot: Ident
    session: Key
    plate: Plate
    ts: Millis


class Answer(_Frozen):
    v: Literal[1] = 1
    id: Key
    session: Key
    paid: tuple[Paid, ...] = ()
