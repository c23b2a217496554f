"""The alarm engine: durations, counts, hysteresis, escalation, order, restarts, schedules.

Property tests compare the engine with a small reference model written as a plain scan over
the samples, with random ticks and JSON round trips of the state thrown in.
"""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.alarms import (
    Change,
    ChangeKind,
    Rule,
    RuleState,
    Severity,
    device_event,
    evaluate,
    load_rule_sets,
    retire,
    tick,
)

RAISE, ESCALATE, UPDATE, CLEAR = ChangeKind
MAJOR, CRITICAL, MINOR, WARNING = (
    Severity.MAJOR,
    Severity.CRITICAL,
    Severity.MINOR,
    Severity.WARNING,
)
S = 1000  # ms
SHIPPED = load_rule_sets()
SHANGHAI = ZoneInfo("Asia/Shanghai")


def make(condition, **fields) -> Rule:
    return Rule.model_validate(
        {"id": "r", "type": "t", "title": "T", "condition": condition, **fields}
    )


def above(point="p", clear=None, **levels):
    cond = {"kind": "threshold", "point": point, "above": levels or {"major": 0.8}}
    if clear is not None:
        cond["clear"] = clear
    return cond


def run(rule: Rule, steps, state: RuleState | None = None):
    """Feed steps to the engine: (ts, value) samples of point p, ("tick", now),
    ("off"/"on", ts) events, ("json",) restarts; returns (state, changes)."""
    state = state or RuleState()
    out: list[Change] = []
    for step in steps:
        if step[0] == "tick":
            state, ch = tick(rule, state, step[1])
        elif step[0] in ("off", "on"):
            state, ch = device_event(rule, state, step[1], step[0] == "on")
        elif step[0] == "json":
            state, ch = restart(state), []
        else:
            ts, value = step
            values = value if isinstance(value, dict) else {"p": value}
            state, ch = evaluate(rule, state, ts, values)
        out += ch
    return state, out


def restart(state: RuleState) -> RuleState:
    again = RuleState.from_json(json.loads(json.dumps(state.to_json())))
    assert again == state
    return again


def brief(changes, updates=False):
    return [
        (c.kind.value, c.ts_ms, c.severity.value)
        for c in changes
        if updates or c.kind is not UPDATE
    ]


# --- durations and counts ---------------------------------------------------------------


def test_for_n_seconds_raises_when_the_condition_has_held_that_long():
    rule = make(above(), for_s=30)
    _, changes = run(rule, [(0, 0.5), (10 * S, 0.9), (25 * S, 0.9), (39 * S, 0.9), (40 * S, 0.9)])
    assert brief(changes) == [("raise", 40 * S, "major")]
    _, changes = run(rule, [(10 * S, 0.9), (39 * S, 0.9), (39_500, 0.5)])
    assert changes == []


def test_a_tick_completes_a_duration_without_a_new_sample_at_the_exact_time():
    rule = make(above(), for_s=30)
    state, changes = run(rule, [(10 * S, 0.9), ("tick", 39 * S)])
    assert changes == []
    state, changes = run(rule, [("tick", 47 * S)], state)
    assert brief(changes) == [("raise", 40 * S, "major")]
    assert state.raised_ts == 40 * S


def test_without_ticks_the_next_sample_raises_at_the_same_time():
    """Sample and hold: the value held from 10 s to 60 s, so it held 30 s at 40 s."""
    rule = make(above(), for_s=30)
    _, changes = run(rule, [(10 * S, 0.9), (60 * S, 0.5)])
    assert brief(changes) == [("raise", 40 * S, "major"), ("clear", 60 * S, "major")]


def test_held_for_n_seconds_includes_n():
    rule = make(above(), for_s=30)
    _, changes = run(rule, [(10 * S, 0.9), (40 * S, 0.5)])
    assert brief(changes) == [("raise", 40 * S, "major"), ("clear", 40 * S, "major")]
    _, changes = run(rule, [(10 * S, 0.9), (40 * S - 1, 0.5)])
    assert changes == []


def test_n_times_in_a_row():
    rule = make(above(), count=3)
    _, changes = run(rule, [(1 * S, 0.9), (2 * S, 0.9), (3 * S, 0.5), (4 * S, 0.9), (5 * S, 0.9)])
    assert changes == []
    # a sample without the point neither counts nor breaks the run
    _, changes = run(rule, [(1 * S, 0.9), (2 * S, {"q": 1}), (3 * S, 0.9), (4 * S, 0.9)])
    assert brief(changes) == [("raise", 4 * S, "major")]


def test_count_and_duration_together_need_both():
    rule = make(above(), count=2, for_s=10)
    _, changes = run(rule, [(0, 0.9), ("tick", 20 * S)])
    assert changes == []  # one sample only
    _, changes = run(rule, [(0, 0.9), (2 * S, 0.9), ("tick", 9 * S), ("tick", 11 * S)])
    assert brief(changes) == [("raise", 10 * S, "major")]
    _, changes = run(rule, [(0, 0.9), (12 * S, 0.9)])
    assert brief(changes) == [("raise", 12 * S, "major")]  # the count was reached at 12 s


def test_zero_duration_raises_on_the_sample():
    rule = make(above())
    _, changes = run(rule, [(5 * S, 0.81)])
    assert brief(changes) == [("raise", 5 * S, "major")]
    assert changes[0].details == {
        "point": "p",
        "value": 0.81,
        "limit": 0.8,
        "text": "p = 0.81 > 0.8",
    }
    assert changes[0].message == "T: p = 0.81 > 0.8"


# --- hysteresis, flapping, escalation ---------------------------------------------------


def test_hysteresis_raise_above_0_8_clear_below_0_7():
    rule = make(above(clear=0.7))
    _, changes = run(
        rule, [(1 * S, 0.85), (2 * S, 0.75), (3 * S, 0.7), (4 * S, 0.81), (5 * S, 0.69)]
    )
    assert brief(changes, updates=True) == [
        ("raise", 1 * S, "major"),
        ("update", 4 * S, "major"),
        ("clear", 5 * S, "major"),
    ]


def test_flapping_around_the_threshold_raises_once():
    rule = make(above(clear=0.7), for_s=5)
    steps = [(t * S, 0.79 if t % 2 else 0.81) for t in range(0, 60)]
    _, changes = run(rule, steps)
    assert brief(changes) == []  # never 5 s above in a row
    steps = [(t * S, 0.85) for t in range(6)] + [
        (t * S, 0.79 if t % 2 else 0.81) for t in range(6, 60)
    ]
    _, changes = run(rule, steps)
    assert brief(changes) == [("raise", 5 * S, "major")]
    assert {c.kind for c in changes[1:]} == {UPDATE}


def test_escalation_raises_the_severity_of_the_same_alarm():
    rule = make(above(clear=0.7, major=0.8, critical=0.95))
    steps = [(1 * S, 0.85), (2 * S, 0.97), (3 * S, 0.85), (4 * S, 0.99), (5 * S, 0.5), (6 * S, 0.9)]
    _, changes = run(rule, steps)
    assert brief(changes, updates=True) == [
        ("raise", 1 * S, "major"),
        ("escalate", 2 * S, "critical"),
        ("update", 3 * S, "critical"),  # back to the major band: severity never goes down
        ("update", 4 * S, "critical"),
        ("clear", 5 * S, "critical"),
        ("raise", 6 * S, "major"),
    ]


def test_each_level_must_hold_for_the_duration():
    rule = make(above(major=0.8, critical=0.95), for_s=10)
    steps = [(0, 0.9), (5 * S, 0.97), (12 * S, 0.9), (20 * S, 0.97), ("tick", 30 * S)]
    _, changes = run(rule, steps)
    assert brief(changes) == [("raise", 10 * S, "major"), ("escalate", 30 * S, "critical")]


def test_straight_to_the_worst_level_raises_once_at_that_level():
    rule = make(above(major=0.8, critical=0.95), for_s=10)
    _, changes = run(rule, [(0, 0.99), ("tick", 10 * S)])
    assert brief(changes) == [("raise", 10 * S, "critical")]


def test_below_thresholds_mirror_above():
    rule = SHIPPED["pump-station"].rule("outlet-pressure-low")
    steps = [(0, {"outlet_pressure": 0.45})] + [
        (t * S, {"outlet_pressure": 0.15 + 0.3 * 0.9**t}) for t in range(1, 90)
    ]
    state, changes = run(rule, steps)
    # 0.25 is crossed at t=11, 0.18 at t=22: each then held for 30 s
    assert brief(changes) == [("raise", 41 * S, "major"), ("escalate", 52 * S, "critical")]
    _, changes = run(
        rule, [(90 * S, {"outlet_pressure": 0.27}), (91 * S, {"outlet_pressure": 0.29})], state
    )
    assert brief(changes, updates=True) == [("clear", 91 * S, "critical")]


# --- order, restarts, monotone time -----------------------------------------------------


def test_samples_older_than_the_last_one_change_nothing():
    rule = make(above(clear=0.7), for_s=10)
    state, _ = run(rule, [(0, 0.9), (5 * S, 0.9)])
    for late in [(4 * S, 0.5), (5 * S, 0.5), (1, 0.1)]:
        assert run(rule, [late], state) == (state, [])
    active, changes = run(rule, [(10 * S, 0.9)], state)
    assert brief(changes) == [("raise", 10 * S, "major")]
    assert run(rule, [(9 * S, 0.1)], active) == (active, [])
    assert run(rule, [("off", 9 * S)], active) == (active, [])


def test_a_restart_half_way_through_a_duration_still_fires_on_time():
    rule = SHIPPED["pump-station"].rule("outlet-pressure-low")
    state, changes = run(
        rule, [(0, {"outlet_pressure": 0.2}), (10 * S, {"outlet_pressure": 0.2}), ("tick", 15 * S)]
    )
    assert changes == []
    stored = json.dumps(state.to_json())
    # the hub is down from 15 s to 50 s; the restarted hub ticks before any new sample
    state = RuleState.from_json(json.loads(stored))
    state, changes = run(rule, [("tick", 50 * S)], state)
    assert brief(changes) == [("raise", 30 * S, "major")]


def test_a_restart_half_way_through_a_count():
    rule = make(above(), count=3)
    state, _ = run(rule, [(1 * S, 0.9), (2 * S, 0.9)])
    state = restart(state)
    _, changes = run(rule, [(3 * S, 0.9)], state)
    assert brief(changes) == [("raise", 3 * S, "major")]


def test_changes_never_go_back_in_time():
    """A tick raises a no-data alarm; data made before that instant arrives afterwards."""
    rule = make({"kind": "no_data"}, for_s=60)
    state, changes = run(rule, [(0, 1), ("tick", 61 * S)])
    assert brief(changes) == [("raise", 60 * S, "major")]
    _, changes = run(rule, [(30 * S, 1)], state)  # late, but newer than the last sample
    assert brief(changes) == [("clear", 60 * S, "major")]


def test_state_from_json_refuses_other_documents():
    with pytest.raises(ValueError, match="version"):
        RuleState.from_json({**RuleState().to_json(), "v": 2})
    with pytest.raises(ValueError, match="not a rule state"):
        RuleState.from_json({"v": 1})


def test_change_to_json():
    rule = make(above())
    _, (change,) = run(rule, [(5 * S, 0.9)])
    doc = json.loads(json.dumps(change.to_json()))
    assert doc["kind"] == "raise" and doc["type"] == "t" and doc["rule"] == "r"
    assert doc["ts"] == 5 * S and doc["severity"] == "major"


# --- other kinds ------------------------------------------------------------------------


def test_range_with_a_clear_band():
    rule = SHIPPED["em-1p"].rule("voltage-out-of-range")
    v = lambda x: {"voltage": x}  # noqa: E731
    steps = [(0, v(220)), (1 * S, v(196)), ("tick", 61 * S), (62 * S, v(199)), (63 * S, v(201))]
    _, changes = run(rule, steps)
    assert brief(changes) == [("raise", 61 * S, "minor"), ("clear", 63 * S, "minor")]
    _, changes = run(rule, [(0, v(240)), (60 * S, v(240))])
    assert brief(changes) == [("raise", 60 * S, "minor")]


def test_fault_codes_each_with_their_own_text_and_severity():
    rule = SHIPPED["lift"].rule("controller-fault")
    fc = lambda x: {"fault_code": x}  # noqa: E731
    _, changes = run(
        rule,
        [
            (0, fc(0)),
            (1 * S, fc(7)),
            (2 * S, fc(5)),
            (3 * S, fc(1)),
            (4 * S, fc(99)),
            (5 * S, fc(0)),
        ],
    )
    assert brief(changes, updates=True) == [
        ("raise", 1 * S, "minor"),
        ("escalate", 2 * S, "major"),
        ("escalate", 3 * S, "critical"),
        ("update", 4 * S, "critical"),
        ("clear", 5 * S, "critical"),
    ]
    assert changes[2].details["faults"] == [
        {"code": 1, "text": "safety circuit open", "severity": "critical"}
    ]
    assert (
        changes[3].message
        == "Lift controller fault: controller fault code not in the table (fault_code 99)"
    )
    # a code sent as a float is the same code; a fraction is no code at all
    _, changes = run(rule, [(0, fc(4.0)), (1 * S, fc(4.5))])
    assert brief(changes) == [("raise", 0, "major")]


def test_door_open_too_long():
    rule = SHIPPED["lift"].rule("door-open-long")
    door = lambda x: {"door_state": x}  # noqa: E731
    cycling = [(t * S, door(t % 4)) for t in range(0, 200, 5)]  # closes every 20 s
    assert run(rule, cycling)[1] == []
    stuck = [(0, door(0)), (1 * S, door(1)), (3 * S, door(2)), (60 * S, door(3)), (62 * S, door(2))]
    state, changes = run(rule, [*stuck, ("tick", 121 * S)])
    assert brief(changes) == [("raise", 121 * S, "minor")]
    _, changes = run(rule, [(130 * S, door(0))], state)
    assert brief(changes) == [("clear", 130 * S, "minor")]


def test_fault_bits_of_a_status_register():
    rule = make(
        {
            "kind": "fault_bits",
            "point": "p",
            "bits": {
                0: {"text": "overload", "severity": "major"},
                3: {"text": "phase loss", "severity": "critical"},
                5: {"text": "filter dirty", "severity": "warning"},
            },
        }
    )
    _, changes = run(rule, [(0, 0b100100), (1 * S, 0b101101), (2 * S, 0b000010)])
    assert brief(changes) == [
        ("raise", 0, "warning"),
        ("escalate", 1 * S, "critical"),
        ("clear", 2 * S, "critical"),
    ]
    assert [f["bit"] for f in changes[1].details["faults"]] == [0, 3, 5]
    assert changes[1].message == "T: overload; phase loss; filter dirty"


def test_pump_fault_flags():
    rule = SHIPPED["pump-station"].rule("pump-fault")
    _, changes = run(
        rule,
        [
            (0, {"pump1_fault": False, "pump2_fault": False}),
            (1 * S, {"pump1_fault": True, "pump2_fault": False}),
            (2 * S, {"pump2_fault": True}),
            (3 * S, {"pump1_fault": False, "pump2_fault": False}),
        ],
    )
    assert brief(changes, updates=True) == [
        ("raise", 1 * S, "critical"),
        ("update", 2 * S, "critical"),
        ("clear", 3 * S, "critical"),
    ]
    assert changes[0].details["faults"] == [
        {
            "point": "pump1_fault",
            "text": "pump 1 fault (motor protection tripped)",
            "severity": "critical",
        }
    ]


def test_a_flag_can_mean_a_fault_when_false():
    rule = SHIPPED["lift"].rule("out-of-service")
    _, changes = run(
        rule, [(0, {"in_service": True}), (1 * S, {"in_service": False}), ("tick", 601 * S)]
    )
    assert brief(changes) == [("raise", 601 * S, "minor")]


def test_no_data_from_ticks_and_from_gaps_in_the_samples():
    rule = SHIPPED["pump-station"].rule("no-data")  # 300 s
    state, changes = run(rule, [("tick", 1000 * S), ("tick", 1299 * S)])
    assert changes == []  # the first tick starts the watch
    state, changes = run(rule, [("tick", 1300 * S)], state)
    assert brief(changes) == [("raise", 1300 * S, "major")]
    state, changes = run(rule, [(1400 * S, {"tank_level": 2.0}), ("tick", 1500 * S)], state)
    assert brief(changes) == [("clear", 1400 * S, "major")]
    # the hub never ticked, yet the gap between two samples shows the silence
    _, changes = run(rule, [(0, {"x": 1}), (400 * S, {"x": 1})])
    assert brief(changes) == [("raise", 300 * S, "major"), ("clear", 400 * S, "major")]


def test_no_data_for_one_point():
    rule = make({"kind": "no_data", "point": "p"}, for_s=10)
    _, changes = run(rule, [(0, {"p": 1}), (5 * S, {"q": 1}), ("tick", 10 * S)])
    assert brief(changes) == [("raise", 10 * S, "major")]


def test_offline_for_a_while_then_back():
    rule = SHIPPED["lift"].rule("offline")  # 60 s
    _, changes = run(rule, [("off", 0), ("tick", 59 * S), ("on", 59_500)])
    assert changes == []
    state, changes = run(rule, [("off", 0), ("tick", 59 * S), ("off", 61 * S)])
    assert brief(changes, updates=True) == [("raise", 60 * S, "major"), ("update", 61 * S, "major")]
    assert changes[0].details["since"] == 0
    _, changes = run(rule, [(70 * S, {"floor": 3})], state)  # data means it is back
    assert brief(changes) == [("clear", 70 * S, "major")]
    _, changes = run(rule, [("on", 70 * S)], state)
    assert brief(changes) == [("clear", 70 * S, "major")]


def test_offline_detail_is_kept():
    rule = make({"kind": "offline"})
    _, changes = device_event(
        rule, RuleState(), 5 * S, False, {"bus": "rs485-1", "error": "no reply"}
    )
    assert changes[0].details == {
        "text": "device offline",
        "since": 5 * S,
        "bus": "rs485-1",
        "error": "no reply",
    }


def test_a_device_going_offline_breaks_runs_but_keeps_alarms():
    rule = make(above(clear=0.7), for_s=30)
    _, changes = run(rule, [(0, 0.9), ("off", 10 * S), ("tick", 100 * S)])
    assert changes == []
    state, changes = run(rule, [(0, 0.9), (30 * S, 0.9), ("off", 40 * S), ("on", 50 * S)])
    assert brief(changes) == [("raise", 30 * S, "major")]
    assert state.active
    _, changes = run(rule, [(60 * S, 0.6)], state)
    assert brief(changes) == [("clear", 60 * S, "major")]
    # no_data rules ignore events altogether
    nd = make({"kind": "no_data"}, for_s=10)
    assert device_event(nd, RuleState(), 0, False) == (RuleState(), [])


# --- schedules --------------------------------------------------------------------------


def local(day: int, hhmm: str) -> int:
    """Epoch ms of 2026-03-{day} at hh:mm[:ss] in Shanghai (2026-03-02 is a Monday)."""
    parts = [int(x) for x in hhmm.split(":")] + [0]
    when = datetime(2026, 3, day, parts[0], parts[1], parts[2], tzinfo=SHANGHAI)
    return int(when.timestamp()) * S


def test_night_flow_only_counts_inside_the_window():
    rule = SHIPPED["water-meter"].rule("night-flow")  # 02:00-05:00, an hour
    f = lambda x: {"flow_rate": x}  # noqa: E731
    # runs all evening and night: the hour counts from the first sample inside the window
    steps = [(local(2, f"{h:02d}:{m:02d}"), f(0.02)) for h in range(0, 5) for m in range(0, 60, 10)]
    _, changes = run(rule, [(local(1, "23:00"), f(0.02)), *steps])
    assert brief(changes) == [("raise", local(2, "03:00"), "warning")]


def test_a_run_is_cut_at_the_end_of_the_window():
    rule = SHIPPED["water-meter"].rule("night-flow")
    f = lambda x: {"flow_rate": x}  # noqa: E731
    steps = [
        (local(2, "04:01"), f(0.02)),
        ("tick", local(2, "05:30")),
        (local(2, "06:00"), f(0.02)),
    ]
    assert run(rule, steps)[1] == []
    # hold semantics, no samples: the hour 02:00-03:00 completes, 04:30-05:30 does not
    assert brief(run(rule, [(local(2, "02:00"), f(0.02)), (local(2, "06:00"), f(0))])[1]) == [
        ("raise", local(2, "03:00"), "warning"),
        ("clear", local(2, "06:00"), "warning"),
    ]
    assert run(rule, [(local(2, "04:30"), f(0.02)), (local(2, "06:00"), f(0.02))])[1] == []


def test_clearing_is_not_scheduled_and_days_of_week_count():
    rule = make(
        above(clear=0.7),
        schedule={"windows": [{"days": ["mon"], "start": "22:00", "end": "06:00"}]},
    )
    # Monday 23:00 raises, Tuesday 08:00 clears outside the window
    _, changes = run(rule, [(local(2, "23:00"), 0.9), (local(3, "08:00"), 0.5)])
    assert brief(changes) == [
        ("raise", local(2, "23:00"), "major"),
        ("clear", local(3, "08:00"), "major"),
    ]
    # Tuesday 01:00 is still Monday's window; Tuesday 23:00 is not in any
    assert len(run(rule, [(local(3, "01:00"), 0.9)])[1]) == 1
    assert run(rule, [(local(3, "23:00"), 0.9)])[1] == []


# --- disabled rules ---------------------------------------------------------------------


def test_disabled_rules_do_nothing_and_retire_clears_their_alarm():
    rule = make(above())
    state, _ = run(rule, [(0, 0.9)])
    off = rule.model_copy(update={"enabled": False})
    assert evaluate(off, state, S, {"p": 0.5}) == (state, [])
    assert tick(off, state, S) == (state, [])
    assert device_event(off, state, S, False) == (state, [])
    fresh, changes = retire(off, state, 2 * S)
    assert brief(changes) == [("clear", 2 * S, "major")]
    assert changes[0].details["reason"] == "rule disabled"
    assert not fresh.active
    assert retire(off, fresh, 3 * S)[1] == []


# --- properties -------------------------------------------------------------------------


def reference(rising, limits, clear, for_ms, count, samples, end):
    """Raise/escalate/clear of a threshold rule, as a scan: (kind, ts, level index)."""
    trig = [
        (lambda v, lim=lim: v > lim) if rising else (lambda v, lim=lim: v < lim) for lim in limits
    ]
    if clear is None:
        cleared = lambda v: not trig[0](v)  # noqa: E731
    else:
        cleared = (lambda v: v < clear) if rising else (lambda v: v > clear)
    out, runs = [], {}
    sev, last = None, None

    def complete(upto):
        nonlocal sev
        due = {}
        for lvl, (since, _, reached) in runs.items():
            if reached is not None and max(since + for_ms, reached) <= upto:
                at = max(since + for_ms, reached)
                due[at] = max(due.get(at, -1), lvl)
        for at in sorted(due):
            if sev is None:
                out.append(("raise", at, due[at]))
                sev = due[at]
            elif due[at] > sev:
                out.append(("escalate", at, due[at]))
                sev = due[at]

    for t, v in samples:
        if last is not None and t <= last:
            continue
        complete(t)
        last = t
        if v is None:
            continue
        if sev is not None and cleared(v):
            out.append(("clear", t, sev))
            sev, runs = None, {}
            continue
        for lvl in range(len(limits)):
            if trig[lvl](v):
                since, n, reached = runs.get(lvl, (t, 0, None))
                n = min(n + 1, count)
                runs[lvl] = (
                    since,
                    n,
                    reached if reached is not None else (t if n >= count else None),
                )
            else:
                runs.pop(lvl, None)
    complete(end)
    return out


VALUES = st.sampled_from([None, 0.5, 0.7, 0.75, 0.8, 0.85, 0.95, 0.97])
STEPS = st.sampled_from([-3000, 0, 1, 999, 1000, 2000, 5000, 10_000, 29_999, 30_000])
ONE_IN_SIX = st.integers(0, 5)


@st.composite
def scenarios(draw):
    rising = draw(st.booleans())
    levels = draw(st.sampled_from([1, 2]))
    clear = draw(st.sampled_from([None, 0.7, 0.8]))
    limits = [0.8, 0.95][:levels]
    if not rising:  # mirror everything around 0.5 + 0.5
        limits = [1 - x for x in limits]
        clear = None if clear is None else round(1 - clear, 10)
    for_s = draw(st.sampled_from([0, 1, 5, 30]))
    count = draw(st.sampled_from([1, 1, 2, 3]))
    n = draw(st.integers(1, 40))
    t, steps, samples, last = 0, [], [], -1
    for _ in range(n):
        t += draw(STEPS)
        value = draw(VALUES)
        if value is not None and not rising:
            value = round(1 - value, 10)
        if t > last and draw(st.booleans()):  # a tick somewhere before this sample
            steps.append(("tick", draw(st.integers(max(last, 0), t))))
        if draw(ONE_IN_SIX) == 0:
            steps.append(("json",))
        steps.append((t, {"p": value} if value is not None else {"q": 1}))
        samples.append((t, value))
        last = max(last, t)
    end = last + draw(st.sampled_from([0, 1000, 60_000]))
    steps.append(("tick", end))
    return rising, limits, clear, for_s, count, steps, samples, end


def threshold_rule(rising, limits, clear, for_s, count):
    sevs = ["major", "critical"]
    cond = {
        "kind": "threshold",
        "point": "p",
        "above" if rising else "below": dict(zip(sevs, limits, strict=False)),
    }
    if clear is not None:
        cond["clear"] = clear
    return make(cond, for_s=for_s, count=count)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_engine_matches_the_reference_and_keeps_the_invariants(scenario):
    rising, limits, clear, for_s, count, steps, samples, end = scenario
    rule = threshold_rule(rising, limits, clear, for_s, count)
    _, changes = run(rule, steps)
    sevs = [MAJOR, CRITICAL]
    expected = [
        (k, t, sevs[lvl].value)
        for k, t, lvl in reference(rising, limits, clear, for_s * S, count, samples, end)
    ]
    assert brief(changes) == expected
    assert_invariants(changes)


def assert_invariants(changes):
    active = None
    last_ts = None
    for c in changes:
        assert last_ts is None or c.ts_ms >= last_ts, "a change went back in time"
        last_ts = c.ts_ms
        if c.kind is RAISE:
            assert active is None, "raised twice without a clear"
            active = c.severity
        elif c.kind is ESCALATE:
            assert active is not None and c.severity.rank > active.rank
            active = c.severity
        elif c.kind is UPDATE:
            assert active is not None and c.severity == active
        else:
            assert active is not None and c.severity == active
            active = None


POINT_VALUES = st.sampled_from(
    [0, 1, 2, 5, 7, 99, 0.1, 0.2, 0.3, 0.5, 0.9, 1.5, 3.0, 3.4, 25.0, 27.0, 100.0, 240.0, True]
)
GAPS = st.sampled_from([-1000, 0, 1000, 30_000, 600_000, 3_600_000])
WHAT = st.sampled_from(["sample", "sample", "sample", "tick", "off", "on", "json"])
ALL_RULES = [r for rs in SHIPPED.values() for r in rs.rules]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_every_shipped_rule_keeps_the_invariants_and_survives_restarts(data):
    rule = data.draw(st.sampled_from(ALL_RULES))
    points = list(rule.points) or ["x"]
    state, changes, t = RuleState(), [], 1_772_400_000_000  # 2026-03-02, Shanghai morning
    for _ in range(data.draw(st.integers(1, 30))):
        t += data.draw(GAPS)
        what = data.draw(WHAT)
        if what == "sample":
            values = {p: data.draw(POINT_VALUES) for p in points if data.draw(st.booleans())}
            state, ch = evaluate(rule, state, t, values)
        elif what == "tick":
            state, ch = tick(rule, state, t)
        elif what == "json":
            state, ch = restart(state), []
        else:
            state, ch = device_event(rule, state, t, what == "on")
        changes += ch
        assert state.active == (state.severity is not None)
    assert_invariants(changes)
