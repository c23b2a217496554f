"""Alembic environment: the hub's SQLModel metadata, online migrations only."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool
from sqlmodel import SQLModel

import hub.alarms.models
import hub.billing.models
import hub.models
import hub.notify.models
import hub.parking.models
import hub.property.models
import hub.workorders.models  # noqa: F401
from hub.payments import models as payment_models  # noqa: F401

config = context.config
target_metadata = SQLModel.metadata


def run() -> None:
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


run()
