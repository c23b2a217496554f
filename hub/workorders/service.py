"""Work orders at the hub: opening them, taking lifecycle steps, notes, and reading them.

Every step goes through :func:`hub.workorders.lifecycle.transition` (the only copy of the
rules); this module stores what it returns: the order by a conditional UPDATE on its
``version`` (two people acting at once: one wins, the other gets :class:`Conflict`), and
the audit entry in the same transaction, with the notifications the step causes.

Functions named for the API (:func:`file_order`, :func:`act`) own their transaction and
commit; the others (:func:`open_order`, :func:`add_note`, :func:`raise_priority`,
:func:`auto_assign`) write into the caller's, for the alarm hooks and the SLA check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select, update

from hub.auth import Role as UserRole
from hub.models import Device, User, utcnow
from hub.notify.service import PRIORITY_SEVERITY, Event, publish
from hub.settings import DEFAULT_SKILLS, HubSettings
from hub.workorders import dispatching
from hub.workorders.lifecycle import (
    DEFAULT_SLA,
    SYSTEM,
    Action,
    Actor,
    AuditEntry,
    InvalidAction,
    NoEligibleEngineer,
    NotPermitted,
    Priority,
    Role,
    SlaPolicy,
    Source,
    State,
    WorkOrder,
    WorkOrderError,
    transition,
)
from hub.workorders.lifecycle import open_order as first_entry
from hub.workorders.models import WorkOrderAudit, WorkOrderRecord
from protocols.alarms.model import Severity

PRIORITY_RANK = {Priority.LOW: 0, Priority.NORMAL: 1, Priority.HIGH: 2, Priority.URGENT: 3}
SEVERITY_PRIORITY = {
    Severity.CRITICAL: Priority.URGENT,
    Severity.MAJOR: Priority.HIGH,
    Severity.MINOR: Priority.NORMAL,
    Severity.WARNING: Priority.LOW,
    Severity.INDETERMINATE: Priority.LOW,
}
_ASSIGNING = {Action.DISPATCH, Action.GRAB, Action.AUTO_ASSIGN, Action.TRANSFER, Action.REOPEN}


@dataclass(frozen=True, slots=True)
class Config:
    """What the work-order code takes from the settings."""

    min_severity: Severity = Severity.MAJOR  # alarms at or above open an order
    skills: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_SKILLS))
    sla: SlaPolicy = DEFAULT_SLA
    auto_assign: bool = True

    @classmethod
    def from_settings(cls, settings: HubSettings) -> Config:
        return cls(
            settings.workorder_min_severity,
            dict(settings.workorder_skills),
            settings.workorder_sla,
            settings.workorder_auto_assign,
        )


class WorkOrderNotFound(LookupError):
    """No such work order (HTTP 404)."""


class Conflict(WorkOrderError):
    """The order changed between reading and writing it (HTTP 409): reload and retry."""


@dataclass(frozen=True, slots=True)
class NewOrder:
    site: str
    source: Source
    title: str
    filed_by: str
    description: str = ""
    location: str = ""
    priority: Priority = Priority.NORMAL
    skill: str = "general"
    alarm_id: int | None = None


def priority_for(severity: Severity) -> Priority:
    return SEVERITY_PRIORITY[severity]


def actor_of(user: User) -> Actor:
    return Actor(user.username, Role(user.role), frozenset(user.sites or []))


def as_lifecycle(rec: WorkOrderRecord) -> WorkOrder:
    """The order as :mod:`lifecycle` sees it."""
    return WorkOrder(
        id=str(rec.id),
        site=rec.site_id,
        source=Source(rec.source),
        filed_by=rec.filed_by,
        created_at=rec.created_at,
        priority=Priority(rec.priority),
        skill=rec.skill,
        state=State(rec.state),
        assignee=rec.assignee,
        accepted_at=rec.accepted_at,
        finished_at=rec.finished_at,
        ended_at=rec.ended_at,
        charge_fen=rec.charge_fen,
        paid=rec.paid,
        rating=rec.rating,
    )


def summary(rec: WorkOrderRecord) -> dict[str, Any]:
    """What a notification says about an order."""
    return {
        "id": rec.id,
        "site": rec.site_id,
        "title": rec.title,
        "source": rec.source,
        "alarm_id": rec.alarm_id,
        "priority": rec.priority,
        "skill": rec.skill,
        "state": rec.state,
        "assignee": rec.assignee,
        "location": rec.location,
        "accept_due": rec.accept_due.isoformat(),
        "finish_due": rec.finish_due.isoformat(),
    }


def _deadlines(created_at: datetime, priority: Priority, sla: SlaPolicy) -> dict[str, datetime]:
    terms = sla.terms[priority]
    return {"accept_due": created_at + terms.accept, "finish_due": created_at + terms.finish}


# -- writing -----------------------------------------------------------------------------------
def _insert(s: Session) -> Any:
    return (postgresql if s.get_bind().dialect.name == "postgresql" else sqlite).insert(
        WorkOrderRecord.__table__  # type: ignore[attr-defined]
    )


def _audit(s: Session, order_id: int, e: AuditEntry) -> WorkOrderAudit:
    row = WorkOrderAudit(
        order_id=order_id,
        at=e.at,
        actor=e.actor,
        role=e.role.value,
        action=e.action.value,
        from_state=e.from_state.value if e.from_state is not None else None,
        to_state=e.to_state.value,
        note=e.note,
        details=dict(e.details),
    )
    s.add(row)
    s.flush()
    return row


def write(s: Session, rec: WorkOrderRecord, values: dict[str, Any], now: datetime) -> None:
    """Write ``values`` if nobody wrote the order since ``rec`` was read; Conflict if not."""
    assert rec.id is not None
    values = {**values, "updated_at": now, "version": rec.version + 1}
    done: Any = s.execute(
        update(WorkOrderRecord)
        .where(col(WorkOrderRecord.id) == rec.id, col(WorkOrderRecord.version) == rec.version)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:
        raise Conflict(f"work order {rec.id} was changed meanwhile; reload it and try again")
    for k, v in values.items():
        set_committed_value(rec, k, v)


def load_locked(s: Session, order_id: int) -> WorkOrderRecord:
    """The order, locked for this transaction (PostgreSQL) and read afresh."""
    rec = s.get(WorkOrderRecord, order_id, with_for_update=True, populate_existing=True)
    if rec is None:
        raise WorkOrderNotFound(f"no work order {order_id}")
    return rec


def open_order(
    s: Session,
    config: Config,
    new: NewOrder,
    actor: Actor,
    now: datetime | None = None,
    note: str = "",
) -> WorkOrderRecord | None:
    """Insert a new order with its ``create`` entry, then give it to an engineer on duty
    (round-robin) or tell the site it waits for one. Not committed.

    For an alarm's order, None if the alarm has one already: ``alarm_id`` is unique and the
    insert does nothing on conflict, so concurrent callers open one order between them.
    """
    now = now or utcnow()
    row: dict[str, Any] = {
        "site_id": new.site,
        "source": new.source.value,
        "alarm_id": new.alarm_id,
        "title": new.title[:200],
        "description": new.description,
        "location": new.location[:200],
        "priority": new.priority.value,
        "skill": new.skill,
        "state": State.NEW.value,
        "filed_by": new.filed_by,
        "version": 1,
        "created_at": now,
        "updated_at": now,
        "charge_fen": 0,
        "paid": False,
        "attachments": [],
        **_deadlines(now, new.priority, config.sla),
    }
    table = WorkOrderRecord.__table__  # type: ignore[attr-defined]
    stmt = _insert(s).values(**row)
    if new.alarm_id is not None:
        stmt = stmt.on_conflict_do_nothing(index_elements=["alarm_id"])
    order_id = s.execute(stmt.returning(table.c.id)).scalar_one_or_none()
    if order_id is None:
        return None
    rec = s.get(WorkOrderRecord, order_id, populate_existing=True)
    assert rec is not None
    _audit(s, order_id, first_entry(as_lifecycle(rec), actor, note))
    if not (config.auto_assign and auto_assign(s, rec, now)):
        _tell_unassigned(s, rec, f"wo:{order_id}:created")
    return rec


def auto_assign(s: Session, rec: WorkOrderRecord, now: datetime) -> bool:
    """Give a new order to the next engineer on duty with its skill at its site; False
    (nothing written) if there is none."""
    try:
        name = dispatching.next_engineer(s, rec.site_id, rec.skill)
    except NoEligibleEngineer:
        return False
    _step(s, rec, SYSTEM, Action.AUTO_ASSIGN, now, note="round-robin", assignee=name)
    return True


def _step(
    s: Session,
    rec: WorkOrderRecord,
    actor: Actor,
    action: Action,
    now: datetime,
    **kw: Any,
) -> WorkOrderAudit:
    """One lifecycle step on ``rec``: stored, audited, told. Raises the lifecycle's errors."""
    new, entry = transition(as_lifecycle(rec), actor, action, now, **kw)
    if action in (Action.DISPATCH, Action.TRANSFER) and new.assignee:
        dispatching.check_assignee(s, rec.site_id, new.assignee)
    write(
        s,
        rec,
        {
            "state": new.state.value,
            "assignee": new.assignee,
            "accepted_at": new.accepted_at,
            "finished_at": new.finished_at,
            "ended_at": new.ended_at,
            "charge_fen": new.charge_fen,
            "paid": new.paid,
            "rating": new.rating,
        },
        now,
    )
    audit = _audit(s, int(rec.id or 0), entry)
    key = f"wo:{rec.id}:step:{audit.id}"
    if action in _ASSIGNING and new.assignee:
        publish(
            s,
            Event(
                "workorder.assigned",
                key,
                rec.site_id,
                PRIORITY_SEVERITY[Priority(rec.priority)],
                {
                    **summary(rec),
                    "by": actor.username,
                    "action": action.value,
                    "note": kw.get("note", ""),
                },
                assignee=new.assignee,
            ),
        )
    elif new.state is State.NEW:
        _tell_unassigned(s, rec, key)
    return audit


def _tell_unassigned(s: Session, rec: WorkOrderRecord, key: str) -> None:
    publish(
        s,
        Event(
            "workorder.unassigned",
            key,
            rec.site_id,
            PRIORITY_SEVERITY[Priority(rec.priority)],
            summary(rec),
        ),
    )


def add_note(
    s: Session,
    rec: WorkOrderRecord,
    action: str,
    note: str,
    now: datetime,
    details: Mapping[str, Any] | None = None,
    actor: Actor = SYSTEM,
) -> WorkOrderAudit:
    """An audit entry that changes no state (an alarm cleared, a deadline missed ...)."""
    assert rec.id is not None
    row = WorkOrderAudit(
        order_id=rec.id,
        at=now,
        actor=actor.username,
        role=actor.role.value,
        action=action,
        from_state=rec.state,
        to_state=rec.state,
        note=note,
        details=dict(details or {}),
    )
    s.add(row)
    s.flush()
    return row


def raise_priority(
    s: Session, config: Config, rec: WorkOrderRecord, priority: Priority, now: datetime, why: str
) -> bool:
    """Raise the order's priority (never lower it) and its deadlines with it; False if it
    already is at least ``priority`` or has ended."""
    old = Priority(rec.priority)
    if PRIORITY_RANK[priority] <= PRIORITY_RANK[old] or State(rec.state) in (
        State.COMPLETED,
        State.CLOSED,
    ):
        return False
    write(
        s,
        rec,
        {"priority": priority.value, **_deadlines(rec.created_at, priority, config.sla)},
        now,
    )
    add_note(s, rec, "priority", why, now, {"from": old.value, "to": priority.value})
    return True


# -- the API's units of work -------------------------------------------------------------------
def may_file(s: Session, user: User, site: str) -> Source:
    """The source an order ``user`` files at ``site`` gets; NotPermitted if none."""
    role = UserRole(user.role)
    if role is UserRole.OWNER:
        if site in (user.sites or []):
            return Source.OWNER
        pairs = [tuple(d.split("/", 1)) for d in user.devices or [] if "/" in d]
        for gw, dev in pairs:
            d = s.exec(
                select(Device).where(Device.gateway_id == gw, Device.device_id == dev)
            ).first()
            if d is not None and d.site_id == site:
                return Source.OWNER
        raise NotPermitted(f"{user.username} (owner) may file repairs only where he lives")
    if role is UserRole.HQ_ADMIN or (
        role in (UserRole.SITE_MANAGER, UserRole.ENGINEER) and site in (user.sites or [])
    ):
        return Source.STAFF
    raise NotPermitted(f"{user.username} ({user.role}) may not open work orders at {site}")


def file_order(
    s: Session,
    config: Config,
    user: User,
    new: NewOrder,
    now: datetime | None = None,
) -> WorkOrderRecord:
    """A repair request (owner) or a staff order, opened and committed. Owners' orders are
    normal priority whatever they ask. NotPermitted, InvalidAction."""
    source = may_file(s, user, new.site)
    if not dispatching.SKILL.match(new.skill):
        raise InvalidAction(f"a skill is a short lower-case word, not {new.skill!r}")
    if not new.title.strip():
        raise InvalidAction("a work order needs a title")
    fixed = NewOrder(
        site=new.site,
        source=source,
        title=new.title.strip(),
        filed_by=user.username,
        description=new.description,
        location=new.location,
        priority=Priority.NORMAL if source is Source.OWNER else new.priority,
        skill=new.skill,
    )
    rec = open_order(s, config, fixed, actor_of(user), now)
    assert rec is not None
    s.commit()
    return rec


def act(
    s: Session,
    order_id: int,
    actor: Actor,
    action: Action,
    now: datetime | None = None,
    **kw: Any,
) -> tuple[WorkOrderRecord, WorkOrderAudit]:
    """Take ``action`` on the order and commit: note, assignee, charge_fen, rating as
    :func:`lifecycle.transition` takes them. Raises WorkOrderNotFound, IllegalTransition,
    NotPermitted, InvalidAction or Conflict; nothing is written then."""
    try:
        rec = load_locked(s, order_id)
        audit = _step(s, rec, actor, action, now or utcnow(), **kw)
        s.commit()
    except BaseException:
        s.rollback()
        raise
    return rec, audit


# -- reading -----------------------------------------------------------------------------------
def can_see(user: User, rec: WorkOrderRecord) -> bool:
    role = UserRole(user.role)
    if role is UserRole.HQ_ADMIN:
        return True
    if role is UserRole.OWNER:
        return rec.source == Source.OWNER and rec.filed_by == user.username
    return rec.site_id in (user.sites or [])


def get(s: Session, order_id: int) -> WorkOrderRecord:
    rec = s.get(WorkOrderRecord, order_id)
    if rec is None:
        raise WorkOrderNotFound(f"no work order {order_id}")
    return rec


def trail(s: Session, order_id: int) -> list[WorkOrderAudit]:
    return list(
        s.exec(
            select(WorkOrderAudit)
            .where(WorkOrderAudit.order_id == order_id)
            .order_by(col(WorkOrderAudit.id))
        )
    )


def visible(
    s: Session,
    user: User,
    *,
    site: str | None = None,
    states: Sequence[State] = (),
    assignee: str | None = None,
    source: Source | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[WorkOrderRecord]:
    """Orders ``user`` may see, newest first: HQ every site, staff their sites, owners
    the repairs they filed."""
    q = select(WorkOrderRecord).order_by(col(WorkOrderRecord.id).desc()).limit(limit)
    role = UserRole(user.role)
    if role is UserRole.OWNER:
        q = q.where(
            WorkOrderRecord.filed_by == user.username, WorkOrderRecord.source == Source.OWNER.value
        )
    elif role is not UserRole.HQ_ADMIN:
        q = q.where(col(WorkOrderRecord.site_id).in_(user.sites or []))
    if site is not None:
        q = q.where(WorkOrderRecord.site_id == site)
    if states:
        q = q.where(col(WorkOrderRecord.state).in_([x.value for x in states]))
    if assignee is not None:
        q = q.where(WorkOrderRecord.assignee == assignee)
    if source is not None:
        q = q.where(WorkOrderRecord.source == source.value)
    if before_id is not None:
        q = q.where(col(WorkOrderRecord.id) < before_id)
    return list(s.exec(q))
