"""Sites, gateways, devices, latest values, history, dead letters."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine
from sqlmodel import col, select

from hub.api.deps import (
    CurrentUser,
    Instant,
    SessionDep,
    SettingsDep,
    StaffUser,
    forbid_unless,
    not_found,
)
from hub.api.schemas import (
    DeadLetterPublic,
    DevicePublic,
    GatewayPublic,
    HistoryPoint,
    LatestPublic,
    SitePublic,
)
from hub.apply import ms_to_dt
from hub.auth import Role, can_see_device, can_see_site
from hub.history import history
from hub.models import DeadLetter, Device, Gateway, Latest, Site, utcnow

router = APIRouter(prefix="/api/v1", tags=["registry"])


@router.get("/sites")
def sites(user: StaffUser, session: SessionDep) -> list[SitePublic]:
    rows = session.exec(select(Site).order_by(col(Site.id))).all()
    return [SitePublic(id=s.id, name=s.name) for s in rows if can_see_site(user, s.id)]


@router.get("/sites/{site}/gateways")
def gateways(
    site: str, user: StaffUser, session: SessionDep, settings: SettingsDep
) -> list[GatewayPublic]:
    forbid_unless(can_see_site(user, site), f"site {site}")
    quiet = utcnow() - timedelta(seconds=settings.silence_s)
    rows = session.exec(
        select(Gateway).where(Gateway.site_id == site).order_by(col(Gateway.id))
    ).all()
    return [
        GatewayPublic(
            id=g.id,
            site_id=g.site_id,
            agent=g.agent,
            bdseq=g.bdseq,
            last_seen=g.last_seen,
            # a gateway that died without a will reaching us, or went silent, is offline too
            online=g.online and g.last_seen is not None and g.last_seen > quiet,
            messages=g.messages,
            duplicates=g.duplicates,
            gaps=g.gaps,
            dropped=g.dropped,
            bad=g.bad,
            status=g.status,
            status_at=g.status_at,
        )
        for g in rows
    ]


@router.get("/sites/{site}/devices")
def devices(site: str, user: StaffUser, session: SessionDep) -> list[DevicePublic]:
    forbid_unless(can_see_site(user, site), f"site {site}")
    rows = session.exec(
        select(Device)
        .where(Device.site_id == site)
        .order_by(col(Device.gateway_id), col(Device.device_id))
    ).all()
    return [_device(d) for d in rows]


@router.get("/devices")
def my_devices(user: CurrentUser, session: SessionDep) -> list[DevicePublic]:
    """What the caller may see: an owner's own meters, or every device of a staff's sites."""
    rows = session.exec(
        select(Device).order_by(col(Device.gateway_id), col(Device.device_id))
    ).all()
    return [_device(d) for d in rows if can_see_device(user, d.site_id, d.gateway_id, d.device_id)]


def _device(d: Device) -> DevicePublic:
    return DevicePublic(
        gateway_id=d.gateway_id,
        device_id=d.device_id,
        site_id=d.site_id,
        profile=d.profile,
        online=d.online,
        last_seen=d.last_seen,
        points=d.points,
    )


def _find(session: SessionDep, user: CurrentUser, gateway: str, device: str) -> Device:
    dev = session.exec(
        select(Device).where(Device.gateway_id == gateway, Device.device_id == device)
    ).first()
    # not found, outside the user's sites, or not the owner's: one answer, no hint
    if dev is None or not can_see_device(user, dev.site_id, gateway, device):
        raise not_found(f"device {gateway}/{device}")
    return dev


@router.get("/devices/{gateway}/{device}/latest", response_model=list[LatestPublic])
async def latest(gateway: str, device: str, user: CurrentUser, request: Request) -> Response:
    # the hottest read: one thread hop and one round-trip (device joined to its values),
    # the scope check on the event loop, and the body written by orjson directly (the
    # response model above documents it; building 50 models a request cost more than SQL)
    found = await run_in_threadpool(_read_latest, request.app.state.engine, gateway, device)
    if found is None or not can_see_device(user, found[0], gateway, device):
        raise not_found(f"device {gateway}/{device}")
    _, points, values = found
    units = {p["name"]: p.get("unit", "") for p in points}
    body = [
        {"point": name, "value": v[0], "unit": units.get(name, ""), "ts": ms_to_dt(int(v[1]))}
        for name, v in sorted(values.items())
    ]
    return Response(orjson.dumps(body), media_type="application/json")


def _read_latest(
    engine: Engine, gateway: str, device: str
) -> tuple[str, list[dict[str, Any]], dict[str, list[float]]] | None:
    query = (
        select(Device.site_id, Device.points, Latest.points)
        .outerjoin(Latest, col(Latest.device) == col(Device.id))
        .where(Device.gateway_id == gateway, Device.device_id == device)
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    return row[0], row[1] or [], row[2] or {}


@router.get("/devices/{gateway}/{device}/history")
def device_history(
    gateway: str,
    device: str,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    point: str,
    start: Instant,
    end: Instant,
    step_s: Annotated[int, Query(ge=1, le=86400)] = 60,
) -> list[HistoryPoint]:
    dev = _find(session, user, gateway, device)
    if end <= start or (end - start) / timedelta(seconds=step_s) > 10_000:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "end must follow start, with at most 10,000 steps between",
        )
    assert dev.id is not None
    return history(session, settings, dev, point, start, end, step_s)


@router.get("/sites/{site}/deadletters")
def dead_letters(
    site: str,
    user: StaffUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeadLetterPublic]:
    forbid_unless(
        can_see_site(user, site) and user.role not in (Role.FINANCE, Role.CASHIER), f"site {site}"
    )
    gws = session.exec(select(Gateway.id).where(Gateway.site_id == site)).all()
    rows = session.exec(
        select(DeadLetter)
        .where(col(DeadLetter.gateway_id).in_(gws))
        .order_by(col(DeadLetter.id).desc())
        .limit(limit)
    ).all()
    return [
        DeadLetterPublic(
            id=r.id or 0,
            received_at=r.received_at,
            topic=r.topic,
            gateway_id=r.gateway_id,
            reason=r.reason,
            payload=r.payload.decode("utf-8", "replace"),
        )
        for r in rows
    ]
