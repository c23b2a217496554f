"""Payments at the desk and online: allocation, receipts without gaps, prepaid balances,
voids, and two payments of one bill at once (one wins, the other is told)."""

from __future__ import annotations

import hashlib
import hmac
import json
import multiprocessing
from datetime import UTC, date, datetime

import pytest
from sqlmodel import Session, col, select

from hub.billing.allocation import Open, Policy, allocate
from hub.billing.errors import BillingError, Conflict, NotFound
from hub.billing.ledger import cache_drift, statement, totals
from hub.billing.models import Bill, LedgerEntry, Method, Payment
from hub.billing.payments import (
    DeskPayment,
    order_for_bills,
    pay_at_desk,
    register_payments,
    void_payment,
)
from hub.billing.periods import Month
from hub.billing.runs import run_bills
from hub.db import make_engine
from hub.payments import NotificationOutcome, SandboxChannel, handle_notification
from tests.hub.billing.community import SITE, fixed_fee, property_fee, rooms

NOW = datetime(2026, 7, 20, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
SECRET = b"fee-sandbox-secret"
CHANNEL = SandboxChannel("http://127.0.0.1:9", SECRET, "http://127.0.0.1:9/notify")


def test_allocation_is_oldest_first_and_the_rest_is_left_over():
    bills = [
        Open(3, date(2026, 7, 1), 500),
        Open(1, date(2026, 4, 1), 300),
        Open(2, date(2026, 4, 1), 200),
    ]
    a = allocate(700, bills)
    assert a.parts == ((1, 300), (2, 200), (3, 200)) and a.rest_fen == 0
    assert allocate(700, bills, Policy.AS_LISTED).parts == ((3, 500), (1, 200))
    assert allocate(1500, bills).rest_fen == 500
    with pytest.raises(ValueError):
        allocate(0, bills)


@pytest.fixture
def billed(engine):
    """Two rooms billed through July: Q1..Q3 property fee, Jan..June rubbish fee."""
    ids = rooms(engine, 2)
    property_fee(engine, ids)
    fixed_fee(engine, ids, 1500)
    run_bills(engine, SITE, Month(2026, 7), "finance", now=NOW)
    return ids


def open_bills(engine, premises):
    with Session(engine) as s:
        return list(
            s.exec(
                select(Bill)
                .where(Bill.premises_id == premises, col(Bill.open_fen) > 0)
                .order_by(col(Bill.due_on), col(Bill.id))
            ).all()
        )


def desk(engine, premises, amount, key, **kw):
    with Session(engine, expire_on_commit=False) as s:
        return pay_at_desk(
            s,
            SITE,
            DeskPayment(premises, kw.pop("method", Method.CASH), amount, key, **kw),
            "cashier-li",
            now=kw.pop("now", NOW),
        )


def test_a_partial_payment_pays_the_oldest_bills_first(engine, billed):
    room = billed[0]
    before = open_bills(engine, room)
    owed = sum(b.open_fen for b in before)
    p = desk(engine, room, 67125 + 1500 + 700, "k1")
    assert p.receipt_no == "2026-000001" and p.method == "cash" and p.cashier == "cashier-li"
    after = {b.id: b.open_fen for b in open_bills(engine, room)}
    # by due date: Q1 (due 16 Jan) whole, January's rubbish fee (due 11 Feb) whole, and
    # 7 元 of February's (due 11 Mar); nothing of Q2 (due 16 Apr)
    q1, jan, feb = before[0], before[1], before[2]
    assert (q1.period_start, jan.period_start, feb.period_start) == (
        date(2026, 1, 1),
        date(2026, 1, 1),
        date(2026, 2, 1),
    )
    assert q1.amount_fen == 67125 and q1.id not in after and jan.id not in after
    assert after[feb.id] == 1500 - 700
    assert all(after[b.id] == b.open_fen for b in before[3:])
    with Session(engine) as s:
        t = totals(s, SITE, room)
    assert t.outstanding == owed - p.amount_fen and t.balanced()
    assert t.paid == p.amount_fen


def test_more_than_owed_needs_a_prepaid_balance_and_then_goes_there(engine, billed):
    room = billed[1]
    owed = sum(b.open_fen for b in open_bills(engine, room))
    with pytest.raises(BillingError, match="more than the"):
        desk(engine, room, owed + 1000, "k2")
    p = desk(engine, room, owed + 1000, "k3", to_prepaid="")
    assert p.to_prepaid_fen == 1000 and open_bills(engine, room) == []
    with Session(engine) as s:
        st = statement(s, SITE, room)
        assert st.prepaid == {"": 1000} and st.totals.outstanding == 0
        assert cache_drift(s, SITE) == []
    # the refused attempt took no receipt number: the next is 000002
    assert desk(engine, billed[0], 100, "k4").receipt_no == "2026-000002"


def test_the_same_key_is_the_same_payment_and_another_request_with_it_is_refused(engine, billed):
    a = desk(engine, billed[0], 5000, "same")
    assert desk(engine, billed[0], 5000, "same").id == a.id
    with pytest.raises(Conflict, match="another payment"):
        desk(engine, billed[0], 6000, "same")
    with Session(engine) as s:
        assert len(s.exec(select(Payment)).all()) == 1


def test_a_chosen_bill_paid_already_or_of_another_room_is_refused(engine, billed):
    mine = open_bills(engine, billed[0])[0]
    theirs = open_bills(engine, billed[1])[0]
    with pytest.raises(NotFound):
        desk(engine, billed[0], 100, "x1", bill_ids=(theirs.id,))
    desk(engine, billed[0], mine.open_fen, "x2", bill_ids=(mine.id,))
    with pytest.raises(Conflict, match="paid already"):
        desk(engine, billed[0], mine.amount_fen, "x3", bill_ids=(mine.id,))
    for bad in (0, -5, 10**12):
        with pytest.raises(BillingError):
            desk(engine, billed[0], bad, f"bad{bad}")
    with pytest.raises(BillingError):
        desk(engine, billed[0], 100, "m", method=Method.ONLINE)


def test_a_void_makes_the_bills_owed_again_by_new_entries(engine, billed):
    room = billed[0]
    before = sum(b.open_fen for b in open_bills(engine, room))
    p = desk(engine, room, 10000, "v1", to_prepaid="")
    with pytest.raises(BillingError, match="reason"), Session(engine) as s:
        void_payment(s, SITE, p.id, "finance-wang", "  ")
    with Session(engine) as s:
        void_payment(s, SITE, p.id, "finance-wang", "typed 100 instead of 10")
    with Session(engine) as s:
        assert sum(b.open_fen for b in open_bills(engine, room)) == before
        with pytest.raises(Conflict, match="voided already"):
            void_payment(s, SITE, p.id, "finance-wang", "again")
        kinds = [e.kind for e in s.exec(select(LedgerEntry).where(LedgerEntry.payment_id == p.id))]
        assert kinds.count("paid") == kinds.count("unpaid") >= 1
        assert cache_drift(s, SITE) == [] and totals(s, SITE, room).paid == 0


# -- online, and the race with the desk --------------------------------------------------------
def signed(order_id: str, amount: int, txn: str):
    body = json.dumps(
        {
            "v": 1,
            "event": "payment.succeeded",
            "order_id": order_id,
            "txn_id": txn,
            "amount_fen": amount,
            "currency": "CNY",
            "paid_at": "2026-07-20T02:00:00+00:00",
        }
    ).encode()
    ts = int(NOW.timestamp())
    sig = hmac.new(SECRET, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Wuye-Timestamp": str(ts), "X-Wuye-Signature": sig}, body


@pytest.fixture
def credited():
    unregister = register_payments()
    yield
    unregister()


def online_order(engine, room, bills, key="o1"):
    with Session(engine, expire_on_commit=False) as s:
        return order_for_bills(
            s,
            SITE,
            room,
            [b.id for b in bills],
            channel="sandbox",
            idempotency_key=key,
            payer="owner-zhang",
        )


def test_an_online_payment_pays_the_chosen_bills_once(engine, billed, credited):
    room = billed[0]
    chosen = open_bills(engine, room)[:2]
    order = online_order(engine, room, chosen)
    assert order.amount_fen == sum(b.open_fen for b in chosen)
    headers, body = signed(order.id, order.amount_fen, "TXN-9")
    for _ in range(3):  # the channel resends
        with Session(engine) as s:
            out = handle_notification(s, CHANNEL, headers, body, now=NOW)
    assert out.kind == NotificationOutcome.DUPLICATE
    with Session(engine) as s:
        pays = s.exec(select(Payment)).all()
        assert [(p.method, p.amount_fen, p.to_prepaid_fen) for p in pays] == [
            ("online", order.amount_fen, 0)
        ]
        assert cache_drift(s, SITE) == []
    assert {b.id for b in chosen}.isdisjoint(b.id for b in open_bills(engine, room))


def _desk_process(url, room, bill_id, amount, barrier, out):
    engine = make_engine(url)
    barrier.wait()
    try:
        with Session(engine) as s:
            p = pay_at_desk(
                s, SITE, DeskPayment(room, Method.CASH, amount, "race", (bill_id,)), "li", NOW
            )
            out.put(("desk", p.receipt_no))
    except Conflict as exc:
        out.put(("desk", f"conflict: {exc}"))
    engine.dispose()


def _online_process(url, headers, body, barrier, out):
    engine = make_engine(url)
    unregister = register_payments()
    barrier.wait()
    with Session(engine) as s:
        out.put(("online", handle_notification(s, CHANNEL, headers, body, now=NOW).kind.value))
    unregister()
    engine.dispose()


@pytest.mark.timeout(120)
def test_desk_and_online_paying_one_bill_at_once_pay_it_once(engine, db_url, billed):
    ctx = multiprocessing.get_context("spawn")
    room = billed[0]
    for round_, bill in enumerate(open_bills(engine, room)[:3]):
        order = online_order(engine, room, [bill], key=f"race-{round_}")
        headers, body = signed(order.id, order.amount_fen, f"TXN-R{round_}")
        barrier, out = ctx.Barrier(2), ctx.Queue()
        procs = [
            ctx.Process(
                target=_desk_process, args=(db_url, room, bill.id, bill.open_fen, barrier, out)
            ),
            ctx.Process(target=_online_process, args=(db_url, headers, body, barrier, out)),
        ]
        for p in procs:
            p.start()
        got = dict(out.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(30)
        assert got["online"] == "credited"  # money that arrived is always booked
        with Session(engine) as s:
            paid = s.exec(
                select(LedgerEntry).where(
                    LedgerEntry.bill_id == bill.id, LedgerEntry.kind == "paid"
                )
            ).all()
            assert len(paid) == 1, got  # one credit of the bill
            online = s.exec(select(Payment).where(Payment.order_id == order.id)).one()
            if got["desk"].startswith("conflict"):
                assert online.to_prepaid_fen == 0  # online won; the cashier was told
            else:
                assert online.to_prepaid_fen == bill.open_fen  # the desk won; online money kept
            assert cache_drift(s, SITE) == []
            assert totals(s, SITE).balanced()
    with Session(engine) as s:
        numbers = sorted(p.receipt_no for p in s.exec(select(Payment)))
    assert numbers == [f"2026-{i:06d}" for i in range(1, len(numbers) + 1)]  # no gaps
