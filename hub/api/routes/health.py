from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import text

from hub.workorders.metrics import WorkOrderCollector

router = APIRouter(tags=["health"])


@router.get("/health", responses={503: {"description": "not ready: ingest is dead"}})
def health(request: Request, response: Response) -> dict[str, object]:
    """Ready when the database answers and ingest (if this process runs it) is alive."""
    state = request.app.state
    with state.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    consumer = getattr(state, "consumer", None)
    ingest: str | None = None
    if consumer is not None:
        if not consumer.alive:
            response.status_code = 503
            ingest = f"dead: {consumer.failed!r}"
        else:
            ingest = "connected" if consumer.connected.is_set() else "disconnected"
    return {"database": "ok", "ingest": ingest}


class _IngestCollector:
    def __init__(self, request: Request) -> None:
        self.consumer = getattr(request.app.state, "consumer", None)

    def collect(self):  # type: ignore[no-untyped-def]
        if self.consumer is None:
            return
        s = self.consumer.stats
        for name in ("received", "applied", "duplicates", "dead", "values", "batches", "failures"):
            c = CounterMetricFamily(f"wuye_hub_ingest_{name}", f"ingest {name}")
            c.add_metric([], float(getattr(s, name)))
            yield c
        g = GaugeMetricFamily("wuye_hub_ingest_connected", "1 if connected to the broker")
        g.add_metric([], float(self.consumer.connected.is_set()))
        yield g
        g = GaugeMetricFamily("wuye_hub_ingest_alive", "1 while the ingest thread runs")
        g.add_metric([], float(self.consumer.alive))
        yield g


@router.get("/metrics")
def metrics(request: Request) -> Response:
    registry = CollectorRegistry()
    registry.register(_IngestCollector(request))
    registry.register(WorkOrderCollector(request.app.state.engine))
    return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")
