"""reminders: what a reminder message cost, and a person's WeChat openid

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 21:31:24.323305
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cost_fen", sa.Integer(), nullable=True))

    with op.batch_alter_table("person", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("wechat_openid", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("person", schema=None) as batch_op:
        batch_op.drop_column("wechat_openid")

    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.drop_column("cost_fen")
