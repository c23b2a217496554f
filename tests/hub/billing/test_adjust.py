"""Waivers, bills adjusted after an area change, late fees: each a new line or entry, never
an edit of a bill, and the ledger still balances to the fen."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlmodel import Session, col, select

from hub.billing.adjust import accrue_late_fees, install_area_adjustments, waive
from hub.billing.errors import BillingError, Conflict
from hub.billing.ledger import cache_drift, totals
from hub.billing.models import Bill, LedgerEntry, Method
from hub.billing.payments import DeskPayment, pay_at_desk
from hub.billing.periods import Month
from hub.billing.runs import run_bills
from hub.property import service as property_service
from tests.hub.billing.community import SITE, property_fee, rooms

NOW = datetime(2026, 7, 20, 2, 0, tzinfo=UTC)


@pytest.fixture
def adjusting():
    uninstall = install_area_adjustments()
    yield
    uninstall()


def bills_of(engine, premises):
    with Session(engine) as s:
        return list(s.exec(select(Bill).where(Bill.premises_id == premises).order_by(col(Bill.id))))


def balanced(engine):
    with Session(engine) as s:
        assert cache_drift(s, SITE) == []
        t = totals(s, SITE)
        assert t.balanced(), t
        return t


def test_a_waiver_needs_a_reason_and_cannot_exceed_what_is_open(engine):
    room = rooms(engine, 1)[0]
    property_fee(engine, [room])
    run_bills(engine, SITE, Month(2026, 7), "finance", now=NOW)
    q1 = bills_of(engine, room)[0]
    with Session(engine) as s:
        with pytest.raises(BillingError, match="reason"):
            waive(s, SITE, q1.id, 100, " ", "mgr")
        entry = waive(s, SITE, q1.id, 2500, "管理处同意减免（漏水）", "mgr", now=NOW)
        assert (entry.amount_fen, entry.approver, entry.actor) == (-2500, "mgr", "mgr")
        with pytest.raises(Conflict, match=r"only 646\.25"):
            waive(s, SITE, q1.id, q1.amount_fen, "all of it", "mgr")
    t = balanced(engine)
    assert t.waived == 2500


def test_an_area_change_adjusts_open_and_paid_bills_without_editing_them(engine, adjusting):
    room = rooms(engine, 1, area="100.00")[0]
    property_fee(engine, [room])  # 2.50 元/m²/month, quarterly
    run_bills(engine, SITE, Month(2026, 7), "finance", now=NOW)  # Q1..Q3, 750 元 each
    q1, q2, q3 = bills_of(engine, room)
    with Session(engine) as s:  # Q1 paid at the desk
        pay_at_desk(s, SITE, DeskPayment(room, Method.CASH, 75000, "p1", (q1.id,)), "li", NOW)
    # surveyed again: 90 m² from 1 March (the developer's figure was wrong)
    with Session(engine) as s:
        property_service.change_area(
            s, room, date(2026, 3, 1), Decimal(90), Decimal(72), "复测", "mgr"
        )
    after = bills_of(engine, room)
    assert [(b.id, b.amount_fen) for b in after[:3]] == [
        (q1.id, 75000),
        (q2.id, 75000),
        (q3.id, 75000),
    ]
    adjustments = after[3:]
    # March at 90 m²: −25 元 on Q1; Q2 and Q3: −75 元 each
    assert [(a.parent_id, a.amount_fen) for a in adjustments] == [
        (q1.id, -2500),
        (q2.id, -7500),
        (q3.id, -7500),
    ]
    assert adjustments[0].basis["recomputed"]["pieces"][1]["built_area_m2"] == "90.00"
    with Session(engine) as s:
        # Q1 was paid: the 25 元 went to the prepaid balance; Q2, Q3 owe less
        assert s.get(Bill, q1.id).open_fen == 0
        assert (s.get(Bill, q2.id).open_fen, s.get(Bill, q3.id).open_fen) == (67500, 67500)
        prepaid = s.exec(select(LedgerEntry).where(LedgerEntry.account == "prepaid")).one()
        assert (prepaid.kind, prepaid.amount_fen) == ("deposit", 2500)
    t = balanced(engine)
    assert t.billed == 3 * 75000 - 17500 and t.prepaid == 2500
    # the same area again from 1 June: nothing changes; a larger one from 1 Sept: Q3 owes more
    with Session(engine) as s:
        property_service.change_area(
            s, room, date(2026, 9, 1), Decimal(110), Decimal(90), "扩建", "mgr"
        )
    extra = bills_of(engine, room)[6:]
    assert [(a.parent_id, a.amount_fen, a.open_fen) for a in extra] == [(q3.id, 5000, 5000)]
    balanced(engine)


def test_late_fees_accrue_daily_and_monthly_to_the_same_fen_and_can_be_waived(engine, db_url):
    def setup(site):
        room = rooms(engine, 1, site=site)[0]
        property_fee(
            engine,
            [room],
            site=site,
            late_fee_per_day=Decimal("0.0005"),
            late_fee_grace_days=15,
            late_fee_cap=Decimal("0.1"),
        )
        run_bills(engine, site, Month(2026, 4), "finance", now=datetime(2026, 1, 1, tzinfo=UTC))
        return room

    daily, monthly = setup("daily"), setup("monthly")
    for site, room in (("daily", daily), ("monthly", monthly)):
        q1 = bills_of(engine, room)[0]
        with Session(engine) as s:  # half of Q1 paid on 10 March
            pay_at_desk(
                s,
                site,
                DeskPayment(room, Method.CASH, q1.amount_fen // 2, "half", (q1.id,)),
                "li",
                datetime(2026, 3, 10, 2, tzinfo=UTC),
            )
    d = date(2026, 1, 1)
    while d <= date(2026, 5, 31):
        accrue_late_fees(engine, "daily", d, "job", now=datetime(2026, 6, 1, tzinfo=UTC))
        d += timedelta(days=1)
    for m in (1, 2, 3, 4, 5):
        end = Month(2026, m).last
        accrue_late_fees(engine, "monthly", end, "job", now=datetime(2026, 6, 1, tzinfo=UTC))
    with Session(engine) as s:

        def fees_of(room):
            return [
                b
                for b in s.exec(
                    select(Bill).where(Bill.premises_id == room, Bill.kind == "late_fee")
                )
            ]

        daily_total = sum(b.amount_fen for b in fees_of(daily))
        monthly_total = sum(b.amount_fen for b in fees_of(monthly))
        assert daily_total == monthly_total > 0
        # again through the same date: nothing more
        assert accrue_late_fees(engine, "monthly", date(2026, 5, 31), "job")[0] == 0
        fee = fees_of(monthly)[0]
        assert fee.basis["rate_per_day"] == "0.00050000" and fee.basis["grace_days"] == 15
        waive(s, "monthly", fee.id, fee.open_fen, "首次逾期，经理同意免除滞纳金", "mgr")
    for site in ("daily", "monthly"):
        with Session(engine) as s:
            assert cache_drift(s, site) == [] and totals(s, site).balanced()
