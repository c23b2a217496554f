"""Who is told what (subscriptions), and what was sent (the outbox), over the API.

HQ admins manage every subscription; site managers those of their sites (not ``*``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel, Field
from sqlmodel import col, select

from hub.api.deps import INTEGER_MAX, SessionDep, StaffUser, forbid_unless, not_found, row_id
from hub.auth import Role
from hub.models import User
from hub.notify import service
from hub.notify.models import Notification, Subscription

router = APIRouter(prefix="/api/v1/notifications", tags=["notifications"])


def _sub_id(sub_id: int) -> int:
    return row_id(sub_id, "subscription", INTEGER_MAX)


SubscriptionId = Annotated[int, Depends(_sub_id)]


class SubscriptionIn(BaseModel):
    role: Role
    site_id: Annotated[str, Field(min_length=1, max_length=64)] = "*"
    event: Annotated[str, Field(max_length=32)]
    min_severity: Annotated[str, Field(max_length=16)] | None = None  # null: every severity
    only_assignee: bool = False
    channel: Annotated[str, Field(max_length=16)] = "webhook"
    enabled: bool = True


class SubscriptionChange(BaseModel):
    """Only the fields given change. ``min_severity`` null: every severity; the flags are
    true or false (null is refused: it would mean nothing)."""

    min_severity: Annotated[str, Field(max_length=16)] | None = None
    only_assignee: bool = False
    enabled: bool = True


class SubscriptionPublic(BaseModel):
    id: int
    role: str
    site_id: str
    event: str
    min_severity: str | None
    only_assignee: bool
    channel: str
    enabled: bool
    updated_at: datetime
    updated_by: str | None


class NotificationPublic(BaseModel):
    id: int
    key: str
    event: str
    site_id: str
    severity: str | None
    recipient: str
    channel: str
    status: str
    attempts: int
    created_at: datetime
    next_at: datetime
    last_status: int | None
    last_error: str
    delivered_at: datetime | None


def _public(x: Subscription) -> SubscriptionPublic:
    return SubscriptionPublic.model_validate(x, from_attributes=True)


def _manager(user: User) -> None:
    forbid_unless(user.role in (Role.HQ_ADMIN, Role.SITE_MANAGER), "managing notifications")


def _may_edit(user: User, site_id: str) -> None:
    _manager(user)
    if user.role != Role.HQ_ADMIN:
        forbid_unless(site_id in (user.sites or []), f"subscriptions of site {site_id}")


def _sites(user: User) -> list[str] | None:
    return None if user.role == Role.HQ_ADMIN else list(user.sites or [])


@router.get("/subscriptions")
def list_subscriptions(user: StaffUser, session: SessionDep) -> list[SubscriptionPublic]:
    _manager(user)
    return [_public(x) for x in service.list_subscriptions(session, _sites(user))]


@router.post("/subscriptions", status_code=status.HTTP_201_CREATED)
def add_subscription(
    body: SubscriptionIn, user: StaffUser, session: SessionDep
) -> SubscriptionPublic:
    _may_edit(user, body.site_id)
    try:
        sub = service.add_subscription(
            session, Subscription(**{**body.model_dump(), "role": body.role.value}), user.username
        )
    except service.NotifyError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    return _public(sub)


def _existing(session: SessionDep, user: User, sub_id: int) -> Subscription:
    """The subscription if ``user`` may edit it; 404 if it does not exist or is another
    site's (a site manager's view of ``*`` is read-only: 403)."""
    _manager(user)
    sub = session.get(Subscription, sub_id)
    sites = _sites(user)
    if sub is None or (sites is not None and sub.site_id not in [*sites, "*"]):
        raise not_found(f"subscription {sub_id}")
    _may_edit(user, sub.site_id)
    return sub


@router.patch("/subscriptions/{sub_id}")
def change_subscription(
    sub_id: SubscriptionId, body: SubscriptionChange, user: StaffUser, session: SessionDep
) -> SubscriptionPublic:
    _existing(session, user, sub_id)
    try:
        sub = service.update_subscription(
            session, sub_id, body.model_dump(exclude_unset=True), user.username
        )
    except service.NotifyError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    return _public(sub)


@router.delete("/subscriptions/{sub_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_subscription(sub_id: SubscriptionId, user: StaffUser, session: SessionDep) -> None:
    _existing(session, user, sub_id)
    service.delete_subscription(session, sub_id)


@router.get("")
def list_notifications(
    user: StaffUser,
    session: SessionDep,
    status_: Annotated[str | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[NotificationPublic]:
    """The outbox, newest first: HQ admins all, site managers their sites'."""
    _manager(user)
    q = select(Notification).order_by(col(Notification.id).desc()).limit(limit)
    sites = _sites(user)
    if sites is not None:
        q = q.where(col(Notification.site_id).in_(sites))
    if status_ is not None:
        q = q.where(Notification.status == status_)
    return [NotificationPublic.model_validate(n, from_attributes=True) for n in session.exec(q)]
