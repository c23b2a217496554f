"""Bill runs on SQLite and PostgreSQL: every line once, however often or however killed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import func
from sqlmodel import Session, col, select

from hub.billing.errors import MonthClosed
from hub.billing.items import NewPrice, add_price
from hub.billing.models import Bill, BillRun, ClosedMonth, LedgerEntry, PrepaidAccount
from hub.billing.periods import Month
from hub.billing.runs import run_bills
from hub.property.models import Premises
from tests.hub.billing.community import SITE, fixed_fee, property_fee, rooms

JULY = Month(2026, 7)


def bills(engine, **where) -> list[Bill]:
    with Session(engine) as s:
        q = select(Bill).order_by(col(Bill.premises_id), col(Bill.period_start))
        for k, v in where.items():
            q = q.where(getattr(Bill, k) == v)
        return list(s.exec(q).all())


def test_a_run_bills_every_cycle_issued_by_the_month_end_and_a_second_adds_nothing(engine):
    ids = rooms(engine, 6)
    property_fee(engine, ids)  # quarterly, prepaid, 15 days ahead
    fixed_fee(engine, ids, 1500)  # 15 元 a month, postpaid
    first = run_bills(engine, SITE, JULY, "finance")
    # Q1, Q2, Q3 of the property fee (Q3 is issued on 16 June); Jan..June of the fixed one
    assert first.status == "done" and first.premises_done == 6
    assert first.lines == 6 * (3 + 6)
    quarter = 22375 * 3
    assert first.total_fen == 6 * (3 * quarter + 6 * 1500)
    again = run_bills(engine, SITE, JULY, "finance")
    assert again.lines == 0 and again.total_fen == 0
    assert len(bills(engine)) == 54
    q3 = bills(engine, premises_id=ids[0], period_start=date(2026, 7, 1))[0]
    assert (q3.issued_on, q3.due_on, q3.amount_fen) == (
        date(2026, 6, 16),
        date(2026, 7, 16),
        quarter,
    )
    assert q3.basis["pieces"][0]["months"] == 3
    # the ledger has one bill entry per line, of its amount
    with Session(engine) as s:
        total = s.exec(
            select(func.sum(LedgerEntry.amount_fen)).where(LedgerEntry.kind == "bill")
        ).one()
    assert total == first.total_fen
    # August adds the July fixed fee only (Q4 is issued on 16 September)
    aug = run_bills(engine, SITE, Month(2026, 8), "finance")
    assert aug.lines == 6 and aug.total_fen == 6 * 1500


def test_a_price_change_mid_cycle_splits_the_quarter(engine):
    ids = rooms(engine, 2)
    item = property_fee(engine, ids)
    with Session(engine) as s:
        add_price(s, SITE, item, NewPrice(date(2026, 8, 1), Decimal(280)), "manager")
    run_bills(engine, SITE, Month(2026, 9), "finance")
    q3 = bills(engine, premises_id=ids[0], period_start=date(2026, 7, 1))[0]
    assert q3.amount_fen == 22375 + 2 * 25060
    assert [p["unit_fen_per_m2"] for p in q3.basis["pieces"]] == ["250", "280"]


def test_a_closed_month_takes_no_run(engine):
    ids = rooms(engine, 1)
    property_fee(engine, ids)
    with Session(engine) as s:
        s.add(ClosedMonth(site_id=SITE, month="2026-07", closed_by="finance"))
        s.commit()
    with pytest.raises(MonthClosed, match="2026-07 is closed"):
        run_bills(engine, SITE, JULY, "finance")
    assert bills(engine) == []


def test_a_start_date_mid_quarter_bills_its_days_and_vacant_rooms_get_their_discount(engine):
    ids = rooms(engine, 2)
    with Session(engine) as s:
        s.get(Premises, ids[1]).state = "vacant"
        s.commit()
    property_fee(engine, ids, start=date(2026, 5, 20), vacant_discount_pct=Decimal(50))
    run_bills(engine, SITE, Month(2026, 5), "finance")
    first = bills(engine, premises_id=ids[0])
    assert [(b.period_start, b.period_end) for b in first] == [
        (date(2026, 5, 20), date(2026, 7, 1))
    ]
    # 12 of 31 days of May + June, of 223.75 元 a month
    assert first[0].amount_fen == round(22375 * 12 / 31 + 22375)
    vacant = bills(engine, premises_id=ids[1])[0]
    assert vacant.amount_fen == first[0].amount_fen
    assert vacant.open_fen == vacant.amount_fen - round(vacant.amount_fen / 2 + 0.01)
    with Session(engine) as s:
        waiver = s.exec(select(LedgerEntry).where(LedgerEntry.kind == "waived")).one()
    assert (waiver.bill_id, waiver.approver) == (vacant.id, "rule:vacant")
    assert waiver.amount_fen == vacant.open_fen - vacant.amount_fen


def test_a_prepaid_balance_pays_a_new_bill_only_when_it_covers_all_of_it(engine):
    ids = rooms(engine, 2)
    with Session(engine) as s:
        s.add(
            PrepaidAccount(
                premises_id=ids[0], category="property", site_id=SITE, balance_fen=22375 * 3 + 5
            )
        )
        s.add(PrepaidAccount(premises_id=ids[1], category="", site_id=SITE, balance_fen=100))
        s.commit()
    property_fee(engine, ids, start=date(2026, 4, 1))
    run = run_bills(engine, SITE, Month(2026, 4), "finance")
    assert run.deducted_fen == 22375 * 3  # one quarter for the first room, nothing for the other
    a, b = bills(engine, premises_id=ids[0])[0], bills(engine, premises_id=ids[1])[0]
    assert (a.open_fen, b.open_fen) == (0, b.amount_fen)
    with Session(engine) as s:
        assert s.get(PrepaidAccount, (ids[0], "property")).balance_fen == 5
        assert s.get(PrepaidAccount, (ids[1], "")).balance_fen == 100
        kinds = s.exec(
            select(LedgerEntry.kind, LedgerEntry.amount_fen)
            .where(LedgerEntry.bill_id == a.id)
            .order_by(col(LedgerEntry.id))
        ).all()
    assert kinds == [("bill", 67125), ("deduct", -67125), ("paid", -67125)]


@pytest.mark.timeout(300)
def test_a_run_killed_three_times_at_random_points_still_bills_every_line_once(db_url, tmp_path):
    from hub.db import make_engine

    engine = make_engine(db_url)
    ids = rooms(engine, 120)
    property_fee(engine, ids, cycle=1)
    fixed_fee(engine, ids, 1500)
    env = {
        **os.environ,
        "WUYE_HUB_DATABASE_URL": db_url,
        "WUYE_HUB_SECRET_FILE": str(tmp_path / "s"),
    }
    cmd = [
        sys.executable,
        "-m",
        "hub",
        "billing",
        "run",
        "--site",
        SITE,
        "--month",
        "2026-07",
        "--batch",
        "7",
    ]
    rng = random.Random(20261206)
    for _ in range(3):  # SIGKILL after a random number of committed batches
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
        )
        assert proc.stdout is not None
        for _ in range(rng.randint(1, 12)):
            if not proc.stdout.readline():
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr
    keys = [b.key for b in bills(engine)]
    # monthly property fee Jan..August (August's is issued on 17 July), fixed Jan..June
    expected = 120 * (8 + 6)
    assert len(keys) == len(set(keys)) == expected
    with Session(engine) as s:
        runs = s.exec(select(BillRun)).all()
        entries = s.exec(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "bill")
        ).one()
        billed = s.exec(select(func.sum(Bill.amount_fen))).one()
    assert len(runs) == 1 and runs[0].status == "done"
    assert (
        runs[0].lines == expected and runs[0].total_fen == billed
    )  # counters committed with the lines
    assert entries == expected
    engine.dispose()
