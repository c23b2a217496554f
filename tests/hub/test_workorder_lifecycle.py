"""The work-order lifecycle: the transition table, roles, payloads, audit, SLA, round-robin."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from hub.workorders.lifecycle import (
    DEFAULT_SLA,
    FINAL,
    SYSTEM,
    TABLE,
    TRANSITIONS,
    Action,
    Actor,
    Breach,
    Deadline,
    Engineer,
    IllegalTransition,
    InvalidAction,
    NoEligibleEngineer,
    NotPermitted,
    Party,
    Priority,
    Role,
    SlaPolicy,
    Source,
    State,
    WorkOrder,
    allowed_actions,
    breaches,
    eligible,
    open_order,
    pick_engineer,
    transition,
)

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
SITE = "sunny-garden"

HQ = Actor("zhao", Role.HQ_ADMIN)
MANAGER = Actor("qian", Role.SITE_MANAGER, frozenset({SITE}))
OTHER_MANAGER = Actor("sun", Role.SITE_MANAGER, frozenset({"moon-bay"}))
FINANCE = Actor("li", Role.FINANCE, frozenset({SITE}))
OTHER_FINANCE = Actor("zhou", Role.FINANCE, frozenset({"moon-bay"}))
ASSIGNEE = Actor("wu", Role.ENGINEER, frozenset({SITE}))
COLLEAGUE = Actor("zheng", Role.ENGINEER, frozenset({SITE}))
STRANGER = Actor("wang", Role.ENGINEER, frozenset({"moon-bay"}))
FILER = Actor("owner-101", Role.OWNER)
NEIGHBOUR = Actor("owner-102", Role.OWNER)
ACTORS = {
    "hq": HQ,
    "manager": MANAGER,
    "other_manager": OTHER_MANAGER,
    "finance": FINANCE,
    "other_finance": OTHER_FINANCE,
    "assignee": ASSIGNEE,
    "colleague": COLLEAGUE,
    "stranger": STRANGER,
    "filer": FILER,
    "neighbour": NEIGHBOUR,
    "system": SYSTEM,
}
# written out by hand, apart from the code: which parties each actor is to an owner's order
# assigned to ASSIGNEE at SITE
IS = {
    "hq": {Party.HQ_ADMIN},
    "manager": {Party.SITE_MANAGER},
    "other_manager": set(),
    "finance": {Party.FINANCE},
    "other_finance": set(),
    "assignee": {Party.ASSIGNEE, Party.ENGINEER},
    "colleague": {Party.ENGINEER},
    "stranger": set(),
    "filer": {Party.FILER},
    "neighbour": set(),
    "system": {Party.SYSTEM},
}


def order(state=State.NEW, source=Source.OWNER, **fields) -> WorkOrder:
    assigned = state not in (State.NEW, State.CLOSED)
    base = WorkOrder(
        id="wo-1",
        site=SITE,
        source=source,
        filed_by=FILER.username if source is Source.OWNER else "qian",
        created_at=T0,
        state=state,
        assignee=ASSIGNEE.username if assigned else None,
        accepted_at=T0 + MIN if assigned else None,
    )
    return replace(base, **fields)


def payload(action: Action, who: Actor) -> dict:
    """What each action needs to be valid."""
    if action in (Action.DISPATCH, Action.AUTO_ASSIGN):
        return {"assignee": ASSIGNEE.username}
    if action is Action.TRANSFER:
        return {"assignee": COLLEAGUE.username}
    if action in (Action.RETURN, Action.PAUSE, Action.CLOSE, Action.REOPEN):
        return {"note": "because"}
    if action is Action.RATE:
        return {"rating": 5}
    return {}


def step(wo: WorkOrder, who: Actor, action: Action, minutes: int = 10, **extra):
    return transition(wo, who, action, T0 + minutes * MIN, **{**payload(action, who), **extra})


# --- the table --------------------------------------------------------------------------

PAIRS = [(s, a) for s in State for a in Action]
ILLEGAL = [p for p in PAIRS if p not in TRANSITIONS]


def test_the_table_has_one_entry_per_state_and_action_and_final_states_have_none():
    assert len(TRANSITIONS) == len(TABLE)
    assert not [t for t in TABLE if t.state in FINAL]
    assert not [t for t in TABLE if t.action is Action.CREATE]
    reachable = {State.NEW} | {to for t in TABLE for to in t.to}
    assert reachable == set(State)


@pytest.mark.parametrize(("state", "action"), ILLEGAL, ids=[f"{s}-{a}" for s, a in ILLEGAL])
def test_every_pair_not_in_the_table_is_refused_with_a_clear_error(state, action):
    for who in (HQ, SYSTEM, ASSIGNEE, FILER):  # whoever asks, and whatever it carries
        with pytest.raises(IllegalTransition) as err:
            step(order(state), who, action)
        assert (err.value.state, err.value.action) == (state, action)
        msg = str(err.value)
        assert msg.startswith("cannot "), msg
        assert "work order that is" in msg
        assert f"(possible now: {', '.join(allowed_actions(state)) or 'none'})" in msg


@pytest.mark.parametrize(
    ("state", "action", "message"),
    [
        (State.PAUSED, Action.FINISH, "cannot finish a work order that is paused; resume it first"),
        (
            State.ACCEPTED,
            Action.FINISH,
            "cannot finish a work order that is accepted; start it first",
        ),
        (
            State.NEW,
            Action.FINISH,
            "cannot finish a work order that is not dispatched; first dispatch it, then start it",
        ),
        (State.IN_PROGRESS, Action.START, "cannot start a work order that is already in progress"),
        (State.PAUSED, Action.PAUSE, "cannot pause a work order that is already paused"),
        (
            State.COMPLETED,
            Action.REOPEN,
            "cannot reopen a work order that is completed; a completed",
        ),
        (State.CLOSED, Action.DISPATCH, "a closed work order is final (possible now: none)"),
        (
            State.NEW,
            Action.RATE,
            "cannot rate a work order that is not dispatched; that is possible only when it is "
            "awaiting rating",
        ),
        (
            State.AWAITING_PAYMENT,
            Action.CLOSE,
            "cannot close a work order that is awaiting payment",
        ),
        (State.NEW, Action.CREATE, "created with open_order"),
    ],
)
def test_refusals_say_what_to_do_instead(state, action, message):
    with pytest.raises(IllegalTransition) as err:
        step(order(state), HQ, action)
    assert message in str(err.value)


def every_transition_with_a_permitted_actor():
    for t in TABLE:
        for name, parties in IS.items():
            if parties & t.who:
                yield t, name
                break


@pytest.mark.parametrize(
    ("t", "who"),
    list(every_transition_with_a_permitted_actor()),
    ids=[f"{t.state}-{t.action}" for t, _ in every_transition_with_a_permitted_actor()],
)
def test_every_transition_in_the_table_works(t, who):
    for source in Source:
        wo = order(t.state, source=source)
        actor = ACTORS[who]
        if t.action is Action.GRAB:
            actor = COLLEAGUE
        if source is not Source.OWNER and Party.FILER in IS[who]:
            continue  # staff and alarm orders have no filing owner
        new, entry = step(wo, actor, t.action)
        assert new.state in t.to
        assert (entry.from_state, entry.to_state, entry.action) == (t.state, new.state, t.action)


def test_every_transition_is_reached_by_real_paths_from_new():
    """Walk the lifecycle from a new order of each source, taking every action that applies
    (finish with and without a charge, transfer to the other engineer) with whoever may."""
    covered: set[tuple[State, Action]] = set()
    for source in Source:
        start = order(source=source, filed_by="owner-101" if source is Source.OWNER else "qian")
        todo, seen = [start], set()
        while todo:
            wo = todo.pop()
            key = (wo.state, wo.assignee, wo.charge_fen, wo.paid)
            if key in seen:
                continue
            seen.add(key)
            for action in allowed_actions(wo.state):
                for extra in _variants(wo, action):
                    new = _by_whoever_may(wo, action, extra)
                    if new is not None:
                        covered.add((wo.state, action))
                        todo.append(new)
    assert covered == set(TRANSITIONS)


def _variants(wo, action):
    other = COLLEAGUE.username if wo.assignee == ASSIGNEE.username else ASSIGNEE.username
    if action is Action.TRANSFER:
        return [{"assignee": other}]
    if action is Action.FINISH and wo.source is Source.OWNER and not wo.paid:
        return [{}, {"charge_fen": 5000}]
    return [{}]


def _by_whoever_may(wo, action, extra):
    assignee = [Actor(wo.assignee, Role.ENGINEER, frozenset({SITE}))] if wo.assignee else []
    for actor in [*ACTORS.values(), *assignee]:
        try:
            return step(wo, actor, action, **extra)[0]
        except NotPermitted:
            continue
    return None


def test_every_transition_has_someone_who_may_take_it():
    assert len(list(every_transition_with_a_permitted_actor())) == len(TABLE)


# --- roles ------------------------------------------------------------------------------

ROLE_CASES = [(t, name) for t in TABLE for name in ACTORS]


@pytest.mark.parametrize(
    ("t", "who"), ROLE_CASES, ids=[f"{t.state}-{t.action}-{n}" for t, n in ROLE_CASES]
)
def test_who_may_take_each_transition(t, who):
    wo = order(t.state)
    allowed = bool(IS[who] & t.who)
    if allowed:
        step(wo, ACTORS[who], t.action)
        return
    with pytest.raises(NotPermitted) as err:
        step(wo, ACTORS[who], t.action)
    actor = ACTORS[who]
    assert str(err.value).startswith(f"{actor.username} ({actor.role}) may not ")
    assert "only " in str(err.value)


def test_not_permitted_names_who_may():
    with pytest.raises(NotPermitted) as err:
        step(order(State.PAUSED), COLLEAGUE, Action.RESUME)
    assert str(err.value) == (
        "zheng (engineer) may not resume work order wo-1: only an HQ admin, "
        "a site manager of sunny-garden or its assignee (wu) may"
    )
    with pytest.raises(NotPermitted, match=r"only the owner who filed it \(owner-101\) may"):
        step(order(State.AWAITING_RATING), MANAGER, Action.RATE)


def test_an_owner_may_not_act_on_a_staff_order_even_with_the_same_name():
    wo = order(State.NEW, source=Source.STAFF, filed_by=FILER.username)
    with pytest.raises(NotPermitted):
        step(wo, FILER, Action.CLOSE)


def test_lifecycle_roles_are_the_hub_roles_and_the_hub_itself():
    from hub.auth import Role as HubRole

    assert {r.value for r in Role} == {r.value for r in HubRole} | {"system"}


# --- whole paths and the audit trail ----------------------------------------------------


def walk(wo, *steps):
    trail = []
    for minutes, (who, action, extra) in enumerate(steps, start=1):
        wo, entry = step(wo, who, action, minutes * 10, **extra)
        trail.append(entry)
    return wo, trail


def test_a_paid_repair_an_owner_filed_from_start_to_end():
    wo = order()
    first = open_order(wo, FILER, "kitchen tap leaks")
    assert (first.action, first.from_state, first.to_state) == (Action.CREATE, None, State.NEW)
    wo, trail = walk(
        wo,
        (COLLEAGUE, Action.GRAB, {}),
        (COLLEAGUE, Action.START, {}),
        (COLLEAGUE, Action.PAUSE, {"note": "waiting for a cartridge"}),
        (COLLEAGUE, Action.RESUME, {}),
        (COLLEAGUE, Action.FINISH, {"charge_fen": 8000}),
        (MANAGER, Action.CONFIRM, {}),
        (FILER, Action.PAY, {}),
        (FILER, Action.RATE, {"rating": 4}),
        (MANAGER, Action.CALL_BACK, {"note": "owner satisfied"}),
    )
    assert [e.to_state for e in trail] == [
        State.ACCEPTED,
        State.IN_PROGRESS,
        State.PAUSED,
        State.IN_PROGRESS,
        State.FINISHED,
        State.AWAITING_PAYMENT,
        State.AWAITING_RATING,
        State.FOLLOW_UP,
        State.COMPLETED,
    ]
    assert all(a.to_state == b.from_state for a, b in pairwise(trail))
    assert [e.at for e in trail] == sorted(e.at for e in trail)
    assert trail[0].details == {"assignee": "zheng"} and trail[0].actor == "zheng"
    assert trail[2].note == "waiting for a cartridge" and trail[2].role is Role.ENGINEER
    assert trail[4].details == {"charge_fen": 8000}
    assert trail[7].details == {"rating": 4}
    assert (wo.state, wo.assignee, wo.charge_fen, wo.paid, wo.rating) == (
        State.COMPLETED,
        "zheng",
        8000,
        True,
        4,
    )
    assert wo.ended_at == trail[-1].at and wo.finished_at == trail[4].at


def test_a_free_repair_an_owner_filed_goes_to_rating_and_the_hub_may_skip_it():
    _, trail = walk(
        order(),
        (MANAGER, Action.DISPATCH, {}),
        (ASSIGNEE, Action.START, {}),
        (ASSIGNEE, Action.FINISH, {}),
        (SYSTEM, Action.CONFIRM, {}),
        (SYSTEM, Action.SKIP_RATING, {"note": "not rated within 7 days"}),
    )
    assert [e.to_state for e in trail][-2:] == [State.AWAITING_RATING, State.FOLLOW_UP]


def test_an_alarm_order_round_robin_transfer_reopen_and_complete():
    wo, trail = walk(
        order(source=Source.ALARM, filed_by="system"),
        (SYSTEM, Action.AUTO_ASSIGN, {}),
        (ASSIGNEE, Action.START, {}),
        (ASSIGNEE, Action.TRANSFER, {}),
        (COLLEAGUE, Action.START, {}),
        (COLLEAGUE, Action.FINISH, {}),
        (SYSTEM, Action.CONFIRM, {}),
        (MANAGER, Action.REOPEN, {"note": "pressure low again"}),
        (COLLEAGUE, Action.START, {}),
        (COLLEAGUE, Action.FINISH, {}),
        (MANAGER, Action.CONFIRM, {}),
        (MANAGER, Action.CALL_BACK, {}),
    )
    assert trail[2].details == {"from": "wu", "assignee": "zheng"}
    assert trail[5].to_state is State.FOLLOW_UP  # no rating for an alarm's order
    assert trail[6].to_state is State.ACCEPTED and trail[6].details == {"assignee": "zheng"}
    assert wo.state is State.COMPLETED and wo.assignee == "zheng"


def test_returned_then_dispatched_again_and_closed_by_its_owner():
    wo, trail = walk(
        order(),
        (COLLEAGUE, Action.GRAB, {}),
        (COLLEAGUE, Action.RETURN, {"note": "needs an electrician"}),
    )
    assert (wo.state, wo.assignee, wo.accepted_at) == (State.NEW, None, None)
    assert trail[1].details == {"from": "zheng"}
    wo, _ = step(wo, MANAGER, Action.DISPATCH, 40, assignee="wu")
    wo, entry = step(wo, FILER, Action.CLOSE, 50, note="fixed it myself")
    assert (wo.state, wo.ended_at, entry.note) == (State.CLOSED, T0 + 50 * MIN, "fixed it myself")


# --- what an action needs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "who", "action", "extra", "problem"),
    [
        (State.NEW, MANAGER, Action.DISPATCH, {"assignee": None}, "needs the engineer to assign"),
        (State.ACCEPTED, MANAGER, Action.TRANSFER, {"assignee": "wu"}, "already assigned to wu"),
        (State.IN_PROGRESS, ASSIGNEE, Action.PAUSE, {"note": "  "}, "a note is required"),
        (State.NEW, MANAGER, Action.CLOSE, {"note": ""}, "say why you close work order wo-1"),
        (State.IN_PROGRESS, ASSIGNEE, Action.FINISH, {"charge_fen": -1}, "must not be negative"),
        (State.AWAITING_RATING, FILER, Action.RATE, {"rating": 6}, "1 to 5 stars, got 6"),
        (State.AWAITING_RATING, FILER, Action.RATE, {"rating": None}, "1 to 5 stars"),
        (State.ACCEPTED, ASSIGNEE, Action.START, {"rating": 3}, "start takes no rating"),
        (State.ACCEPTED, ASSIGNEE, Action.START, {"assignee": "li"}, "start takes no assignee"),
        (State.FINISHED, MANAGER, Action.CONFIRM, {"charge_fen": 5}, "confirm takes no charge"),
        (State.NEW, COLLEAGUE, Action.GRAB, {"assignee": "wu"}, "grab takes no assignee"),
    ],
)
def test_actions_refuse_missing_or_foreign_details(state, who, action, extra, problem):
    with pytest.raises(InvalidAction) as err:
        step(order(state), who, action, **extra)
    assert problem in str(err.value)


def test_charges_only_on_owner_repairs_and_never_after_payment():
    with pytest.raises(InvalidAction, match="only a repair an owner filed can be charged"):
        step(order(State.IN_PROGRESS, source=Source.STAFF), ASSIGNEE, Action.FINISH, charge_fen=100)
    paid = order(State.IN_PROGRESS, charge_fen=100, paid=True)
    with pytest.raises(InvalidAction, match="already paid"):
        step(paid, ASSIGNEE, Action.FINISH, charge_fen=200)
    again, _ = step(paid, ASSIGNEE, Action.FINISH)
    nxt, _ = step(again, MANAGER, Action.CONFIRM)
    assert nxt.state is State.AWAITING_RATING  # paid before a reopen: not asked twice


def test_times_must_be_aware():
    with pytest.raises(InvalidAction, match="timezone-aware"):
        transition(order(), MANAGER, Action.DISPATCH, datetime(2026, 3, 2), assignee="wu")
    with pytest.raises(InvalidAction, match="created_at must be timezone-aware"):
        order(created_at=datetime(2026, 3, 2))


def test_open_order_refuses_an_order_that_is_not_new():
    with pytest.raises(InvalidAction):
        open_order(order(State.ACCEPTED), MANAGER)


# --- SLA --------------------------------------------------------------------------------

H = timedelta(hours=1)


@pytest.mark.parametrize(
    ("priority", "fields", "now", "expected"),
    [
        # urgent: accept 15 min, finish 4 h
        (Priority.URGENT, {}, T0 + 15 * MIN, []),  # exactly on time is no breach
        (Priority.URGENT, {}, T0 + 16 * MIN, [(Deadline.ACCEPT, 1 * MIN, True)]),
        (
            Priority.URGENT,
            {},
            T0 + 5 * H,
            [(Deadline.ACCEPT, 5 * H - 15 * MIN, True), (Deadline.FINISH, 1 * H, True)],
        ),
        (Priority.URGENT, {"accepted_at": T0 + 10 * MIN}, T0 + 3 * H, []),
        (
            Priority.URGENT,
            {"accepted_at": T0 + 20 * MIN},
            T0 + 3 * H,
            [(Deadline.ACCEPT, 5 * MIN, False)],
        ),
        (
            Priority.URGENT,
            {"accepted_at": T0 + 10 * MIN, "finished_at": T0 + 4 * H + 30 * MIN},
            T0 + 9 * H,
            [(Deadline.FINISH, 30 * MIN, False)],
        ),
        # normal: accept 2 h, finish 48 h
        (Priority.NORMAL, {}, T0 + 2 * H, []),
        (Priority.NORMAL, {"accepted_at": T0 + H}, T0 + 50 * H, [(Deadline.FINISH, 2 * H, True)]),
        # closed without work stops the clocks
        (Priority.NORMAL, {"ended_at": T0 + H}, T0 + 100 * H, []),
        (
            Priority.NORMAL,
            {"ended_at": T0 + 3 * H},
            T0 + 100 * H,
            [(Deadline.ACCEPT, H, False)],
        ),
        # high: accept 30 min, finish 24 h; low: accept 8 h, finish 7 days
        (Priority.HIGH, {"accepted_at": T0 + 31 * MIN}, T0 + H, [(Deadline.ACCEPT, MIN, False)]),
        (Priority.LOW, {"accepted_at": T0 + 8 * H}, T0 + 7 * 24 * H, []),
    ],
)
def test_sla_breaches(priority, fields, now, expected):
    wo = order(priority=priority, **fields)
    got = [(b.deadline, b.by, b.ongoing) for b in _breaches(wo, now)]
    assert got == expected


def _breaches(wo, now, policy=DEFAULT_SLA):
    out = breaches(wo, now, policy)
    for b in out:
        assert isinstance(b, Breach)
        span = policy.terms[wo.priority]
        assert b.due == wo.created_at + (
            span.accept if b.deadline is Deadline.ACCEPT else span.finish
        )
    return out


def test_sla_terms_are_configurable_and_checked():
    policy = SlaPolicy.model_validate(
        {
            "terms": {
                "urgent": {"accept": "PT5M", "finish": "PT1H"},
                "high": {"accept": 600, "finish": 7200},
                "normal": {"accept": "PT1H", "finish": "P1D"},
                "low": {"accept": "P1D", "finish": "P3D"},
            }
        }
    )
    assert policy.terms[Priority.URGENT].accept == 5 * MIN
    got = _breaches(order(priority=Priority.URGENT), T0 + 6 * MIN, policy)
    assert [(b.deadline, b.by) for b in got] == [(Deadline.ACCEPT, MIN)]
    with pytest.raises(ValueError, match="no SLA terms for priority low"):
        SlaPolicy.model_validate(
            {"terms": {p: {"accept": 60, "finish": 60} for p in ("urgent", "high", "normal")}}
        )
    with pytest.raises(ValueError, match="finish must not come before accept"):
        SlaPolicy.model_validate(
            {"terms": {p.value: {"accept": 60, "finish": 30} for p in Priority}}
        )
    with pytest.raises(ValueError, match="greater than 0"):
        SlaPolicy.model_validate(
            {"terms": {p.value: {"accept": 0, "finish": 30} for p in Priority}}
        )


# --- round-robin ------------------------------------------------------------------------

TEAM = [
    Engineer("chen", frozenset({SITE}), frozenset({"plumbing", "general"})),
    Engineer("an", frozenset({SITE, "moon-bay"}), frozenset({"plumbing"})),
    Engineer("bai", frozenset({SITE}), frozenset({"electrical"})),
    Engineer("du", frozenset({SITE}), frozenset({"plumbing"}), on_duty=False),
    Engineer("fang", frozenset({"moon-bay"}), frozenset({"plumbing"})),
    Engineer("gu", frozenset({SITE}), frozenset({"plumbing", "lift"})),
]


def test_eligible_engineers_by_site_skill_and_duty():
    assert eligible(TEAM, SITE, "plumbing") == ["an", "chen", "gu"]
    assert eligible(TEAM, SITE, None) == ["an", "bai", "chen", "gu"]
    assert eligible(TEAM, "moon-bay", "plumbing") == ["an", "fang"]


def test_round_robin_takes_turns_in_name_order():
    picks, last = [], None
    for _ in range(7):
        last = pick_engineer(TEAM, SITE, "plumbing", last)
        picks.append(last)
    assert picks == ["an", "chen", "gu", "an", "chen", "gu", "an"]


@pytest.mark.parametrize("n", [1, 5, 30, 31, 32])
def test_round_robin_is_fair(n):
    last, counts = None, Counter()
    for _ in range(n):
        last = pick_engineer(TEAM, SITE, "plumbing", last)
        counts[last] += 1
    assert set(counts) <= {"an", "chen", "gu"}
    assert max(counts.values()) - min(counts.get(x, 0) for x in ("an", "chen", "gu")) <= 1


def test_round_robin_when_the_last_one_went_off_duty_or_someone_joined():
    assert pick_engineer(TEAM, SITE, "plumbing", "du") == "gu"  # du is off duty now
    assert pick_engineer(TEAM, SITE, "plumbing", "zhu") == "an"  # past the end: wrap
    joined = [*TEAM, Engineer("dai", frozenset({SITE}), frozenset({"plumbing"}))]
    assert pick_engineer(joined, SITE, "plumbing", "chen") == "dai"


def test_round_robin_with_nobody_eligible():
    with pytest.raises(
        NoEligibleEngineer, match="no engineer on duty at sunny-garden with skill 'hvac'"
    ):
        pick_engineer(TEAM, SITE, "hvac", None)
    with pytest.raises(NoEligibleEngineer, match=r"no engineer on duty at nowhere$"):
        pick_engineer(TEAM, "nowhere", None, None)
