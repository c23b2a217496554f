"""billing report indexes: HQ's live collections by day, and a site's open bills

``payment (paid_on)``: live collections across every site read one day's payments; the only
index with paid_on had it second (``ix_payment_site_on``), so the day was a sequential scan
of every payment. ``bill (site_id, id) WHERE open_fen > 0``: the reports' open-bill
candidates (``reports._maybe_open``: aging, arrears brought forward) read a site's open
bills, not all of its bills. Measured by bench/billing_reports.py (docs/PERFORMANCE.md).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 23:05:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.create_index("ix_payment_paid_on", ["paid_on"], unique=False)

    with op.batch_alter_table("bill", schema=None) as batch_op:
        batch_op.create_index(
            "ix_bill_site_open",
            ["site_id", "id"],
            unique=False,
            postgresql_where=sa.text("open_fen > 0"),
            sqlite_where=sa.text("open_fen > 0"),
        )


def downgrade() -> None:
    with op.batch_alter_table("bill", schema=None) as batch_op:
        batch_op.drop_index("ix_bill_site_open")

    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_paid_on")
