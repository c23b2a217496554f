"""Many rows in one statement: on PostgreSQL as arrays through ``unnest`` (a handful of
parameters however many rows, instead of a statement thousands of placeholders long that
the driver must parse), elsewhere as an executemany."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import JSON, BigInteger, Boolean, Date, Integer, Numeric, String, Table
from sqlalchemy.dialects import sqlite
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, SQLModel

from hub.models import UtcDateTime


def _pg_type(column: Any) -> str:
    t = column.type
    if isinstance(t, UtcDateTime):
        return "timestamptz"
    if isinstance(t, TypeDecorator):
        t = t.impl
    if isinstance(t, BigInteger):
        return "bigint"
    if isinstance(t, Integer):
        return "bigint"
    if isinstance(t, Boolean):
        return "boolean"
    if isinstance(t, Date):
        return "date"
    if isinstance(t, Numeric):
        return "numeric"
    if isinstance(t, JSON):
        return "json"
    if isinstance(t, String):
        return "text"
    raise TypeError(f"no array type for {column.name}: {t!r}")


def insert(
    s: Session,
    model: type[SQLModel],
    rows: Sequence[dict[str, Any]],
    *,
    conflict: Sequence[str] = (),
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` (dicts with the same keys) into ``model``'s table, skipping those
    that hit the unique ``conflict`` columns when given; the ``returning`` columns of the
    rows inserted."""
    if not rows:
        return []
    table: Table = model.__table__  # type: ignore[attr-defined]
    names = list(rows[0])
    if s.get_bind().dialect.name != "postgresql":
        stmt: Any = sqlite.insert(table)
        if conflict:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(conflict))
        if returning:
            stmt = stmt.returning(*(table.c[r] for r in returning))
            return [tuple(r) for r in s.execute(stmt, list(rows)).all()]
        s.execute(stmt, list(rows))
        return []
    columns = [table.c[n] for n in names]
    types = [_pg_type(c) for c in columns]
    params: dict[str, list[Any]] = {}
    for i, (name, kind) in enumerate(zip(names, types, strict=True)):
        values = [r[name] for r in rows]
        if kind == "json":
            values = [None if v is None else orjson.dumps(v).decode() for v in values]
        params[f"c{i}"] = values
    arrays = ", ".join(f"CAST(%b AS {'text' if k == 'json' else k}[])" for k in types)
    picks = ", ".join(
        f"CAST(u.c{i} AS json)" if k == "json" else f"u.c{i}" for i, k in enumerate(types)
    )
    aliases = ", ".join(f"c{i}" for i in range(len(names)))
    quoted = ", ".join(f'"{n}"' for n in names)
    sql = (
        f'INSERT INTO "{table.name}" ({quoted})'
        f" SELECT {picks} FROM unnest({arrays}) AS u({aliases})"
    )
    if conflict:
        sql += f" ON CONFLICT ({', '.join(conflict)}) DO NOTHING"
    if returning:
        sql += f" RETURNING {', '.join(returning)}"
    # the driver's own cursor, in binary: arrays go as they are, not escaped into text
    raw = s.connection().connection.driver_connection
    assert raw is not None
    with raw.cursor(binary=True) as cur:
        cur.execute(sql, [params[f"c{i}"] for i in range(len(names))])
        if returning:
            return [tuple(r) for r in cur.fetchall()]
    return []
