"""Prometheus metrics of work orders and notifications, read from the database per scrape.

Counts come from the tables (shared by every hub process), not from one process's memory:
``wuye_hub_workorders_created_total{source}``, ``wuye_hub_workorders_sla_breaches_total
{deadline}``, ``wuye_hub_workorders_open{state}`` and ``wuye_hub_notifications{status}``.
Register with ``registry.register(WorkOrderCollector(engine))`` (hub/api/routes/health.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import Engine
from sqlmodel import Session, col, func, select

from hub.notify.models import Notification
from hub.workorders.lifecycle import FINAL
from hub.workorders.models import WorkOrderRecord as W


class WorkOrderCollector:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Any]:
        with Session(self.engine) as s:
            by_source = s.exec(select(W.source, func.count()).group_by(col(W.source))).all()
            by_state = s.exec(select(W.state, func.count()).group_by(col(W.state))).all()
            accept = s.exec(
                select(func.count()).where(col(W.accept_breached_at).is_not(None))
            ).one()
            finish = s.exec(
                select(func.count()).where(col(W.finish_breached_at).is_not(None))
            ).one()
            notes = s.exec(
                select(Notification.status, func.count()).group_by(col(Notification.status))
            ).all()
        created = CounterMetricFamily(
            "wuye_hub_workorders_created", "work orders opened", labels=["source"]
        )
        for source, n in by_source:
            created.add_metric([source], float(n))
        yield created
        late = CounterMetricFamily(
            "wuye_hub_workorders_sla_breaches", "SLA deadlines missed", labels=["deadline"]
        )
        late.add_metric(["accept"], float(accept))
        late.add_metric(["finish"], float(finish))
        yield late
        open_ = GaugeMetricFamily("wuye_hub_workorders_open", "orders not ended", labels=["state"])
        for state, n in by_state:
            if state not in FINAL:
                open_.add_metric([state], float(n))
        yield open_
        out = GaugeMetricFamily("wuye_hub_notifications", "notifications", labels=["status"])
        for status, n in notes:
            out.add_metric([status], float(n))
        yield out
