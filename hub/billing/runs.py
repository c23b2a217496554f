"""Bill runs: every line a site owes by the end of an accounting month, once.

A run for month M bills, for every fee binding, each period whose bill is issued on or
before M's last day and that is not billed yet (a binding started in the past catches up in
one run). Lines are once-only by their key (``c/{binding}/{period start}``, unique per site)
and inserted with ON CONFLICT DO NOTHING, so a second run, a run killed half-way and started
again, or two runs at once add every line exactly once. Each batch of premises is one
transaction: its bills, their ledger entries, vacant-room discounts, deductions from prepaid
balances and the run's counters commit together or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from sqlalchemy import Engine, func, update
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from hub.billing import bulk, fees
from hub.billing.errors import BillingError, MonthClosed, NotFound
from hub.billing.items import prices_of, schedule_of, spec_of
from hub.billing.models import (
    Account,
    Bill,
    BillKind,
    BillRun,
    ClosedMonth,
    Entry,
    FeeBinding,
    FeeItem,
    LedgerEntry,
    PrepaidAccount,
)
from hub.billing.periods import Month, Period, cycle_periods, local_date
from hub.db import session_scope
from hub.models import Site, utcnow
from hub.property.models import Occupancy, Premises, PremisesArea, Role, State

log = logging.getLogger(__name__)

Progress = Callable[[BillRun], None]
BATCH = 500  # premises per transaction


def _insert(s: Session, table: Any) -> Any:
    dialect = s.get_bind().dialect.name
    return (postgresql if dialect == "postgresql" else sqlite).insert(table)


def is_closed(s: Session, site: str, month: Month) -> bool:
    return s.get(ClosedMonth, (site, str(month))) is not None


@dataclass
class _Item:
    row: FeeItem
    spec: fees.FeeSpec | None  # None: rent (its spec needs no price)


def run_bills(
    engine: Engine,
    site: str,
    month: Month,
    actor: str,
    *,
    batch: int = BATCH,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> BillRun:
    """Bill ``site`` through ``month``; the run record as it ended. Resumes an unfinished
    run of the same month. Raises MonthClosed, NotFound (no such site) or BillingError."""
    run_id = open_run(engine, site, month, actor, now=now)
    return continue_run(engine, run_id, batch=batch, progress=progress, now=now)


def open_run(
    engine: Engine, site: str, month: Month, actor: str, *, now: datetime | None = None
) -> int:
    """The run record of ``site`` and ``month`` to bill with: an unfinished one (killed,
    failed) resumes, else a new one; committed. Raises MonthClosed or NotFound."""
    now = now or utcnow()
    with session_scope(engine) as s:
        if s.get(Site, site) is None:
            raise NotFound(f"no site {site}")
        if is_closed(s, site, month):
            raise MonthClosed(f"{month} is closed at {site}: bill into an open month")
        run = s.exec(
            select(BillRun)
            .where(BillRun.site_id == site, BillRun.month == str(month), BillRun.status != "done")
            .order_by(col(BillRun.id).desc())
        ).first()
        total = s.exec(
            select(func.count(func.distinct(FeeBinding.premises_id))).where(
                FeeBinding.site_id == site
            )
        ).one()
        if run is None:
            run = BillRun(site_id=site, month=str(month), started_by=actor, started_at=now)
            s.add(run)
        run.status, run.premises_done, run.premises_total = "running", 0, total
        s.flush()
        assert run.id is not None
        return run.id


def continue_run(
    engine: Engine,
    run_id: int,
    *,
    batch: int = BATCH,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> BillRun:
    """Bill what run ``run_id`` has not billed yet, a batch of premises a transaction."""
    now = now or utcnow()
    run = get_run(engine, run_id)
    site, month = run.site_id, Month.parse(run.month)
    with Session(engine) as s:
        premises = list(
            s.exec(
                select(FeeBinding.premises_id)
                .where(FeeBinding.site_id == site)
                .distinct()
                .order_by(col(FeeBinding.premises_id))
            ).all()
        )
    try:
        items = _items(engine, site)
        memo: _Memo = {}
        for n, chunk in enumerate(_chunks(premises, batch)):
            if n % ANALYZE_EVERY == 0:
                _analyze(engine)
            _one_batch(engine, site, month, run_id, chunk, items, run.started_by, now, memo)
            if progress is not None:
                progress(get_run(engine, run_id))
    except BaseException as exc:
        with session_scope(engine) as s:
            r = s.get(BillRun, run_id)
            assert r is not None
            r.status = "failed"
            r.problems = [*r.problems, {"error": f"{type(exc).__name__}: {exc}"[:500]}]
        raise
    with session_scope(engine) as s:
        r = s.get(BillRun, run_id)
        assert r is not None
        r.status, r.finished_at = "done", utcnow()
    run = get_run(engine, run_id)
    log.info(
        "bill run %s of %s %s: %d lines, %d fen, %d problems",
        run.id,
        site,
        month,
        run.lines,
        run.total_fen,
        len(run.problems),
    )
    return run


ANALYZE_EVERY = 20  # batches


def _analyze(engine: Engine) -> None:
    """Fresh planner statistics of the tables a run grows, on PostgreSQL: a run adds rows
    faster than autovacuum looks (a minute), and with the statistics of a near-empty
    ``bill`` the planner scans the whole table for every batch's lookup of its keys (a run
    of 100,000 rooms went from a minute to hours)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as c:
            c.exec_driver_sql("ANALYZE bill, ledger_entry, fee_binding")
            c.commit()


def _one_batch(
    engine: Engine,
    site: str,
    month: Month,
    run_id: int,
    chunk: Sequence[int],
    items: dict[int, _Item],
    actor: str,
    now: datetime,
    memo: _Memo,
) -> None:
    with session_scope(engine) as s:
        if is_closed(s, site, month):  # closed while we ran: stop before booking into it
            raise MonthClosed(f"{month} was closed at {site} during the run")
        done = _bill_batch(s, site, month, run_id, chunk, items, actor, now, memo)
        s.execute(
            update(BillRun)
            .where(col(BillRun.id) == run_id)
            .values(
                premises_done=BillRun.premises_done + len(chunk),
                lines=BillRun.lines + done.lines,
                total_fen=BillRun.total_fen + done.total_fen,
                deducted_fen=BillRun.deducted_fen + done.deducted_fen,
            )
        )
        if done.problems:
            r = s.get(BillRun, run_id)
            assert r is not None
            r.problems = [*r.problems, *done.problems][:1000]


def get_run(engine: Engine, run_id: int) -> BillRun:
    with Session(engine, expire_on_commit=False) as s:
        run = s.get(BillRun, run_id)
        if run is None:
            raise NotFound(f"no bill run {run_id}")
        return run


def _chunks(xs: Sequence[int], n: int) -> Iterator[Sequence[int]]:
    for i in range(0, len(xs), n):
        yield xs[i : i + n]


def _items(engine: Engine, site: str) -> dict[int, _Item]:
    """The site's fee items that runs bill (all but per-use), as the computation sees them."""
    with Session(engine) as s:
        rows = s.exec(
            select(FeeItem).where(FeeItem.site_id == site, FeeItem.kind != fees.Kind.PER_USE)
        ).all()
        prices = prices_of(s, [r.id for r in rows if r.id is not None])
    out = {}
    for r in rows:
        assert r.id is not None
        spec = None
        if r.kind != fees.Kind.RENT:
            try:
                spec = spec_of(r, prices[r.id])
            except fees.FeeError as exc:
                # refused when made; only a hand-edited database gets here
                raise BillingError(f"fee item {r.code}: {exc}") from exc
        out[r.id] = _Item(r, spec)
    return out


@dataclass
class _Done:
    lines: int = 0
    total_fen: int = 0
    deducted_fen: int = 0
    problems: list[dict[str, Any]] | None = None


def periods_due(item: FeeItem, binding: Any, month: Month) -> list[Period]:
    """The periods of ``binding`` whose bills are issued by the end of ``month``."""
    if item.kind == fees.Kind.ONE_OFF:
        p = Period(binding.start, binding.start + timedelta(days=1))
        return [p] if binding.start <= month.last else []
    schedule = schedule_of(item)
    horizon = month.end + timedelta(days=item.advance_days + 1)
    if binding.until is not None:
        horizon = min(horizon, binding.until)
    out = []
    for p in cycle_periods(item.cycle_months, binding.start, horizon):
        if binding.until is not None and p.end > binding.until:
            p = Period(p.start, binding.until)
        if schedule.issued_on(p) <= month.last:
            out.append(p)
    return out


def _bill_batch(
    s: Session,
    site: str,
    month: Month,
    run_id: int,
    chunk: Sequence[int],
    items: dict[int, _Item],
    actor: str,
    now: datetime,
    memo: _Memo,
) -> _Done:
    # rows, not ORM objects (a batch reads thousands); in a fixed order (premises, item,
    # period): bills of one due date are paid, and deducted from prepaid balances, in the
    # order they were issued
    t = FeeBinding.__table__  # type: ignore[attr-defined]
    bindings = s.execute(
        sa_select(
            t.c.id,
            t.c.premises_id,
            t.c.item_id,
            t.c.start,
            t.c.until,
            t.c.rent_monthly,
            t.c.rent_step_pct,
            t.c.rent_every_months,
        )
        .where(t.c.premises_id.in_(chunk), t.c.item_id.in_(list(items)))
        .order_by(t.c.premises_id, t.c.item_id)
    ).all()
    pt = Premises.__table__  # type: ignore[attr-defined]
    premises = {
        p.id: p
        for p in s.execute(
            sa_select(pt.c.id, pt.c.code, pt.c.state, pt.c.built_area, pt.c.interior_area).where(
                pt.c.id.in_(chunk)
            )
        ).all()
    }
    history: dict[int, list[fees.Area]] = {}
    at = PremisesArea.__table__  # type: ignore[attr-defined]
    for a in s.execute(
        sa_select(at.c.premises_id, at.c.effective_from, at.c.built_area, at.c.interior_area)
        .where(at.c.premises_id.in_(chunk))
        .order_by(at.c.effective_from)
    ).all():
        history.setdefault(a.premises_id, []).append(
            fees.Area(a.effective_from, Decimal(a.built_area), Decimal(a.interior_area))
        )
    # what is billed already, by the keys this batch would add: lookups in the unique key
    # index (with fresh statistics: see _analyze)
    due_of: dict[int, list[Period]] = {}
    for b in bindings:
        item = items[b.item_id]
        due = memo.get(("periods", b.item_id, b.start, b.until))
        if due is None:
            due = memo[("periods", b.item_id, b.start, b.until)] = periods_due(item.row, b, month)
        due_of[b.id] = due
    keys = [f"c/{b.id}/{p.start.isoformat()}" for b in bindings for p in due_of[b.id]]
    billed = set(
        s.exec(select(Bill.key).where(Bill.site_id == site, col(Bill.key).in_(keys))).all()
        if keys
        else ()
    )
    payers = _payers(s, chunk)
    rows: list[dict[str, Any]] = []
    discounts: dict[str, int] = {}
    problems: list[dict[str, Any]] = []
    for b in bindings:
        item = items[b.item_id]
        place = premises[b.premises_id]
        areas = history.get(b.premises_id) or [
            fees.Area(date(2000, 1, 1), Decimal(place.built_area), Decimal(place.interior_area))
        ]
        schedule = schedule_of(item.row)
        for period in due_of[b.id]:
            key = f"c/{b.id}/{period.start.isoformat()}"
            if key in billed:
                continue
            # rooms of one layout, or any room for a fixed fee, cost the same: computed once
            same = (
                b.item_id,
                period,
                tuple(areas) if item.row.kind == fees.Kind.AREA else None,
                (b.start, b.rent_monthly, b.rent_step_pct, b.rent_every_months)
                if item.row.kind == fees.Kind.RENT
                else None,
            )
            line = memo.get(same)
            if line is None:
                try:
                    line = memo[same] = _line(item, b, period, areas)
                except fees.FeeError as exc:
                    problems.append(
                        {"premises": place.code, "item": item.row.code, "error": str(exc)}
                    )
                    break  # later periods of this binding wait for the fix
            waive = 0
            pct = Decimal(item.row.vacant_discount_pct)
            if pct and place.state == State.VACANT and line.amount_fen > 0:
                waive = fees.round_fen(
                    Fraction(line.amount_fen) * Fraction(pct) / 100, fees.Rounding.HALF_UP
                )
                discounts[key] = waive
            rows.append(
                {
                    "site_id": site,
                    "key": key,
                    "premises_id": b.premises_id,
                    "item_id": b.item_id,
                    "category": item.row.category,
                    "kind": BillKind.CHARGE.value,
                    "parent_id": None,
                    "period_start": period.start,
                    "period_end": period.end,
                    "month": str(month),
                    "issued_on": schedule.issued_on(period)
                    if item.row.kind != fees.Kind.ONE_OFF
                    else period.start,
                    "due_on": schedule.due_on(period),
                    "amount_fen": line.amount_fen,
                    "open_fen": max(0, line.amount_fen - waive),
                    "payer_id": _payer_on(payers.get(b.premises_id, []), period.start),
                    "basis": _basis(line, memo),
                    "run_id": run_id,
                    "created_by": actor,
                    "created_at": now,
                }
            )
    done = _Done(problems=problems)
    if not rows:
        return done
    inserted = bulk.insert(
        s,
        Bill,
        rows,
        conflict=("site_id", "key"),
        returning=("id", "key"),
    )
    by_key = {r["key"]: r for r in rows}
    today = local_date(now)
    reason = f"bill run {run_id} ({month})"
    entries = []
    fresh = []
    for bill_id, key in inserted:
        r = by_key[key]
        fresh.append((bill_id, r))
        entries.append(_entry(r, bill_id, Entry.BILL, r["amount_fen"], now, today, actor, reason))
        if key in discounts:
            pct = items[r["item_id"]].row.vacant_discount_pct
            entries.append(
                _entry(
                    r,
                    bill_id,
                    Entry.WAIVED,
                    -discounts[key],
                    now,
                    today,
                    actor,
                    f"vacant-room discount {pct} %",
                    approver="rule:vacant",
                )
            )
        done.lines += 1
        done.total_fen += r["amount_fen"]
    bulk.insert(s, LedgerEntry, entries)
    done.deducted_fen = _deduct_prepaid(s, fresh, now, today, actor)
    return done


_Memo = dict[Any, Any]  # what a run computed once: periods due, lines, their bases


def _basis(line: fees.Line, memo: _Memo) -> dict[str, Any]:
    key = ("basis", id(line))
    if key not in memo:
        memo[key] = line.basis()
    basis: dict[str, Any] = memo[key]
    return basis


def _line(item: _Item, b: Any, period: Period, areas: Sequence[fees.Area]) -> fees.Line:
    if item.row.kind == fees.Kind.RENT:
        if b.rent_monthly is None:
            raise fees.NoPrice("the binding has no rent")
        rent = fees.Rent(
            b.start, Decimal(b.rent_monthly), Decimal(b.rent_step_pct), b.rent_every_months
        )
        spec = fees.FeeSpec(
            fees.Kind.RENT,
            (),
            item.row.cycle_months,
            fees.Rounding(item.row.rounding),
            item.row.step,
        )
        return fees.periodic_line(spec, period, (), rent)
    assert item.spec is not None
    if item.row.kind == fees.Kind.ONE_OFF:
        return fees.once_line(item.spec, period.start)
    return fees.periodic_line(item.spec, period, areas)


def _entry(
    bill: dict[str, Any],
    bill_id: int,
    kind: Entry,
    amount: int,
    now: datetime,
    today: date,
    actor: str,
    reason: str,
    *,
    account: Account = Account.DUE,
    approver: str | None = None,
    payment_id: int | None = None,
) -> dict[str, Any]:
    return {
        "site_id": bill["site_id"],
        "premises_id": bill["premises_id"],
        "account": account.value,
        "category": bill["category"],
        "kind": kind.value,
        "amount_fen": amount,
        "bill_id": bill_id,
        "item_id": bill["item_id"],
        "payment_id": payment_id,
        "booked_at": now,
        "booked_on": today,
        "actor": actor,
        "reason": reason,
        "approver": approver,
    }


def _deduct_prepaid(
    s: Session, fresh: list[tuple[int, dict[str, Any]]], now: datetime, today: date, actor: str
) -> int:
    """Pay the new bills from prepaid balances where a balance covers a whole bill: the
    balance is checked and debited by one conditional UPDATE, in this transaction."""
    ids = list({r["premises_id"] for _, r in fresh})
    balances = {
        (a.premises_id, a.category): a.balance_fen
        for a in s.exec(
            select(PrepaidAccount).where(
                col(PrepaidAccount.premises_id).in_(ids), col(PrepaidAccount.balance_fen) > 0
            )
        ).all()
    }
    if not balances:
        return 0
    total = 0
    for bill_id, r in sorted(fresh, key=lambda x: (x[1]["due_on"], x[0])):
        need = r["open_fen"]
        if need <= 0:
            continue
        for category in (r["category"], ""):
            key = (r["premises_id"], category)
            if balances.get(key, 0) < need:
                continue
            taken = s.exec(
                update(PrepaidAccount)
                .where(
                    col(PrepaidAccount.premises_id) == r["premises_id"],
                    col(PrepaidAccount.category) == category,
                    col(PrepaidAccount.balance_fen) >= need,
                )
                .values(balance_fen=PrepaidAccount.balance_fen - need)
            ).rowcount
            if taken != 1:
                continue
            balances[key] -= need
            s.execute(
                update(Bill).where(col(Bill.id) == bill_id).values(open_fen=Bill.open_fen - need)
            )
            why = "paid from the prepaid balance as issued"
            prepaid = _entry(
                r, bill_id, Entry.DEDUCT, -need, now, today, actor, why, account=Account.PREPAID
            )
            prepaid["category"] = category
            s.execute(
                _insert(s, LedgerEntry),
                [prepaid, _entry(r, bill_id, Entry.PAID, -need, now, today, actor, why)],
            )
            total += need
            break
    return total


def _payers(s: Session, chunk: Sequence[int]) -> dict[int, list[Occupancy]]:
    out: dict[int, list[Occupancy]] = {}
    for o in s.exec(
        select(Occupancy).where(
            col(Occupancy.premises_id).in_(chunk),
            (col(Occupancy.role) == Role.OWNER) | col(Occupancy.payer),
        )
    ).all():
        out.setdefault(o.premises_id, []).append(o)
    return out


def _payer_on(ties: list[Occupancy], day: date) -> int | None:
    """A paying tenant of that day, else its owner; None for nobody recorded."""
    current = [o for o in ties if o.start <= day and (o.until is None or day < o.until)]
    for o in sorted(current, key=lambda o: o.role != Role.TENANT):
        return o.person_id
    return None
