"""Alarms at the hub: the engine (protocols/alarms) run on what ingest applies.

Ingest calls :func:`on_samples` inside the transaction that applies a batch, after it has
locked the batch's gateways: every device's rule states are read, advanced and written
under its gateway's lock, so two ingest processes never race on one device, and an alarm
exists exactly when the data that raised it was committed. :func:`tick` completes
durations and no-data silences between samples (the dispatcher calls it every few
seconds, under the same gateway locks). Each change is applied to the ``alarm`` table
(one active alarm per device and type, by a partial unique index) with an audit event;
hooks (work orders, notifications) run in the same transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select as sa_select
from sqlalchemy import tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from hub.alarms.models import Alarm, AlarmEvent, AlarmOverride, AlarmRuleState
from hub.models import Device, Gateway, utcnow
from protocols.alarms import engine
from protocols.alarms.engine import Change, ChangeKind, RuleState
from protocols.alarms.loading import Overrides, load_rule_sets, parse_overrides, resolve_rules
from protocols.alarms.model import NoData, Offline, Rule, RuleSet, Severity, worst
from protocols.errors import ConfigError

log = logging.getLogger(__name__)

OnAlarm = Callable[[Session, Alarm, Change], None]
_hooks: list[OnAlarm] = []


def register_hook(hook: OnAlarm) -> Callable[[], None]:
    """Call ``hook(session, alarm, change)`` after each raise, escalation and clear, in the
    transaction that made it (work orders, notifications). Returns the undo."""
    _hooks.append(hook)
    return lambda: _hooks.remove(hook)


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def is_timed(rule: Rule) -> bool:
    """Completes on time alone (a duration, or a silence), so it needs ticks."""
    return rule.for_s > 0 or isinstance(rule.condition, NoData | Offline)


@dataclass(frozen=True, slots=True)
class Sample:
    device: int  # device pk
    ts: int
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    device: int
    ts: int
    online: bool
    detail: dict[str, Any]


class RuleBook:
    """Each device's rules: its profile's shipped set, then site and device overrides.

    Overrides are read from the database and cached for ``ttl_s`` (an edit reaches every
    ingest process within that); a bad override is logged and the layer below it used.
    """

    def __init__(self, ttl_s: float = 30.0, rule_sets: dict[str, RuleSet] | None = None) -> None:
        self.base = rule_sets if rule_sets is not None else load_rule_sets()
        self.ttl_s = ttl_s
        self._cache: dict[tuple[str, str, str, str], tuple[float, RuleSet | None]] = {}
        self._overrides: tuple[float, dict[tuple[str, str, str], Overrides]] | None = None

    def invalidate(self) -> None:
        self._cache.clear()
        self._overrides = None

    def rules(self, s: Session, site: str, gw: str, dev: str, profile: str) -> RuleSet | None:
        key = (site, gw, dev, profile)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        base = self.base.get(profile)
        rules = None
        if base is not None:
            over = self._load_overrides(s, now)
            site_o, dev_o = (
                over.get(("site", site, profile)),
                over.get(("device", f"{gw}/{dev}", profile)),
            )
            try:
                rules = resolve_rules(base, site_o, dev_o)
            except ConfigError as exc:
                log.error("alarm overrides for %s/%s refused, shipped rules used: %s", gw, dev, exc)
                rules = base
        self._cache[key] = (now, rules)
        return rules

    def _load_overrides(self, s: Session, now: float) -> dict[tuple[str, str, str], Overrides]:
        if self._overrides is None or now - self._overrides[0] >= self.ttl_s:
            found: dict[tuple[str, str, str], Overrides] = {}
            for o in s.exec(select(AlarmOverride)):
                source = f"{o.scope} {o.target} overrides"
                try:
                    found[(o.scope, o.target, o.profile)] = parse_overrides(
                        {
                            "schema": "wuye.alarm-overrides/1",
                            "profile": o.profile,
                            "rules": o.rules,
                        },
                        source,
                    )
                except ConfigError as exc:
                    log.error("%s ignored: %s", source, exc)
            self._overrides = (now, found)
        return self._overrides[1]


def _upsert(s: Session) -> Any:
    ins = (postgresql if s.get_bind().dialect.name == "postgresql" else sqlite).insert
    table = AlarmRuleState.__table__  # type: ignore[attr-defined]
    stmt = ins(table)
    return stmt.on_conflict_do_update(
        index_elements=["device", "rule"],
        set_={
            "state": stmt.excluded.state,
            "timed": stmt.excluded.timed,
            "updated_at": stmt.excluded.updated_at,
        },
    )


def on_samples(
    s: Session, book: RuleBook, samples: Sequence[Sample], events: Sequence[DeviceEvent] = ()
) -> list[Alarm]:
    """Run every device's rules on its samples and events (in time order); the alarms changed."""
    pks = sorted({x.device for x in samples} | {e.device for e in events})
    if not pks:
        return []
    devices = _devices(s, col(Device.id).in_(pks))
    states = _states(s, pks)
    work: dict[int, list[tuple[int, int, Any]]] = {}
    for i, x in enumerate(samples):
        work.setdefault(x.device, []).append((x.ts, i, x))
    for j, e in enumerate(events):
        work.setdefault(e.device, []).append((e.ts, len(samples) + j, e))
    changed: list[Alarm] = []
    rows: list[dict[str, Any]] = []
    gone: list[tuple[int, str]] = []
    for pk, items in work.items():
        d = devices.get(pk)
        if d is None:
            continue
        rules = book.rules(s, d.site_id, d.gateway_id, d.device_id, d.profile)
        if rules is None:
            continue
        items.sort(key=lambda t: (t[0], t[1]))
        for rule in rules.rules:
            before = states.get((pk, rule.id))
            if before is None and all(
                isinstance(item, Sample) and engine.quiet(rule, item.values) for _, _, item in items
            ):
                continue  # idle, and nothing here can wake it: no state to read or write
            state = before or RuleState()
            for _, _, item in items:
                if isinstance(item, Sample):
                    state, changes = engine.evaluate(rule, state, item.ts, item.values)
                else:
                    state, changes = engine.device_event(
                        rule, state, item.ts, item.online, item.detail
                    )
                for c in changes:
                    changed.append(_apply(s, d, c))
            _keep(pk, rule, before, state, rows, gone)
    _write(s, rows, gone)
    return _unique(changed)


def _unique(alarms: list[Alarm]) -> list[Alarm]:
    """Each alarm once (a raise and an update in one batch are one changed alarm)."""
    return list({id(a): a for a in alarms}.values())


def _idle(state: RuleState) -> bool:
    """No run under way and no alarm. Idle states are not stored (no row: idle), so a batch
    reads and writes only the few rules that are doing something. Their ``last_ts`` is not
    kept: a late sample then meets an older one, and an idle rule it does not trigger stays
    idle; one it does trigger starts a run no earlier than it would have."""
    return not state.runs and not state.active


def _keep(
    pk: int,
    rule: Rule,
    before: RuleState | None,
    state: RuleState,
    rows: list[dict[str, Any]],
    gone: list[tuple[int, str]],
) -> None:
    if not _idle(state):
        if state != before:
            rows.append(_row(pk, rule, state))
    elif before is not None:
        gone.append((pk, rule.id))


def _write(s: Session, rows: list[dict[str, Any]], gone: list[tuple[int, str]]) -> None:
    if rows:
        s.execute(_upsert(s), rows)
    t = AlarmRuleState.__table__  # type: ignore[attr-defined]
    for i in range(0, len(gone), 500):
        chunk = gone[i : i + 500]
        s.execute(t.delete().where(tuple_(t.c.device, t.c.rule).in_(chunk)))


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """What alarms need of a device (not its point list: a batch reads thousands)."""

    id: int
    site_id: str
    gateway_id: str
    device_id: str
    profile: str


def _devices(s: Session, where: Any) -> dict[int, DeviceRef]:
    query = sa_select(
        col(Device.id),
        col(Device.site_id),
        col(Device.gateway_id),
        col(Device.device_id),
        col(Device.profile),
    ).where(where)
    return {r[0]: DeviceRef(*r) for r in s.execute(query)}


def _states(s: Session, pks: Iterable[int]) -> dict[tuple[int, str], RuleState]:
    out: dict[tuple[int, str], RuleState] = {}
    t = AlarmRuleState
    query = select(t.device, t.rule, t.state).where(col(t.device).in_(list(pks)))
    for device, rule, state in s.execute(query):
        try:
            out[(device, rule)] = RuleState.from_json(state)
        except ValueError:
            log.error("rule state of %s on device %d unreadable; starting it afresh", rule, device)
    return out


def _row(pk: int, rule: Rule, state: RuleState) -> dict[str, Any]:
    return {
        "device": pk,
        "rule": rule.id,
        "state": state.to_json(),
        "timed": is_timed(rule),
        "updated_at": utcnow(),
    }


def tick(s: Session, book: RuleBook, gateways: Sequence[str], now_ms: int) -> list[Alarm]:
    """Complete durations and silences of the timed rules of these gateways' devices.

    Locks the gateways first (in id order, as ingest does), so a tick and a batch never
    interleave on one device.
    """
    if not gateways:
        return []
    list(
        s.exec(
            select(Gateway)
            .where(col(Gateway.id).in_(sorted(gateways)))
            .order_by(col(Gateway.id))
            .with_for_update()
        )
    )
    devices = _devices(s, col(Device.gateway_id).in_(list(gateways)))
    if not devices:
        return []
    states = _states(s, devices)
    changed: list[Alarm] = []
    rows: list[dict[str, Any]] = []
    gone: list[tuple[int, str]] = []
    for pk, d in devices.items():
        rules = book.rules(s, d.site_id, d.gateway_id, d.device_id, d.profile)
        if rules is None:
            continue
        for rule in rules.rules:
            if not is_timed(rule):
                continue
            before = states.get((pk, rule.id))
            state, changes = engine.tick(rule, before or RuleState(), now_ms)
            for c in changes:
                changed.append(_apply(s, d, c))
            _keep(pk, rule, before, state, rows, gone)
    _write(s, rows, gone)
    return _unique(changed)


def _apply(s: Session, d: DeviceRef, c: Change) -> Alarm:
    """One engine change onto the ``alarm`` table; the alarm as it now is."""
    at = ms_to_dt(c.ts_ms)
    assert d.id is not None
    alarm = s.exec(
        select(Alarm)
        .where(Alarm.device == d.id, Alarm.alarm_type == c.alarm_type, col(Alarm.active))
        .with_for_update()
    ).first()
    if c.kind is ChangeKind.RAISE or (alarm is None and c.kind is not ChangeKind.CLEAR):
        if alarm is None:
            alarm = Alarm(
                device=d.id,
                site_id=d.site_id,
                gateway_id=d.gateway_id,
                device_id=d.device_id,
                alarm_type=c.alarm_type,
                rule=c.rule,
                severity=c.severity,
                message=c.message,
                details=dict(c.details),
                started_at=at,
                last_seen_at=at,
            )
            s.add(alarm)
            s.flush()
            _event(s, alarm, "raised", at, c.severity, c.message)
        else:  # the engine's state was lost but the alarm stands: carry on with it
            _update(alarm, c, at)
    elif alarm is None:  # a clear for an alarm already cleared (by hand, or a lost state)
        return _cleared_copy(d, c, at)
    elif c.kind is ChangeKind.CLEAR:
        alarm.active = False
        alarm.cleared_at = at
        alarm.details = {**alarm.details, "cleared": dict(c.details)}
        s.flush()
        _event(s, alarm, "cleared", at, alarm.severity, c.message)
    else:
        worse = worst(Severity(alarm.severity), Severity(c.severity)) != Severity(alarm.severity)
        _update(alarm, c, at)
        if c.kind is ChangeKind.ESCALATE or worse:
            _event(s, alarm, "escalated", at, c.severity, c.message)
    if c.kind is not ChangeKind.UPDATE:
        for hook in _hooks:
            hook(s, alarm, c)
    return alarm


def _update(alarm: Alarm, c: Change, at: datetime) -> None:
    # severity never goes down while active
    alarm.severity = worst(Severity(alarm.severity), Severity(c.severity))
    alarm.last_seen_at = max(alarm.last_seen_at, at)
    alarm.message = c.message
    alarm.details = dict(c.details)


def _cleared_copy(d: DeviceRef, c: Change, at: datetime) -> Alarm:
    assert d.id is not None
    return Alarm(
        device=d.id,
        site_id=d.site_id,
        gateway_id=d.gateway_id,
        device_id=d.device_id,
        alarm_type=c.alarm_type,
        rule=c.rule,
        severity=c.severity,
        active=False,
        message=c.message,
        started_at=at,
        last_seen_at=at,
        cleared_at=at,
    )


def _event(
    s: Session,
    alarm: Alarm,
    kind: str,
    at: datetime,
    severity: str | None,
    note: str,
    who: str | None = None,
) -> None:
    assert alarm.id is not None
    s.add(AlarmEvent(alarm_id=alarm.id, at=at, kind=kind, severity=severity, who=who, note=note))


# -- people ---------------------------------------------------------------------------------
class AlarmError(Exception):
    """Not possible on this alarm (unknown, already acknowledged ...)."""


def acknowledge(s: Session, alarm_id: int, who: str, note: str = "") -> Alarm:
    alarm = s.get(Alarm, alarm_id, with_for_update=True)
    if alarm is None:
        raise AlarmError(f"no alarm {alarm_id}")
    if alarm.acknowledged:
        raise AlarmError(f"alarm {alarm_id} was acknowledged by {alarm.acked_by} already")
    now = utcnow()
    alarm.acknowledged, alarm.acked_at, alarm.acked_by = True, now, who
    _event(s, alarm, "acknowledged", now, None, note, who)
    return alarm


def comment(s: Session, alarm_id: int, who: str, note: str) -> Alarm:
    alarm = s.get(Alarm, alarm_id)
    if alarm is None:
        raise AlarmError(f"no alarm {alarm_id}")
    if not note.strip():
        raise AlarmError("a comment needs some text")
    _event(s, alarm, "comment", utcnow(), None, note, who)
    return alarm


def timed_gateways(s: Session) -> list[str]:
    """Gateways with devices whose timed rules may complete without a sample."""
    rows = s.exec(
        select(Device.gateway_id)
        .join(AlarmRuleState, col(AlarmRuleState.device) == col(Device.id))
        .where(col(AlarmRuleState.timed))
        .distinct()
    ).all()
    return sorted(rows)


__all__ = [
    "AlarmError",
    "DeviceEvent",
    "RuleBook",
    "Sample",
    "acknowledge",
    "comment",
    "on_samples",
    "register_hook",
    "tick",
    "timed_gateways",
]
