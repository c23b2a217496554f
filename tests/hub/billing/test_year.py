"""A project of 3,000 rooms through a simulated year, against an independent bookkeeper.

Quarterly prepaid property fee (2.50 元/m²/month, 2.80 from 1 August: Q3 is split), a
monthly postpaid rubbish fee, vacant rooms at half the property fee, handovers that start
billing mid-quarter, move-ins, a sale, desk payments in full and in part, online payments
through the payment channel's signed notifications, prepaid deposits that pay new bills as
they are issued, late fees accrued each month end, waivers, area changes that adjust bills
already issued and paid, and a refund. At the end every room's billed, paid, waived,
outstanding and prepaid amounts, every bill's amount and what is open of it, and each
cashier's takings of each day agree with tests/hub/billing/reference.py (the rules done
again day by day) to the fen, and the ledger balances.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction

import pytest
from sqlalchemy import func
from sqlmodel import Session, col, select

from hub.billing import fees
from hub.billing.adjust import accrue_late_fees, install_area_adjustments, waive
from hub.billing.items import NewItem, NewPrice, Terms, bind, create_item
from hub.billing.ledger import cache_drift, totals
from hub.billing.models import Bill, Category, Method, Payment, PrepaidAccount
from hub.billing.payments import DeskPayment, order_for_bills, pay_at_desk, register_payments
from hub.billing.periods import Month, Timing
from hub.billing.refunds import decide_refund, request_refund
from hub.billing.runs import run_bills
from hub.models import Site
from hub.payments import NotificationOutcome, SandboxChannel, handle_notification
from hub.property import generator
from hub.property import service as registry
from hub.property.models import Occupancy, Person, Premises, Role
from tests.hub.billing.reference import Books, Item, RefBill, Room

SITE = "year"
SECRET = b"year-sandbox"
CHANNEL = SandboxChannel("http://127.0.0.1:9", SECRET, "http://127.0.0.1:9/notify")
KEY = b"person key of the year"
AREAS = ("89.50", "120.35", "143.00", "67.80")
ROOMS = {"postgresql": 3000, "sqlite": 1000}  # 10 buildings × 3 (or 1) units × 25 floors × 4


def at(d: date, hour: int = 10) -> datetime:
    """That day at ``hour`` o'clock in Shanghai."""
    return datetime(d.year, d.month, d.day, hour - 8, 0, tzinfo=UTC)


def signed(order_id: str, amount: int, txn: str, when: datetime):
    body = json.dumps(
        {
            "v": 1,
            "event": "payment.succeeded",
            "order_id": order_id,
            "txn_id": txn,
            "amount_fen": amount,
            "currency": "CNY",
            "paid_at": when.isoformat(),
        }
    ).encode()
    ts = int(when.timestamp())
    sig = hmac.new(SECRET, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Wuye-Timestamp": str(ts), "X-Wuye-Signature": sig}, body


class Year:
    def __init__(self, engine, rng: random.Random):
        self.engine, self.rng = engine, rng
        self.rooms = ROOMS[engine.dialect.name]
        with Session(engine, expire_on_commit=False) as s:
            s.add(Site(id=SITE, name="岁月花园"))
            s.commit()
            plan = generator.RoomPlan(
                buildings=generator.numbered(10),
                units=("1", "2", "3")[: self.rooms // 1000],
                floors=25,
                rooms_per_floor=4,
                areas=tuple(
                    generator.Areas(Decimal(a), Decimal(a) * Decimal("0.8")) for a in AREAS
                ),
                state=generator.State.OCCUPIED,
            )
            registry.create_rooms(s, SITE, generator.plan_rooms(plan), "mgr")
            premises = list(
                s.exec(select(Premises).where(Premises.site_id == SITE).order_by(col(Premises.id)))
            )
        assert len(premises) == self.rooms
        self.ids = [p.id for p in premises]
        self.vacant = set(rng.sample(self.ids, self.rooms * 15 // 100))
        self.owned_from_start = [i for i in self.ids if i not in self.vacant]
        with Session(engine, expire_on_commit=False) as s:
            for p in s.exec(select(Premises).where(col(Premises.id).in_(self.vacant))):
                p.state = "vacant"
            s.commit()
            prop = create_item(
                s,
                SITE,
                NewItem(
                    code="PROP",
                    name="物业费",
                    category=Category.PROPERTY,
                    kind=fees.Kind.AREA,
                    prices=(
                        NewPrice(date(2026, 1, 1), Decimal(250)),
                        NewPrice(date(2026, 8, 1), Decimal(280)),
                    ),
                    cycle_months=3,
                    timing=Timing.PREPAID,
                    advance_days=15,
                    due_days=15,
                    late_fee_per_day=Decimal("0.0005"),
                    late_fee_grace_days=15,
                    late_fee_cap=Decimal("0.1"),
                    vacant_discount_pct=Decimal(50),
                ),
                "mgr",
            )
            garb = create_item(
                s,
                SITE,
                NewItem(
                    code="GARB",
                    name="垃圾清运费",
                    category=Category.OTHER,
                    kind=fees.Kind.FIXED,
                    prices=(NewPrice(date(2026, 1, 1), Decimal(1500)),),
                    cycle_months=1,
                    timing=Timing.POSTPAID,
                    due_days=10,
                ),
                "mgr",
            )
            self.prop, self.garb = prop.id, garb.id
            # most rooms from New Year; 300 handed over later (a short first quarter)
            late = {
                i: date(2026, rng.randint(1, 6), rng.randint(1, 28))
                for i in rng.sample(self.ids, self.rooms // 10)
            }
            bind(
                s,
                SITE,
                prop.id,
                [i for i in self.ids if i not in late],
                Terms(date(2026, 1, 1)),
                "mgr",
            )
            for i, d in late.items():
                bind(s, SITE, prop.id, [i], Terms(d), "mgr")
            bind(s, SITE, garb.id, self.ids, Terms(date(2026, 1, 1)), "mgr")
            # the owners, as an import records them (tests/hub/property test that path)
            for n, i in enumerate(self.ids):
                if i not in self.vacant:
                    person = Person(site_id=SITE, name=f"业主{n}", phone=f"139{n:08d}")
                    s.add(person)
                    s.flush()
                    s.add(
                        Occupancy(
                            premises_id=i,
                            person_id=person.id,
                            role=Role.OWNER.value,
                            start=date(2025, 12, 1),
                            recorded_by="import",
                        )
                    )
            s.commit()
        self.books = Books(
            [
                Item(
                    prop.id,
                    "area",
                    3,
                    True,
                    15,
                    15,
                    [(date(2026, 1, 1), Fraction(250)), (date(2026, 8, 1), Fraction(280))],
                    vacant_pct=50,
                    late_rate=Fraction(5, 10000),
                    late_grace=15,
                    late_cap=Fraction(1, 10),
                ),
                Item(garb.id, "fixed", 1, False, 0, 10, [(date(2026, 1, 1), Fraction(1500))]),
            ],
            [
                Room(
                    p.id,
                    [(date(2000, 1, 1), Fraction(Decimal(p.built_area)))],
                    {prop.id: late.get(p.id, date(2026, 1, 1)), garb.id: date(2026, 1, 1)},
                    vacant=p.id in self.vacant,
                )
                for p in premises
            ],
        )
        self.orders = 0
        self.refunded = False

    # -- a month ---------------------------------------------------------------------------
    def month(self, m: int) -> None:
        month = Month(2026, m)
        run = run_bills(self.engine, SITE, month, "fin", now=at(month.first, 9))
        self.books.run(month.last, month.first)
        assert run.problems == []
        days = sorted(self.rng.sample(range(2, month.last.day), 4))
        for day in days:
            self.day(date(2026, m, day))
        if m == 5:
            self.area_changes(date(2026, 5, days[0]))
        if m == 9:
            self.refund(date(2026, 9, days[-1]))
        self.move_ins(month)
        if m == 6:
            self.sale(date(2026, 6, 20))
        accrue_late_fees(self.engine, SITE, month.last, "job", now=at(month.last, 23))
        self.books.late_fees(month.last, month.last)
        self.agree(month)

    def agree(self, month: Month) -> None:
        """At each month's end what every room owes and holds agrees already."""
        with Session(self.engine, expire_on_commit=False) as s:
            owed = dict(
                s.exec(
                    select(Bill.premises_id, func.sum(Bill.open_fen))
                    .where(Bill.site_id == SITE)
                    .group_by(col(Bill.premises_id))
                ).all()
            )
            held = dict(
                s.exec(
                    select(PrepaidAccount.premises_id, func.sum(PrepaidAccount.balance_fen))
                    .where(PrepaidAccount.site_id == SITE)
                    .group_by(col(PrepaidAccount.premises_id))
                ).all()
            )
        wrong = [
            (
                r,
                owed.get(r, 0),
                self.books.outstanding(r),
                held.get(r, 0),
                self.books.rooms[r].prepaid,
            )
            for r in self.ids
            if (owed.get(r, 0), held.get(r, 0))
            != (self.books.outstanding(r), self.books.rooms[r].prepaid)
        ]
        if wrong:
            with Session(self.engine) as s:
                for b in s.exec(
                    select(Bill).where(Bill.premises_id == wrong[0][0]).order_by(col(Bill.id))
                ):
                    print(
                        "DB ",
                        b.id,
                        b.kind,
                        b.item_id,
                        b.parent_id,
                        b.period_start,
                        b.period_end,
                        b.due_on,
                        b.amount_fen,
                        b.open_fen,
                    )
            for b in self.books.of_room[wrong[0][0]]:
                print(
                    "REF",
                    b.seq,
                    b.kind,
                    b.item,
                    b.parent,
                    b.start,
                    b.end,
                    b.due,
                    b.amount,
                    b.open,
                    b.moves,
                )
        assert not wrong, f"{month}: {len(wrong)} rooms differ, e.g. {wrong[:3]}"

    def day(self, d: date) -> None:
        for room in self.rng.sample(self.ids, self.rooms // 100):
            owed = self.books.outstanding(room)
            mode = self.rng.choices(["full", "part", "deposit", "online"], [5, 3, 1, 1])[0]
            if owed == 0 and mode != "deposit":
                continue
            if mode == "online":
                self.online(room, d)
                continue
            amount = {
                "full": owed,
                "part": max(1, owed * self.rng.randint(10, 90) // 100),
                "deposit": owed + self.rng.randint(1, 6) * 30000,
            }[mode]
            method = self.rng.choice([Method.CASH, Method.POS, Method.TRANSFER])
            cashier = self.rng.choice(["cash-li", "cash-wang"])
            with Session(self.engine, expire_on_commit=False) as s:
                pay_at_desk(
                    s,
                    SITE,
                    DeskPayment(
                        room,
                        method,
                        amount,
                        f"{room}-{d}-{mode}",
                        to_prepaid="" if mode == "deposit" else None,
                    ),
                    cashier,
                    at(d, self.rng.randint(9, 17)),
                )
            self.books.pay(room, amount, d, cashier, method.value)
        for bill in self.rng.sample(self.open_bills(), 3):  # a manager's waivers
            fen = self.rng.randint(1, bill.open_fen)
            with Session(self.engine, expire_on_commit=False) as s:
                waive(s, SITE, bill.id, fen, "经理减免", "mgr", now=at(d, 16))
            self.books.waive(self.ref_of(bill), fen, d)

    def open_bills(self) -> list[Bill]:
        with Session(self.engine, expire_on_commit=False) as s:
            return list(
                s.exec(
                    select(Bill)
                    .where(Bill.site_id == SITE, col(Bill.open_fen) > 0)
                    .order_by(col(Bill.id))
                    .limit(2000)
                )
            )

    def ref_of(self, bill: Bill) -> RefBill:
        """The bookkeeper's line for a bill of the hub: same room, item, kind, period and
        amount (and, for a late fee or an adjustment, the same parent)."""
        found = [
            b
            for b in self.books.of_room[bill.premises_id]
            if (b.item, b.kind, b.start, b.end, b.amount)
            == (bill.item_id, bill.kind, bill.period_start, bill.period_end, bill.amount_fen)
        ]
        if len(found) > 1 and bill.parent_id is not None:
            with Session(self.engine, expire_on_commit=False) as s:
                parent = self.ref_of(s.get(Bill, bill.parent_id))
            found = [b for b in found if b.parent == parent.seq]
        assert len(found) == 1, (bill, found)
        return found[0]

    def online(self, room: int, d: date) -> None:
        with Session(self.engine, expire_on_commit=False) as s:
            chosen = list(
                s.exec(
                    select(Bill)
                    .where(
                        Bill.premises_id == room, Bill.item_id == self.prop, col(Bill.open_fen) > 0
                    )
                    .order_by(col(Bill.id))
                )
            )
            if not chosen:
                return
            self.orders += 1
            order = order_for_bills(
                s,
                SITE,
                room,
                [b.id for b in chosen],
                channel="sandbox",
                idempotency_key=f"online-{self.orders}",
                payer="owner",
            )
        when = at(d, 21)
        headers, body = signed(order.id, order.amount_fen, f"TXN{self.orders}", when)
        with Session(self.engine, expire_on_commit=False) as s:
            out = handle_notification(s, CHANNEL, headers, body, now=when)
        assert out.kind is NotificationOutcome.CREDITED, out
        self.books.pay(
            room, order.amount_fen, d, "online", "online", [self.ref_of(b) for b in chosen]
        )

    def area_changes(self, d: date) -> None:
        for room in self.rng.sample(self.ids, 8):
            since = date(2026, self.rng.randint(1, 5), 1)
            built = Decimal(self.rng.choice(AREAS)) + Decimal(self.rng.choice([-5, 5]))
            with Session(self.engine, expire_on_commit=False) as s:
                registry.change_area(
                    s, room, since, built, built * Decimal("0.8"), "复测", "mgr", now=at(d, 15)
                )
            self.books.area_change(room, since, Fraction(built), d)

    def refund(self, d: date) -> None:
        with Session(self.engine, expire_on_commit=False) as s:
            p = s.exec(
                select(Payment)
                .where(
                    Payment.site_id == SITE, Payment.method == "cash", Payment.to_prepaid_fen == 0
                )
                .order_by(col(Payment.id))
            ).first()
            bill_id = s.exec(
                select(Bill.id).where(Bill.premises_id == p.premises_id).order_by(col(Bill.id))
            ).first()
            from hub.billing.models import LedgerEntry

            paid = -sum(
                e.amount_fen
                for e in s.exec(
                    select(LedgerEntry).where(
                        LedgerEntry.payment_id == p.id, LedgerEntry.bill_id == bill_id
                    )
                )
            )
            assert paid > 0
            r = request_refund(s, SITE, p.id, paid, "多收退回", "fin", bill_id=bill_id, now=at(d))
            decide_refund(s, SITE, r.id, True, "mgr", now=at(d, 11))
            bill = s.get(Bill, bill_id)
        self.books.refund(self.ref_of(bill), paid, d)
        self.refunded = True

    def move_ins(self, month: Month) -> None:
        for room in self.rng.sample(sorted(self.vacant), min(len(self.vacant), 30)):
            self.vacant.discard(room)
            day = date(month.year, month.month, 25)
            with Session(self.engine, expire_on_commit=False) as s:
                registry.move_in(
                    s,
                    room,
                    registry.PersonIn(f"新业主{room}", "13700000000"),
                    Role.OWNER,
                    day,
                    "mgr",
                    KEY,
                )
                s.get(Premises, room).state = "occupied"
                s.commit()
            self.books.rooms[room].vacant = False

    def sale(self, d: date) -> None:
        room = self.owned_from_start[0]
        with Session(self.engine, expire_on_commit=False) as s:
            registry.sale(s, room, d, registry.PersonIn("买家", "13600000000"), "mgr", KEY)
        self.sold = room


@pytest.mark.timeout(900)
def test_a_year_of_a_project_agrees_with_an_independent_bookkeeper_to_the_fen(engine):
    """3,000 rooms on PostgreSQL (the database of a group's hub), 1,000 on SQLite."""
    unregister, uninstall = register_payments(), install_area_adjustments()
    try:
        year = Year(engine, random.Random(2026))
        for m in range(1, 13):
            year.month(m)
    finally:
        unregister()
        uninstall()
    books = year.books
    with Session(engine, expire_on_commit=False) as s:
        assert cache_drift(s, SITE) == []
        site = totals(s, SITE)
        assert site.balanced()
        # every room's statement
        for room in books.rooms.values():
            t = totals(s, SITE, room.id)
            expected = (
                room.billed,
                room.paid,
                room.waived,
                books.outstanding(room.id),
                room.prepaid,
            )
            assert (t.billed, t.paid, t.waived, t.outstanding, t.prepaid) == expected, room.id
        # every bill line, and what is open of it
        got = Counter(
            (b.premises_id, b.item_id, b.kind, b.period_start, b.amount_fen, b.open_fen)
            for b in s.exec(select(Bill).where(Bill.site_id == SITE))
        )
        want = Counter((b.premises, b.item, b.kind, b.start, b.amount, b.open) for b in books.bills)
        assert got == want
        # each cashier's takings of each day, by method (the daily close)
        closes = Counter()
        for p in s.exec(select(Payment).where(Payment.site_id == SITE)):
            closes[(p.paid_on, p.cashier, p.method)] += p.amount_fen
        ref = Counter()
        for day, cashier, method, fen in books.payments:
            ref[(day, cashier, method)] += fen
        assert closes == ref
        # the year as a whole
        assert site.billed == sum(r.billed for r in books.rooms.values())
        kinds = Counter(b.kind for b in books.bills)
        numbers = sorted(
            p.receipt_no for p in s.exec(select(Payment).where(Payment.site_id == SITE))
        )
    assert numbers == [f"2026-{i:06d}" for i in range(1, len(numbers) + 1)]
    scale = year.rooms / 3000
    assert kinds["charge"] > 40000 * scale and kinds["late_fee"] > 1000 * scale
    assert kinds["adjustment"] > 0 and year.refunded and len(books.payments) > 1000 * scale
    assert any(r.prepaid for r in books.rooms.values())
