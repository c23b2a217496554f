"""HQ's live collections and the collection-rate report over 1,000,000 ledger entries.

``python -m bench.billing_reports [--runs 3] [--sites 10] [--premises 5000] [--calls 200]``.
Target: p99 under 200 ms for each.

A throwaway PostgreSQL database (``hub.db.upgrade``) is filled with set-based SQL (``INSERT
… SELECT generate_series``): ``--sites`` sites of ``--premises`` rooms in 10 buildings, one
property fee (area × 2.50 元/m²) billed monthly for the 12 months up to this one, each bill
with its due ``bill`` entry. Rooms pay in four styles (by ``premises_id % 20``): 60 % every
bill on its own (1 in 50 partly), 25 % a quarter at a time, 10 % the first half-year in one
partial payment and nothing since (arrears), 5 % never (half of those waived, as vacant
rooms are). A payment books one due ``paid`` entry per bill, some put money on the prepaid
balance (``deposit``), a few are voided (``unpaid`` entries, the bill owed again). Methods:
half online, the rest cash, POS, transfer at two cashiers a site. Receipt numbers are
gap-free per site and year, and the receipt counters say so. Of this month's bills a good
share is paid *today* (Asia/Shanghai), as HQ's live page sees on a busy day. Then
``Bill.open_fen`` and the prepaid balances are set from the entries (the model of
docs/BILLING.md: a cache of their sums; ``ledger.cache_drift`` checks one site), and the
database is VACUUM ANALYZEd.

Timed, ``--calls`` times each after ``--warmup`` calls, each call in its own session as a
request has: ``reports.live(day=today, sites=None)`` (HQ: every site) and
``reports.collection(site, this month, as_of=today)``; then the same through the API of a
hub started as ``python -m hub serve --no-ingest`` (httpx, keep-alive, an hq_admin token):
``GET /api/v1/reports/live`` and ``GET /api/v1/sites/{site}/reports/collection``. p50, p95
and p99 (nearest rank) per run; the figures are the medians of ``--runs`` runs, each after
:func:`bench.common.wait_quiet`. ``--explain`` prints EXPLAIN (ANALYZE, BUFFERS) of every
statement each report runs.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
from sqlalchemy import Engine, event, text
from sqlmodel import Session

from bench.common import exit_on_sigterm, machine, median, record, tree_cpu, wait_quiet
from hub.auth import Role, create_user
from hub.billing import ledger, reports
from hub.billing.periods import SHANGHAI, Month, local_date
from hub.db import make_engine, upgrade

PG = os.environ.get("WUYE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PASSWORD = "bench-password-1"
TARGET_MS = 200.0


# -- shared with bench.desk_payment ------------------------------------------------------------
@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A throwaway PostgreSQL database; dropped (WITH (FORCE)) on the way out, failure too."""
    name = f"wuye_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(PG, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


def percentiles(ms: list[float]) -> dict[str, float]:
    """p50, p95, p99 (nearest rank) and the maximum of a list of milliseconds."""
    xs = sorted(ms)

    def rank(p: float) -> float:
        return xs[max(0, math.ceil(p * len(xs)) - 1)]

    return {
        "p50_ms": round(rank(0.50), 2),
        "p95_ms": round(rank(0.95), 2),
        "p99_ms": round(rank(0.99), 2),
        "max_ms": round(xs[-1], 2),
    }


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(median([r[k] for r in runs]), 2) for k in ("p50_ms", "p95_ms", "p99_ms")}


def _postgres_cpu() -> float:
    """CPU seconds of the machine's postgres processes (the server our queries run in)."""
    total = 0.0
    for p in psutil.process_iter(["name"]):
        if p.info["name"] == "postgres":
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
    return total


def _machine_busy() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq


class Others:
    """CPU others took meanwhile (% of one core): the machine's busy time minus this process
    tree's and, with ``postgres``, the PostgreSQL server's (our queries run there; so does
    anyone else's, which this then cannot tell from ours)."""

    def __init__(self, postgres: bool) -> None:
        self.postgres = postgres
        self.t0 = time.monotonic()
        self.machine = _machine_busy()
        self.ours = tree_cpu(os.getpid()) + (_postgres_cpu() if postgres else 0.0)

    def core_percent(self) -> float:
        ours = tree_cpu(os.getpid()) + (_postgres_cpu() if self.postgres else 0.0) - self.ours
        machine = _machine_busy() - self.machine
        return round(100 * max(machine - ours, 0.0) / max(time.monotonic() - self.t0, 1e-9), 1)


@contextlib.contextmanager
def hub_server(db: str, workdir: Path) -> Iterator[tuple[str, int]]:
    """``python -m hub serve --no-ingest`` on ``db`` (bench.wrk.hub_api); yields its base URL
    and the server's pid."""
    from bench.wrk import hub_api

    before = {c.pid for c in psutil.Process().children()}
    with hub_api(db, workdir) as base:
        server = [
            c
            for c in psutil.Process().children()
            if c.pid not in before and "hub" in c.cmdline() and "serve" in c.cmdline()
        ]
        yield base, server[0].pid


def token(base: str, username: str, password: str = PASSWORD) -> str:
    r = httpx.post(f"{base}/api/v1/auth/token", data={"username": username, "password": password})
    r.raise_for_status()
    return str(r.json()["access_token"])


# -- the ledger --------------------------------------------------------------------------------
def _months(today: date) -> tuple[date, int]:
    """The first day of the first of the 12 months up to today's, and its month index."""
    y, m = today.year, today.month - 11
    while m < 1:
        y, m = y - 1, m + 12
    return date(y, m, 1), y * 12 + m


STEPS: list[tuple[str, str]] = [
    (
        "sites",
        "INSERT INTO site (id, name, created_at) SELECT 's' || lpad(g::text, 2, '0'),"
        " '小区 ' || g, now() FROM generate_series(0, :sites - 1) g",
    ),
    (
        "buildings",
        "INSERT INTO building (site_id, code, name, floors, created_at)"
        " SELECT s.id, b::text, b || '栋', 25, now() FROM site s, generate_series(1, 10) b",
    ),
    (
        "fee items",
        "INSERT INTO fee_item (site_id, code, name, category, kind, area_basis, cycle_months,"
        " timing, advance_days, due_days, rounding, step, refundable, late_fee_per_day,"
        " late_fee_grace_days, vacant_discount_pct, created_by, created_at)"
        " SELECT id, 'PROP', '物业费', 'property', 'area', 'built', 1, 'prepaid', 0, 14,"
        " 'half_up', 1, false, 0, 0, 0, 'bench', now() FROM site",
    ),
    (
        "prices",
        "INSERT INTO fee_price (item_id, effective_from, unit, fixed, created_by, created_at)"
        " SELECT id, '2000-01-01', 250, 0, 'bench', now() FROM fee_item",
    ),
    (
        "premises",
        "INSERT INTO premises (site_id, kind, code, building_id, unit, floor, number, use,"
        " state, built_area, interior_area, created_at)"
        " SELECT b.site_id, 'room', b.code || '-' || lpad(g::text, 4, '0'), b.id,"
        " (1 + g % 2)::text, 1 + g % 25, g::text, 'residence', 'occupied',"
        " 80 + (g % 7) * 10.25, 64 + (g % 7) * 8.2, now()"
        " FROM building b, generate_series(1, :per_building) g ORDER BY b.id, g",
    ),
    (
        "areas",
        "INSERT INTO premises_area (premises_id, effective_from, built_area, interior_area,"
        " reason, recorded_by, recorded_at) SELECT id, '2000-01-01', built_area,"
        " interior_area, '', 'bench', now() FROM premises",
    ),
    (
        "bindings",
        "INSERT INTO fee_binding (site_id, premises_id, item_id, start, rent_step_pct,"
        " rent_every_months, created_by, created_at) SELECT p.site_id, p.id, i.id, :first, 0,"
        " 12, 'bench', now() FROM premises p JOIN fee_item i ON i.site_id = p.site_id",
    ),
    (
        "bills",
        "INSERT INTO bill (site_id, key, premises_id, item_id, category, kind, period_start,"
        " period_end, month, issued_on, due_on, amount_fen, open_fen, basis, created_by,"
        " created_at)"
        " SELECT fb.site_id, 'c/' || fb.id || '/' || m.first, fb.premises_id, fb.item_id,"
        " 'property', 'charge', m.first, (m.first + interval '1 month')::date,"
        " to_char(m.first, 'YYYY-MM'), m.first, m.first + 14, a.amt, a.amt,"
        " json_build_object('area', p.built_area, 'price', 250, 'amount_fen', a.amt),"
        " 'bench', (m.first + time '01:00') AT TIME ZONE 'Asia/Shanghai'"
        " FROM fee_binding fb JOIN premises p ON p.id = fb.premises_id"
        " CROSS JOIN (SELECT (CAST(:first AS date) + make_interval(months => i))::date AS first"
        " FROM generate_series(0, 11) i) m,"
        " LATERAL (SELECT round(p.built_area * 250)::bigint AS amt) a"
        " ORDER BY m.first, fb.premises_id",
    ),
    (
        "bill entries",
        "INSERT INTO ledger_entry (site_id, premises_id, account, category, kind, amount_fen,"
        " bill_id, item_id, booked_at, booked_on, actor, reason)"
        " SELECT site_id, premises_id, 'due', category, 'bill', amount_fen, id, item_id,"
        " created_at, issued_on, 'bench', 'bill run ' || month FROM bill ORDER BY id",
    ),
    # what each bill's room does about it: its payment group (NULL: unpaid), the group's
    # anchor month (when it pays), the part of the bill it pays, a waiver
    (
        "plan",
        "CREATE UNLOGGED TABLE bench_plan AS"
        " WITH b AS (SELECT id, site_id, premises_id, item_id, amount_fen, issued_on,"
        "  (extract(year FROM issued_on) * 12 + extract(month FROM issued_on))::int - :first_idx"
        "  AS i, premises_id % 20 AS s, abs(hashtext(id::text)) AS h FROM bill),"
        " g AS (SELECT b.*,"
        "  CASE WHEN s < 12 THEN 'm' || id WHEN s < 17 THEN 'q' || premises_id || '-' || i / 3"
        "  WHEN s < 19 AND i <= 5 THEN 'h' || premises_id END AS grp,"
        "  CASE WHEN s < 12 THEN i WHEN s < 17 THEN i / 3 * 3 + 2 WHEN s < 19 THEN 6 END"
        "  AS anchor FROM b),"
        " d AS (SELECT g.*, (CAST(:first AS date) + make_interval(months => anchor))::date"
        "  + abs(hashtext(grp)) % 40 AS due_pay, abs(hashtext(grp || 'x')) AS gh FROM g)"
        " SELECT id AS bill_id, site_id, premises_id, item_id, amount_fen, i, s, h,"
        "  CASE WHEN grp IS NULL THEN NULL WHEN due_pay <= :today THEN grp"
        "  WHEN anchor = 11 AND gh % 3 = 0 THEN grp END AS grp,"
        "  CASE WHEN due_pay <= :today THEN due_pay ELSE :today END AS pay_on,"
        "  CASE WHEN s < 12 AND h % 50 = 0 THEN amount_fen / 2"
        "  WHEN s BETWEEN 17 AND 18 AND i = 5 THEN amount_fen / 2 ELSE amount_fen END AS pay_fen,"
        "  CASE WHEN s = 19 AND (premises_id / 20) % 2 = 0 AND issued_on + 20 <= :today"
        "  THEN issued_on + 20 END AS waive_on"
        " FROM d",
    ),
    (
        "plan index",
        "CREATE INDEX ON bench_plan (grp)",
    ),
    # one row per payment, ids and receipt numbers in the order they were paid
    (
        "payments plan",
        "CREATE UNLOGGED TABLE bench_pay AS"
        " WITH x AS (SELECT grp, min(site_id) AS site_id, min(premises_id) AS premises_id,"
        "  min(pay_on) AS pay_on, sum(pay_fen) AS fen, bool_and(s = 0 AND i % 4 = 3) AS dep,"
        "  abs(hashtext(grp || 'm')) AS mh FROM bench_plan WHERE grp IS NOT NULL GROUP BY grp),"
        " y AS (SELECT x.*, CASE WHEN pay_on = :today"
        "  THEN CAST(:day_start AS timestamptz) + (mh % 10000) / 10000.0"
        "   * (CAST(:now AS timestamptz) - CAST(:day_start AS timestamptz))"
        "  ELSE (pay_on + time '08:00') AT TIME ZONE 'Asia/Shanghai'"
        "   + make_interval(secs => mh % 36000) END AS paid_at,"
        "  CASE WHEN mh % 10 < 2 THEN 'cash' WHEN mh % 10 < 4 THEN 'pos'"
        "  WHEN mh % 10 < 5 THEN 'transfer' ELSE 'online' END AS method,"
        "  grp LIKE 'm%' AND mh % 997 = 0 AND pay_on < :today AS voided FROM x)"
        " SELECT row_number() OVER (ORDER BY paid_at, grp) AS id, y.*,"
        "  CASE WHEN dep AND NOT voided THEN 5000 ELSE 0 END AS deposit,"
        "  CASE WHEN method = 'online' THEN 'online'"
        "  ELSE 'cashier-' || site_id || '-' || (1 + mh % 2) END AS cashier"
        " FROM y",
    ),
    (
        "receipt numbers",
        "ALTER TABLE bench_pay ADD COLUMN receipt_no text;"
        " UPDATE bench_pay p SET receipt_no = r.no FROM (SELECT id,"
        "  extract(year FROM pay_on)::int || '-' || lpad((row_number() OVER"
        "  (PARTITION BY site_id, extract(year FROM pay_on)"
        "  ORDER BY id))::text, 6, '0') AS no FROM bench_pay) r WHERE r.id = p.id",
    ),
    (
        "payments",
        "INSERT INTO payment (id, site_id, receipt_no, method, amount_fen, premises_id,"
        " payer_name, cashier, paid_at, paid_on, idempotency_key, request_hash, reference,"
        " note, to_prepaid_fen, refunded_fen, voided_at, voided_by, void_reason)"
        " SELECT id, site_id, receipt_no, method, fen + deposit, premises_id,"
        " '业主' || premises_id,"
        " cashier, paid_at, pay_on, CASE WHEN method <> 'online' THEN 'desk:bench-' || grp END,"
        " md5(grp), '', '', deposit, 0,"
        " CASE WHEN voided THEN paid_at + interval '2 hours' END,"
        " CASE WHEN voided THEN 'manager-' || site_id END,"
        " CASE WHEN voided THEN '录错金额' ELSE '' END FROM bench_pay ORDER BY id;"
        " SELECT setval(pg_get_serial_sequence('payment', 'id'), (SELECT max(id) FROM payment))",
    ),
    (
        "paid entries",
        "INSERT INTO ledger_entry (site_id, premises_id, account, category, kind, amount_fen,"
        " bill_id, item_id, payment_id, booked_at, booked_on, actor, reason)"
        " SELECT p.site_id, p.premises_id, 'due', 'property', 'paid', -b.pay_fen, b.bill_id,"
        " b.item_id, p.id, p.paid_at, p.pay_on, p.cashier, 'receipt ' || p.receipt_no"
        " FROM bench_pay p JOIN bench_plan b ON b.grp = p.grp ORDER BY p.id, b.bill_id",
    ),
    (
        "deposits",
        "INSERT INTO ledger_entry (site_id, premises_id, account, category, kind, amount_fen,"
        " payment_id, booked_at, booked_on, actor, reason)"
        " SELECT site_id, premises_id, 'prepaid', 'property', 'deposit', deposit, id, paid_at,"
        " pay_on, cashier, 'receipt ' || receipt_no FROM bench_pay WHERE deposit > 0",
    ),
    (
        "voids",
        "INSERT INTO ledger_entry (site_id, premises_id, account, category, kind, amount_fen,"
        " bill_id, item_id, payment_id, booked_at, booked_on, actor, reason)"
        " SELECT p.site_id, p.premises_id, 'due', 'property', 'unpaid', b.pay_fen, b.bill_id,"
        " b.item_id, p.id, p.paid_at + interval '2 hours',"
        " ((p.paid_at + interval '2 hours') AT TIME ZONE 'Asia/Shanghai')::date,"
        " 'manager-' || p.site_id, 'void of receipt ' || p.receipt_no || ': 录错金额'"
        " FROM bench_pay p JOIN bench_plan b ON b.grp = p.grp WHERE p.voided",
    ),
    (
        "waivers",
        "INSERT INTO ledger_entry (site_id, premises_id, account, category, kind, amount_fen,"
        " bill_id, item_id, booked_at, booked_on, actor, reason, approver)"
        " SELECT site_id, premises_id, 'due', 'property', 'waived', -amount_fen, bill_id,"
        " item_id, (waive_on + time '10:00') AT TIME ZONE 'Asia/Shanghai', waive_on,"
        " 'manager-' || site_id, '空置减免', 'director' FROM bench_plan"
        " WHERE waive_on IS NOT NULL AND grp IS NULL",
    ),
    (
        "open amounts",
        "UPDATE bill b SET open_fen = e.fen FROM (SELECT bill_id, sum(amount_fen) AS fen"
        " FROM ledger_entry WHERE account = 'due' GROUP BY bill_id) e"
        " WHERE e.bill_id = b.id AND b.open_fen <> e.fen",
    ),
    (
        "prepaid balances",
        "INSERT INTO prepaid_account (premises_id, category, site_id, balance_fen)"
        " SELECT premises_id, category, min(site_id), sum(amount_fen) FROM ledger_entry"
        " WHERE account = 'prepaid' GROUP BY premises_id, category",
    ),
    (
        "receipt counters",
        "INSERT INTO receipt_counter (site_id, year, last) SELECT site_id,"
        " extract(year FROM paid_on)::int, count(*) FROM payment"
        " GROUP BY site_id, extract(year FROM paid_on)",
    ),
    ("drop plan", "DROP TABLE bench_plan, bench_pay"),
]


def build(url: str, sites: int, premises: int, today: date, now: datetime) -> dict[str, Any]:
    """The sites, rooms, bills, payments and entries; counts and seconds taken."""
    first, first_idx = _months(today)
    day_start = datetime(today.year, today.month, today.day, tzinfo=SHANGHAI)
    params = {
        "sites": sites,
        "per_building": premises // 10,
        "first": first,
        "first_idx": first_idx,
        "today": today,
        "day_start": day_start,
        "now": now,
    }
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as c:
        for name, sql in STEPS:
            t = time.perf_counter()
            for stmt in sql.split(";"):
                names = sorted((k for k in params if f":{k}" in stmt), key=len, reverse=True)
                if not names:
                    c.execute(stmt.encode())
                    continue
                q = stmt.replace("%", "%%")
                for k in names:
                    q = q.replace(f":{k}", f"%({k})s")
                c.execute(q.encode(), {k: params[k] for k in names})
            print(f"  {name}: {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
        t = time.perf_counter()
        c.execute("VACUUM ANALYZE")
        print(f"  vacuum analyze: {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
        counts = {
            k: c.execute(q).fetchone()[0]  # type: ignore[index]
            for k, q in (
                ("entries", "SELECT count(*) FROM ledger_entry"),
                ("bills", "SELECT count(*) FROM bill"),
                ("payments", "SELECT count(*) FROM payment"),
                ("premises", "SELECT count(*) FROM premises"),
            )
        }
        kinds = dict(
            c.execute("SELECT account || ' ' || kind, count(*) FROM ledger_entry GROUP BY 1")
        )
        counts["payments_today"] = c.execute(
            "SELECT count(*) FROM payment WHERE paid_on = %s", (today,)
        ).fetchone()[0]  # type: ignore[index]
        counts["open_bills"] = c.execute("SELECT count(*) FROM bill WHERE open_fen > 0").fetchone()[
            0
        ]  # type: ignore[index]
        size = c.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        counts["database_size"] = size.fetchone()[0]  # type: ignore[index]
    return {**counts, "entry_kinds": kinds, "build_s": round(time.perf_counter() - t0, 1)}


def check(engine: Engine, site: str) -> None:
    """The caches equal their entries, and the model's identity holds, at one site."""
    with Session(engine) as s:
        drift = ledger.cache_drift(s, site)
        assert not drift, drift[:5]
        gaps = s.exec(  # type: ignore[call-overload]
            text(
                "SELECT count(*) FROM (SELECT receipt_no, row_number() OVER"
                " (PARTITION BY left(receipt_no, 4) ORDER BY receipt_no) AS n FROM payment"
                " WHERE site_id = :site) x WHERE right(receipt_no, 6)::int <> n"
            ).bindparams(site=site)
        ).one()[0]
        assert gaps == 0, f"{gaps} receipt numbers out of sequence"


# -- timing ------------------------------------------------------------------------------------
def series(call: Callable[[], Any], warmup: int, calls: int) -> list[float]:
    for _ in range(warmup):
        call()
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def getter(client: httpx.Client, path: str, params: dict[str, str]) -> Callable[[], None]:
    """A GET that must answer 200."""

    def call() -> None:
        got = client.get(path, params=params)
        assert got.status_code == 200, (got.status_code, got.text[:300])

    return call


def explain(engine: Engine, call: Callable[[], Any]) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of every statement ``call`` runs."""
    seen: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    out = []
    with engine.connect() as c:
        for statement, parameters in seen:
            rows = c.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            out.append(statement + "\n" + "\n".join(r[0] for r in rows))
    return out


def main() -> None:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sites", type=int, default=10)
    ap.add_argument("--premises", type=int, default=5000, help="per site (10 buildings)")
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--site", default="s00", help="the site of the collection report")
    ap.add_argument("--no-api", action="store_true", help="the functions only")
    ap.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of each")
    args = ap.parse_args()
    now = datetime.now(UTC)
    today = local_date(now)
    month = Month(today.year, today.month)
    with pg_database() as url, tempfile.TemporaryDirectory() as d:
        upgrade(url)
        print("building the ledger", file=sys.stderr, flush=True)
        data = build(url, args.sites, args.premises, today, now)
        print(data, file=sys.stderr, flush=True)
        engine = make_engine(url)
        check(engine, args.site)
        with Session(engine) as s:
            create_user(s, "hq", PASSWORD, Role.HQ_ADMIN)
            s.commit()

        def live() -> Any:
            with Session(engine) as s:
                return reports.live(s, today, None)

        def collection() -> Any:
            with Session(engine) as s:
                return reports.collection(s, args.site, month, today)

        lv, col = live(), collection()
        shape = {
            "live_sites": len(lv.sites),
            "live_count": lv.count,
            "live_total_fen": lv.total_fen,
            "collection_bills": col.total.sums.bills,
            "collection_rate_pct": col.total.sums.rate,
            "arrears_bills": col.total.arrears.bills,
            "arrears_opening_fen": col.total.arrears.opening,
        }
        print(shape, file=sys.stderr, flush=True)
        if args.explain:
            for name, fn in (("live", live), ("collection", collection)):
                for plan in explain(engine, fn):
                    print(f"== {name}\n{plan}\n", flush=True)

        with contextlib.ExitStack() as stack:
            client = None
            if not args.no_api:
                base, _pid = stack.enter_context(hub_server(url, Path(d)))
                client = stack.enter_context(
                    httpx.Client(
                        base_url=base,
                        headers={"Authorization": f"Bearer {token(base, 'hq')}"},
                        timeout=30,
                    )
                )
            runs: list[dict[str, Any]] = []
            for r in range(args.runs):
                quiet = wait_quiet()
                others = Others(postgres=True)
                one: dict[str, Any] = {
                    "live": percentiles(series(live, args.warmup, args.calls)),
                    "collection": percentiles(series(collection, args.warmup, args.calls)),
                }
                if client is not None:
                    one["api_live"] = percentiles(
                        series(
                            getter(client, "/api/v1/reports/live", {"day": str(today)}),
                            args.warmup,
                            args.calls,
                        )
                    )
                    one["api_collection"] = percentiles(
                        series(
                            getter(
                                client,
                                f"/api/v1/sites/{args.site}/reports/collection",
                                {"month": str(month), "as_of": str(today)},
                            ),
                            args.warmup,
                            args.calls,
                        )
                    )
                one["quiet"] = quiet
                one["others_core_percent"] = others.core_percent()
                print(f"run {r + 1}: {one}", file=sys.stderr, flush=True)
                runs.append(one)
        engine.dispose()
    names = [k for k in runs[0] if k not in ("quiet", "others_core_percent")]
    figures = {k: medians([r[k] for r in runs]) for k in names}
    record(
        "billing_reports",
        "bench.billing_reports",
        {
            "target_p99_ms": TARGET_MS,
            "met": {k: v["p99_ms"] < TARGET_MS for k, v in figures.items()},
            "figures": figures,
            "today": str(today),
            "month": str(month),
            "site": args.site,
            "sites": args.sites,
            "premises_per_site": args.premises,
            "calls": args.calls,
            "warmup": args.warmup,
            "data": data,
            "shape": shape,
            "runs": runs,
            "all_quiet": all(r["quiet"]["quiet"] for r in runs),
            "host": machine(),
        },
    )


if __name__ == "__main__":
    main()
