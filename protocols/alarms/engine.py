"""The alarm engine: pure functions from a rule, its state and a sample to changes.

No I/O and no clock: every time is passed in, as milliseconds since the Unix epoch (UTC),
like ``ts`` in the MQTT contract. Per (device, rule) the caller keeps a :class:`RuleState`,
stores it (``to_json``) and passes it back; a state read back after a restart continues a
rule exactly where it was (a duration half elapsed, a count half reached).

Semantics (docs/ALARMS.md has the long form):

- **Sample and hold.** A value holds from its sample until the next sample that carries the
  point. A condition "held for N s" if it was true at a run of samples starting at ``since``
  and nothing said otherwise until ``since + N`` (a device that only reports changes still
  raises). :func:`tick` completes such durations between samples; :func:`evaluate` does the
  same implicitly before each sample, so the result does not depend on how often (or
  whether) the caller ticks. A duration completes at ``since + N`` exactly; the change
  carries that time, not the time of the tick that noticed it.
- **Count.** "N times in a row" counts consecutive samples carrying the point with the
  condition true; a sample without the point neither counts nor breaks the run.
- **Levels.** A rule's severities are nested conditions ("at least major", "at least
  critical"), each with its own run. The first to complete raises; a worse one completing
  while active escalates the same alarm. Severity never goes down while active.
- **Hysteresis.** While active, a sample clears the alarm only when the clear condition
  holds; between trigger and clear nothing happens. A triggering sample while active is an
  update (last seen, details). A new alarm needs a clear first, then a full new run.
- **Order.** A sample or event not newer than the newest one accepted (``last_ts``) is
  ignored: late and duplicate messages change nothing. No change ever carries a time before
  the previous change of the same state.
- **Schedule.** Outside its windows a rule's condition is false (runs break at the end of a
  window); clearing is never scheduled: an active alarm clears whenever its value is back.
- **Device offline** (the edge's event) breaks the runs of value rules (a silent device
  holds no value) without clearing their active alarms; it raises ``offline`` rules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from protocols.alarms.model import (
    FaultBits,
    FaultCode,
    Flags,
    NoData,
    Offline,
    Range,
    Rule,
    Severity,
    Threshold,
)

STATE_VERSION = 1
Value = float | int | bool
Details = Mapping[str, Any]


class ChangeKind(StrEnum):
    RAISE = "raise"  # a new alarm, at ``severity``
    ESCALATE = "escalate"  # the same alarm, now at the worse ``severity``
    UPDATE = "update"  # still active and triggered again: last seen ``ts_ms``, new details
    CLEAR = "clear"  # back to normal; ``severity`` is the one it had


@dataclass(frozen=True, slots=True)
class Change:
    """What happened to the alarm of one rule on one device, at ``ts_ms``."""

    kind: ChangeKind
    rule: str  # rule id
    alarm_type: str
    ts_ms: int
    severity: Severity
    message: str  # for people: the rule's title and what was seen
    details: Details = field(default_factory=dict)  # JSON-serialisable

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "rule": self.rule,
            "type": self.alarm_type,
            "ts": self.ts_ms,
            "severity": str(self.severity),
            "message": self.message,
            "details": dict(self.details),
        }


@dataclass(frozen=True, slots=True)
class Run:
    """The condition "at least ``severity``" has been true since ``since``.

    ``count`` is the samples in a row (capped at the rule's ``count``), ``reached`` when the
    count was reached, ``until`` the end of the schedule window that cuts the run (None: no
    schedule).
    """

    severity: Severity
    since: int
    count: int
    reached: int | None
    until: int | None = None


@dataclass(frozen=True, slots=True)
class RuleState:
    """The durable state of one rule on one device. ``RuleState()`` is the initial one."""

    last_ts: int | None = None  # newest sample or event accepted
    severity: Severity | None = None  # the active alarm's severity; None: not active
    raised_ts: int | None = None  # when the active alarm was raised
    changed_ts: int | None = None  # time of the last change emitted
    runs: tuple[Run, ...] = ()  # mildest severity first
    details: Details = field(default_factory=dict)  # of the last triggering sample or event

    @property
    def active(self) -> bool:
        return self.severity is not None

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_json` reads it back equal."""
        return {
            "v": STATE_VERSION,
            "last_ts": self.last_ts,
            "severity": None if self.severity is None else str(self.severity),
            "raised_ts": self.raised_ts,
            "changed_ts": self.changed_ts,
            "runs": [
                {
                    "severity": str(r.severity),
                    "since": r.since,
                    "count": r.count,
                    "reached": r.reached,
                    "until": r.until,
                }
                for r in self.runs
            ],
            "details": dict(self.details),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RuleState:
        """The state :meth:`to_json` wrote; ValueError for anything else."""
        try:
            if data["v"] != STATE_VERSION:
                raise ValueError(f"rule state version {data['v']!r} is not {STATE_VERSION}")
            sev = data["severity"]
            return cls(
                last_ts=_opt_int(data["last_ts"]),
                severity=None if sev is None else Severity(sev),
                raised_ts=_opt_int(data["raised_ts"]),
                changed_ts=_opt_int(data["changed_ts"]),
                runs=tuple(
                    Run(
                        severity=Severity(r["severity"]),
                        since=int(r["since"]),
                        count=int(r["count"]),
                        reached=_opt_int(r["reached"]),
                        until=_opt_int(r["until"]),
                    )
                    for r in data["runs"]
                ),
                details=dict(data["details"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a rule state: {exc!r}") from exc


def _opt_int(x: Any) -> int | None:
    return None if x is None else int(x)


Result = tuple[RuleState, list[Change]]


# --- reading a sample -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reading:
    level: Severity | None  # worst severity whose condition holds; None: none
    cleared: bool  # the clear condition holds
    text: str
    details: dict[str, Any]


def _number(values: Mapping[str, Value], point: str) -> float | None:
    v = values.get(point)
    if v is None or isinstance(v, bool):
        return None
    x = float(v)
    return x if math.isfinite(x) else None


def _integer(values: Mapping[str, Value], point: str) -> int | None:
    v = values.get(point)
    if v is None:
        return None
    if isinstance(v, bool | int):
        return int(v)
    return int(v) if math.isfinite(v) and v.is_integer() else None


_LIMITS: dict[int, tuple[Threshold, tuple[tuple[Severity, float], ...]]] = {}


def _limits(c: Threshold) -> tuple[tuple[Severity, float], ...]:
    # computed once per condition object (the model derives them on every access)
    hit = _LIMITS.get(id(c))
    if hit is None or hit[0] is not c:
        hit = _LIMITS[id(c)] = (c, tuple(c.limits))
    return hit[1]


def quiet(rule: Rule, values: Mapping[str, Value]) -> bool:
    """True when ``values`` cannot trigger ``rule`` (its points absent, or within limits).

    For an idle rule (no run, no alarm) such a sample changes nothing but the time, so a
    caller holding many idle rules may skip them (hub/alarms/service.py does). Rules that
    are not about values (no data, offline) are never quiet.
    """
    c = rule.condition
    if isinstance(c, Threshold):
        x = _number(values, c.point)
        if x is None:
            return True
        return not any((x > lim if c.rising else x < lim) for _, lim in _limits(c))
    if isinstance(c, Range):
        x = _number(values, c.point)
        return x is None or c.lo <= x <= c.hi
    if isinstance(c, NoData | Offline):
        return False
    if rule.schedule is not None:
        return False  # windows end runs: let evaluate see it
    reading = _read(rule, values)
    return reading is None or reading.level is None


def _read(rule: Rule, values: Mapping[str, Value]) -> _Reading | None:
    """The condition on one sample; None when the sample says nothing about it."""
    c = rule.condition
    if isinstance(c, Threshold):
        x = _number(values, c.point)
        if x is None:
            return None
        hit = [(s, lim) for s, lim in _limits(c) if (x > lim if c.rising else x < lim)]
        back = c.clear
        cleared = not hit if back is None else (x < back if c.rising else x > back)
        details: dict[str, Any] = {"point": c.point, "value": x}
        if not hit:
            return _Reading(None, cleared, f"{c.point} = {x:g}", details)
        sev, lim = hit[-1]
        sign = ">" if c.rising else "<"
        details["limit"] = lim
        return _Reading(sev, cleared, f"{c.point} = {x:g} {sign} {lim:g}", details)
    if isinstance(c, Range):
        x = _number(values, c.point)
        if x is None:
            return None
        lo, hi = c.clear if c.clear is not None else (c.lo, c.hi)
        details = {"point": c.point, "value": x, "lo": c.lo, "hi": c.hi}
        outside = x < c.lo or x > c.hi
        text = (
            f"{c.point} = {x:g} outside [{c.lo:g}, {c.hi:g}]" if outside else f"{c.point} = {x:g}"
        )
        return _Reading(c.severity if outside else None, lo <= x <= hi, text, details)
    if isinstance(c, FaultCode):
        code = _integer(values, c.point)
        if code is None:
            return None
        fault = c.codes.get(code)
        if fault is None and c.other is not None and code not in c.normal:
            fault = c.other
        details = {"point": c.point, "value": code}
        if fault is None:
            return _Reading(None, True, f"{c.point} = {code}", details)
        details["faults"] = [{"code": code, "text": fault.text, "severity": str(fault.severity)}]
        return _Reading(fault.severity, False, f"{fault.text} ({c.point} {code})", details)
    if isinstance(c, FaultBits):
        word = _integer(values, c.point)
        if word is None:
            return None
        on = [(b, f) for b, f in sorted(c.bits.items()) if (word >> b) & 1]
        details = {"point": c.point, "value": word}
        return _faults(on, "bit", details, f"{c.point} = {word:#x}")
    if isinstance(c, Flags):
        seen = {p: values[p] for p in c.points if p in values}
        if not seen:
            return None
        flagged = [(p, f) for p, f in c.points.items() if p in seen and bool(seen[p]) == f.value]
        return _faults(flagged, "point", {"values": seen}, "no flag set")
    raise AssertionError(f"{c.kind} is not read from samples")


def _faults(on: list[tuple[Any, Any]], key: str, details: dict[str, Any], idle: str) -> _Reading:
    if not on:
        return _Reading(None, True, idle, details)
    details["faults"] = [{key: k, "text": f.text, "severity": str(f.severity)} for k, f in on]
    level = max((f.severity for _, f in on), key=lambda s: s.rank)
    return _Reading(level, False, "; ".join(f.text for _, f in on), details)


# --- runs and completions ---------------------------------------------------------------


def _advance(rule: Rule, state: RuleState, now: int) -> Result:
    """Complete every run whose duration (and count) is met by ``now``; cut ended windows."""
    done: dict[int, Severity] = {}
    kept: list[Run] = []
    for run in state.runs:
        if run.reached is not None:
            at = max(run.since + rule.for_ms, run.reached)
            if at <= now and (run.until is None or at <= run.until):
                prev = done.get(at)
                done[at] = run.severity if prev is None or run.severity.rank > prev.rank else prev
        if run.until is None or run.until > now:
            kept.append(run)
    state = replace(state, runs=tuple(kept)) if len(kept) != len(state.runs) else state
    changes: list[Change] = []
    for at in sorted(done):
        state, change = _raise(rule, state, at, done[at])
        if change is not None:
            changes.append(change)
    return state, changes


def _raise(rule: Rule, state: RuleState, at: int, sev: Severity) -> tuple[RuleState, Change | None]:
    if state.severity is not None and sev.rank <= state.severity.rank:
        return state, None
    kind = ChangeKind.RAISE if state.severity is None else ChangeKind.ESCALATE
    at = _not_before(state, at)
    change = _change(rule, kind, at, sev, state.details)
    raised = at if state.severity is None else state.raised_ts
    return replace(state, severity=sev, raised_ts=raised, changed_ts=at), change


def _not_before(state: RuleState, ts: int) -> int:
    return ts if state.changed_ts is None else max(ts, state.changed_ts)


def _change(rule: Rule, kind: ChangeKind, ts: int, sev: Severity, details: Details) -> Change:
    text = details.get("text")
    message = f"{rule.title}: {text}" if text else rule.title
    return Change(kind, rule.id, rule.type, ts, sev, message, dict(details))


def _step_runs(
    rule: Rule, runs: tuple[Run, ...], level: Severity | None, ts: int, until: int | None
) -> tuple[Run, ...]:
    """Runs after a sample at ``ts`` whose worst holding severity is ``level``."""
    if level is None:
        return ()
    have = {r.severity: r for r in runs}
    out = []
    for sev in rule.severities:
        if sev.rank > level.rank:
            break
        run = have.get(sev)
        if run is None:
            count = 1
            run = Run(sev, ts, count, ts if count >= rule.count else None, until)
        elif run.count < rule.count:
            count = run.count + 1
            run = replace(run, count=count, reached=ts if count >= rule.count else None)
        out.append(run)
    return tuple(out)


def _clear(rule: Rule, state: RuleState, ts: int, details: Details) -> Result:
    assert state.severity is not None
    at = _not_before(state, ts)
    change = _change(rule, ChangeKind.CLEAR, at, state.severity, details)
    return RuleState(last_ts=state.last_ts, changed_ts=at), [change]


# --- the public functions ---------------------------------------------------------------


def evaluate(rule: Rule, state: RuleState, ts_ms: int, values: Mapping[str, Value]) -> Result:
    """The rule on one sample of its device, taken at ``ts_ms`` (the edge's time).

    ``values`` maps point names to values; points absent (not read, or unchanged under
    report by exception) say nothing. Returns the new state and the changes, oldest first.
    A sample not newer than the state's ``last_ts`` is ignored. A disabled rule does nothing.
    """
    if not rule.enabled or (state.last_ts is not None and ts_ms <= state.last_ts):
        return state, []
    c = rule.condition
    if not state.runs and state.severity is None and quiet(rule, values):
        # the common case, made cheap: an idle rule and a sample that does not trigger it
        # (nothing to advance, nothing to clear: only the time moves on)
        return replace(state, last_ts=ts_ms), []
    state, changes = _advance(rule, state, ts_ms)
    state = replace(state, last_ts=ts_ms)
    c = rule.condition
    if isinstance(c, NoData):
        if c.point is not None and c.point not in values:
            return state, changes
        if state.active:
            state, more = _clear(rule, state, ts_ms, {"text": "data again", "last_data": ts_ms})
            changes += more
        run = Run(c.severity, ts_ms, 1, ts_ms)
        return replace(state, runs=(run,), details=_silence(rule, ts_ms)), changes
    if isinstance(c, Offline):
        return _online(rule, state, ts_ms, changes)
    reading = _read(rule, values)
    if reading is None:
        return state, changes
    details = {**reading.details, "text": reading.text}
    if state.active and reading.cleared:
        state, more = _clear(rule, state, ts_ms, details)
        return state, changes + more
    level = reading.level
    until = None
    if level is not None and rule.schedule is not None:
        until = rule.schedule.window_end(ts_ms)
        if until is None:
            level = None  # outside the schedule the condition is false
    runs = _step_runs(rule, state.runs, level, ts_ms, until)
    state = replace(state, runs=runs, details=details if level is not None else state.details)
    was = state.severity
    state, more = _advance(rule, state, ts_ms)
    changes += more
    just_changed = bool(changes) and changes[-1].ts_ms >= ts_ms  # raised at this instant
    if was is not None and level is not None and state.severity == was and not just_changed:
        at = _not_before(state, ts_ms)
        changes.append(_change(rule, ChangeKind.UPDATE, at, was, details))
        state = replace(state, changed_ts=at)
    return state, changes


def tick(rule: Rule, state: RuleState, now_ms: int) -> Result:
    """Time passing with no sample: completes durations due by ``now_ms``, raises no-data.

    Call it periodically (every second or so) with a clock the samples have caught up to:
    samples are ordered by their own times, so a tick far ahead of samples still on their
    way could complete a duration those samples would have broken. The first tick of a
    no-data rule that has seen nothing starts its watch at ``now_ms``.
    """
    if not rule.enabled:
        return state, []
    c = rule.condition
    if isinstance(c, NoData) and not state.runs and not state.active:
        run = Run(c.severity, now_ms, 1, now_ms)
        state = replace(state, runs=(run,), details=_silence(rule, None))
    return _advance(rule, state, now_ms)


def device_event(
    rule: Rule,
    state: RuleState,
    ts_ms: int,
    online: bool,
    detail: Mapping[str, Any] | None = None,
) -> Result:
    """The edge's ``device_online`` / ``device_offline`` event for the rule's device.

    Offline raises ``offline`` rules (after their ``for_s``) and breaks the runs of value
    rules without clearing their alarms; online clears ``offline`` rules. ``no_data`` rules
    ignore events. An event not newer than ``last_ts`` is ignored.
    """
    c = rule.condition
    if (
        not rule.enabled
        or isinstance(c, NoData)
        or (state.last_ts is not None and ts_ms <= state.last_ts)
    ):
        return state, []
    state, changes = _advance(rule, state, ts_ms)
    state = replace(state, last_ts=ts_ms)
    if not isinstance(c, Offline):
        return (state if online else replace(state, runs=())), changes
    if online:
        return _online(rule, state, ts_ms, changes)
    since = state.runs[0].since if state.runs else ts_ms
    details = {"text": "device offline", "since": since, **(detail or {})}
    state = replace(state, details=details, runs=state.runs or (Run(c.severity, ts_ms, 1, ts_ms),))
    was = state.severity
    state, more = _advance(rule, state, ts_ms)
    changes += more
    if was is not None:
        at = _not_before(state, ts_ms)
        changes.append(_change(rule, ChangeKind.UPDATE, at, was, details))
        state = replace(state, changed_ts=at)
    return state, changes


def retire(rule: Rule, state: RuleState, ts_ms: int, reason: str = "rule disabled") -> Result:
    """Clear the alarm of a rule that was disabled or removed; the state starts afresh."""
    if not state.active:
        return RuleState(last_ts=state.last_ts), []
    details = {"text": reason, "reason": reason}
    state, changes = _clear(rule, state, ts_ms, details)
    return state, changes


def _online(rule: Rule, state: RuleState, ts: int, changes: list[Change]) -> Result:
    if state.active:
        state, more = _clear(rule, state, ts, {"text": "device online", "online": ts})
        return state, changes + more
    return replace(state, runs=()), changes


def _silence(rule: Rule, last: int | None) -> dict[str, Any]:
    text = f"no data for {rule.for_s:g} s"
    return {"text": text, "last_data": last, "silent_s": rule.for_s}
