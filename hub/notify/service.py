"""Who is told what: events matched against subscriptions, written to the outbox.

:func:`publish` runs inside the transaction of the event (an alarm hook, a work-order
step) and never commits: the notifications commit or roll back with what caused them. The
sender (:mod:`hub.notify.sender`) delivers them afterwards. The subscription functions
below are for the API and own their transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from hub.auth import Role
from hub.models import User, utcnow
from hub.notify.models import Notification, Subscription
from hub.notify.sender import wake_senders
from hub.workorders.lifecycle import Priority
from protocols.alarms.model import Severity

EVENTS = (
    "alarm.raised",  # an alarm was raised, or got worse (severity: the alarm's, now)
    "workorder.assigned",  # an order has a (new) assignee: dispatch, grab, round-robin, transfer
    "workorder.unassigned",  # a new or returned order nobody could be given: dispatch it
    "workorder.sla_breached",  # a deadline passed with the order not accepted or not finished
)
CHANNELS = ("webhook",)

# a work order's priority, where a subscription asks for a severity
PRIORITY_SEVERITY = {
    Priority.URGENT: Severity.CRITICAL,
    Priority.HIGH: Severity.MAJOR,
    Priority.NORMAL: Severity.MINOR,
    Priority.LOW: Severity.WARNING,
}


class NotifyError(ValueError):
    """A subscription that cannot be (unknown role, event or channel)."""


@dataclass(frozen=True, slots=True)
class Event:
    """Something people may need to hear of; ``key`` names it, so it is told once."""

    kind: str
    key: str
    site: str
    severity: Severity
    data: Mapping[str, Any] = field(default_factory=dict)
    assignee: str | None = None  # for only_assignee subscriptions


def _wakers(s: Session) -> None:
    """After this session commits, wake the sender of this process (it polls anyway)."""
    if s.info.get("notify_waker"):
        return
    s.info["notify_waker"] = True

    def wake(session: Session) -> None:
        session.info.pop("notify_waker", None)
        wake_senders()

    def forget(session: Session) -> None:
        session.info.pop("notify_waker", None)

    sa_event.listen(s, "after_commit", wake, once=True)
    sa_event.listen(s, "after_rollback", forget, once=True)


def _insert(s: Session) -> Any:
    ins = (postgresql if s.get_bind().dialect.name == "postgresql" else sqlite).insert
    return ins(Notification.__table__).on_conflict_do_nothing(  # type: ignore[attr-defined]
        index_elements=["key", "recipient", "channel"]
    )


def recipients(s: Session, ev: Event) -> list[tuple[User, str]]:
    """(user, channel) for every active user a matching subscription names, once each."""
    subs = s.exec(
        select(Subscription).where(
            col(Subscription.enabled),
            col(Subscription.event).in_([ev.kind, "*"]),
            col(Subscription.site_id).in_([ev.site, "*"]),
        )
    ).all()
    subs = [
        x
        for x in subs
        if x.min_severity is None or ev.severity.rank >= Severity(x.min_severity).rank
    ]
    if not subs:
        return []
    users = s.exec(
        select(User).where(col(User.active), col(User.role).in_(sorted({x.role for x in subs})))
    ).all()
    out: dict[tuple[str, str], tuple[User, str]] = {}
    for sub in subs:
        for u in users:
            if u.role != sub.role:
                continue
            if u.role != Role.HQ_ADMIN and ev.site not in (u.sites or []):
                continue
            if sub.only_assignee and u.username != ev.assignee:
                continue
            out.setdefault((u.username, sub.channel), (u, sub.channel))
    return [out[k] for k in sorted(out)]


def publish(s: Session, ev: Event) -> int:
    """Write a notification for everyone subscribed to ``ev`` (not committed here).

    The same event key tells each person once per channel, even if published again (a
    hook run twice, a retried transaction). Returns how many rows were new.
    """
    targets = recipients(s, ev)
    if not targets:
        return 0
    now = utcnow()
    rows = [
        {
            "key": ev.key,
            "event": ev.kind,
            "site_id": ev.site,
            "severity": ev.severity.value,
            "recipient": u.username,
            "role": u.role,
            "channel": channel,
            "payload": dict(ev.data),
            "status": "pending",
            "attempts": 0,
            "created_at": now,
            "next_at": now,
            "last_error": "",
        }
        for u, channel in targets
    ]
    table = Notification.__table__  # type: ignore[attr-defined]
    # RETURNING, not rowcount: psycopg reports no rowcount for a batch
    made = s.execute(_insert(s).returning(table.c.id), rows).all()
    _wakers(s)
    return len(made)


# -- subscriptions (API) ---------------------------------------------------------------------
def check_subscription(sub: Subscription) -> None:
    """NotifyError unless every field names something that exists."""
    if sub.role not in {r.value for r in Role}:
        raise NotifyError(f"unknown role {sub.role!r}")
    if sub.event != "*" and sub.event not in EVENTS:
        raise NotifyError(f"unknown event {sub.event!r}: one of {', '.join(EVENTS)} or *")
    if sub.channel not in CHANNELS:
        raise NotifyError(f"unknown channel {sub.channel!r}: one of {', '.join(CHANNELS)}")
    if sub.min_severity is not None and sub.min_severity not in {v.value for v in Severity}:
        raise NotifyError(f"unknown severity {sub.min_severity!r}")
    if sub.only_assignee and sub.role != Role.ENGINEER:
        raise NotifyError("only engineers are assignees")


def list_subscriptions(s: Session, sites: list[str] | None) -> list[Subscription]:
    """Every subscription (``sites`` None), or those of these sites and of every site."""
    q = select(Subscription).order_by(col(Subscription.id))
    if sites is not None:
        q = q.where(col(Subscription.site_id).in_([*sites, "*"]))
    return list(s.exec(q))


def add_subscription(s: Session, sub: Subscription, who: str) -> Subscription:
    """Store a new subscription and commit; NotifyError if invalid or already there."""
    check_subscription(sub)
    same = s.exec(
        select(Subscription).where(
            Subscription.role == sub.role,
            Subscription.site_id == sub.site_id,
            Subscription.event == sub.event,
            Subscription.channel == sub.channel,
        )
    ).first()
    if same is not None:
        raise NotifyError(f"subscription {same.id} already covers this; change that one")
    sub.updated_by, sub.updated_at = who, utcnow()
    s.add(sub)
    s.commit()
    return sub


def update_subscription(
    s: Session, sub_id: int, changes: Mapping[str, Any], who: str
) -> Subscription:
    """Change ``min_severity``, ``only_assignee`` or ``enabled`` and commit."""
    sub = s.get(Subscription, sub_id)
    if sub is None:
        raise LookupError(f"no subscription {sub_id}")
    for k, v in changes.items():
        if k not in {"min_severity", "only_assignee", "enabled"}:
            raise NotifyError(f"{k} cannot change; delete the subscription and add another")
        setattr(sub, k, v)
    check_subscription(sub)
    sub.updated_by, sub.updated_at = who, utcnow()
    s.commit()
    return sub


def delete_subscription(s: Session, sub_id: int) -> None:
    sub = s.get(Subscription, sub_id)
    if sub is None:
        raise LookupError(f"no subscription {sub_id}")
    s.delete(sub)
    s.commit()
