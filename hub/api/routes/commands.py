"""Commands to devices through their gateway, tracked until the edge acknowledges them."""

from __future__ import annotations

import uuid
from datetime import timedelta

from fastapi import APIRouter, HTTPException, Request, status
from sqlmodel import select

from hub.api.deps import OperatorUser, SessionDep, StaffUser, not_found
from hub.api.schemas import CommandCreate, CommandPublic
from hub.auth import can_see_site
from hub.models import Command, Device, utcnow

router = APIRouter(prefix="/api/v1", tags=["commands"])


def _public(c: Command) -> CommandPublic:
    return CommandPublic(
        id=c.id,
        gateway_id=c.gateway_id,
        device_id=c.device_id,
        point=c.point,
        value=c.value,
        status=c.status,
        detail=c.detail,
        created_by=c.created_by,
        created_at=c.created_at,
        expires_at=c.expires_at,
        acked_at=c.acked_at,
    )


@router.post("/commands", status_code=status.HTTP_202_ACCEPTED)
def create(
    body: CommandCreate, user: OperatorUser, session: SessionDep, request: Request
) -> CommandPublic:
    dev = session.exec(
        select(Device).where(Device.gateway_id == body.gateway, Device.device_id == body.device)
    ).first()
    if dev is None or not can_see_site(user, dev.site_id):  # another site's: no hint
        raise not_found(f"device {body.gateway}/{body.device}")
    point = next((p for p in dev.points if p["name"] == body.point), None)
    if point is None or not point.get("writable"):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"{body.point!r} is not a writable point of {dev.profile}",
        )
    now = utcnow()
    cmd = Command(
        id=uuid.uuid4().hex[:16],
        gateway_id=dev.gateway_id,
        site_id=dev.site_id,
        device_id=dev.device_id,
        point=body.point,
        value=body.value,
        created_by=user.username,
        created_at=now,
        expires_at=now + timedelta(seconds=body.ttl_s),
    )
    session.add(cmd)
    session.commit()  # durable before it is sent: the dispatcher (re)sends pending ones
    request.app.state.dispatcher.kick()
    return _public(cmd)


@router.get("/commands/{command_id}")
def get(command_id: str, user: StaffUser, session: SessionDep) -> CommandPublic:
    cmd = session.get(Command, command_id)
    if cmd is None or not can_see_site(user, cmd.site_id):  # another site's: no hint
        raise not_found(f"command {command_id}")
    return _public(cmd)
