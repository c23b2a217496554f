"""Payment orders: the channels' notifications, the payer's status page, finance's list.

``GET /payments/{id}`` needs no login: the order id (128 random bits) is the capability a
visitor's phone holds after paying at the exit, and the answer carries no personal data
(no payer, no plate, no details). Staff see everything through the list, scoped by site.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Engine
from sqlmodel import Session

from hub.api.deps import SessionDep, StaffUser, forbid_unless
from hub.auth import Role, can_see_site
from hub.models import utcnow
from hub.payments import (
    NotificationOutcome,
    OrderNotFound,
    PaymentChannel,
    PaymentOrder,
    PaymentStatus,
    build_channels,
    get_order,
    handle_notification,
    list_orders,
    notification_counts,
)
from hub.payments.service import MAX_BODY, Outcome

router = APIRouter(prefix="/api/v1", tags=["payments"])
_channels_lock = threading.Lock()


class PaymentStatusPublic(BaseModel):
    id: str
    status: PaymentStatus
    amount_fen: int
    currency: str
    subject_kind: str
    created_at: datetime
    paid_at: datetime | None


class PaymentOrderPublic(PaymentStatusPublic):
    site_id: str
    subject_id: str
    channel: str
    channel_txn_id: str | None
    payer: str | None
    details: dict[str, Any]
    closed_at: datetime | None


def get_channels(request: Request) -> dict[str, PaymentChannel]:
    """The configured channels, built on first use from the app's settings."""
    state = request.app.state
    with _channels_lock:
        if getattr(state, "payment_channels", None) is None:
            state.payment_channels = build_channels(state.settings)
    channels: dict[str, PaymentChannel] = state.payment_channels
    return channels


ChannelsDep = Annotated[dict[str, PaymentChannel], Depends(get_channels)]


@router.post("/payments/notify/{channel}")
async def notify(channel: str, request: Request, channels: ChannelsDep) -> JSONResponse:
    """A channel's asynchronous notification. No login: the signature is the credential.

    2xx tells the channel to stop resending (credited, duplicate, or refused for good);
    401 bad or stale signature, 400 unusable notification, 500 crediting failed: resend.
    """
    ch = channels.get(channel)
    if ch is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no payment channel {channel!r}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            break  # recorded truncated and refused
    state = request.app.state
    outcome = await run_in_threadpool(
        _handle,
        state.engine,
        ch,
        dict(request.headers),
        bytes(body),
        state.settings.pay_notify_max_age_s,
    )
    dispatcher = getattr(state, "dispatcher", None)
    if outcome.kind is NotificationOutcome.CREDITED and dispatcher is not None:
        dispatcher.kick()  # a parking payment is a change its lot's edge should hear now
    return JSONResponse(
        {"outcome": outcome.kind.value, "detail": outcome.reason},
        status_code=outcome.http_status,
    )


def _handle(
    engine: Engine, ch: PaymentChannel, headers: dict[str, str], body: bytes, max_age_s: int
) -> Outcome:
    with Session(engine, expire_on_commit=False) as session:
        return handle_notification(session, ch, headers, body, max_age_s=max_age_s)


@router.get("/payments/notifications/counts")
def counts(
    user: StaffUser,
    session: SessionDep,
    hours: Annotated[float, Query(gt=0, le=24 * 366)] = 24,
) -> dict[str, int]:
    """hq_admin: notifications of the last ``hours`` by outcome, and how many were forged
    or garbled (``bad_signature``; those name no site, so only HQ sees them)."""
    forbid_unless(user.role == Role.HQ_ADMIN, "notification counts")
    return notification_counts(session, utcnow() - timedelta(hours=hours))


@router.get("/payments/{order_id}")
def order_status(order_id: str, session: SessionDep) -> PaymentStatusPublic:
    """No login: whoever holds the order id (the payer's page polls this)."""
    try:
        order = get_order(session, order_id)
    except OrderNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return PaymentStatusPublic.model_validate(order, from_attributes=True)


@router.get("/payments")
def orders(
    user: StaffUser,
    session: SessionDep,
    site: str | None = None,
    status_: Annotated[PaymentStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[PaymentOrderPublic]:
    """hq_admin, site_manager and finance: the orders of their sites, newest first."""
    forbid_unless(user.role != Role.ENGINEER, "payments")
    if site is not None:
        forbid_unless(can_see_site(user, site), f"site {site}")
        sites: list[str] | None = [site]
    else:
        sites = None if user.role == Role.HQ_ADMIN else list(user.sites)
    rows: list[PaymentOrder] = list(list_orders(session, sites, status_, limit))
    return [PaymentOrderPublic.model_validate(o, from_attributes=True) for o in rows]
