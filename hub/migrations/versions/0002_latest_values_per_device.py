"""latest values per device: one row per device with every point's newest value

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 13:26:24.122745
"""

from __future__ import annotations

from datetime import UTC

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    latest = op.create_table(
        "latest",
        sa.Column("device", sa.Integer(), nullable=False),
        sa.Column("points", JSON, nullable=True),
        sa.ForeignKeyConstraint(["device"], ["device.id"]),
        sa.PrimaryKeyConstraint("device"),
    )
    # carry the per-point rows over: {point: [value, ts_ms, seq]}
    old = sa.table(
        "latestvalue",
        sa.column("device"),
        sa.column("point"),
        sa.column("value"),
        sa.column("ts", sa.DateTime(timezone=True)),
        sa.column("seq"),
    )
    merged: dict[int, dict[str, list[float]]] = {}
    for device, point, value, ts, seq in op.get_bind().execute(sa.select(old)):
        ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)  # SQLite keeps UTC without a zone
        merged.setdefault(device, {})[point] = [value, int(ts.timestamp() * 1000), seq]
    if merged:
        op.bulk_insert(latest, [{"device": d, "points": p} for d, p in merged.items()])
    op.drop_table("latestvalue")


def downgrade() -> None:
    op.create_table(
        "latestvalue",
        sa.Column("device", sa.INTEGER(), nullable=False),
        sa.Column("point", sa.VARCHAR(length=64), nullable=False),
        sa.Column("value", sa.FLOAT(), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seq", sa.BIGINT(), nullable=False),
        sa.ForeignKeyConstraint(["device"], ["device.id"]),
        sa.PrimaryKeyConstraint("device", "point"),
    )
    op.drop_table("latest")
