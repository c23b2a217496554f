"""Decisions at the gate from the lot's local state alone (pure: no I/O)."""

from __future__ import annotations

import pytest

from edge.parking.lot import LotState, OpenSession, SyncGap
from protocols.parking.messages import (
    Action,
    Change,
    ChangeKind,
    Lease,
    OfflineExit,
    Policy,
    Sync,
)

MIN = 60_000
T0 = 1_790_000_000_000  # ms; a Tuesday in 2026
RULE = {
    "kind": "standard",
    "free_minutes": 15,
    "first": {"minutes": 60, "fen": 500},
    "step": {"minutes": 30, "fen": 200},
    "cap_fen": 3000,
}


def policy(**kw: object) -> dict[str, object]:
    return Policy.model_validate({"capacity": 2, "rule": RULE, **kw}).model_dump(mode="json")


def lot(**kw: object) -> LotState:
    st = LotState("lot1")
    changes = [
        Change(kind=ChangeKind.POLICY, key="policy", value=policy(**kw)),
        Change(
            kind=ChangeKind.PASS,
            key="p1",
            value={"id": "p1", "plate": "浙A11111", "start": T0 - 86400_000, "end": T0 + 60 * MIN},
        ),
        Change(
            kind=ChangeKind.PASS,
            key="p2",
            value={"id": "p2", "card": "04A1B2C3", "start": T0 - MIN, "end": T0 + 86400_000},
        ),
        Change(
            kind=ChangeKind.LIST, key="d1", value={"id": "d1", "plate": "浙B66666", "kind": "deny"}
        ),
        Change(
            kind=ChangeKind.LIST, key="a1", value={"id": "a1", "plate": "浙C77777", "kind": "allow"}
        ),
    ]
    st.apply(Sync(lot="lot1", version=5, changes=tuple(changes)))
    return st


def enter(st: LotState, plate: str | None, at: int, card: str | None = None) -> Action:
    v = st.decide_entry(plate, card, at)
    if v.action is Action.OPEN:
        if v.closes:
            st.sessions.pop(v.closes)
        st.sessions[v.session] = OpenSession(v.session, plate, card, at, v.lease)
    return v.action


def test_entry_decisions() -> None:
    st = lot()
    assert st.decide_entry("浙B66666", None, T0).action is Action.REFUSE  # deny list
    allow = st.decide_entry("浙C77777", None, T0)
    assert (allow.action, allow.lease) == (Action.OPEN, Lease.FREE)
    assert st.decide_entry(None, "04A1B2C3", T0).action is Action.OPEN  # card pass
    assert st.decide_entry(None, "FFFFFFFF", T0).action is Action.BOOTH  # unknown card
    assert st.decide_entry("浙A11111", None, T0).lease is Lease.MONTHLY
    # a pass that has not started yet (or ended) is a temporary car
    assert st.decide_entry("浙A11111", None, T0 + 61 * MIN).lease is Lease.TEMPORARY


def test_capacity_counts_temporary_cars_and_the_full_lot_goes_to_the_booth() -> None:
    st = lot()
    assert enter(st, "浙D00001", T0) is Action.OPEN
    assert enter(st, "浙D00002", T0) is Action.OPEN
    assert enter(st, "浙A11111", T0) is Action.OPEN  # a pass holder has a space of its own
    full = st.decide_entry("浙D00003", None, T0)
    assert full.action is Action.BOOTH and "full" in full.reason
    assert lot(when_full="refuse").decide_entry("浙D00003", None, T0).action is Action.OPEN
    st2 = lot(when_full="refuse")
    enter(st2, "浙D00001", T0)
    enter(st2, "浙D00002", T0)
    assert st2.decide_entry("浙D00003", None, T0).action is Action.REFUSE


def test_a_car_recorded_inside_entering_again_closes_its_old_session() -> None:
    st = lot()
    enter(st, "浙D00001", T0)
    old = next(iter(st.sessions))
    enter(st, "浙D00002", T0)
    # lot is full, but the car coming in again frees the space it held
    v = st.decide_entry("浙D00001", None, T0 + 5 * MIN)
    assert v.action is Action.OPEN and v.closes == old


def test_exit_fees_grace_and_the_booth() -> None:
    st = lot()
    enter(st, "浙D00001", T0)
    free = st.decide_exit("浙D00001", None, T0 + 15 * MIN, hub_reachable=True)
    assert free.action is Action.OPEN and free.fee_fen == 0
    held = st.decide_exit("浙D00001", None, T0 + 61 * MIN, hub_reachable=True)
    assert (held.action, held.due_fen, held.fee_fen) == (Action.BOOTH, 700, 700)
    # paid online at 61 min: out free until 76 min, then the next step is due
    sid = held.session
    st.apply(
        Sync(
            lot="lot1",
            version=6,
            base=5,
            changes=(
                Change(
                    kind=ChangeKind.PAID,
                    key="o1",
                    value={
                        "id": "o1",
                        "session": sid,
                        "plate": "浙D00001",
                        "fen": 700,
                        "at": T0 + 61 * MIN,
                    },
                ),
            ),
        )
    )
    assert st.decide_exit("浙D00001", None, T0 + 76 * MIN, hub_reachable=True).action is Action.OPEN
    late = st.decide_exit("浙D00001", None, T0 + 95 * MIN, hub_reachable=True)
    assert (late.action, late.due_fen) == (Action.BOOTH, 200)


def test_offline_policy_lets_unpaid_cars_out_and_says_what_they_owe() -> None:
    st = lot(offline_exit=OfflineExit.OPEN_UNPAID)
    enter(st, "浙D00001", T0)
    online = st.decide_exit("浙D00001", None, T0 + 61 * MIN, hub_reachable=True)
    assert online.action is Action.BOOTH  # the policy is for outages only
    offline = st.decide_exit("浙D00001", None, T0 + 61 * MIN, hub_reachable=False)
    assert (offline.action, offline.unpaid_fen) == (Action.OPEN, 700)
    assert lot().decide_exit("浙D00001", None, T0, hub_reachable=False).action is Action.BOOTH


def test_exit_with_no_entry_and_a_pass_that_ran_out_during_the_stay() -> None:
    st = lot()
    assert st.decide_exit("浙D09999", None, T0, hub_reachable=True).action is Action.BOOTH
    assert st.decide_exit("浙A11111", None, T0, hub_reachable=True).action is Action.OPEN
    enter(st, "浙A11111", T0)  # pass ends at T0+60min
    v = st.decide_exit("浙A11111", None, T0 + 100 * MIN, hub_reachable=True)
    # 40 min after the pass ended: the first period, priced from the pass's end
    assert (v.action, v.due_fen) == (Action.BOOTH, 500)
    assert "ended during the stay" in v.reason


def test_sync_changes_apply_in_order_and_a_gap_asks_for_a_snapshot() -> None:
    st = lot()
    delete = Change(kind=ChangeKind.PASS, key="p1", value=None)
    with pytest.raises(SyncGap):
        st.apply(Sync(lot="lot1", version=8, base=7, changes=(delete,)))
    assert "p1" in st.passes and st.version == 5
    st.apply(Sync(lot="lot1", version=6, base=5, changes=(delete,)))
    assert "p1" not in st.passes and st.version == 6
    st.apply(Sync(lot="lot1", version=6, base=5, changes=(delete,)))  # again: ignored
    assert st.version == 6


def test_a_change_set_from_an_older_base_is_applied() -> None:
    # two payments within a confirmation's round trip: the hub sends the second one with the
    # changes since the version it last saw confirmed, which overlap what the edge holds
    st = lot()
    delete = Change(kind=ChangeKind.PASS, key="p1", value=None)
    a_pass = {"id": "p9", "plate": "浙A99999", "start": 0, "end": T0}
    add = Change(kind=ChangeKind.PASS, key="p9", value=a_pass)
    st.apply(Sync(lot="lot1", version=6, base=5, changes=(delete,)))
    st.apply(Sync(lot="lot1", version=7, base=5, changes=(delete, add)))
    assert "p1" not in st.passes and "p9" in st.passes and st.version == 7


def test_a_bad_change_set_changes_nothing() -> None:
    st = lot()
    bad_rule = Change(
        kind=ChangeKind.POLICY, key="policy", value={"capacity": 1, "rule": {"kind": "nope"}}
    )
    ok = Change(kind=ChangeKind.PASS, key="p1", value=None)
    with pytest.raises(ValueError):
        st.apply(Sync(lot="lot1", version=6, base=5, changes=(ok, bad_rule)))
    assert "p1" in st.passes and st.version == 5 and st.policy is not None
