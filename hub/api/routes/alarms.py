"""Alarms: the list, one alarm with its trail, acknowledge, comment, and a live stream.

``GET /api/v1/alarms/stream`` is a server-sent-event stream (``text/event-stream``): first
an ``alarms`` event with the active alarms of the site, then an ``alarm`` event for every
change, pushed as it is committed (hub/alarms/live.py), and a comment line every 15 s to
keep proxies from closing it. Browsers' EventSource cannot send headers, so this one
endpoint also takes the bearer token as ``access_token`` in the query.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from hub.alarms import live
from hub.alarms import service as alarms
from hub.alarms.models import Alarm, AlarmEvent
from hub.api.deps import (
    SessionDep,
    StaffUser,
    forbid_unless,
    not_found,
    row_id,
    user_of_token,
)
from hub.auth import OPERATORS, STAFF, Role, can_see_site
from hub.models import User

router = APIRouter(prefix="/api/v1", tags=["alarms"])
KEEPALIVE_S = 15.0


class AlarmEventPublic(BaseModel):
    at: datetime
    kind: str
    severity: str | None
    who: str | None
    note: str


class AlarmPublic(BaseModel):
    id: int
    site_id: str
    gateway_id: str
    device_id: str
    alarm_type: str
    rule: str
    severity: str
    active: bool
    acknowledged: bool
    message: str
    details: dict[str, Any]
    started_at: datetime
    last_seen_at: datetime
    acked_at: datetime | None
    acked_by: str | None
    cleared_at: datetime | None
    work_order_id: int | None
    events: list[AlarmEventPublic] = []


def _alarm_id(alarm_id: int) -> int:
    return row_id(alarm_id, "alarm")


AlarmId = Annotated[int, Depends(_alarm_id)]


class Note(BaseModel):
    note: Annotated[str, Field(max_length=2000)] = ""


def _visible(user: User, site: str | None) -> list[str] | None:
    """Sites to list (None: all), 403 for a site outside the user's."""
    if site is not None:
        forbid_unless(can_see_site(user, site), f"site {site}")
        return [site]
    return None if user.role == Role.HQ_ADMIN else list(user.sites)


@router.get("/alarms")
def list_alarms(
    user: StaffUser,
    session: SessionDep,
    site: str | None = None,
    active: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[AlarmPublic]:
    """Staff: the alarms of their sites, newest first (``active=true``: what is going on)."""
    q = select(Alarm)
    sites = _visible(user, site)
    if sites is not None:
        q = q.where(col(Alarm.site_id).in_(sites))
    if active is not None:
        q = q.where(Alarm.active == active)
    rows = session.exec(q.order_by(col(Alarm.started_at).desc()).limit(limit)).all()
    return [AlarmPublic.model_validate(a, from_attributes=True) for a in rows]


def _alarm(session: Session, user: User, alarm_id: int) -> Alarm:
    """The alarm if ``user`` may see it; 404 if it does not exist or is another site's."""
    alarm = session.get(Alarm, alarm_id)
    if alarm is None or not can_see_site(user, alarm.site_id):
        raise not_found(f"alarm {alarm_id}")
    return alarm


@router.get("/alarms/stream", response_class=StreamingResponse)
async def stream(
    request: Request,
    access_token: Annotated[str, Query(min_length=10)],
    site: str | None = None,
) -> StreamingResponse:
    """Live alarms of ``site`` (or every site the user may see) as server-sent events."""
    user = await user_of_token(request, access_token)
    forbid_unless(user.role in STAFF, "watching alarms")
    sites = _visible(user, site)
    broadcaster: live.Broadcaster = request.app.state.alarm_broadcaster
    queue = broadcaster.watch(site)
    snapshot = await run_in_threadpool(_active, request.app.state.engine, sites)

    async def events() -> AsyncIterator[bytes]:
        try:
            yield _sse("alarms", snapshot)
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE_S):
                        alarm = await queue.get()
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if sites is None or alarm.get("site_id") in sites:
                    yield _sse("alarm", alarm)
        finally:
            broadcaster.leave(queue)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


@router.get("/alarms/{alarm_id}")
def get_alarm(alarm_id: AlarmId, user: StaffUser, session: SessionDep) -> AlarmPublic:
    alarm = _alarm(session, user, alarm_id)
    events = session.exec(
        select(AlarmEvent).where(AlarmEvent.alarm_id == alarm_id).order_by(col(AlarmEvent.id))
    ).all()
    out = AlarmPublic.model_validate(alarm, from_attributes=True)
    out.events = [AlarmEventPublic.model_validate(e, from_attributes=True) for e in events]
    return out


def _act(
    request: Request, session: Session, user: User, alarm_id: int, what: str, note: str
) -> AlarmPublic:
    forbid_unless(user.role in OPERATORS, f"{what} alarms")
    _alarm(session, user, alarm_id)
    try:
        if what == "acknowledge":
            alarm = alarms.acknowledge(session, alarm_id, user.username, note)
        else:
            alarm = alarms.comment(session, alarm_id, user.username, note)
        session.commit()
    except alarms.AlarmError as exc:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    publisher = getattr(request.app.state, "alarm_publisher", None)
    if publisher is not None:
        publisher.publish([alarm])
    return AlarmPublic.model_validate(alarm, from_attributes=True)


@router.post("/alarms/{alarm_id}/ack")
def acknowledge(
    alarm_id: AlarmId, body: Note, user: StaffUser, session: SessionDep, request: Request
) -> AlarmPublic:
    """Engineers, site managers and HQ: "I have seen it" (once; with an optional note)."""
    return _act(request, session, user, alarm_id, "acknowledge", body.note)


@router.post("/alarms/{alarm_id}/comment")
def add_comment(
    alarm_id: AlarmId, body: Note, user: StaffUser, session: SessionDep, request: Request
) -> AlarmPublic:
    return _act(request, session, user, alarm_id, "comment on", body.note)


def _active(engine: Engine, sites: list[str] | None) -> list[dict[str, Any]]:
    with Session(engine) as s:
        q = select(Alarm).where(col(Alarm.active))
        if sites is not None:
            q = q.where(col(Alarm.site_id).in_(sites))
        return [live.public(a) for a in s.exec(q.order_by(col(Alarm.started_at).desc()))]


def _sse(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
