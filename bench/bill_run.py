"""Bill run: N rooms × 3 fee items on PostgreSQL, against a plain INSERT … SELECT.

``python -m bench.bill_run [--rooms 100000] [--runs 3]``. Each room is bound to three
monthly prepaid items (property fee by area, a fixed fee, a parking-space rent) from the
month billed, so the run makes exactly one line per (room, item) with its ledger entry,
its explanation and its computation. The baseline inserts the same number of bill rows and
ledger rows with one ``INSERT … SELECT`` each (amounts computed in SQL, a small JSON basis),
which is the floor any bill run pays for writing. Reported: seconds of the run (median),
lines per second, and the ratio run / baseline.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import psycopg
from sqlalchemy import text
from sqlmodel import Session

from bench.common import exit_on_sigterm, machine, median, record, wait_quiet
from hub.billing import fees
from hub.billing.items import NewItem, NewPrice, create_item
from hub.billing.models import Category
from hub.billing.periods import Month, Timing
from hub.billing.runs import run_bills
from hub.db import make_engine, upgrade
from hub.models import Site

PG = "postgresql://postgres@127.0.0.1:5432/postgres"
MONTH = Month(2026, 7)
SITE = "bench"


def setup(engine, rooms: int) -> list[int]:
    with Session(engine, expire_on_commit=False) as s:
        s.add(Site(id=SITE, name="bench"))
        s.commit()
        items = []
        for code, kind, price in (
            ("PROP", fees.Kind.AREA, "250"),
            ("GARB", fees.Kind.FIXED, "1500"),
            ("PARK", fees.Kind.FIXED, "30000"),
        ):
            items.append(
                create_item(
                    s,
                    SITE,
                    NewItem(
                        code=code,
                        name=code,
                        category=Category.PROPERTY,
                        kind=kind,
                        prices=(NewPrice(date(2026, 1, 1), Decimal(price)),),
                        cycle_months=1,
                        timing=Timing.PREPAID,
                        due_days=15,
                    ),
                    "bench",
                ).id
            )
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO premises (site_id, kind, code, unit, floor, number, use, state,"
                " built_area, interior_area, created_at)"
                " SELECT :site, 'room', 'R' || g, '1', 1, g::text, 'residence', 'occupied',"
                " 80 + (g % 7) * 10.25, 64 + (g % 7) * 8.2, now() FROM generate_series(1, :n) g"
            ),
            {"site": SITE, "n": rooms},
        )
        c.execute(
            text(
                "INSERT INTO premises_area (premises_id, effective_from, built_area, interior_area,"
                " reason, recorded_by, recorded_at) SELECT id, '2000-01-01', built_area,"
                " interior_area, '', 'bench', now() FROM premises"
            )
        )
        for item in items:
            c.execute(
                text(
                    "INSERT INTO fee_binding (site_id, premises_id, item_id, start,"
                    " rent_step_pct, rent_every_months, created_by, created_at)"
                    " SELECT :site, id, :item, :start, 0, 12, 'bench', now() FROM premises"
                ),
                {"site": SITE, "item": item, "start": MONTH.first},
            )
    return items


def clear(engine) -> None:
    with engine.begin() as c:
        c.execute(text("TRUNCATE bill, ledger_entry, bill_run"))
        c.execute(text("DROP TABLE IF EXISTS bill_plain, ledger_plain"))
    with engine.connect() as c:
        c.execute(text("CHECKPOINT"))


def baseline(engine) -> float:
    """The same rows by INSERT … SELECT: bills, then their ledger entries."""
    with engine.begin() as c:
        c.execute(
            text(
                "CREATE TABLE bill_plain (LIKE bill INCLUDING DEFAULTS"
                " INCLUDING CONSTRAINTS INCLUDING INDEXES)"
            )
        )
        c.execute(
            text(
                "CREATE TABLE ledger_plain (LIKE ledger_entry INCLUDING DEFAULTS"
                " INCLUDING CONSTRAINTS INCLUDING INDEXES)"
            )
        )
        c.execute(text("CREATE SEQUENCE IF NOT EXISTS plain_id"))
        c.execute(text("ALTER TABLE bill_plain ALTER COLUMN id SET DEFAULT nextval('plain_id')"))
        c.execute(text("ALTER TABLE ledger_plain ALTER COLUMN id SET DEFAULT nextval('plain_id')"))
    t0 = time.perf_counter()
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO bill_plain (site_id, key, premises_id, item_id, category, kind,"
                " period_start, period_end, month, issued_on, due_on, amount_fen, open_fen, basis,"
                " created_by, created_at)"
                " SELECT b.site_id, 'c/' || b.id || '/' || b.start, b.premises_id, b.item_id,"
                " i.category, 'charge', b.start, (b.start + interval '1 month')::date, :month,"
                " b.start, b.start + i.due_days, a.amt, a.amt,"
                " json_build_object('area', p.built_area, 'price', pr.unit, 'amount_fen', a.amt),"
                " 'plain', now()"
                " FROM fee_binding b JOIN fee_item i ON i.id = b.item_id"
                " JOIN premises p ON p.id = b.premises_id JOIN fee_price pr ON pr.item_id = i.id,"
                " LATERAL (SELECT round(CASE i.kind WHEN 'area' THEN p.built_area * pr.unit"
                " ELSE pr.unit END)::bigint AS amt) a"
            ),
            {"month": str(MONTH)},
        )
        c.execute(
            text(
                "INSERT INTO ledger_plain (site_id, premises_id, account, category, kind,"
                " amount_fen, bill_id, item_id, booked_at, booked_on, actor, reason)"
                " SELECT site_id, premises_id, 'due', category, 'bill', amount_fen, id, item_id,"
                " now(), current_date, 'plain', 'plain' FROM bill_plain"
            )
        )
    return time.perf_counter() - t0


def main() -> None:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rooms", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    name = f"wuye_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(PG, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    url = PG.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        engine = make_engine(url)
        setup(engine, args.rooms)
        quiet = wait_quiet()
        runs, plains, lines = [], [], 0
        for _ in range(args.runs):
            clear(engine)
            t0 = time.perf_counter()
            run = run_bills(
                engine,
                SITE,
                MONTH,
                "bench",
                batch=args.batch,
                now=datetime(2026, 7, 1, 1, tzinfo=UTC),
            )
            runs.append(time.perf_counter() - t0)
            lines = run.lines
            assert lines == 3 * args.rooms, lines
            plains.append(baseline(engine))
        engine.dispose()
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()
    run_s, plain_s = median(runs), median(plains)
    record(
        "bill_run",
        "bench.bill_run",
        {
            "rooms": args.rooms,
            "lines": lines,
            "batch": args.batch,
            "run_s": round(run_s, 2),
            "runs_s": [round(r, 2) for r in runs],
            "lines_per_s": round(lines / run_s),
            "plain_insert_select_s": round(plain_s, 2),
            "plain_lines_per_s": round(lines / plain_s),
            "ratio": round(run_s / plain_s, 1),
            "quiet": quiet,
            "host": machine(),
        },
    )


if __name__ == "__main__":
    main()
