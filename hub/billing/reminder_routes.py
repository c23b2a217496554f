"""Arrears, bills falling due and reminders over HTTP.

| what | roles |
|---|---|
| arrears, its xlsx and notices, bills falling due, reminders | hq_admin, site_manager, |
| | finance, cashier |
| reminder runs | hq_admin, site_manager, finance |
| a person's WeChat openid | hq_admin, site_manager |

Engineers and owners are refused (403, with the reason); another site's data is 404.
Phones are shown masked; the full number only ever goes to the SMS provider.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from hub.api.deps import BIGINT_MAX, SessionDep, StaffUser, attachment, not_found, row_id
from hub.auth import Role
from hub.billing import arrears, reminders
from hub.billing.periods import local_date
from hub.billing.routes import READ, RUN, _may
from hub.models import Site, utcnow
from hub.notify.models import Notification
from hub.property.models import Person, Premises
from hub.property.people import mask_phone

router = APIRouter(prefix="/api/v1", tags=["billing reminders"])
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
OPENID = {Role.HQ_ADMIN, Role.SITE_MANAGER}

Building = Annotated[str | None, Query(max_length=16, description="a building's code")]
MinDays = Annotated[int, Query(ge=0, le=36500, description="oldest bill overdue at least")]


class OwedBillPublic(BaseModel):
    bill_id: int
    item: str
    kind: str
    period_start: date
    period_end: date
    due_on: date
    open_fen: int
    days_overdue: int


class OwingPublic(BaseModel):
    premises_id: int
    code: str
    building: str
    payer_name: str
    payer_phone: str  # masked
    cycles: int
    amount_fen: int
    oldest_due: date
    days_overdue: int
    bills: list[OwedBillPublic]


class ArrearsPublic(BaseModel):
    site: str
    on: date
    premises: int
    cycles: int
    amount_fen: int
    items: list[OwingPublic]


def _public(o: arrears.Owing) -> OwingPublic:
    return OwingPublic(
        premises_id=o.premises_id,
        code=o.code,
        building=o.building,
        payer_name=o.payer.name if o.payer else "",
        payer_phone=o.payer.masked_phone if o.payer else "",
        cycles=o.cycles,
        amount_fen=o.amount_fen,
        oldest_due=o.oldest_due,
        days_overdue=o.days_overdue,
        bills=[
            OwedBillPublic(**{k: getattr(b, k) for k in OwedBillPublic.model_fields})
            for b in o.bills
        ],
    )


def _summary(site: str, on: date, rows: list[arrears.Owing]) -> ArrearsPublic:
    return ArrearsPublic(
        site=site,
        on=on,
        premises=len(rows),
        cycles=sum(o.cycles for o in rows),
        amount_fen=sum(o.amount_fen for o in rows),
        items=[_public(o) for o in rows],
    )


def _today() -> date:
    return local_date(utcnow())


@router.get("/sites/{site}/arrears")
def site_arrears(
    site: str,
    user: StaffUser,
    session: SessionDep,
    on: date | None = None,
    building: Building = None,
    min_days: MinDays = 0,
) -> ArrearsPublic:
    """Premises owing bills past due on ``on`` (today), as the ledger stood that day, by
    code: each with its payer, cycles, amount, oldest due date and bills."""
    _may(user, site, READ, "arrears")
    on = on or _today()
    return _summary(
        site, on, arrears.arrears(session, site, on, building=building, min_days=min_days)
    )


@router.get("/sites/{site}/arrears.xlsx", response_class=Response)
def site_arrears_xlsx(
    site: str,
    user: StaffUser,
    session: SessionDep,
    on: date | None = None,
    building: Building = None,
    min_days: MinDays = 0,
) -> Response:
    _may(user, site, READ, "arrears")
    on = on or _today()
    rows = arrears.arrears(session, site, on, building=building, min_days=min_days)
    return Response(
        arrears.arrears_xlsx(rows, on),
        media_type=XLSX,
        headers=attachment(f"arrears-{site}-{on}.xlsx"),
    )


@router.get("/sites/{site}/arrears/notices.pdf", response_class=Response)
def site_notices(
    site: str,
    user: StaffUser,
    session: SessionDep,
    on: date | None = None,
    building: Building = None,
    min_days: MinDays = 0,
    premises_id: Annotated[int | None, Query(ge=1, le=BIGINT_MAX)] = None,
) -> Response:
    """Reminder notices (催费单): one page per premises in arrears."""
    _may(user, site, READ, "reminder notices")
    on = on or _today()
    rows = arrears.arrears(
        session, site, on, building=building, min_days=min_days, premises_id=premises_id
    )
    s = session.get(Site, site)
    return Response(
        arrears.notices_pdf(s.name if s else site, rows, on),
        media_type="application/pdf",
        headers=attachment(f"notices-{site}-{on}.pdf", inline=True),
    )


@router.get("/premises/{premises_id}/arrears")
def premises_arrears(
    premises_id: int, user: StaffUser, session: SessionDep, on: date | None = None
) -> OwingPublic | None:
    """One premises' arrears on ``on`` (null: it owes nothing past due)."""
    row_id(premises_id, "premises")
    p = session.get(Premises, premises_id)
    if p is None:
        raise not_found(f"premises {premises_id}")
    _may(user, p.site_id, READ, "arrears")
    rows = arrears.arrears(session, p.site_id, on or _today(), premises_id=premises_id)
    return _public(rows[0]) if rows else None


@router.get("/sites/{site}/due-soon")
def site_due_soon(
    site: str,
    user: StaffUser,
    session: SessionDep,
    on: date | None = None,
    within_days: Annotated[int, Query(ge=0, le=90)] = 7,
) -> ArrearsPublic:
    """Bills falling due from ``on`` to ``on`` + ``within_days`` and owed now (缴费预警)."""
    _may(user, site, READ, "bills falling due")
    on = on or _today()
    return _summary(site, on, arrears.due_soon(session, site, on, within_days))


# -- reminders ---------------------------------------------------------------------------------
class ReminderRunIn(BaseModel):
    kind: reminders.Kind
    on: date | None = None  # today in Shanghai
    within_days: Annotated[int | None, Field(ge=0, le=90)] = None  # warnings; default setting
    min_days: Annotated[int, Field(ge=0, le=36500)] = 0  # arrears


class ReminderRunPublic(BaseModel):
    site: str
    kind: str
    on: date
    payers: int  # owing (or with bills falling due) and reachable
    queued: int  # new messages
    already: int  # told before (this month; for this due date): not again
    unreachable: int  # premises whose payer has no phone (nor WeChat) or no payer
    sent: int
    skipped: int  # paid before their message went out
    failed: int  # refused by the provider for good
    retrying: int  # the provider did not take them yet: retried with back-off
    cost_fen: int


@router.post("/sites/{site}/reminder-runs")
def run_reminders(
    site: str, body: ReminderRunIn, request: Request, user: StaffUser, session: SessionDep
) -> ReminderRunPublic:
    """Remind every payer who owes (``arrears``) or has bills falling due (``warning``),
    once per person a month (arrears) or per due date (warnings); one attempt is made
    before answering, the rest are retried in the background."""
    _may(user, site, RUN, "reminder runs")
    if session.get(Site, site) is None:
        raise not_found(f"site {site}")
    session.close()
    sender: reminders.ReminderSender = request.app.state.reminder_sender
    settings = request.app.state.settings
    within = settings.reminder_warning_days if body.within_days is None else body.within_days
    r = reminders.run_reminders(
        sender,
        site,
        body.kind,
        body.on,
        within_days=within,
        min_days=body.min_days,
        by=user.username,
    )
    return ReminderRunPublic(
        site=site,
        kind=r.kind.value,
        on=r.on,
        payers=r.picked.payers,
        queued=r.picked.queued,
        already=r.picked.already,
        unreachable=r.picked.unreachable,
        **r.tally.__dict__,
    )


class ReminderPublic(BaseModel):
    id: int
    kind: str
    on: date
    person_id: int
    name: str
    premises: list[str]
    amount_fen: int
    channel: str
    status: str
    attempts: int
    last_error: str
    cost_fen: int | None
    delivered_at: str | None


@router.get("/sites/{site}/reminders")
def list_reminders(
    site: str,
    user: StaffUser,
    session: SessionDep,
    kind: reminders.Kind | None = None,
    status_: Annotated[str | None, Query(alias="status", max_length=16)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[ReminderPublic]:
    """The reminders of a site, newest first: to whom, how much, through what, how it went
    and what it cost."""
    _may(user, site, READ, "reminders")
    events = [reminders.EVENTS[kind]] if kind else list(reminders.EVENTS.values())
    q = select(Notification).where(
        Notification.site_id == site, col(Notification.event).in_(events)
    )
    if status_ is not None:
        q = q.where(Notification.status == status_)
    rows = session.exec(q.order_by(col(Notification.id).desc()).limit(limit)).all()
    return [
        ReminderPublic(
            id=n.id or 0,
            kind=n.payload["kind"],
            on=date.fromisoformat(n.payload["on"]),
            person_id=n.payload["person_id"],
            name=n.payload["name"],
            premises=n.payload["premises"],
            amount_fen=n.payload["amount_fen"],
            channel=n.channel,
            status=n.status,
            attempts=n.attempts,
            last_error=n.last_error,
            cost_fen=n.cost_fen,
            delivered_at=n.delivered_at.isoformat() if n.delivered_at else None,
        )
        for n in rows
    ]


class OpenidIn(BaseModel):
    openid: Annotated[str | None, Field(min_length=6, max_length=64, pattern=r"^[\w-]+$")]


class PersonContact(BaseModel):
    person_id: int
    name: str
    phone: str  # masked
    wechat: bool


def _person(s: Session, person_id: int) -> Person:
    row_id(person_id, "person")
    p = s.get(Person, person_id)
    if p is None:
        raise not_found(f"person {person_id}")
    return p


@router.put("/persons/{person_id}/wechat-openid")
def set_openid(
    person_id: int, body: OpenidIn, user: StaffUser, session: SessionDep
) -> PersonContact:
    """Record (or with null, forget) the openid a person follows the official account
    with: reminders then go to them by WeChat instead of SMS."""
    p = _person(session, person_id)
    _may(user, p.site_id, OPENID, "recording WeChat openids")
    if body.openid is not None and not body.openid.startswith("o"):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "an openid starts with o")
    p.wechat_openid = body.openid
    session.commit()
    return PersonContact(
        person_id=person_id, name=p.name, phone=mask_phone(p.phone), wechat=bool(p.wechat_openid)
    )
