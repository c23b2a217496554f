"""Alarms open work orders, and people hear of alarms: hooks run in the alarm's transaction.

- An alarm raised (or escalated) at or above ``Config.min_severity`` opens one work order,
  exactly once per alarm: ``work_order.alarm_id`` is unique and the insert does nothing on
  conflict, so two processes raising (or a raise and an escalation) at once open one; the
  alarm is linked to it (``alarm.work_order_id``). Priority follows the severity, the
  skill the device's profile (``Config.skills``), and round-robin dispatch applies.
- An escalation raises the order's priority (and tightens its SLA deadlines).
- A clear notes it on the order's audit trail; the order stays open until an engineer
  finishes it.
- Subscribers hear of alarms (``alarm.raised``, hub.notify) when raised and again each time
  one gets worse: someone who asked for critical alarms hears of a major one escalated.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from hub.alarms import service as alarms
from hub.alarms.models import Alarm
from hub.db import session_scope
from hub.models import Device, utcnow
from hub.notify.service import Event, publish
from hub.settings import HubSettings
from hub.workorders import service
from hub.workorders.lifecycle import SYSTEM, Source
from hub.workorders.models import WorkOrderRecord
from protocols.alarms.engine import Change, ChangeKind
from protocols.alarms.model import Severity


def _open_for(s: Session, config: service.Config, alarm: Alarm, severity: Severity) -> None:
    assert alarm.id is not None
    device = s.get(Device, alarm.device)
    profile = device.profile if device is not None else ""
    rec = service.open_order(
        s,
        config,
        service.NewOrder(
            site=alarm.site_id,
            source=Source.ALARM,
            title=f"{alarm.gateway_id}/{alarm.device_id}: {alarm.message}",
            filed_by=SYSTEM.username,
            description=f"alarm {alarm.id} ({alarm.alarm_type}, {severity}) raised at "
            f"{alarm.started_at.isoformat()}: {alarm.message}",
            location=f"{alarm.gateway_id}/{alarm.device_id}",
            priority=service.priority_for(severity),
            skill=config.skills.get(profile, "general"),
            alarm_id=alarm.id,
        ),
        SYSTEM,
        note=f"opened by alarm {alarm.id}",
    )
    if rec is None:  # another transaction opened it: link to that one
        rec = s.exec(select(WorkOrderRecord).where(WorkOrderRecord.alarm_id == alarm.id)).one()
    alarm.work_order_id = rec.id
    s.add(alarm)


def _order_of(s: Session, alarm: Alarm) -> WorkOrderRecord | None:
    if alarm.work_order_id is None:
        return None
    return s.get(WorkOrderRecord, alarm.work_order_id, with_for_update=True, populate_existing=True)


def work_order_hook(config: service.Config) -> alarms.OnAlarm:
    def on_alarm(s: Session, alarm: Alarm, change: Change) -> None:
        severity = Severity(alarm.severity)
        now = utcnow()
        rec = _order_of(s, alarm)
        if change.kind is ChangeKind.CLEAR:
            if rec is not None:
                at = alarm.cleared_at.isoformat() if alarm.cleared_at else "an unknown time"
                service.add_note(
                    s,
                    rec,
                    "alarm_cleared",
                    f"alarm {alarm.id} cleared at {at}",
                    now,
                    {"alarm_id": alarm.id, "cleared_at": at},
                )
            return
        if rec is None:
            if severity.rank >= config.min_severity.rank:
                _open_for(s, config, alarm, severity)
            return
        if change.kind is ChangeKind.ESCALATE or change.kind is ChangeKind.RAISE:
            service.raise_priority(
                s,
                config,
                rec,
                service.priority_for(severity),
                now,
                f"alarm {alarm.id} escalated to {severity}",
            )

    return on_alarm


def notify_hook(s: Session, alarm: Alarm, change: Change) -> None:
    """``alarm.raised`` to the subscribers of the alarm's site, at each new severity."""
    if change.kind not in (ChangeKind.RAISE, ChangeKind.ESCALATE):
        return
    severity = Severity(alarm.severity)
    publish(
        s,
        Event(
            "alarm.raised",
            f"alarm:{alarm.id}:{severity}",
            alarm.site_id,
            severity,
            {
                "alarm_id": alarm.id,
                "site": alarm.site_id,
                "device": f"{alarm.gateway_id}/{alarm.device_id}",
                "alarm_type": alarm.alarm_type,
                "severity": severity.value,
                "change": change.kind.value,
                "message": alarm.message,
                "started_at": alarm.started_at.isoformat(),
                "work_order_id": alarm.work_order_id,
            },
        ),
    )


def sweep(engine: Engine, config: service.Config) -> int:
    """Open the orders of active alarms at or above the threshold that have none: alarms
    raised by a process without the hooks (``python -m hub ingest``), or before the hooks
    were installed. The dispatcher calls it every few seconds; opening is idempotent, so a
    sweep racing a hook opens one order. Returns how many it opened."""
    severe = [v.value for v in Severity if v.rank >= config.min_severity.rank]
    with Session(engine) as s:
        ids = s.exec(
            select(Alarm.id).where(
                col(Alarm.active),
                col(Alarm.work_order_id).is_(None),
                col(Alarm.severity).in_(severe),
            )
        ).all()
    opened = 0
    for alarm_id in ids:
        with session_scope(engine) as s:
            alarm = s.get(Alarm, alarm_id, with_for_update=True, populate_existing=True)
            if alarm is None or not alarm.active or alarm.work_order_id is not None:
                continue
            _open_for(s, config, alarm, Severity(alarm.severity))
            severity = Severity(alarm.severity)
            change = Change(ChangeKind.RAISE, alarm.rule, alarm.alarm_type, 0, severity, "")
            notify_hook(s, alarm, change)  # as the hook would have: once per severity
            opened += 1
    return opened


def install(settings: HubSettings) -> Callable[[], None]:
    """Register the hooks (work orders first, so notifications name the order); the undo."""
    undo = [
        alarms.register_hook(work_order_hook(service.Config.from_settings(settings))),
        alarms.register_hook(notify_hook),
    ]

    def uninstall() -> None:
        for u in undo:
            u()

    return uninstall
