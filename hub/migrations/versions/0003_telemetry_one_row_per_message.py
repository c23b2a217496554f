"""telemetry: one row per message (device, ts, values) instead of one per value

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 13:40:00
"""

from __future__ import annotations

from datetime import UTC

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import hub.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.rename_table("telemetry", "telemetry_per_value")
    new = op.create_table(
        "telemetry",
        sa.Column("id", ID, primary_key=True),
        sa.Column("device", sa.Integer(), nullable=False),
        sa.Column("ts", hub.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("values", JSON, nullable=True),
    )
    old = sa.table(
        "telemetry_per_value",
        sa.column("device"),
        sa.column("point"),
        sa.column("ts", sa.DateTime(timezone=True)),
        sa.column("value"),
    )
    rows = op.get_bind().execute(sa.select(old).order_by(old.c.device, old.c.ts))
    batch: list[dict[str, object]] = []
    key = None
    for device, point, ts, value in rows:
        ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)  # SQLite keeps UTC without a zone
        if (device, ts) != key:
            batch.append({"device": device, "ts": ts, "values": {}})
            key = (device, ts)
        batch[-1]["values"][point] = value  # type: ignore[index]
        if len(batch) >= 10_000:
            op.bulk_insert(new, batch[:-1])
            batch = batch[-1:]
    if batch:
        op.bulk_insert(new, batch)
    op.drop_table("telemetry_per_value")
    op.create_index("ix_telemetry_device_ts", "telemetry", ["device", "ts"])


def downgrade() -> None:
    op.drop_index("ix_telemetry_device_ts", "telemetry")
    op.drop_table("telemetry")
    op.create_table(
        "telemetry",
        sa.Column("id", ID, primary_key=True),
        sa.Column("device", sa.Integer(), nullable=False),
        sa.Column("point", sa.String(64), nullable=False),
        sa.Column("ts", hub.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
    )
    op.create_index("ix_telemetry_dev_point_ts", "telemetry", ["device", "point", "ts"])
