"""payments: payment orders and the notifications channels sent about them

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hub.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
STATUSES = "'created', 'pending', 'paid', 'failed', 'closed'"


def upgrade() -> None:
    op.create_table(
        "payment_order",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("subject_kind", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("channel_txn_id", sa.String(length=128), nullable=True),
        sa.Column("payer", sa.String(length=64), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", hub.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("paid_at", hub.models.UtcDateTime(timezone=True), nullable=True),
        sa.Column("closed_at", hub.models.UtcDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"status IN ({STATUSES})", name="ck_payment_order_status"),
        sa.CheckConstraint("amount_fen > 0", name="ck_payment_order_amount_positive"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("channel", "channel_txn_id", name="uq_payment_order_channel_txn"),
        sa.UniqueConstraint(
            "site_id", "subject_kind", "idempotency_key", name="uq_payment_order_idempotency"
        ),
    )
    op.create_index("ix_payment_order_site_status", "payment_order", ["site_id", "status"])
    op.create_index("ix_payment_order_subject", "payment_order", ["subject_kind", "subject_id"])

    op.create_table(
        "payment_notification",
        sa.Column("id", ID, nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("received_at", hub.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=True),
        sa.Column("channel_txn_id", sa.String(length=128), nullable=True),
        sa.Column("signature_ok", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_payment_notification_order", "payment_notification", ["order_id"])
    op.create_index("ix_payment_notification_received_at", "payment_notification", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_payment_notification_received_at", "payment_notification")
    op.drop_index("ix_payment_notification_order", "payment_notification")
    op.drop_table("payment_notification")
    op.drop_index("ix_payment_order_subject", "payment_order")
    op.drop_index("ix_payment_order_site_status", "payment_order")
    op.drop_table("payment_order")
