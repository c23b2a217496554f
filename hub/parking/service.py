"""Parking at the hub: the state edges decide from, and the sessions their records make.

Services take the caller's session and never commit: the API's unit of work or ingest's
batch commits (a payment notification credits a session in the same transaction that
marks its order paid).

How records reconcile into sessions (protocols/PARKING.md has the table):
- an entry that opened makes or completes the session; any other session of the same
  plate still inside with an earlier entry is closed as ``no_exit`` (the car left unseen);
- an exit that opened closes the session (made from the exit alone if the entry never came:
  ``no_entry``); an entry arriving after its exit fills the entry and keeps it exited;
- a booth payment adds to the session's booth total; a correction replaces its plate;
- an online payment adds to its online total; what was paid beyond the fee (an online
  payment the offline edge did not know of, then paid again at the booth) shows as
  ``overpaid`` in reports: a refund to make, never a second charge kept silently.

What an edge names must be its own: a record for a lot its gateway does not run at the
topic's site, or naming another lot's session, is refused whole (a dead letter); an ask
about one is answered with no payments.
"""

from __future__ import annotations

import calendar
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import update
from sqlmodel import Session, col, select

from hub.models import Gateway, Site
from hub.parking.models import (
    ParkingChange,
    ParkingListEntry,
    ParkingLot,
    ParkingPass,
    ParkingRecord,
    ParkingSession,
    ParkingSync,
    SessionStatus,
)
from hub.payments.models import PaymentOrder, PaymentStatus
from hub.payments.service import register_on_paid
from protocols.mqtt import Topic
from protocols.parking import Quote, parse_rule, quote
from protocols.parking.messages import (
    Action,
    Answer,
    Ask,
    Change,
    ChangeKind,
    Lease,
    ListEntry,
    ListKind,
    Paid,
    ParkRecord,
    Pass,
    Policy,
    RecordKind,
    Sync,
    Synced,
)

log = logging.getLogger(__name__)
SHANGHAI = ZoneInfo("Asia/Shanghai")
SUBJECT_SESSION = "parking_session"
SUBJECT_PASS = "monthly_pass"


class ParkingError(Exception):
    """A request the parking rules refuse (unknown lot, no such session, ...)."""


def new_id() -> str:
    return uuid.uuid4().hex


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def from_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


# -- the lot's state and its versions -----------------------------------------------------------
def get_lot(s: Session, lot_id: str, *, lock: bool = False) -> ParkingLot:
    lot = s.get(ParkingLot, lot_id, with_for_update=lock, populate_existing=lock)
    if lot is None:
        raise ParkingError(f"no parking lot {lot_id!r}")
    return lot


def create_lot(
    s: Session, lot_id: str, site_id: str, gateway_id: str, policy: Policy, name: str = ""
) -> ParkingLot:
    parse_rule(policy.rule, "policy.rule")
    if s.get(ParkingLot, lot_id) is not None:
        raise ParkingError(f"lot {lot_id!r} exists")
    if s.get(Site, site_id) is None:
        s.add(Site(id=site_id, name=site_id))  # a lot may be set up before its edge is seen
    lot = ParkingLot(id=lot_id, site_id=site_id, gateway_id=gateway_id, name=name)
    s.add(lot)
    s.add(ParkingSync(lot_id=lot_id))
    s.flush()
    set_policy(s, lot_id, policy)
    return lot


def _change(s: Session, lot_id: str, kind: ChangeKind, key: str, value: Any) -> int:
    """Bump the lot's version (row locked: one writer at a time) and log the change."""
    lot = get_lot(s, lot_id, lock=True)
    lot.version += 1
    s.add(ParkingChange(lot_id=lot_id, version=lot.version, kind=kind, key=key, value=value))
    s.flush()
    return lot.version


def set_policy(s: Session, lot_id: str, policy: Policy) -> int:
    parse_rule(policy.rule, "policy.rule")
    value = policy.model_dump(mode="json")
    get_lot(s, lot_id).policy = value
    return _change(s, lot_id, ChangeKind.POLICY, "policy", value)


def _pass_msg(p: ParkingPass) -> Pass:
    return Pass(
        id=p.id, plate=p.plate, card=p.card, lease=Lease(p.lease), start=ms(p.start), end=ms(p.end)
    )


def put_pass(s: Session, p: ParkingPass) -> int:
    if p.end <= p.start:
        raise ParkingError("a pass must end after it starts")
    if not (p.plate or p.card):
        raise ParkingError("a pass needs a plate or a card")
    p.updated_at = utcnow()
    s.add(p)
    s.flush()
    return _change(s, p.lot_id, ChangeKind.PASS, p.id, _pass_msg(p).model_dump(mode="json"))


def delete_pass(s: Session, lot_id: str, pass_id: str) -> int:
    p = s.get(ParkingPass, pass_id)
    if p is None or p.lot_id != lot_id:
        raise ParkingError(f"no pass {pass_id!r} in lot {lot_id!r}")
    s.delete(p)
    return _change(s, lot_id, ChangeKind.PASS, pass_id, None)


def put_list_entry(s: Session, e: ParkingListEntry) -> int:
    s.add(e)
    s.flush()
    return _change(s, e.lot_id, ChangeKind.LIST, e.id, _list_msg(e).model_dump(mode="json"))


def _list_msg(e: ParkingListEntry) -> ListEntry:
    return ListEntry(
        id=e.id,
        plate=e.plate,
        kind=ListKind(e.kind),
        start=ms(e.start),
        end=ms(e.end) if e.end else None,
        note=e.note,
    )


def extend_pass(
    s: Session, lot_id: str, plate: str, months: int, owner: str, now: datetime
) -> ParkingPass:
    """A monthly pass bought or extended: new end = max(end, now) + ``months`` months."""
    p = s.exec(
        select(ParkingPass).where(
            ParkingPass.lot_id == lot_id, ParkingPass.plate == plate, ParkingPass.lease == "monthly"
        )
    ).first()
    if p is None:
        p = ParkingPass(
            id=uuid.uuid4().hex, lot_id=lot_id, plate=plate, start=now, end=now, owner=owner
        )
    p.end = add_months(max(p.end, now), months)
    put_pass(s, p)
    return p


def add_months(at: datetime, months: int) -> datetime:
    """Calendar months in Shanghai time; the 31st becomes the month's last day."""
    local = at.astimezone(SHANGHAI)
    m = local.month - 1 + months
    year, month = local.year + m // 12, m % 12 + 1
    day = min(local.day, calendar.monthrange(year, month)[1])
    return local.replace(year=year, month=month, day=day).astimezone(UTC)


def snapshot(s: Session, lot: ParkingLot) -> Sync:
    changes: list[Change] = [Change(kind=ChangeKind.POLICY, key="policy", value=lot.policy)]
    for p in s.exec(select(ParkingPass).where(ParkingPass.lot_id == lot.id)):
        changes.append(
            Change(kind=ChangeKind.PASS, key=p.id, value=_pass_msg(p).model_dump(mode="json"))
        )
    for e in s.exec(select(ParkingListEntry).where(ParkingListEntry.lot_id == lot.id)):
        value = _list_msg(e).model_dump(mode="json")
        changes.append(Change(kind=ChangeKind.LIST, key=e.id, value=value))
    for paid in _open_session_payments(s, lot.id):
        changes.append(
            Change(kind=ChangeKind.PAID, key=paid.id, value=paid.model_dump(mode="json"))
        )
    return Sync(lot=lot.id, version=max(1, lot.version), base=None, changes=tuple(changes))


def changes_since(s: Session, lot: ParkingLot, base: int) -> Sync:
    """Changes after ``base``, or a snapshot when the edge holds nothing or too old a base."""
    if base <= 0:
        return snapshot(s, lot)
    rows = s.exec(
        select(ParkingChange)
        .where(ParkingChange.lot_id == lot.id, col(ParkingChange.version) > base)
        .order_by(col(ParkingChange.version))
    ).all()
    if len(rows) != lot.version - base:  # the log was pruned: start over
        return snapshot(s, lot)
    changes = tuple(Change(kind=ChangeKind(r.kind), key=r.key, value=r.value) for r in rows)
    return Sync(lot=lot.id, version=lot.version, base=base, changes=changes)


def _open_session_payments(s: Session, lot_id: str) -> list[Paid]:
    """Online payments of cars still inside: what an edge needs to open the exit."""
    rows = s.exec(
        select(PaymentOrder, ParkingSession)
        .join(ParkingSession, col(ParkingSession.id) == col(PaymentOrder.subject_id))
        .where(
            PaymentOrder.subject_kind == SUBJECT_SESSION,
            PaymentOrder.status == PaymentStatus.PAID,
            ParkingSession.lot_id == lot_id,
            ParkingSession.status == SessionStatus.INSIDE,
        )
    ).all()
    return [_paid(o, sess.plate or "?") for o, sess in rows]


def _paid(order: PaymentOrder, plate: str) -> Paid:
    assert order.paid_at is not None
    return Paid(
        id=order.id,
        session=order.subject_id,
        plate=plate,
        fen=order.amount_fen,
        at=ms(order.paid_at),
    )


# -- from the edge -----------------------------------------------------------------------------
# Whatever an edge names (a lot, a session) must be its own: the lot run by the gateway
# that sent the message, at the site it speaks for, and the session one of that lot's.
# Session ids reach the public through quotes, so knowing one proves nothing.
def _own_lot(s: Session, topic: Topic, lot_id: str) -> ParkingLot | str:
    """The lot, if the sending gateway runs it at the topic's site; otherwise why not."""
    lot = s.get(ParkingLot, lot_id)
    if lot is None:
        return f"unknown lot {lot_id!r}"
    if lot.gateway_id != topic.gateway:
        return f"lot {lot_id!r} is run by {lot.gateway_id!r}, not {topic.gateway!r}"
    if lot.site_id != topic.site:
        return f"lot {lot_id!r} is at site {lot.site_id!r}, not {topic.site!r}"
    gw = s.get(Gateway, topic.gateway)
    if gw is not None and gw.site_id != topic.site:
        # ingest checks the site of sequenced messages only, not of asks and synced
        return f"gateway {topic.gateway!r} belongs to site {gw.site_id!r}, not {topic.site!r}"
    return lot


def _not_in_lot(sess: ParkingSession | None, lot_id: str) -> str | None:
    if sess is None or sess.lot_id == lot_id:
        return None
    return f"session {sess.id!r} is in lot {sess.lot_id!r}, not {lot_id!r}"


def on_synced(s: Session, topic: Topic, msg: Synced) -> None:
    lot = _own_lot(s, topic, msg.lot)
    if isinstance(lot, str):
        log.warning("synced from %s ignored: %s", topic.gateway, lot)
        return
    st = s.get(ParkingSync, lot.id, with_for_update=True, populate_existing=True)
    assert st is not None
    if msg.version != st.confirmed:
        st.confirmed, st.confirmed_at = msg.version, utcnow()
        st.attempts = 0
    if msg.version < lot.version:
        st.sent_at = None  # behind (or its state was lost): send again at once


def on_birth(s: Session, gateway: str) -> None:
    """An edge (re)connected: send its lots' state again at once if it is behind.

    Only lots at the gateway's own site: one set up with another site's id is not its lot.
    """
    gw = s.get(Gateway, gateway)
    if gw is None:
        return
    lots = select(ParkingLot.id).where(
        ParkingLot.gateway_id == gateway, ParkingLot.site_id == gw.site_id
    )
    s.execute(update(ParkingSync).where(col(ParkingSync.lot_id).in_(lots)).values(sent_at=None))


def answer(s: Session, topic: Topic, ask: Ask) -> Answer:
    """The paid orders of the session asked about; none if it is not the asker's session.

    An ask cannot be refused (the car waits at the exit for an answer): one about another
    lot, or another lot's session, is answered with no payments and logged.
    """
    nothing = Answer(id=ask.id, session=ask.session)
    lot = _own_lot(s, topic, ask.lot)
    if isinstance(lot, str):
        log.warning("ask %s from %s answered with no payments: %s", ask.id, topic.gateway, lot)
        return nothing
    sess = s.get(ParkingSession, ask.session)
    if sess is None:
        return nothing  # its records have not arrived: nothing can have been paid online
    refused = _not_in_lot(sess, lot.id)
    if refused:
        log.warning("ask %s from %s answered with no payments: %s", ask.id, topic.gateway, refused)
        return nothing
    orders = s.exec(
        select(PaymentOrder).where(
            PaymentOrder.subject_kind == SUBJECT_SESSION,
            PaymentOrder.subject_id == sess.id,
            PaymentOrder.status == PaymentStatus.PAID,
        )
    ).all()
    return Answer(id=ask.id, session=ask.session, paid=tuple(_paid(o, ask.plate) for o in orders))


def apply_record(s: Session, topic: Topic, r: ParkRecord) -> str | None:
    """Fold one (de-duplicated) record into its session and keep it; or why not.

    Refused, and not kept: a record for a lot the sender does not run, or naming a
    session of another lot (whatever its kind: a refusal kept under that session's id
    would still be counted as that session's).
    """
    lot = _own_lot(s, topic, r.lot)
    if isinstance(lot, str):
        return lot
    found = s.get(ParkingSession, r.session, with_for_update=True)
    refused = _not_in_lot(found, lot.id)
    if refused:
        return refused
    at = from_ms(r.at)
    s.add(
        ParkingRecord(
            lot_id=r.lot,
            gateway_id=topic.gateway,
            seq=r.seq,
            session_id=r.session,
            kind=r.kind,
            action=r.action,
            at=at,
            plate=r.plate,
            paid_fen=r.paid_fen if r.kind is RecordKind.BOOTH_PAYMENT else 0,
            operator=r.operator,
            body=r.model_dump(mode="json", exclude={"v", "gw", "seq", "hist"}),
        )
    )
    if r.kind is RecordKind.ENTRY and r.action is Action.OPEN:
        sess = found or _new_session(s, r)
        sess.entry_at, sess.entry_gate, sess.lease = at, r.gate, r.lease
        sess.plate, sess.card = sess.plate or r.plate, sess.card or r.card
        sess.no_entry = False
        _close_unseen_exits(s, sess)
    elif r.kind is RecordKind.EXIT and r.action is Action.OPEN:
        sess = found or _new_session(s, r)
        sess.status = SessionStatus.EXITED
        sess.exit_at, sess.exit_gate = at, r.gate
        sess.fee_fen, sess.unpaid_fen = r.fee_fen, r.unpaid_fen
        sess.plate, sess.card = sess.plate or r.plate, sess.card or r.card
        if sess.entry_at is None:
            if r.entry_at is not None:
                sess.entry_at = from_ms(r.entry_at)
            else:
                sess.no_entry = True
    elif r.kind is RecordKind.BOOTH_PAYMENT:
        sess = found or _new_session(s, r)
        sess.paid_booth_fen += r.paid_fen
    elif r.kind is RecordKind.CORRECTION:
        sess = found or _new_session(s, r)
        sess.corrected_from, sess.plate = r.corrected_from, r.plate
    else:
        return None  # refusals and held cars: records only
    sess.updated_at = utcnow()
    return None


def _new_session(s: Session, r: ParkRecord) -> ParkingSession:
    sess = ParkingSession(id=r.session, lot_id=r.lot, plate=r.plate, card=r.card)
    s.add(sess)
    s.flush()
    return sess


def _close_unseen_exits(s: Session, sess: ParkingSession) -> None:
    if not sess.plate or sess.entry_at is None:
        return
    for old in s.exec(
        select(ParkingSession).where(
            ParkingSession.lot_id == sess.lot_id,
            ParkingSession.plate == sess.plate,
            ParkingSession.status == SessionStatus.INSIDE,
            col(ParkingSession.id) != sess.id,
            col(ParkingSession.entry_at) < sess.entry_at,
        )
    ):
        old.status = SessionStatus.NO_EXIT
        old.updated_at = utcnow()
        log.info("session %s (%s) closed: the car entered again", old.id, old.plate)


# -- quotes and payments ---------------------------------------------------------------------
def active_session(s: Session, lot_id: str, plate: str) -> ParkingSession:
    sess = s.exec(
        select(ParkingSession)
        .where(
            ParkingSession.lot_id == lot_id,
            ParkingSession.plate == plate,
            ParkingSession.status == SessionStatus.INSIDE,
        )
        .order_by(col(ParkingSession.entry_at).desc())
    ).first()
    if sess is None or sess.entry_at is None:
        raise ParkingError(f"no car {plate} inside lot {lot_id}")
    return sess


def session_quote(s: Session, lot: ParkingLot, sess: ParkingSession, at: datetime) -> Quote:
    """What the session owes at ``at``, with the lot's rule and everything paid so far."""
    if sess.entry_at is None:
        raise ParkingError("the session has no entry time")
    policy = Policy.model_validate(lot.policy)
    orders = s.exec(
        select(PaymentOrder).where(
            PaymentOrder.subject_kind == SUBJECT_SESSION,
            PaymentOrder.subject_id == sess.id,
            PaymentOrder.status == PaymentStatus.PAID,
        )
    ).all()
    payments = [(o.paid_at, o.amount_fen) for o in orders if o.paid_at is not None]
    booth = s.exec(
        select(ParkingRecord).where(
            ParkingRecord.session_id == sess.id,
            ParkingRecord.lot_id == sess.lot_id,  # a record another lot's edge made is not ours
            ParkingRecord.kind == RecordKind.BOOTH_PAYMENT,
        )
    ).all()
    payments += [(b.at, b.paid_fen) for b in booth]
    return quote(
        parse_rule(policy.rule, f"lot {lot.id} policy"),
        sess.entry_at,
        max(at, sess.entry_at),
        [(max(t, sess.entry_at), fen) for t, fen in payments],
        grace_minutes=policy.grace_minutes,
    )


def credit_session(s: Session, order: PaymentOrder) -> None:
    """on_paid for parking sessions: count it and tell the edge (a PAID change)."""
    sess = s.get(ParkingSession, order.subject_id, with_for_update=True)
    if sess is None:
        raise ParkingError(f"payment {order.id} for unknown session {order.subject_id}")
    sess.paid_online_fen += order.amount_fen
    sess.updated_at = utcnow()
    paid = _paid(order, sess.plate or "?")
    _change(s, sess.lot_id, ChangeKind.PAID, order.id, paid.model_dump(mode="json"))


def credit_pass(s: Session, order: PaymentOrder) -> None:
    """on_paid for monthly passes: extend (or create) the pass; the change reaches the edge."""
    d = order.details
    assert order.paid_at is not None
    extend_pass(s, d["lot"], d["plate"], int(d["months"]), order.payer or "", order.paid_at)


def prune_changes(s: Session, keep: timedelta = timedelta(days=30)) -> None:
    """Old change log rows: an edge further behind than this gets a snapshot instead."""
    cutoff = utcnow() - keep
    for row in s.exec(select(ParkingChange).where(col(ParkingChange.created_at) < cutoff)):
        s.delete(row)


_registrations = 0


def register_payments() -> Callable[[], None]:
    """Credit parking sessions and passes when their orders are paid; returns the undo.

    Counted: two apps in one process (tests, embedded set-ups) register the handlers once,
    so an order never credits its session twice.
    """
    global _registrations
    if _registrations == 0:
        _undo.extend(
            [
                register_on_paid(SUBJECT_SESSION, credit_session),
                register_on_paid(SUBJECT_PASS, credit_pass),
            ]
        )
    _registrations += 1
    done = False

    def unregister() -> None:
        global _registrations
        nonlocal done
        if done:
            return
        done = True
        _registrations -= 1
        if _registrations == 0:
            while _undo:
                _undo.pop()()

    return unregister


_undo: list[Callable[[], None]] = []
