"""History of one point over a time range, downsampled into fixed steps.

From SQL telemetry when no time-series server is configured; otherwise from the server's
Prometheus-compatible query API (VictoriaMetrics), which does the downsampling itself.
"""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from sqlmodel import Session, col, select

from hub.api.schemas import HistoryPoint
from hub.models import Device, Telemetry
from hub.settings import HubSettings
from hub.telemetry import MEASUREMENT

MAX_ROWS = 500_000


def history(
    session: Session,
    settings: HubSettings,
    dev: Device,
    point: str,
    start: datetime,
    end: datetime,
    step_s: int,
) -> list[HistoryPoint]:
    if settings.influx_url:
        return _from_server(settings.influx_url, dev, point, start, end, step_s)
    value = col(Telemetry.values)[point].as_float()
    rows = session.exec(
        select(col(Telemetry.ts), value)
        .where(
            Telemetry.device == dev.id,
            col(Telemetry.ts) >= start,
            col(Telemetry.ts) < end,
            value.is_not(None),
        )
        .order_by(col(Telemetry.ts))
        .limit(MAX_ROWS)
    ).all()
    buckets: dict[int, list[float]] = {}
    t0 = start.timestamp()
    for ts, v in rows:
        buckets.setdefault(int((ts.timestamp() - t0) // step_s), []).append(float(v))
    return [
        HistoryPoint(
            ts=datetime.fromtimestamp(t0 + k * step_s, UTC),
            value=sum(v) / len(v),
            min=min(v),
            max=max(v),
            count=len(v),
        )
        for k, v in sorted(buckets.items())
    ]


def _from_server(
    url: str, dev: Device, point: str, start: datetime, end: datetime, step_s: int
) -> list[HistoryPoint]:
    sel = f'{MEASUREMENT}_{point}{{gateway="{dev.gateway_id}",device="{dev.device_id}"}}'
    window = f"[{step_s}s]"
    out: dict[float, dict[str, float]] = {}
    for name, fn in (("value", "avg"), ("min", "min"), ("max", "max"), ("count", "count")):
        r = httpx.get(
            f"{url}/api/v1/query_range",
            timeout=30,
            params={
                # a range window is (t-step, t]; shifted by one step less a millisecond
                # (our precision) it is [t, t+step): the same buckets as the SQL path
                "query": f"{fn}_over_time({sel}{window} offset -{step_s * 1000 - 1}ms)",
                "start": start.timestamp(),
                "end": end.timestamp() - step_s,
                "step": f"{step_s}s",
            },
        )
        r.raise_for_status()
        for series in r.json()["data"]["result"]:
            for ts, v in series["values"]:
                out.setdefault(float(ts), {})[name] = float(v)
    return [
        HistoryPoint(
            ts=datetime.fromtimestamp(ts, UTC),
            value=v["value"],
            min=v["min"],
            max=v["max"],
            count=int(v["count"]),
        )
        for ts, v in sorted(out.items())
        if len(v) == 4
    ]
