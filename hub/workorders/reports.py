"""Reports: how fast alarms are acknowledged, how fast work orders are done, SLA breaches.

Rows are plain dicts (JSON, or CSV through the route). Durations are in seconds; a median
of nothing is None. Breaches are judged by :func:`lifecycle.breaches` at the time of the
report, so a deadline met late counts as well as one still open.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from statistics import mean, median
from typing import Any

from sqlmodel import Session, col, select

from hub.alarms.models import Alarm
from hub.workorders.lifecycle import Deadline, SlaPolicy, State, breaches
from hub.workorders.models import WorkOrderRecord
from hub.workorders.service import as_lifecycle


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean_s": None, "median_s": None, "max_s": None}
    return {
        "mean_s": round(mean(values), 1),
        "median_s": round(median(values), 1),
        "max_s": round(max(values), 1),
    }


def alarm_ack(
    s: Session, sites: Iterable[str] | None, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Per site: alarms started in [start, end), how many were acknowledged, and the time
    from start to acknowledgement."""
    q = select(Alarm).where(col(Alarm.started_at) >= start, col(Alarm.started_at) < end)
    if sites is not None:
        q = q.where(col(Alarm.site_id).in_(list(sites)))
    per: dict[str, list[Alarm]] = defaultdict(list)
    for a in s.exec(q):
        per[a.site_id].append(a)
    rows = []
    for site in sorted(per):
        items = per[site]
        acks = [
            (a.acked_at - a.started_at).total_seconds() for a in items if a.acked_at is not None
        ]
        rows.append(
            {
                "site": site,
                "alarms": len(items),
                "critical": sum(a.severity == "critical" for a in items),
                "acknowledged": len(acks),
                **{f"ack_{k}": v for k, v in _stats(acks).items()},
            }
        )
    return rows


def work_orders(
    s: Session,
    sites: Iterable[str] | None,
    start: datetime,
    end: datetime,
    now: datetime,
    policy: SlaPolicy,
    by_engineer: bool,
) -> list[dict[str, Any]]:
    """Per site (and engineer: the current assignee, "" for none): orders created in
    [start, end), finished, time from creation to finish, SLA breaches, mean rating."""
    q = select(WorkOrderRecord).where(
        col(WorkOrderRecord.created_at) >= start, col(WorkOrderRecord.created_at) < end
    )
    if sites is not None:
        q = q.where(col(WorkOrderRecord.site_id).in_(list(sites)))
    groups: dict[tuple[str, str], list[WorkOrderRecord]] = defaultdict(list)
    for r in s.exec(q):
        groups[(r.site_id, (r.assignee or "") if by_engineer else "")].append(r)
    rows = []
    for site, engineer in sorted(groups):
        items = groups[(site, engineer)]
        finish = [
            (r.finished_at - r.created_at).total_seconds()
            for r in items
            if r.finished_at is not None
        ]
        late = [b for r in items for b in breaches(as_lifecycle(r), now, policy)]
        ratings = [r.rating for r in items if r.rating is not None]
        row: dict[str, Any] = {"site": site}
        if by_engineer:
            row["engineer"] = engineer
        row.update(
            {
                "orders": len(items),
                "open": sum(r.state not in (State.COMPLETED, State.CLOSED) for r in items),
                "finished": len(finish),
                **{f"finish_{k}": v for k, v in _stats(finish).items()},
                "accept_breaches": sum(b.deadline is Deadline.ACCEPT for b in late),
                "finish_breaches": sum(b.deadline is Deadline.FINISH for b in late),
                "breaches_open": sum(b.ongoing for b in late),
                "mean_rating": round(mean(ratings), 2) if ratings else None,
            }
        )
        rows.append(row)
    return rows
