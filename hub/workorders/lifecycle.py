"""The work-order lifecycle as data: an explicit transition table, who may do what, SLAs.

Pure: no database, no clock. Every step takes the order, the actor, the action and the time,
and returns the new order and the audit entry to store with it, or raises:

- :class:`IllegalTransition` when the action does not apply in the order's state (with what
  to do instead: "cannot finish a work order that is paused; resume it first"),
- :class:`NotPermitted` when the actor may not take it (role, site, assignee, filer),
- :class:`InvalidAction` when the action lacks what it needs (an assignee, a reason, a rating).

States (domain.md, 受理-派工-处理-反馈-评价), the main line::

    new -> accepted -> in_progress -> finished -> [awaiting_payment] -> [awaiting_rating]
        -> follow_up -> completed

An order is dispatched, grabbed or auto-assigned into ``accepted``; ``transfer`` hands an accepted,
started or paused order to another engineer (back to ``accepted``), ``return`` gives it back
(``new``), ``pause`` / ``resume`` in progress; ``reopen`` after the work when the fix did not
hold; ``close`` ends it without work. :data:`TABLE` is the whole truth.

``confirm`` and ``pay`` go to the next stage that applies: payment only when the finish
recorded a charge, rating only when an owner filed the order; staff and alarm orders go
straight to the follow-up (the office checks the fix). docs/ALARMS.md draws the table.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocols.errors import WuyeError


class State(StrEnum):
    NEW = "new"  # not dispatched (未派单)
    ACCEPTED = "accepted"  # has an assignee: dispatched, grabbed or assigned round-robin
    IN_PROGRESS = "in_progress"
    PAUSED = "paused"  # waiting for parts, for the owner, ...
    FINISHED = "finished"  # the engineer's work is done; the office confirms
    AWAITING_PAYMENT = "awaiting_payment"  # a paid repair
    AWAITING_RATING = "awaiting_rating"  # the owner who filed it rates the service
    FOLLOW_UP = "follow_up"  # the office calls back / checks the fix
    COMPLETED = "completed"
    CLOSED = "closed"  # closed without work


class Action(StrEnum):
    CREATE = "create"  # not a transition: the first audit entry, written by open_order
    DISPATCH = "dispatch"
    GRAB = "grab"
    AUTO_ASSIGN = "auto_assign"
    START = "start"
    TRANSFER = "transfer"
    RETURN = "return"
    PAUSE = "pause"
    RESUME = "resume"
    FINISH = "finish"
    CONFIRM = "confirm"
    PAY = "pay"
    RATE = "rate"
    SKIP_RATING = "skip_rating"
    CALL_BACK = "call_back"
    REOPEN = "reopen"
    CLOSE = "close"


class Role(StrEnum):
    """The roles of hub.auth.Role, and the hub itself acting on its own."""

    HQ_ADMIN = "hq_admin"
    SITE_MANAGER = "site_manager"
    ENGINEER = "engineer"
    FINANCE = "finance"
    CASHIER = "cashier"  # takes payments as finance does
    OWNER = "owner"
    SYSTEM = "system"  # round-robin, payment notifications, timeouts, alarms


class Party(StrEnum):
    """Who may take a transition, relative to the order."""

    HQ_ADMIN = "hq_admin"  # any HQ admin
    SITE_MANAGER = "site_manager"  # a site manager of the order's site
    FINANCE = "finance"  # finance staff of the order's site
    ENGINEER = "engineer"  # any engineer of the order's site
    ASSIGNEE = "assignee"  # the engineer the order is assigned to
    FILER = "filer"  # the owner who filed it
    SYSTEM = "system"  # the hub itself


class Source(StrEnum):
    OWNER = "owner"  # a repair request from an owner
    STAFF = "staff"
    ALARM = "alarm"  # opened by an equipment alarm


class Priority(StrEnum):
    URGENT = "urgent"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


@dataclass(frozen=True, slots=True)
class Transition:
    """``action`` in ``state`` leads to ``to`` (one of them: see :func:`next_stage`)."""

    state: State
    action: Action
    to: tuple[State, ...]
    who: frozenset[Party]


_STAFF = frozenset({Party.HQ_ADMIN, Party.SITE_MANAGER})
_STAFF_OR_HUB = _STAFF | {Party.SYSTEM}
_ASSIGNEE_OR_STAFF = _STAFF | {Party.ASSIGNEE}
_AFTER_FINISH = (State.AWAITING_PAYMENT, State.AWAITING_RATING, State.FOLLOW_UP)


def _t(state: State, action: Action, to: State | tuple[State, ...], *who: Party) -> Transition:
    return Transition(state, action, to if isinstance(to, tuple) else (to,), frozenset(who))


S, A, P = State, Action, Party
TABLE: tuple[Transition, ...] = (
    _t(S.NEW, A.DISPATCH, S.ACCEPTED, *_STAFF),
    _t(S.NEW, A.GRAB, S.ACCEPTED, P.ENGINEER),
    _t(S.NEW, A.AUTO_ASSIGN, S.ACCEPTED, P.SYSTEM),
    _t(S.NEW, A.CLOSE, S.CLOSED, *_STAFF, P.FILER),
    _t(S.ACCEPTED, A.START, S.IN_PROGRESS, P.ASSIGNEE),
    _t(S.ACCEPTED, A.TRANSFER, S.ACCEPTED, *_ASSIGNEE_OR_STAFF),
    _t(S.ACCEPTED, A.RETURN, S.NEW, P.ASSIGNEE),
    _t(S.ACCEPTED, A.CLOSE, S.CLOSED, *_STAFF, P.FILER),
    _t(S.IN_PROGRESS, A.PAUSE, S.PAUSED, P.ASSIGNEE),
    _t(S.IN_PROGRESS, A.TRANSFER, S.ACCEPTED, *_ASSIGNEE_OR_STAFF),
    _t(S.IN_PROGRESS, A.RETURN, S.NEW, P.ASSIGNEE),
    _t(S.IN_PROGRESS, A.FINISH, S.FINISHED, P.ASSIGNEE),
    _t(S.IN_PROGRESS, A.CLOSE, S.CLOSED, *_STAFF),
    _t(S.PAUSED, A.RESUME, S.IN_PROGRESS, *_ASSIGNEE_OR_STAFF),
    _t(S.PAUSED, A.TRANSFER, S.ACCEPTED, *_ASSIGNEE_OR_STAFF),
    _t(S.PAUSED, A.CLOSE, S.CLOSED, *_STAFF),
    _t(S.FINISHED, A.CONFIRM, _AFTER_FINISH, *_STAFF_OR_HUB),
    _t(S.FINISHED, A.REOPEN, S.ACCEPTED, *_STAFF),
    _t(
        S.AWAITING_PAYMENT,
        A.PAY,
        (S.AWAITING_RATING, S.FOLLOW_UP),
        *_STAFF_OR_HUB,
        P.FINANCE,
        P.FILER,
    ),
    _t(S.AWAITING_RATING, A.RATE, S.FOLLOW_UP, P.FILER),
    _t(S.AWAITING_RATING, A.SKIP_RATING, S.FOLLOW_UP, *_STAFF_OR_HUB),
    _t(S.AWAITING_RATING, A.REOPEN, S.ACCEPTED, *_STAFF),
    _t(S.FOLLOW_UP, A.CALL_BACK, S.COMPLETED, *_STAFF),
    _t(S.FOLLOW_UP, A.REOPEN, S.ACCEPTED, *_STAFF),
)
TRANSITIONS: Mapping[tuple[State, Action], Transition] = {(t.state, t.action): t for t in TABLE}
FINAL = frozenset({State.COMPLETED, State.CLOSED})
_NEEDS_NOTE = frozenset({Action.RETURN, Action.PAUSE, Action.CLOSE, Action.REOPEN})
_NEEDS_ASSIGNEE = frozenset({Action.DISPATCH, Action.AUTO_ASSIGN, Action.TRANSFER})

_VERB = {
    A.CREATE: "create",
    A.DISPATCH: "dispatch",
    A.GRAB: "grab",
    A.AUTO_ASSIGN: "auto-assign",
    A.START: "start",
    A.TRANSFER: "transfer",
    A.RETURN: "return",
    A.PAUSE: "pause",
    A.RESUME: "resume",
    A.FINISH: "finish",
    A.CONFIRM: "confirm",
    A.PAY: "record the payment of",
    A.RATE: "rate",
    A.SKIP_RATING: "skip the rating of",
    A.CALL_BACK: "record the follow-up call of",
    A.REOPEN: "reopen",
    A.CLOSE: "close",
}
_WORD = {
    S.NEW: "not dispatched",
    S.ACCEPTED: "accepted",
    S.IN_PROGRESS: "in progress",
    S.PAUSED: "paused",
    S.FINISHED: "finished",
    S.AWAITING_PAYMENT: "awaiting payment",
    S.AWAITING_RATING: "awaiting rating",
    S.FOLLOW_UP: "awaiting its follow-up call",
    S.COMPLETED: "completed",
    S.CLOSED: "closed",
}
_PARTY = {
    P.HQ_ADMIN: "an HQ admin",
    P.SITE_MANAGER: "a site manager of {site}",
    P.FINANCE: "finance staff of {site}",
    P.ENGINEER: "an engineer of {site}",
    P.ASSIGNEE: "its assignee ({assignee})",
    P.FILER: "the owner who filed it ({filer})",
    P.SYSTEM: "the hub itself",
}


class WorkOrderError(WuyeError):
    """A work-order step that was refused; ``str()`` says why, for the person who tried."""


class IllegalTransition(WorkOrderError):
    """The action does not apply to the order in its state (HTTP 409)."""

    def __init__(self, state: State, action: Action, message: str) -> None:
        self.state, self.action = state, action
        super().__init__(message)


class NotPermitted(WorkOrderError):
    """The actor may not take this action on this order (HTTP 403)."""


class InvalidAction(WorkOrderError):
    """The action lacks what it needs, or carries what it must not (HTTP 422)."""


class NoEligibleEngineer(WorkOrderError):
    """Round-robin found nobody on duty with the skill at the site."""


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: a user with a role and the sites it works at (hq_admin and system: all)."""

    username: str
    role: Role
    sites: frozenset[str] = frozenset()


SYSTEM = Actor("system", Role.SYSTEM)


@dataclass(frozen=True, slots=True)
class WorkOrder:
    """What the lifecycle needs to know of an order; the hub stores more around it."""

    id: str
    site: str
    source: Source
    filed_by: str  # username of the owner or staff member; "system" for alarms
    created_at: datetime
    priority: Priority = Priority.NORMAL
    skill: str = "general"
    state: State = State.NEW
    assignee: str | None = None
    accepted_at: datetime | None = None  # latest acceptance; None again after a return
    finished_at: datetime | None = None  # None again after a reopen
    ended_at: datetime | None = None  # completed or closed
    charge_fen: int = 0  # what the owner pays for a paid repair
    paid: bool = False
    rating: int | None = None

    def __post_init__(self) -> None:
        _aware(self.created_at, "created_at")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One step of an order's history: who did what, when, and why."""

    order: str
    at: datetime
    actor: str
    role: Role
    action: Action
    from_state: State | None  # None for creation
    to_state: State
    note: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)  # assignee, charge, rating ...


def _aware(at: datetime, name: str) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidAction(f"{name} must be timezone-aware, got {at.isoformat()}")


def open_order(order: WorkOrder, actor: Actor, note: str = "") -> AuditEntry:
    """The first audit entry of a new order (state ``new``); InvalidAction if it is not new."""
    if order.state is not State.NEW or order.assignee is not None:
        raise InvalidAction("a work order starts not dispatched, with no assignee")
    return AuditEntry(
        order.id, order.created_at, actor.username, actor.role, Action.CREATE, None, State.NEW, note
    )


def next_stage(order: WorkOrder, after: State) -> State:
    """The stage after ``after`` (finished or awaiting payment) that applies to ``order``."""
    if after is State.FINISHED and order.charge_fen > 0 and not order.paid:
        return State.AWAITING_PAYMENT
    if order.source is Source.OWNER:
        return State.AWAITING_RATING
    return State.FOLLOW_UP


def allowed_actions(state: State) -> tuple[Action, ...]:
    """Actions the table has for ``state``, in table order."""
    return tuple(t.action for t in TABLE if t.state is state)


def _parties(actor: Actor, order: WorkOrder) -> set[Party]:
    """What ``actor`` is to ``order``."""
    here = order.site in actor.sites
    out: set[Party] = set()
    match actor.role:
        case Role.HQ_ADMIN:
            out.add(Party.HQ_ADMIN)
        case Role.SYSTEM:
            out.add(Party.SYSTEM)
        case Role.SITE_MANAGER if here:
            out.add(Party.SITE_MANAGER)
        case Role.FINANCE | Role.CASHIER if here:
            out.add(Party.FINANCE)
        case Role.ENGINEER:
            if here:
                out.add(Party.ENGINEER)
            if order.assignee == actor.username:
                out.add(Party.ASSIGNEE)
        case Role.OWNER if order.source is Source.OWNER and order.filed_by == actor.username:
            out.add(Party.FILER)
    return out


def _illegal(order: WorkOrder, action: Action) -> IllegalTransition:
    state = order.state
    base = f"cannot {_VERB[action]} a work order that is {_WORD[state]}"
    if action is Action.CREATE:
        msg = f"{base}: work orders are created with open_order, not by a transition"
    elif state in FINAL:
        msg = f"{base}; a {state} work order is final"
    elif any(t.action is action and t.to == (state,) for t in TABLE):
        msg = f"cannot {_VERB[action]} a work order that is already {_WORD[state]}"
    else:
        path = _path_to(state, action)
        if path is not None and len(path) == 1:
            msg = f"{base}; {_VERB[path[0]]} it first"
        elif path is not None and len(path) == 2:
            msg = f"{base}; first {_VERB[path[0]]} it, then {_VERB[path[1]]} it"
        else:
            where = " or ".join(_WORD[t.state] for t in TABLE if t.action is action)
            msg = f"{base}; that is possible only when it is {where}"
    allowed = ", ".join(allowed_actions(state)) or "none"
    return IllegalTransition(state, action, f"{msg} (possible now: {allowed})")


def _path_to(start: State, action: Action) -> list[Action] | None:
    """Shortest list of actions from ``start`` to a state where ``action`` applies."""
    seen = {start}
    queue: deque[tuple[State, list[Action]]] = deque([(start, [])])
    while queue:
        state, path = queue.popleft()
        if (state, action) in TRANSITIONS:
            return path
        for t in TABLE:
            if t.state is state:
                for to in t.to:
                    if to not in seen:
                        seen.add(to)
                        queue.append((to, [*path, t.action]))
    return None


def _permit(order: WorkOrder, actor: Actor, t: Transition) -> None:
    if _parties(actor, order) & t.who:
        return
    names = [
        _PARTY[p].format(site=order.site, assignee=order.assignee, filer=order.filed_by)
        for p in Party
        if p in t.who
    ]
    who = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    raise NotPermitted(
        f"{actor.username} ({actor.role}) may not {_VERB[t.action]} work order {order.id}: "
        f"only {who} may"
    )


def transition(
    order: WorkOrder,
    actor: Actor,
    action: Action,
    at: datetime,
    *,
    note: str = "",
    assignee: str | None = None,
    charge_fen: int | None = None,
    rating: int | None = None,
) -> tuple[WorkOrder, AuditEntry]:
    """Take ``action`` on ``order`` as ``actor`` at ``at``: the new order and its audit entry.

    ``assignee`` is required by dispatch, auto_assign and transfer; ``note`` (the reason) by
    return, pause, close and reopen; ``rating`` (1-5) by rate; ``charge_fen`` is optional on
    finish, only for a repair an owner filed (None keeps the charge it has; a paid charge
    cannot change). Raises IllegalTransition, NotPermitted or InvalidAction (checked in that
    order). The caller checks that an assignee is an engineer of the site
    (:func:`eligible`).
    """
    _aware(at, "at")
    t = TRANSITIONS.get((order.state, action))
    if t is None:
        raise _illegal(order, action)
    _permit(order, actor, t)
    _check_payload(order, actor, action, note, assignee, charge_fen, rating)
    details: dict[str, Any] = {}
    new = order
    match action:
        case Action.DISPATCH | Action.AUTO_ASSIGN:
            new = replace(order, assignee=assignee, accepted_at=at)
            details["assignee"] = assignee
        case Action.GRAB:
            new = replace(order, assignee=actor.username, accepted_at=at)
            details["assignee"] = actor.username
        case Action.TRANSFER:
            new = replace(order, assignee=assignee)
            details.update({"from": order.assignee, "assignee": assignee})
        case Action.RETURN:
            new = replace(order, assignee=None, accepted_at=None)
            details["from"] = order.assignee
        case Action.FINISH:
            charge = order.charge_fen if charge_fen is None else charge_fen
            new = replace(order, finished_at=at, charge_fen=charge)
            if charge:
                details["charge_fen"] = charge
        case Action.PAY:
            new = replace(order, paid=True)
            details["charge_fen"] = order.charge_fen
        case Action.RATE:
            new = replace(order, rating=rating)
            details["rating"] = rating
        case Action.REOPEN:
            new = replace(order, finished_at=None, rating=None)  # a payment made stands
            details["assignee"] = order.assignee
    to = t.to[0] if len(t.to) == 1 else next_stage(new, order.state)
    if to in FINAL:
        new = replace(new, ended_at=at)
    new = replace(new, state=to)
    entry = AuditEntry(
        order.id, at, actor.username, actor.role, action, order.state, to, note, details
    )
    return new, entry


def _check_payload(
    order: WorkOrder,
    actor: Actor,
    action: Action,
    note: str,
    assignee: str | None,
    charge_fen: int | None,
    rating: int | None,
) -> None:
    verb = _VERB[action]
    if action in _NEEDS_NOTE and not note.strip():
        raise InvalidAction(f"say why you {verb} work order {order.id}: a note is required")
    if action in _NEEDS_ASSIGNEE:
        if not assignee:
            raise InvalidAction(f"{action} needs the engineer to assign")
        if action is Action.TRANSFER and assignee == order.assignee:
            raise InvalidAction(f"work order {order.id} is already assigned to {assignee}")
    elif assignee is not None and not (action is Action.GRAB and assignee == actor.username):
        raise InvalidAction(f"{action} takes no assignee")
    if action is Action.FINISH and charge_fen is not None:
        if charge_fen < 0:
            raise InvalidAction(f"charge_fen must not be negative, got {charge_fen}")
        if charge_fen and order.source is not Source.OWNER:
            raise InvalidAction("only a repair an owner filed can be charged")
        if order.paid and charge_fen != order.charge_fen:
            raise InvalidAction(
                f"work order {order.id} was already paid ({order.charge_fen} fen); "
                "its charge cannot change"
            )
    elif charge_fen is not None:
        raise InvalidAction(f"{action} takes no charge")
    if action is Action.RATE:
        if rating is None or not 1 <= rating <= 5:
            raise InvalidAction(f"a rating is 1 to 5 stars, got {rating}")
    elif rating is not None:
        raise InvalidAction(f"{action} takes no rating")


# --- SLA --------------------------------------------------------------------------------

Positive = Annotated[timedelta, Field(gt=timedelta(0))]


class SlaTerms(BaseModel):
    """Time from creation to acceptance and to the end of the work."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    accept: Positive
    finish: Positive

    @model_validator(mode="after")
    def _order(self) -> SlaTerms:
        if self.finish < self.accept:
            raise ValueError("finish must not come before accept")
        return self


class SlaPolicy(BaseModel):
    """SLA terms per priority; every priority must have terms (settings can parse this)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    terms: dict[Priority, SlaTerms]

    @model_validator(mode="after")
    def _every_priority(self) -> SlaPolicy:
        missing = [p.value for p in Priority if p not in self.terms]
        if missing:
            raise ValueError(f"no SLA terms for priority {', '.join(missing)}")
        return self


_MIN, _HOUR = timedelta(minutes=1), timedelta(hours=1)
DEFAULT_SLA = SlaPolicy(
    terms={
        Priority.URGENT: SlaTerms(accept=15 * _MIN, finish=4 * _HOUR),
        Priority.HIGH: SlaTerms(accept=30 * _MIN, finish=24 * _HOUR),
        Priority.NORMAL: SlaTerms(accept=2 * _HOUR, finish=48 * _HOUR),
        Priority.LOW: SlaTerms(accept=8 * _HOUR, finish=7 * 24 * _HOUR),
    }
)


class Deadline(StrEnum):
    ACCEPT = "accept"
    FINISH = "finish"


@dataclass(frozen=True, slots=True)
class Breach:
    """A deadline missed: ``by`` how long at ``now`` (ongoing), or when it was met late."""

    deadline: Deadline
    due: datetime
    by: timedelta
    ongoing: bool  # still not met at ``now``: escalate; False: met late (for reports)


def breaches(order: WorkOrder, now: datetime, policy: SlaPolicy = DEFAULT_SLA) -> list[Breach]:
    """The order's missed deadlines at ``now``, accept first.

    A deadline is met by the event (accepted, finished) at or before it is due; an order
    closed without work stops its clocks when it closes. Exactly on time is not a breach.
    """
    _aware(now, "now")
    terms = policy.terms[order.priority]
    out = []
    for deadline, span, met in (
        (Deadline.ACCEPT, terms.accept, order.accepted_at),
        (Deadline.FINISH, terms.finish, order.finished_at),
    ):
        due = order.created_at + span
        stop = met if met is not None else order.ended_at
        if stop is not None:
            if stop > due:
                out.append(Breach(deadline, due, stop - due, ongoing=False))
        elif now > due:
            out.append(Breach(deadline, due, now - due, ongoing=True))
    return out


# --- round-robin ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Engineer:
    username: str
    sites: frozenset[str]
    skills: frozenset[str]
    on_duty: bool = True


def eligible(engineers: Iterable[Engineer], site: str, skill: str | None) -> list[str]:
    """Usernames (sorted) of engineers on duty at ``site`` with ``skill`` (None: any)."""
    return sorted(
        e.username
        for e in engineers
        if e.on_duty and site in e.sites and (skill is None or skill in e.skills)
    )


def pick_engineer(
    engineers: Iterable[Engineer], site: str, skill: str | None, last: str | None
) -> str:
    """Round-robin: the next eligible engineer after ``last`` in username order.

    ``last`` is who the previous round-robin pick of the same (site, skill) went to; it may
    have gone off duty since (the turn passes to the next name after it). Raises
    NoEligibleEngineer when nobody is eligible.
    """
    names = eligible(engineers, site, skill)
    if not names:
        raise NoEligibleEngineer(
            f"no engineer on duty at {site}" + (f" with skill {skill!r}" if skill else "")
        )
    if last is not None:
        for name in names:
            if name > last:
                return name
    return names[0]
