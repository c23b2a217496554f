"""Build the hub's long-lived parts from settings (engine, telemetry sink, consumer)."""

from __future__ import annotations

from sqlalchemy import Engine

from hub.apply import TelemetrySink
from hub.db import make_engine
from hub.ingest import Consumer
from hub.settings import HubSettings
from hub.telemetry import InfluxTelemetry, SqlTelemetry


def make_sink(settings: HubSettings) -> TelemetrySink:
    if settings.influx_url:
        return InfluxTelemetry(
            settings.influx_url,
            settings.influx_token,
            settings.influx_org,
            settings.influx_bucket,
            settings.spill_dir,
        )
    return SqlTelemetry(settings.telemetry_retention_days)


def make_consumer(
    settings: HubSettings, engine: Engine | None = None, instance: str = "1"
) -> Consumer:
    engine = engine or make_engine(settings.database_url)
    return Consumer(settings, engine, make_sink(settings), instance=instance)
