"""An independent bookkeeper for the simulated year: the documented rules of billing
(docs/BILLING.md) done again the slow, obvious way, with no code of hub/billing.

Bills are computed day by day; cycles from the calendar; payments spread oldest first (ties
in the order bills were issued); prepaid balances pay whole new bills; late fees summed day
by day and rounded once cumulatively; credit notes send what was paid of them to the
prepaid balance. The simulation feeds it the same inputs as the hub, and the test compares.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction


def dim(d: date) -> int:
    return calendar.monthrange(d.year, d.month)[1]


def next_month(d: date) -> date:
    return date(d.year + d.month // 12, d.month % 12 + 1, 1)


def half_up(x: Fraction) -> int:
    """Rounded half away from zero, through Decimal (not the hub's integer arithmetic)."""
    q = (Decimal(x.numerator) / Decimal(x.denominator)).quantize(Decimal(1), ROUND_HALF_UP)
    return int(q)


@dataclass
class Item:
    id: int
    kind: str  # area | fixed
    cycle: int
    prepaid: bool
    advance: int
    due_days: int
    prices: list[tuple[date, Fraction]]  # fen per m² per month, or per cycle
    vacant_pct: int = 0
    late_rate: Fraction = Fraction(0)
    late_grace: int = 0
    late_cap: Fraction | None = None

    def price(self, d: date) -> Fraction:
        return [p for since, p in self.prices if since <= d][-1]


@dataclass
class RefBill:
    seq: int
    premises: int
    item: int
    kind: str  # charge | adjustment | late_fee
    start: date
    end: date
    amount: int
    due: date
    parent: int | None = None  # seq of the parent
    moves: list[tuple[date, int]] = field(default_factory=list)  # (booked on, fen)

    @property
    def open(self) -> int:
        return sum(f for _, f in self.moves)


@dataclass
class Room:
    id: int
    areas: list[tuple[date, Fraction]]  # (from, built area m²)
    start: dict[int, date]  # item -> billing start
    vacant: bool = False
    prepaid: int = 0
    billed: int = 0
    paid: int = 0
    waived: int = 0

    def area(self, d: date) -> Fraction:
        older = [a for since, a in self.areas if since <= d]
        return older[-1] if older else self.areas[0][1]


class Books:
    def __init__(self, items: list[Item], rooms: list[Room]):
        self.items = {i.id: i for i in items}
        self.rooms = {r.id: r for r in rooms}
        self.bills: list[RefBill] = []
        self.of_room: dict[int, list[RefBill]] = {r.id: [] for r in rooms}
        self.children: dict[tuple[int, str], int] = {}  # (parent seq, kind) -> amount
        self.billed_keys: set[tuple[int, int, date]] = set()
        self.payments: list[tuple[date, str, str, int]] = []  # (day, cashier, method, fen)
        self._amounts: dict[tuple[object, ...], int] = {}

    # -- amounts -----------------------------------------------------------------------------
    def amount(self, room: Room, item: Item, start: date, end: date) -> int:
        # rooms of one area history cost the same: computed once per (areas, item, period)
        key = (tuple(room.areas) if item.kind == "area" else (), item.id, start, end)
        if key not in self._amounts:
            self._amounts[key] = self._day_by_day(room, item, start, end)
        return self._amounts[key]

    def _day_by_day(self, room: Room, item: Item, start: date, end: date) -> int:
        total, d = Fraction(0), start
        while d < end:
            if item.kind == "area":
                rate = room.area(d) * item.price(d)
            else:
                rate = item.price(d) / item.cycle
            total += rate / dim(d)
            d += timedelta(days=1)
        return half_up(total)

    def periods(self, item: Item, start: date, until: date) -> list[tuple[date, date]]:
        out, s = [], start
        while s < until:
            e = date(s.year, s.month, 1)
            while True:
                e = next_month(e)
                if (e.month - 1) % item.cycle == 0:
                    break
            out.append((s, e))
            s = e
        return out

    def issued(self, item: Item, start: date, end: date) -> date:
        return start - timedelta(days=item.advance) if item.prepaid else end

    def due(self, item: Item, start: date, end: date) -> date:
        return (
            start + timedelta(days=item.due_days)
            if item.prepaid
            else end + timedelta(days=item.due_days)
        )

    def _new(self, **kw) -> RefBill:
        b = RefBill(seq=len(self.bills), **kw)
        self.bills.append(b)
        self.of_room[b.premises].append(b)
        if b.parent is not None:
            key = (b.parent, b.kind)
            self.children[key] = self.children.get(key, 0) + b.amount
        return b

    # -- what the hub does ---------------------------------------------------------------------
    def run(self, month_last: date, on: date) -> None:
        """A bill run for the month ending ``month_last``, booked on ``on``."""
        for room in sorted(self.rooms.values(), key=lambda r: r.id):
            fresh = []
            for item in sorted(self.items.values(), key=lambda i: i.id):
                if item.id not in room.start:
                    continue
                horizon = next_month(month_last) + timedelta(days=item.advance + 1)
                for s, e in self.periods(item, room.start[item.id], horizon):
                    if (room.id, item.id, s) in self.billed_keys or self.issued(
                        item, s, e
                    ) > month_last:
                        continue
                    self.billed_keys.add((room.id, item.id, s))
                    fen = self.amount(room, item, s, e)
                    b = self._new(
                        premises=room.id,
                        item=item.id,
                        kind="charge",
                        start=s,
                        end=e,
                        amount=fen,
                        due=self.due(item, s, e),
                    )
                    b.moves.append((on, fen))
                    room.billed += fen
                    if item.vacant_pct and room.vacant and fen > 0:
                        off = half_up(Fraction(fen) * item.vacant_pct / 100)
                        b.moves.append((on, -off))
                        room.waived += off
                    fresh.append(b)
            for b in sorted(fresh, key=lambda b: (b.due, b.seq)):
                if 0 < b.open <= room.prepaid:
                    room.prepaid -= b.open
                    room.paid += b.open
                    b.moves.append((on, -b.open))

    def open_bills(self, room: int) -> list[RefBill]:
        return sorted((b for b in self.of_room[room] if b.open > 0), key=lambda b: (b.due, b.seq))

    def pay(
        self,
        room_id: int,
        fen: int,
        on: date,
        cashier: str,
        method: str,
        chosen: list[RefBill] | None = None,
    ) -> None:
        """Oldest first (or the chosen bills, as listed); the rest to the prepaid balance."""
        room = self.rooms[room_id]
        left = fen
        for b in chosen if chosen is not None else self.open_bills(room_id):
            take = min(left, b.open)
            if take > 0:
                b.moves.append((on, -take))
                left -= take
        room.paid += fen - left
        room.prepaid += left
        self.payments.append((on, cashier, method, fen))

    def waive(self, bill: RefBill, fen: int, on: date) -> None:
        bill.moves.append((on, -fen))
        self.rooms[bill.premises].waived += fen

    def late_fees(self, through: date, on: date) -> None:
        for b in sorted(self.bills, key=lambda b: b.seq):
            item = self.items[b.item]
            if b.kind == "late_fee" or not item.late_rate or b.open <= 0 or not b.due < through:
                continue
            first = max(b.due, min(d for d, _ in b.moves)) + timedelta(days=item.late_grace + 1)
            moves = sorted(b.moves)
            total, d, owed, i = Fraction(0), first, 0, 0
            while d <= through:  # day by day: what was owed at the start of each day
                while i < len(moves) and moves[i][0] < d:
                    owed += moves[i][1]
                    i += 1
                if owed > 0:
                    total += item.late_rate * owed
                d += timedelta(days=1)
            if item.late_cap is not None:
                total = min(total, item.late_cap * b.amount)
            before = self.children.get((b.seq, "late_fee"), 0)
            more = half_up(total) - before
            if more > 0:
                fee = self._new(
                    premises=b.premises,
                    item=b.item,
                    kind="late_fee",
                    start=first,
                    end=through + timedelta(days=1),
                    amount=more,
                    due=on,
                    parent=b.seq,
                )
                fee.moves.append((on, more))
                self.rooms[b.premises].billed += more

    def area_change(self, room_id: int, since: date, area: Fraction, on: date) -> None:
        room = self.rooms[room_id]
        room.areas = sorted([*room.areas, (since, area)])
        for b in [b for b in self.of_room[room_id] if b.kind == "charge"]:
            item = self.items[b.item]
            if item.kind != "area" or b.end <= since:
                continue
            before = b.amount + self.children.get((b.seq, "adjustment"), 0)
            diff = self.amount(room, item, b.start, b.end) - before
            if diff > 0:
                adj = self._new(
                    premises=room_id,
                    item=b.item,
                    kind="adjustment",
                    start=b.start,
                    end=b.end,
                    amount=diff,
                    due=on + timedelta(days=item.due_days),
                    parent=b.seq,
                )
                adj.moves.append((on, diff))
                room.billed += diff
            elif diff < 0:
                self._new(
                    premises=room_id,
                    item=b.item,
                    kind="adjustment",
                    start=b.start,
                    end=b.end,
                    amount=diff,
                    due=on,
                    parent=b.seq,
                )
                off_open = min(-diff, b.open)
                back = -diff - off_open
                b.moves.append((on, diff + back))
                room.billed += diff
                room.paid -= back
                room.prepaid += back

    def refund(self, bill: RefBill, fen: int, on: date) -> None:
        """A credit note with its refund: less billed and less paid, the same owed."""
        room = self.rooms[bill.premises]
        room.billed -= fen
        room.paid -= fen

    def outstanding(self, room_id: int) -> int:
        return sum(b.open for b in self.of_room[room_id])
