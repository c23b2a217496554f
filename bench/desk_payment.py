"""A desk payment, end to end through the API: p99 under 50 ms on one process.

``python -m bench.desk_payment [--runs 3] [--payments 1000] [--databases sqlite,postgresql]``.

The hub runs as one process (``python -m hub serve --no-ingest``, bench.wrk.hub_api) on a
database (a file for SQLite, a throwaway PostgreSQL database) holding one site, a cashier of
that site, and ``--runs`` × (``--payments`` + ``--warmup``) rooms, each bound to a property
fee (area × 2.50 元/m²) and a fixed one (15 元) from last month, billed by
``hub.billing.runs.run_bills`` through this month: four open bills a room. The benchmark
then makes the payments one after the other over one keep-alive httpx connection, each
``POST /api/v1/sites/{site}/payments`` with its own Idempotency-Key and a room of its own,
in turn: everything the room owes (oldest first), half of its oldest bill (chosen by id),
and everything plus 100 元 onto the prepaid balance; methods cash, POS and transfer in
turn. Each request is timed by the client (send to the body read). Reported per run:
p50/p95/p99 (nearest rank), requests/s, and the CPU per request of the client (this
process), the hub process and PostgreSQL's processes, with the client's share of the wall
time; the figures are the medians of the runs, each after :func:`bench.common.wait_quiet`.

Afterwards: every answer was 201, the site's receipt numbers run 000001 … N without a gap
and the counter says N, and ``ledger.cache_drift`` finds every cache equal to its entries.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import func, insert
from sqlmodel import Session, col, select

from bench.billing_reports import (
    PASSWORD,
    Others,
    _postgres_cpu,
    hub_server,
    medians,
    percentiles,
    pg_database,
    token,
)
from bench.common import exit_on_sigterm, machine, median, record, wait_quiet
from hub.auth import Role, create_user
from hub.billing import fees, ledger
from hub.billing.items import NewItem, NewPrice, create_item
from hub.billing.models import Bill, Category, FeeBinding, Payment, ReceiptCounter
from hub.billing.periods import Month, Timing, local_date
from hub.billing.runs import run_bills
from hub.db import make_engine, upgrade
from hub.models import Site
from hub.property.models import Premises, PremisesArea

SITE = "desk"
CASHIER = "cashier-1"
TARGET_MS = 50.0
METHODS = ("cash", "pos", "transfer")


def _months(today: date) -> tuple[Month, Month]:
    this = Month(today.year, today.month)
    last = Month(today.year - 1, 12) if today.month == 1 else Month(today.year, today.month - 1)
    return last, this


def setup(db: str, rooms: int) -> tuple[list[tuple[int, int, int, int]], float]:
    """The site, cashier, rooms, bindings and bills; each room as (id, owed, oldest bill,
    its open amount), and the seconds the bill run took."""
    upgrade(db)
    engine = make_engine(db)
    now = datetime.now(UTC)
    last, this = _months(local_date(now))
    with Session(engine, expire_on_commit=False) as s:
        s.add(Site(id=SITE, name="desk bench"))
        create_user(s, CASHIER, PASSWORD, Role.CASHIER, [SITE])
        s.commit()
        items = [
            create_item(
                s,
                SITE,
                NewItem(
                    code=code,
                    name=name,
                    category=Category.PROPERTY,
                    kind=kind,
                    prices=(NewPrice(date(2000, 1, 1), Decimal(price)),),
                    cycle_months=1,
                    timing=Timing.PREPAID,
                    due_days=15,
                ),
                "bench",
            ).id
            for code, name, kind, price in (
                ("PROP", "物业费", fees.Kind.AREA, "250"),
                ("GARB", "垃圾清运费", fees.Kind.FIXED, "1500"),
            )
        ]
        s.execute(
            insert(Premises),
            [
                {
                    "site_id": SITE,
                    "kind": "room",
                    "code": f"1-{n:05d}",
                    "unit": "1",
                    "floor": 1 + n % 30,
                    "number": str(n),
                    "use": "residence",
                    "state": "occupied",
                    "built_area": Decimal("80") + (n % 7) * Decimal("10.25"),
                    "interior_area": Decimal("64") + (n % 7) * Decimal("8.2"),
                    "created_at": now,
                }
                for n in range(1, rooms + 1)
            ],
        )
        ids = [
            (p.id, p.built_area, p.interior_area)
            for p in s.exec(select(Premises).where(Premises.site_id == SITE))
        ]
        s.execute(
            insert(PremisesArea),
            [
                {
                    "premises_id": i,
                    "effective_from": date(2000, 1, 1),
                    "built_area": b,
                    "interior_area": a,
                    "reason": "",
                    "recorded_by": "bench",
                    "recorded_at": now,
                }
                for i, b, a in ids
            ],
        )
        s.execute(
            insert(FeeBinding),
            [
                {
                    "site_id": SITE,
                    "premises_id": i,
                    "item_id": item,
                    "start": last.first,
                    "rent_step_pct": Decimal(0),
                    "rent_every_months": 12,
                    "created_by": "bench",
                    "created_at": now,
                }
                for i, _, _ in ids
                for item in items
            ],
        )
        s.commit()
    t0 = time.perf_counter()
    run = run_bills(engine, SITE, this, "bench")
    run_s = time.perf_counter() - t0
    assert run.lines == 4 * rooms, (run.lines, run.problems[:3])
    with Session(engine) as s:
        owed = dict(
            s.exec(  # type: ignore[call-overload]
                select(Bill.premises_id, func.sum(Bill.open_fen)).group_by(col(Bill.premises_id))
            ).all()
        )
        oldest: dict[int, tuple[int, int]] = {}
        for pid, bid, fen in s.exec(  # type: ignore[call-overload]
            select(Bill.premises_id, Bill.id, Bill.open_fen).order_by(
                col(Bill.due_on), col(Bill.id)
            )
        ).all():
            oldest.setdefault(pid, (bid, fen))
    engine.dispose()
    out = [(pid, int(owed[pid]), *oldest[pid]) for pid in sorted(owed)]
    return out, run_s


def body(i: int, room: tuple[int, int, int, int]) -> dict[str, Any]:
    pid, owed, bill, open_fen = room
    b: dict[str, Any] = {"premises_id": pid, "method": METHODS[i % 3], "payer_name": "业主"}
    if i % 3 == 0:
        b["amount_fen"] = owed
    elif i % 3 == 1:
        b |= {"amount_fen": max(1, open_fen // 2), "bill_ids": [bill]}
    else:
        b |= {"amount_fen": owed + 10000, "to_prepaid": ""}
    return b


def pay(client: httpx.Client, i: int, room: tuple[int, int, int, int]) -> float:
    """One payment; ms from send to body read. A non-201 answer fails the benchmark."""
    t0 = time.perf_counter()
    r = client.post(
        f"/api/v1/sites/{SITE}/payments",
        json=body(i, room),
        headers={"Idempotency-Key": f"bench-{uuid.uuid4().hex}"},
    )
    ms = (time.perf_counter() - t0) * 1000
    assert r.status_code == 201, (r.status_code, r.text[:300])
    return ms


def one_run(
    client: httpx.Client, rooms: list[tuple[int, int, int, int]], warmup: int, server: int, pg: bool
) -> dict[str, Any]:
    for i, room in enumerate(rooms[:warmup]):
        pay(client, i, room)
    quiet = wait_quiet()
    others = Others(postgres=pg)
    proc = psutil.Process(server)
    s0 = sum(proc.cpu_times()[:2])
    p0 = _postgres_cpu() if pg else 0.0
    c0, w0 = time.process_time(), time.perf_counter()
    ms = [pay(client, i, room) for i, room in enumerate(rooms[warmup:])]
    wall = time.perf_counter() - w0
    client_cpu = time.process_time() - c0
    server_cpu = sum(proc.cpu_times()[:2]) - s0
    pg_cpu = (_postgres_cpu() - p0) if pg else 0.0
    n = len(ms)
    return {
        **percentiles(ms),
        "mean_ms": round(sum(ms) / n, 2),
        "per_s": round(n / wall, 1),
        "client_cpu_ms": round(client_cpu * 1000 / n, 2),
        "server_cpu_ms": round(server_cpu * 1000 / n, 2),
        "postgres_cpu_ms": round(pg_cpu * 1000 / n, 2),
        "client_share": round(client_cpu / wall, 3),
        "quiet": quiet,
        "others_core_percent": others.core_percent(),
    }


def verify(db: str, expected: int) -> dict[str, Any]:
    """Receipts 000001 … N with no gap, the counter at N, every cache equal to its entries."""
    engine = make_engine(db)
    with Session(engine) as s:
        receipts = sorted(s.exec(select(Payment.receipt_no).where(Payment.site_id == SITE)).all())
        counters = s.exec(select(ReceiptCounter).where(ReceiptCounter.site_id == SITE)).all()
        drift = ledger.cache_drift(s, SITE)
    engine.dispose()
    assert len(receipts) == expected, (len(receipts), expected)
    years = {r.split("-")[0] for r in receipts}
    assert len(years) == 1, years  # a run across the new year would start a new sequence
    numbers = [int(r.split("-")[1]) for r in receipts]
    assert numbers == list(range(1, expected + 1)), "receipt numbers have gaps"
    assert [c.last for c in counters] == [expected], [c.last for c in counters]
    assert not drift, drift[:5]
    return {"payments": expected, "receipts": [receipts[0], receipts[-1]], "gap_free": True}


def main() -> None:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--payments", type=int, default=1000, help="timed payments a run")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--databases", default="sqlite,postgresql")
    args = ap.parse_args()
    results: dict[str, Any] = {}
    per_run = args.payments + args.warmup
    for kind in args.databases.split(","):
        with contextlib.ExitStack() as stack:
            d = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            if kind == "sqlite":
                db = f"sqlite:///{d / 'desk.db'}"
            else:
                db = stack.enter_context(pg_database())
            print(f"{kind}: setting up {per_run * args.runs} rooms", file=sys.stderr, flush=True)
            rooms, run_s = setup(db, per_run * args.runs)
            base, server = stack.enter_context(hub_server(db, d))
            client = stack.enter_context(
                httpx.Client(
                    base_url=base,
                    headers={"Authorization": f"Bearer {token(base, CASHIER)}"},
                    timeout=30,
                )
            )
            runs = []
            for r in range(args.runs):
                one = one_run(
                    client,
                    rooms[r * per_run : (r + 1) * per_run],
                    args.warmup,
                    server,
                    kind != "sqlite",
                )
                print(f"{kind} run {r + 1}: {one}", file=sys.stderr, flush=True)
                runs.append(one)
            checked = verify(db, per_run * args.runs)
            results[kind] = {
                **medians(runs),
                **{
                    k: round(median([x[k] for x in runs]), 3)
                    for k in ("per_s", "client_cpu_ms", "server_cpu_ms", "postgres_cpu_ms")
                },
                "client_share": round(median([x["client_share"] for x in runs]), 3),
                "met": median([x["p99_ms"] for x in runs]) < TARGET_MS,
                "setup_bill_run_s": round(run_s, 1),
                "checked": checked,
                "all_quiet": all(x["quiet"]["quiet"] for x in runs),
                "runs": runs,
            }
            print(kind, {k: v for k, v in results[kind].items() if k != "runs"}, flush=True)
    record(
        "desk_payment",
        "bench.desk_payment",
        {
            "target_p99_ms": TARGET_MS,
            "payments_per_run": args.payments,
            "warmup": args.warmup,
            "results": results,
            "host": machine(),
        },
    )


if __name__ == "__main__":
    main()
