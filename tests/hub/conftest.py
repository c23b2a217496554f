from __future__ import annotations

import os
import uuid

import psycopg
import pytest

from hub.db import make_engine, upgrade

PG = os.environ.get("WUYE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh, migrated database: SQLite in a temp dir, or a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hub.db'}"
        upgrade(url)
        yield url
        return
    name = f"wuye_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG, autocommit=True)
    except psycopg.OperationalError as exc:
        raise RuntimeError(f"PostgreSQL is required at {PG}: {exc}") from exc
    admin.execute(f'CREATE DATABASE "{name}"')
    url = PG.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    yield url
    admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def engine(db_url):
    e = make_engine(db_url)
    yield e
    e.dispose()
