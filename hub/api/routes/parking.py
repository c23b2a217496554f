"""Parking: lots, passes and lists (staff), quotes and payment (visitors), passes (owners),
and reports (finance).

Visitors need no login: they look a car up by plate in one lot, which is rate-limited per
client address so plates cannot be enumerated cheaply; the answer carries the stay and the
fee, nothing about the owner.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from hub.api.deps import CurrentUser, Instant, SessionDep, StaffUser, forbid_unless, not_found
from hub.api.ratelimit import RateLimited
from hub.api.reports import report_response
from hub.api.routes.payments import ChannelsDep
from hub.auth import Role, can_see_site
from hub.models import Gateway, User
from hub.parking import reports
from hub.parking import service as parking
from hub.parking.models import ParkingListEntry, ParkingLot, ParkingPass, ParkingSession
from hub.payments import create_order
from hub.payments.errors import ChannelError, IdempotencyConflict, OrderNotPayable
from hub.payments.service import prepare_payment
from protocols.errors import ConfigError
from protocols.parking.messages import Lease, ListKind, Plate, Policy

router = APIRouter(prefix="/api/v1", tags=["parking"])
Visitor = RateLimited("visitor", per_minute=30)


class LotCreate(BaseModel):
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    site_id: Annotated[str, Field(min_length=1, max_length=64)]
    gateway_id: Annotated[str, Field(min_length=1, max_length=64)]
    name: Annotated[str, Field(max_length=200)] = ""
    policy: Policy


class SyncPublic(BaseModel):
    confirmed: int
    sent: int
    attempts: int
    confirmed_at: datetime | None


class LotPublic(BaseModel):
    id: str
    site_id: str
    gateway_id: str
    name: str
    policy: dict[str, Any]
    version: int
    inside: int
    sync: SyncPublic


class PassCreate(BaseModel):
    plate: Plate | None = None
    card: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    lease: Lease = Lease.MONTHLY
    start: Instant
    end: Instant


class PassPublic(BaseModel):
    id: str
    lot_id: str
    plate: str | None
    card: str | None
    lease: str
    start: datetime
    end: datetime
    owner: str | None


class ListCreate(BaseModel):
    plate: Plate
    kind: ListKind
    start: Instant
    end: Instant | None = None
    note: Annotated[str, Field(max_length=500)] = ""


class SessionPublic(BaseModel):
    id: str
    lot_id: str
    plate: str | None
    corrected_from: str | None
    lease: str
    status: str
    entry_at: datetime | None
    exit_at: datetime | None
    fee_fen: int
    paid_online_fen: int
    paid_booth_fen: int
    unpaid_fen: int
    no_entry: bool


class QuotePublic(BaseModel):
    lot_id: str
    site_id: str
    session: str
    plate: str
    entry_at: datetime
    at: datetime
    total_fen: int
    paid_fen: int
    due_fen: int
    paid_until: datetime | None
    reason: str


class PayRequest(BaseModel):
    plate: Plate
    channel: Annotated[str, Field(max_length=32)] = "sandbox"


class PassPurchase(BaseModel):
    plate: Plate
    months: Annotated[int, Field(ge=1, le=24)]
    channel: Annotated[str, Field(max_length=32)] = "sandbox"


class OrderCreated(BaseModel):
    order_id: str
    amount_fen: int
    status: str
    pay: dict[str, Any]


def _any_lot(session: Session, lot_id: str) -> ParkingLot:
    """Any lot, for visitors (no login)."""
    try:
        return parking.get_lot(session, lot_id)
    except parking.ParkingError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


def _lot(session: Session, user: User, lot_id: str) -> ParkingLot:
    """A lot of the user's sites (staff, and owners where they live); another site's is
    answered as one that does not exist."""
    lot = _any_lot(session, lot_id)
    if user.role == Role.OWNER:
        ours = lot.site_id in (user.sites or [])
    else:
        ours = can_see_site(user, lot.site_id)
    if not ours:
        raise not_found(f"parking lot {lot_id!r}")
    return lot


def _manage(user: User, lot_site: str) -> None:
    forbid_unless(user.role in (Role.HQ_ADMIN, Role.SITE_MANAGER), "managing parking")
    forbid_unless(can_see_site(user, lot_site), f"site {lot_site}")


def _kick(request: Request) -> None:
    dispatcher = getattr(request.app.state, "dispatcher", None)
    if dispatcher is not None:
        dispatcher.kick()  # the edge hears of it now, not at the next round


# -- staff -------------------------------------------------------------------------------------
@router.post("/lots", status_code=status.HTTP_201_CREATED)
def create_lot(
    body: LotCreate, user: StaffUser, session: SessionDep, request: Request
) -> LotPublic:
    _manage(user, body.site_id)
    gateway = session.get(Gateway, body.gateway_id)
    if gateway is not None and gateway.site_id != body.site_id:
        # a lot's changes go to its gateway: never to another site's edge
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"gateway {body.gateway_id} is not at site {body.site_id}",
        )
    try:
        lot = parking.create_lot(
            session, body.id, body.site_id, body.gateway_id, body.policy, body.name
        )
        session.commit()
    except parking.ParkingError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except (ValueError, ConfigError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    _kick(request)
    return _lot_public(session, lot)


@router.get("/lots/{lot_id}")
def get_lot(lot_id: str, user: StaffUser, session: SessionDep) -> LotPublic:
    return _lot_public(session, _lot(session, user, lot_id))


def _lot_public(session: Session, lot: ParkingLot) -> LotPublic:
    from hub.parking.models import ParkingSync, SessionStatus

    st = session.get(ParkingSync, lot.id)
    inside = len(
        session.exec(
            select(ParkingSession.id).where(
                ParkingSession.lot_id == lot.id, ParkingSession.status == SessionStatus.INSIDE
            )
        ).all()
    )
    return LotPublic(
        id=lot.id,
        site_id=lot.site_id,
        gateway_id=lot.gateway_id,
        name=lot.name,
        policy=lot.policy,
        version=lot.version,
        inside=inside,
        sync=SyncPublic(
            confirmed=st.confirmed if st else 0,
            sent=st.sent if st else 0,
            attempts=st.attempts if st else 0,
            confirmed_at=st.confirmed_at if st else None,
        ),
    )


@router.put("/lots/{lot_id}/policy")
def set_policy(
    lot_id: str, body: Policy, user: StaffUser, session: SessionDep, request: Request
) -> LotPublic:
    lot = _lot(session, user, lot_id)
    _manage(user, lot.site_id)
    try:
        parking.set_policy(session, lot_id, body)
    except (ValueError, ConfigError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    session.commit()
    _kick(request)
    return _lot_public(session, lot)


@router.post("/lots/{lot_id}/passes", status_code=status.HTTP_201_CREATED)
def add_pass(
    lot_id: str, body: PassCreate, user: StaffUser, session: SessionDep, request: Request
) -> PassPublic:
    lot = _lot(session, user, lot_id)
    _manage(user, lot.site_id)
    p = ParkingPass(
        id=parking.new_id(),
        lot_id=lot_id,
        plate=body.plate,
        card=body.card,
        lease=body.lease,
        start=body.start,
        end=body.end,
    )
    try:
        parking.put_pass(session, p)
    except parking.ParkingError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    session.commit()
    _kick(request)
    return PassPublic.model_validate(p, from_attributes=True)


@router.delete("/lots/{lot_id}/passes/{pass_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_pass(
    lot_id: str, pass_id: str, user: StaffUser, session: SessionDep, request: Request
) -> None:
    lot = _lot(session, user, lot_id)
    _manage(user, lot.site_id)
    try:
        parking.delete_pass(session, lot_id, pass_id)
    except parking.ParkingError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    session.commit()
    _kick(request)


@router.post("/lots/{lot_id}/lists", status_code=status.HTTP_201_CREATED)
def add_list_entry(
    lot_id: str, body: ListCreate, user: StaffUser, session: SessionDep, request: Request
) -> dict[str, str]:
    lot = _lot(session, user, lot_id)
    _manage(user, lot.site_id)
    e = ParkingListEntry(
        id=parking.new_id(),
        lot_id=lot_id,
        plate=body.plate,
        kind=body.kind,
        start=body.start,
        end=body.end,
        note=body.note,
    )
    parking.put_list_entry(session, e)
    session.commit()
    _kick(request)
    return {"id": e.id}


@router.get("/lots/{lot_id}/sessions")
def sessions(
    lot_id: str,
    user: StaffUser,
    session: SessionDep,
    status_: Annotated[str | None, Query(alias="status")] = None,
    plate: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[SessionPublic]:
    _lot(session, user, lot_id)
    q = select(ParkingSession).where(ParkingSession.lot_id == lot_id)
    if status_:
        q = q.where(ParkingSession.status == status_)
    if plate:
        q = q.where(ParkingSession.plate == plate)
    rows = session.exec(q.order_by(col(ParkingSession.entry_at).desc()).limit(limit)).all()
    return [SessionPublic.model_validate(r, from_attributes=True) for r in rows]


# -- visitors ----------------------------------------------------------------------------------
@router.get("/parking/{lot_id}/quote", dependencies=[Visitor])
def visitor_quote(lot_id: str, plate: str, session: SessionDep) -> QuotePublic:
    """No login: the car's stay and what it owes now."""
    return _quote(session, lot_id, plate)


def _quote(session: Session, lot_id: str, plate: str) -> QuotePublic:
    lot = _any_lot(session, lot_id)
    now = parking.utcnow()
    try:
        sess = parking.active_session(session, lot_id, plate)
        q = parking.session_quote(session, lot, sess, now)
    except parking.ParkingError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    assert sess.entry_at is not None
    return QuotePublic(
        lot_id=lot_id,
        site_id=lot.site_id,
        session=sess.id,
        plate=plate,
        entry_at=sess.entry_at,
        at=now,
        total_fen=q.total_fen,
        paid_fen=q.paid_fen,
        due_fen=q.due_fen,
        paid_until=q.paid_until,
        reason=q.reason,
    )


@router.post("/parking/{lot_id}/pay", status_code=status.HTTP_201_CREATED, dependencies=[Visitor])
def visitor_pay(
    lot_id: str,
    body: PayRequest,
    session: SessionDep,
    channels: ChannelsDep,
    idempotency_key: Annotated[str, Header(min_length=8, max_length=128)],
) -> OrderCreated:
    """No login: an order for what the car owes now; the same Idempotency-Key, the same order."""
    q = _quote(session, lot_id, body.plate)
    return _order(
        session,
        channels,
        subject_kind=parking.SUBJECT_SESSION,
        subject_id=q.session,
        site_id=q.site_id,
        amount_fen=q.due_fen,
        key=idempotency_key,
        channel=body.channel,
        payer=body.plate,
        details={"lot": lot_id, "plate": body.plate},
    )


def _order(
    session: Session,
    channels: dict[str, Any],
    *,
    key: str,
    channel: str,
    amount_fen: int,
    **kw: Any,
) -> OrderCreated:
    ch = channels.get(channel)
    if ch is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"no channel {channel!r}")
    try:
        order = create_order(
            session, idempotency_key=key, channel=channel, amount_fen=amount_fen, **kw
        )
    except IdempotencyConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except ValueError as exc:
        if amount_fen <= 0:
            raise HTTPException(status.HTTP_409_CONFLICT, "nothing is due") from exc
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    try:
        info = prepare_payment(session, ch, order)
    except OrderNotPayable as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except ChannelError as exc:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, str(exc)) from exc
    return OrderCreated(
        order_id=order.id, amount_fen=order.amount_fen, status=order.status, pay=info
    )


# -- owners ------------------------------------------------------------------------------------
@router.post("/lots/{lot_id}/passes/purchase", status_code=status.HTTP_201_CREATED)
def buy_pass(
    lot_id: str,
    body: PassPurchase,
    user: CurrentUser,
    session: SessionDep,
    channels: ChannelsDep,
    idempotency_key: Annotated[str, Header(min_length=8, max_length=128)],
) -> OrderCreated:
    """An owner of the lot's site buys or extends a monthly pass (end = max(end, now) + N)."""
    lot = _lot(session, user, lot_id)
    forbid_unless(user.role == Role.OWNER, "buying passes (owners do)")
    price = Policy.model_validate(lot.policy).monthly_fen
    if not price:
        raise HTTPException(status.HTTP_409_CONFLICT, "this lot sells no monthly passes")
    return _order(
        session,
        channels,
        subject_kind=parking.SUBJECT_PASS,
        subject_id=f"{lot_id}:{body.plate}",
        site_id=lot.site_id,
        amount_fen=price * body.months,
        key=idempotency_key,
        channel=body.channel,
        payer=user.username,
        details={"lot": lot_id, "plate": body.plate, "months": body.months},
    )


@router.get("/lots/{lot_id}/passes")
def passes(lot_id: str, user: CurrentUser, session: SessionDep) -> list[PassPublic]:
    """Staff of the site see every pass; an owner sees the passes he bought."""
    _lot(session, user, lot_id)
    q = select(ParkingPass).where(ParkingPass.lot_id == lot_id)
    if user.role == Role.OWNER:
        q = q.where(ParkingPass.owner == user.username)
    return [PassPublic.model_validate(p, from_attributes=True) for p in session.exec(q)]


# -- reports -----------------------------------------------------------------------------------
@router.get("/lots/{lot_id}/reports/{report}")
def report(
    lot_id: str,
    report: str,
    user: StaffUser,
    session: SessionDep,
    start: Instant,
    end: Instant,
    step_s: Annotated[int, Query(ge=60, le=86400)] = 3600,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> Any:
    """``revenue`` per day and channel, ``occupancy`` over time, ``unpaid`` exits (and
    overpaid sessions to refund); days are cut in Asia/Shanghai. ``format=csv`` for a file."""
    lot = _lot(session, user, lot_id)
    forbid_unless(user.role != Role.ENGINEER, "parking reports")
    if end <= start or end - start > timedelta(days=366):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "need start < end, within a year"
        )
    makers = {
        "revenue": lambda: reports.revenue(session, lot, start, end),
        "occupancy": lambda: reports.occupancy(session, lot, start, end, step_s),
        "unpaid": lambda: reports.unpaid(session, lot, start, end),
    }
    return report_response(
        makers, report, format, f"{lot_id}-{report}-{start.date()}-{end.date()}.csv"
    )
