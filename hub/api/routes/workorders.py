"""Work orders: list, read with the audit trail, open (owners' repair requests and staff
orders), one POST per lifecycle step, photos; engineers' skills and duty; reports.

The lifecycle's refusals keep their words: IllegalTransition -> 409, NotPermitted -> 403,
InvalidAction -> 422 (a file over the limit: 413), a concurrent change -> 409.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, HTTPException, Query, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from hub.api.deps import (
    BIGINT_MAX,
    CurrentUser,
    Instant,
    SessionDep,
    SettingsDep,
    StaffUser,
    forbid_unless,
    not_found,
    row_id,
)
from hub.api.reports import report_response
from hub.auth import Role, can_see_site
from hub.models import User, utcnow
from hub.workorders import attachments, dispatching, reports, service
from hub.workorders.lifecycle import (
    Action,
    IllegalTransition,
    InvalidAction,
    NotPermitted,
    Priority,
    Source,
    State,
    WorkOrderError,
    allowed_actions,
)
from hub.workorders.models import EngineerDuty, WorkOrderAudit, WorkOrderRecord
from protocols.parking.messages import MAX_FEN

router = APIRouter(prefix="/api/v1", tags=["workorders"])


def _order_id(order_id: int) -> int:
    return row_id(order_id, "work order")


OrderId = Annotated[int, Depends(_order_id)]


class WorkOrderCreate(BaseModel):
    site: Annotated[str, Field(min_length=1, max_length=64)]
    title: Annotated[str, Field(min_length=1, max_length=200)]
    description: Annotated[str, Field(max_length=4000)] = ""
    location: Annotated[str, Field(max_length=200)] = ""
    priority: Priority = Priority.NORMAL  # staff only; owners' requests are normal
    skill: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,31}$")] = "general"


class ActionBody(BaseModel):
    """What a step takes; a field left out or null is not given."""

    note: Annotated[str, Field(max_length=2000)] = ""
    assignee: Annotated[str, Field(max_length=64)] | None = None
    rating: int | None = None  # the lifecycle says what a rating may be
    charge_fen: Annotated[int, Field(le=MAX_FEN)] | None = None


class AttachmentPublic(BaseModel):
    name: str
    filename: str
    content_type: str
    size: int
    uploaded_by: str
    at: datetime


class AuditPublic(BaseModel):
    at: datetime
    actor: str
    role: str
    action: str
    from_state: str | None
    to_state: str
    note: str
    details: dict[str, Any]


class WorkOrderPublic(BaseModel):
    id: int
    site: str
    source: str
    alarm_id: int | None
    title: str
    description: str
    location: str
    priority: str
    skill: str
    state: str
    assignee: str | None
    filed_by: str
    created_at: datetime
    updated_at: datetime
    accepted_at: datetime | None
    finished_at: datetime | None
    ended_at: datetime | None
    accept_due: datetime
    finish_due: datetime
    accept_breached_at: datetime | None
    finish_breached_at: datetime | None
    charge_fen: int
    paid: bool
    rating: int | None
    attachments: list[AttachmentPublic]
    possible: list[str]  # actions the state allows (who may take them is another matter)


class WorkOrderDetail(WorkOrderPublic):
    audit: list[AuditPublic]


class EngineerPublic(BaseModel):
    username: str
    sites: list[str]
    skills: list[str]
    on_duty: bool


class DutyChange(BaseModel):
    """A field left out or null stays as it is."""

    skills: Annotated[list[Annotated[str, Field(max_length=32)]], Field(max_length=32)] | None = (
        None
    )
    on_duty: bool | None = None


def _public(rec: WorkOrderRecord) -> WorkOrderPublic:
    assert rec.id is not None
    return WorkOrderPublic(
        id=rec.id,
        site=rec.site_id,
        source=rec.source,
        alarm_id=rec.alarm_id,
        title=rec.title,
        description=rec.description,
        location=rec.location,
        priority=rec.priority,
        skill=rec.skill,
        state=rec.state,
        assignee=rec.assignee,
        filed_by=rec.filed_by,
        created_at=rec.created_at,
        updated_at=rec.updated_at,
        accepted_at=rec.accepted_at,
        finished_at=rec.finished_at,
        ended_at=rec.ended_at,
        accept_due=rec.accept_due,
        finish_due=rec.finish_due,
        accept_breached_at=rec.accept_breached_at,
        finish_breached_at=rec.finish_breached_at,
        charge_fen=rec.charge_fen,
        paid=rec.paid,
        rating=rec.rating,
        attachments=[AttachmentPublic.model_validate(a) for a in rec.attachments],
        possible=[a.value for a in allowed_actions(State(rec.state))],
    )


def _audit_public(a: WorkOrderAudit) -> AuditPublic:
    return AuditPublic(
        at=a.at,
        actor=a.actor,
        role=a.role,
        action=a.action,
        from_state=a.from_state,
        to_state=a.to_state,
        note=a.note,
        details=a.details,
    )


def _refusal(exc: Exception) -> HTTPException:
    if isinstance(exc, service.WorkOrderNotFound):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))
    if isinstance(exc, IllegalTransition | service.Conflict):
        return HTTPException(status.HTTP_409_CONFLICT, str(exc))
    if isinstance(exc, NotPermitted):
        return HTTPException(status.HTTP_403_FORBIDDEN, str(exc))
    if isinstance(exc, attachments.TooLarge):
        return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(exc))
    if isinstance(exc, InvalidAction):
        return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))
    return HTTPException(status.HTTP_400_BAD_REQUEST, str(exc))


def _visible(session: SessionDep, user: User, order_id: int) -> WorkOrderRecord:
    """The order if ``user`` may see it; 404 if it does not exist, is another site's or
    (owners) another's, alike."""
    try:
        rec = service.get(session, order_id)
    except service.WorkOrderNotFound as exc:
        raise _refusal(exc) from exc
    if not service.can_see(user, rec):
        raise not_found(f"work order {order_id}")
    return rec


# -- reports (before /workorders/{id}) ---------------------------------------------------------
@router.get("/workorders/reports/{report}")
def report(
    report: str,
    user: StaffUser,
    session: SessionDep,
    settings: SettingsDep,
    start: Instant,
    end: Instant,
    site: str | None = None,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> Any:
    """``alarms``: time to acknowledge per site; ``sites`` / ``engineers``: work orders
    opened in [start, end), time to finish, SLA breaches, ratings. HQ admins and site
    managers (their sites)."""
    forbid_unless(user.role in (Role.HQ_ADMIN, Role.SITE_MANAGER), "work-order reports")
    if end <= start or end - start > timedelta(days=366):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "need start < end, within a year"
        )
    if site is not None:
        forbid_unless(can_see_site(user, site), f"site {site}")
    sites = [site] if site is not None else (None if user.role == Role.HQ_ADMIN else user.sites)
    policy = settings.workorder_sla
    makers = {
        "alarms": lambda: reports.alarm_ack(session, sites, start, end),
        "sites": lambda: reports.work_orders(session, sites, start, end, utcnow(), policy, False),
        "engineers": lambda: reports.work_orders(
            session, sites, start, end, utcnow(), policy, True
        ),
    }
    return report_response(
        makers, report, format, f"workorders-{report}-{start.date()}-{end.date()}.csv"
    )


# -- orders ------------------------------------------------------------------------------------
@router.get("/workorders")
def list_orders(
    user: CurrentUser,
    session: SessionDep,
    site: str | None = None,
    state: Annotated[list[State] | None, Query()] = None,
    assignee: str | None = None,
    source: Source | None = None,
    mine: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before_id: Annotated[int, Query(ge=1, le=BIGINT_MAX)] | None = None,
) -> list[WorkOrderPublic]:
    """Newest first. HQ admins see every site, staff their sites, owners their repair
    requests; ``mine`` = assigned to me; ``before_id`` pages."""
    if site is not None and user.role != Role.OWNER:
        forbid_unless(can_see_site(user, site), f"site {site}")
    rows = service.visible(
        session,
        user,
        site=site,
        states=state or (),
        assignee=user.username if mine else assignee,
        source=source,
        limit=limit,
        before_id=before_id,
    )
    return [_public(r) for r in rows]


@router.post("/workorders", status_code=status.HTTP_201_CREATED)
def create(
    body: WorkOrderCreate, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> WorkOrderDetail:
    """A repair request (owners: normal priority) or a staff order (hq_admin, site_manager,
    engineer of the site); assigned round-robin at once if an engineer is on duty."""
    try:
        rec = service.file_order(
            session,
            service.Config.from_settings(settings),
            user,
            service.NewOrder(
                site=body.site,
                source=Source.STAFF,  # decided from the user by the service
                title=body.title,
                filed_by=user.username,
                description=body.description,
                location=body.location,
                priority=body.priority,
                skill=body.skill,
            ),
        )
    except WorkOrderError as exc:
        raise _refusal(exc) from exc
    return _detail(session, rec)


def _detail(session: SessionDep, rec: WorkOrderRecord) -> WorkOrderDetail:
    assert rec.id is not None
    return WorkOrderDetail(
        **_public(rec).model_dump(),
        audit=[_audit_public(a) for a in service.trail(session, rec.id)],
    )


@router.get("/workorders/{order_id}")
def get_order(order_id: OrderId, user: CurrentUser, session: SessionDep) -> WorkOrderDetail:
    return _detail(session, _visible(session, user, order_id))


@router.post("/workorders/{order_id}/attachments", status_code=status.HTTP_201_CREATED)
async def add_attachments(
    order_id: OrderId,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    files: Annotated[list[UploadFile], File(description="JPEG, PNG or WebP photos")],
) -> WorkOrderDetail:
    """Photos of the fault (the owner who filed it) or of the work (staff of the site)."""
    rec = await run_in_threadpool(_visible, session, user, order_id)
    limit = settings.attachment_max_bytes
    uploads = []
    for f in files[: settings.attachment_max_files + 1]:
        data = await f.read(limit + 1)  # never more than the limit into memory
        uploads.append(attachments.Upload(f.filename or "photo", data))
    try:
        rec = await run_in_threadpool(
            attachments.attach,
            session,
            settings.attachments_dir,
            order_id,
            uploads,
            user.username,
            user.role,
            utcnow(),
            max_bytes=limit,
            max_files=settings.attachment_max_files,
        )
    except WorkOrderError as exc:
        raise _refusal(exc) from exc
    return await run_in_threadpool(_detail, session, rec)


@router.get("/workorders/{order_id}/attachments/{name}")
def get_attachment(
    order_id: OrderId, name: str, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> FileResponse:
    rec = _visible(session, user, order_id)
    listed = next((a for a in rec.attachments if a["name"] == name), None)
    if listed is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no attachment {name}")
    path = attachments.path_of(settings.attachments_dir, order_id, name)
    if not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"attachment {name} is missing on disk")
    return FileResponse(path, media_type=listed["content_type"], filename=listed["filename"])


@router.post("/workorders/{order_id}/{action}")
def take_action(
    order_id: OrderId,
    action: str,
    user: CurrentUser,
    session: SessionDep,
    body: ActionBody | None = None,
) -> WorkOrderDetail:
    """One lifecycle step (docs/ALARMS.md, "Work orders"): ``note`` (return, pause,
    close, reopen), ``assignee`` (dispatch, transfer), ``rating`` (rate), ``charge_fen``
    (finish of an owner's repair)."""
    try:
        act = Action(action)
    except ValueError:
        act = None
    if act is None or act is Action.CREATE or act is Action.AUTO_ASSIGN:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no action {action!r}")
    _visible(session, user, order_id)  # 404 for another site's or owner's, no hint
    b = body or ActionBody()
    try:
        rec, _ = service.act(
            session,
            order_id,
            service.actor_of(user),
            act,
            note=b.note,
            assignee=b.assignee,
            rating=b.rating,
            charge_fen=b.charge_fen,
        )
    except (WorkOrderError, service.WorkOrderNotFound) as exc:
        raise _refusal(exc) from exc
    return _detail(session, rec)


# -- engineers ---------------------------------------------------------------------------------
def _engineer_public(u: User, d: EngineerDuty | None) -> EngineerPublic:
    return EngineerPublic(
        username=u.username,
        sites=list(u.sites or []),
        skills=list(d.skills) if d else [],
        on_duty=d.on_duty if d else False,
    )


@router.get("/engineers")
def list_engineers(
    user: StaffUser, session: SessionDep, site: str | None = None
) -> list[EngineerPublic]:
    """Engineers with skills and duty: of ``site``, or of every site the user sees."""
    if site is not None:
        forbid_unless(can_see_site(user, site), f"site {site}")
    rows = dispatching.engineers(session, site)
    if site is None and user.role != Role.HQ_ADMIN:
        rows = [(u, d) for u, d in rows if set(u.sites or []) & set(user.sites or [])]
    return [_engineer_public(u, d) for u, d in rows]


@router.put("/engineers/{username}")
def change_duty(
    username: str, body: DutyChange, user: StaffUser, session: SessionDep
) -> EngineerPublic:
    """Skills (HQ admins, the engineer's site managers) and duty (them, or the engineer)."""
    rows = {u.username: (u, d) for u, d in dispatching.engineers(session)}
    eng = rows[username][0] if username in rows else None
    shares = eng is not None and bool(set(eng.sites or []) & set(user.sites or []))
    if eng is None or not (user.role == Role.HQ_ADMIN or shares or user.username == username):
        raise not_found(f"engineer {username}")  # another site's too: no hint
    manages = user.role == Role.HQ_ADMIN or (user.role == Role.SITE_MANAGER and shares)
    himself = user.username == username and body.skills is None
    forbid_unless(manages or himself, f"changing {username}'s skills or duty")
    try:
        d = dispatching.set_duty(
            session, username, user.username, skills=body.skills, on_duty=body.on_duty
        )
    except InvalidAction as exc:
        raise _refusal(exc) from exc
    return _engineer_public(eng, d)
