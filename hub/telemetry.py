"""Where telemetry goes: a time-series server (InfluxDB line protocol), or SQL.

Both are called inside the ingest transaction, before it commits and before the broker is
acknowledged, so a value is durable somewhere before its message is let go:

- :class:`InfluxTelemetry` writes line protocol through influxdb-client to any v2 write
  endpoint (InfluxDB 2.x/3.x, VictoriaMetrics). When the server is down the lines go to a
  spill file (fsynced) and are delivered, oldest first, once it is back.
- :class:`SqlTelemetry` inserts rows (COPY on PostgreSQL) into ``telemetry``; old rows are
  pruned by the retention setting.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import orjson
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from psycopg.types.json import Jsonb
from sqlalchemy import Engine, delete
from sqlmodel import Session

from hub.apply import Sample, ms_to_dt
from hub.db import session_scope
from hub.models import Telemetry, utcnow

log = logging.getLogger(__name__)
MEASUREMENT = "wuye"  # VictoriaMetrics names the series wuye_{point}


def line_protocol(samples: Sequence[Sample]) -> list[str]:
    """One line per device and timestamp, every point a field; millisecond precision.

    Site, gateway and device are tags (indexed, low cardinality); ids in wuye match
    ``[a-z0-9_-]`` so they need no escaping. Never a unique id as a tag.
    """
    return [
        f"{MEASUREMENT},site={x.site},gateway={x.gateway},device={x.device} "
        f"{','.join(f'{p}={v!r}' for p, v in x.values.items())} {x.ts_ms}"
        for x in samples
        if x.values
    ]


def _sqlite_time(ms: int) -> str:
    """The text SQLAlchemy's SQLite dialect stores for a UTC datetime (what UtcDateTime reads)."""
    return ms_to_dt(ms).strftime("%Y-%m-%d %H:%M:%S.%f")


class SqlTelemetry:
    def __init__(self, retention_days: int = 30) -> None:
        self.retention = timedelta(days=retention_days)

    def write(self, session: Session, samples: Sequence[Sample]) -> None:
        """One row per message straight through the driver, in the session's transaction."""
        raw = session.connection().connection.driver_connection
        assert raw is not None
        if session.get_bind().dialect.name == "postgresql":
            with (
                raw.cursor() as cur,
                cur.copy('COPY telemetry (device, ts, "values") FROM STDIN') as copy,
            ):
                for x in samples:
                    copy.write_row((x.device_pk, ms_to_dt(x.ts_ms), Jsonb(x.values)))
        else:
            raw.executemany(
                'INSERT INTO telemetry (device, ts, "values") VALUES (?,?,?)',
                [
                    (x.device_pk, _sqlite_time(x.ts_ms), orjson.dumps(x.values).decode())
                    for x in samples
                ],
            )

    def prune(self, engine: Engine) -> int:
        with session_scope(engine) as s:
            result = s.execute(delete(Telemetry).where(Telemetry.ts < utcnow() - self.retention))  # type: ignore[arg-type]
            return int(result.rowcount or 0)  # type: ignore[attr-defined]


class InfluxTelemetry:
    """Line protocol to a v2 write endpoint, with an on-disk spill while it is down."""

    def __init__(
        self, url: str, token: str, org: str, bucket: str, spill_dir: Path, retry_every: float = 5.0
    ) -> None:
        self.bucket, self.org = bucket, org
        self.client = InfluxDBClient(url=url, token=token or "unused", org=org, timeout=10_000)
        self.api = self.client.write_api(write_options=SYNCHRONOUS)
        self.spill_dir = spill_dir
        spill_dir.mkdir(parents=True, exist_ok=True)
        self.retry_every = retry_every
        self._down_since: float | None = None
        self._lock = threading.Lock()
        self.written = 0
        self.spilled = 0

    def write(self, session: Session, samples: Sequence[Sample]) -> None:
        lines = line_protocol(samples)
        with self._lock:
            # while spilled lines wait, new ones queue behind them: order is kept
            if self._down_since is None and not self._spill_files():
                try:
                    self._send(lines)
                    return
                except Exception as exc:
                    log.error(
                        "time-series server unreachable, spilling to %s: %s", self.spill_dir, exc
                    )
                    self._down_since = time.monotonic()
            self._spill(lines)

    def _send(self, lines: list[str]) -> None:
        self.api.write(
            bucket=self.bucket,
            org=self.org,
            record=lines,
            write_precision=WritePrecision.MS,  # type: ignore[arg-type]
        )
        self.written += len(lines)

    def _spill(self, lines: list[str]) -> None:
        path = self.spill_dir / f"{time.time_ns():020d}.lp"
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines))
            f.flush()
            os.fsync(f.fileno())  # durable before the batch commits and is acknowledged
        self.spilled += len(lines)

    def _spill_files(self) -> list[Path]:
        return sorted(self.spill_dir.glob("*.lp"))

    def pending(self) -> int:
        return len(self._spill_files())

    def deliver_spill(self) -> int:
        """Send spilled files, oldest first; returns how many went. Call periodically."""
        with self._lock:
            if (
                self._down_since is not None
                and time.monotonic() - self._down_since < self.retry_every
            ):
                return 0
            sent = 0
            for path in self._spill_files():
                try:
                    self._send(path.read_text(encoding="utf-8").splitlines())
                except Exception as exc:
                    log.debug("spill not delivered yet: %s", exc)
                    self._down_since = time.monotonic()
                    return sent
                path.unlink()
                sent += 1
            if self._down_since is not None:
                log.info("time-series server is back; spill delivered")
            self._down_since = None
            return sent

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]
        self.client.close()  # type: ignore[no-untyped-call]
