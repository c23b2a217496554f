"""gateway counters in 64 bits, and a count of what its outbox dropped on purpose

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 19:40:00

A gap of 2^31 sequence numbers (an edge whose seq jumped) overflowed the 32-bit ``gaps``
counter on PostgreSQL and failed every batch of that gateway. ``dropped`` counts what the
edge announced it dropped, which is no longer counted as missing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

COUNTERS = ("messages", "duplicates", "gaps", "bad")


def upgrade() -> None:
    with op.batch_alter_table("gateway") as batch:
        for name in COUNTERS:
            batch.alter_column(name, existing_type=sa.Integer(), type_=sa.BigInteger())
        batch.add_column(sa.Column("dropped", sa.BigInteger(), nullable=False, server_default="0"))
    # the drops recorded before this counter existed, so that it matches the gap rows
    op.execute(
        "UPDATE gateway SET dropped = COALESCE((SELECT SUM(last_seq - first_seq + 1) FROM gap "
        "WHERE gap.gateway_id = gateway.id AND gap.reason = 'dropped_by_edge'), 0)"
    )


def downgrade() -> None:
    with op.batch_alter_table("gateway") as batch:
        batch.drop_column("dropped")
        for name in COUNTERS:
            batch.alter_column(name, existing_type=sa.BigInteger(), type_=sa.Integer())
