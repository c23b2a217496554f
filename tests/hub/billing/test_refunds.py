"""Refunds: asked by one, approved by another, never more than the payment or twice, the
amount checked against what the stored payment paid, and the ledger balanced after."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime

import pytest
from sqlmodel import Session, select

from hub.billing.errors import BillingError, Conflict
from hub.billing.ledger import cache_drift, totals
from hub.billing.models import Bill, Method, Payment
from hub.billing.payments import DeskPayment, pay_at_desk, void_payment
from hub.billing.periods import Month
from hub.billing.refunds import decide_refund, request_refund
from hub.billing.runs import run_bills
from tests.hub.billing.community import SITE, property_fee, rooms

NOW = datetime(2026, 7, 20, 2, 0, tzinfo=UTC)


@pytest.fixture
def paid(engine):
    """A room that paid Q1 and Q2 (1,500 元) and 200 元 onto its prepaid balance, in one payment."""
    room = rooms(engine, 1, area="100.00")[0]
    property_fee(engine, [room])
    run_bills(engine, SITE, Month(2026, 7), "finance", now=NOW)
    with Session(engine, expire_on_commit=False) as s:
        q1, q2, _ = s.exec(select(Bill).where(Bill.premises_id == room).order_by(Bill.id)).all()
        p = pay_at_desk(
            s,
            SITE,
            DeskPayment(room, Method.CASH, 170000, "pay", (q1.id, q2.id), to_prepaid=""),
            "li",
            NOW,
        )
    return room, p.id, q1.id, q2.id


def balanced(engine):
    with Session(engine, expire_on_commit=False) as s:
        assert cache_drift(s, SITE) == []
        t = totals(s, SITE)
        assert t.balanced()
        return t


def test_a_refund_of_a_bill_is_a_credit_note_approved_by_someone_else(engine, paid):
    _, payment, q1, _ = paid
    with Session(engine, expire_on_commit=False) as s:
        with pytest.raises(BillingError, match="reason"):
            request_refund(s, SITE, payment, 1000, "", "fin", bill_id=q1)
        with pytest.raises(Conflict, match=r"at most 750\.00"):
            request_refund(s, SITE, payment, 75001, "多收", "fin", bill_id=q1)
        r = request_refund(s, SITE, payment, 30000, "物业服务未到位，退部分", "fin", bill_id=q1)
        with pytest.raises(Conflict, match=r"at most 450\.00"):  # the pending request counts
            request_refund(s, SITE, payment, 50000, "again", "fin", bill_id=q1)
        with pytest.raises(BillingError, match="someone other"):
            decide_refund(s, SITE, r.id, True, "fin")
        done = decide_refund(s, SITE, r.id, True, "mgr", "同意")
        assert (done.status, done.decided_by) == ("approved", "mgr")
        with pytest.raises(Conflict, match="approved already"):
            decide_refund(s, SITE, r.id, True, "mgr2")
        assert s.get(Payment, payment).refunded_fen == 30000
        # the bill is still settled: less billed, less paid
        assert s.get(Bill, q1).open_fen == 0
        with pytest.raises(Conflict, match="refunded in part"):
            void_payment(s, SITE, payment, "fin", "void after a refund")
    t = balanced(engine)
    assert t.billed == 3 * 75000 - 30000 and t.paid == 150000 - 30000


def test_a_refund_of_the_prepaid_part_needs_the_balance_still_there(engine, paid):
    _, payment, *_ = paid
    with Session(engine, expire_on_commit=False) as s:
        with pytest.raises(Conflict, match=r"at most 200\.00"):
            request_refund(s, SITE, payment, 20001, "退预存", "fin")
        r = request_refund(s, SITE, payment, 20000, "退预存", "fin")
    # meanwhile the balance pays Q3 in part? it cannot (only whole bills are deducted), so a
    # desk payment of Q3 from cash leaves it; rejecting and asking again works too
    with Session(engine, expire_on_commit=False) as s:
        rejected = decide_refund(s, SITE, r.id, False, "mgr", "先抵扣下季度")
        assert rejected.status == "rejected"
        again = request_refund(s, SITE, payment, 20000, "退预存", "fin")
        decide_refund(s, SITE, again.id, True, "mgr")
        with pytest.raises(Conflict):
            request_refund(s, SITE, payment, 1, "more", "fin")
    t = balanced(engine)
    assert t.prepaid == 0


def test_two_approvals_at_once_refund_once(engine, paid):
    _, payment, q1, q2 = paid
    with Session(engine, expire_on_commit=False) as s:
        a = request_refund(s, SITE, payment, 75000, "退一季度", "fin", bill_id=q1)
        b = request_refund(s, SITE, payment, 75000, "退二季度", "fin", bill_id=q2)
    barrier, outcomes = threading.Barrier(4), []

    def approve(refund_id, who):
        with Session(engine, expire_on_commit=False) as s:
            barrier.wait()
            try:
                outcomes.append(decide_refund(s, SITE, refund_id, True, who).status)
            except Conflict as exc:
                outcomes.append(f"conflict: {exc}")

    threads = [
        threading.Thread(target=approve, args=(r, w)) for r in (a.id, b.id) for w in ("m1", "m2")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o[:8] for o in outcomes) == ["approved", "approved", "conflict", "conflict"]
    with Session(engine, expire_on_commit=False) as s:
        assert s.get(Payment, payment).refunded_fen == 150000
    balanced(engine)


def test_a_bill_run_and_a_void_racing_on_one_rooms_prepaid_balance(engine):
    """The run deducts a new bill from the balance while finance voids the deposit that made
    it: one of them wins whole (the balance is never spent twice nor goes below zero)."""
    room = rooms(engine, 1, area="100.00")[0]
    property_fee(engine, [room], start=date(2026, 4, 1))
    with Session(engine, expire_on_commit=False) as s:
        deposit = pay_at_desk(
            s, SITE, DeskPayment(room, Method.CASH, 75000, "deposit", to_prepaid=""), "li", NOW
        )
    barrier, outcome = threading.Barrier(2), {}

    def run():
        barrier.wait()
        outcome["run"] = run_bills(engine, SITE, Month(2026, 4), "fin", now=NOW).deducted_fen

    def void():
        barrier.wait()
        with Session(engine, expire_on_commit=False) as s:
            try:
                void_payment(s, SITE, deposit.id, "fin", "收错了")
                outcome["void"] = "voided"
            except Conflict as exc:
                outcome["void"] = str(exc)

    threads = [threading.Thread(target=run), threading.Thread(target=void)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Session(engine) as s:
        q2 = s.exec(select(Bill).where(Bill.premises_id == room)).one()
        held = totals(s, SITE, room).prepaid
        assert cache_drift(s, SITE) == []
    if outcome["void"] == "voided":
        assert outcome["run"] == 0 and q2.open_fen == 75000 and held == 0
    else:
        assert "spent since" in outcome["void"]
        assert outcome["run"] == 75000 and q2.open_fen == 0 and held == 0
    balanced(engine)
