"""Billing reports, read straight from the ledger (never a table rebuilt behind the reader).

Every amount is integer fen, summed from ``ledger_entry`` rows of the ``due`` account:

* billed = Σ ``bill`` + ``credit``; received = −Σ (``paid`` + ``refund`` + ``unpaid``),
  which counts prepaid deductions as received and nets voids and refunds out; waived =
  −Σ ``waived``; outstanding = Σ of every entry. So billed = received + waived + outstanding
  for every row of every report, as for :class:`hub.billing.ledger.Totals`.
* "as of" a day D means: the entries with ``booked_on`` ≤ D (``booked_on`` is the Shanghai
  date the entry was booked). A report as of a past day is what it was at the end of that
  day, whatever was booked since. A bill exists as of D once its ``bill`` entry is booked.

Which bills may be open at a day is asked of ``Bill.open_fen`` (the cache, kept equal to the
entries in the same transaction; :func:`hub.billing.ledger.cache_drift` checks it): a bill
open at the end of D is open now or has an entry booked after D. That keeps the aging and
the arrears from reading the site's whole history; the sums themselves are the entries'.

Daily closes and HQ's live collections read ``payment`` rows (a payment is in them the
moment it commits) and check them against their entries.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from fractions import Fraction
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, union
from sqlmodel import Session, col, select

from hub.billing.errors import BillingError
from hub.billing.models import Account, Bill, Entry, FeeItem, LedgerEntry, Method, Payment
from hub.billing.periods import Month
from hub.property.models import Building, Premises

log = logging.getLogger(__name__)

_BILLED = (Entry.BILL.value, Entry.CREDIT.value)
_RECEIVED = (Entry.PAID.value, Entry.REFUND.value, Entry.UNPAID.value)
_WAIVED = (Entry.WAIVED.value,)
NO_BUILDING = "—"  # parking spaces and premises outside any building


def rate_pct(num: int, den: int) -> str | None:
    """``num / den`` as a percent with 2 decimals, rounded half away from zero from the
    exact ratio ("87.50"); None when there is nothing to collect (den 0)."""
    if den == 0:
        return None
    r = Fraction(num * 100, den)
    sign = "-" if r < 0 else ""
    q = int(abs(r) * 100 + Fraction(1, 2))
    return f"{sign}{q // 100}.{q % 100:02d}"


@dataclass(frozen=True)
class Sums:
    """Money of a set of bills, in fen: billed = received + waived + outstanding."""

    bills: int = 0
    billed: int = 0
    received: int = 0
    waived: int = 0
    outstanding: int = 0

    def __add__(self, o: Sums) -> Sums:
        return Sums(
            self.bills + o.bills,
            self.billed + o.billed,
            self.received + o.received,
            self.waived + o.waived,
            self.outstanding + o.outstanding,
        )

    @property
    def rate(self) -> str | None:
        """收费率: received / (billed − waived), in percent."""
        return rate_pct(self.received, self.billed - self.waived)


@dataclass(frozen=True)
class Arrears:
    """Arrears brought forward (往期欠费): bills of earlier months open at the month's start."""

    bills: int = 0
    opening: int = 0  # open at 00:00 of the month's first day
    received: int = 0  # paid from the first day to the as-of day
    waived: int = 0
    outstanding: int = 0  # still open as of the day

    def __add__(self, o: Arrears) -> Arrears:
        return Arrears(
            self.bills + o.bills,
            self.opening + o.opening,
            self.received + o.received,
            self.waived + o.waived,
            self.outstanding + o.outstanding,
        )

    @property
    def rate(self) -> str | None:
        """清欠率: received / opening, in percent."""
        return rate_pct(self.received, self.opening)


@dataclass(frozen=True)
class Row:
    """One line of a report: a site, building, fee item or category, and its sums."""

    key: str  # building code, item code or category; "" for the site
    name: str
    sums: Sums = Sums()
    arrears: Arrears = Arrears()


@dataclass(frozen=True)
class Collection:
    site: str
    month: str
    as_of: date
    total: Row
    buildings: list[Row]
    items: list[Row]


def _sum(kinds: Sequence[str] | None, *when: ColumnElement[bool]) -> Any:
    cond: list[ColumnElement[bool]] = list(when)
    if kinds is not None:
        cond.append(col(LedgerEntry.kind).in_(kinds))
    amount = col(LedgerEntry.amount_fen)
    expr = case((and_(*cond), amount), else_=0) if cond else amount
    return func.coalesce(func.sum(expr), 0)


class _Names:
    """Codes and names of a site's buildings and fee items, read once per report."""

    def __init__(self, s: Session, site: str) -> None:
        self.buildings = {
            b.id: (b.code, b.name or b.code)
            for b in s.exec(select(Building).where(Building.site_id == site))
        }
        self.items = {i.id: i for i in s.exec(select(FeeItem).where(FeeItem.site_id == site))}

    def building(self, bid: int | None) -> tuple[str, str]:
        return self.buildings.get(bid, (NO_BUILDING, NO_BUILDING))

    def item(self, iid: int) -> tuple[str, str, str]:
        i = self.items.get(iid)
        return (i.code, i.name, i.category) if i else (str(iid), str(iid), "")


def _check_day(month: Month, as_of: date) -> None:
    if as_of < month.first:
        raise BillingError(f"a report of {month} is as of its first day or later, not {as_of}")


def _month_sums(
    s: Session, site: str, month: Month, as_of: date
) -> dict[tuple[int, int | None], Sums]:
    """The bills of ``month`` (all kinds) as of ``as_of``, by (fee item, building)."""
    rows = s.exec(
        select(  # type: ignore[call-overload]
            Bill.item_id,
            Premises.building_id,
            func.count(func.distinct(Bill.id)),
            _sum(_BILLED),
            _sum(_RECEIVED),
            _sum(_WAIVED),
            _sum(None),
        )
        .select_from(LedgerEntry)
        .join(Bill, col(Bill.id) == col(LedgerEntry.bill_id))
        .join(Premises, col(Premises.id) == col(Bill.premises_id))
        .where(
            Bill.site_id == site,
            Bill.month == str(month),
            LedgerEntry.account == Account.DUE,
            col(LedgerEntry.booked_on) <= as_of,
        )
        .group_by(col(Bill.item_id), col(Premises.building_id))
    ).all()
    return {
        (i, b): Sums(int(n), int(billed), -int(got), -int(w), int(out))
        for i, b, n, billed, got, w, out in rows
    }


def _maybe_open(site: str, after: date) -> Any:
    """The ids of bills of ``site`` that may have been open at the end of ``after``: open
    now, or with an entry booked since (the cache narrows, the entries decide). A UNION, so
    each half uses its index (bill: open ones; ledger_entry: site and day)."""
    return union(
        select(Bill.id).where(Bill.site_id == site, col(Bill.open_fen) > 0),
        select(LedgerEntry.bill_id).where(
            LedgerEntry.site_id == site,
            LedgerEntry.account == Account.DUE,
            col(LedgerEntry.booked_on) > after,
        ),
    )


def _arrears(
    s: Session, site: str, month: Month, as_of: date
) -> dict[tuple[int, int | None], Arrears]:
    """Bills of months before ``month`` open at its first day, by (fee item, building)."""
    first = month.first
    before = col(LedgerEntry.booked_on) < first
    during = col(LedgerEntry.booked_on) >= first
    opening = _sum(None, before)
    per_bill = (
        select(  # type: ignore[call-overload]
            LedgerEntry.bill_id,
            opening.label("opening"),
            _sum(_RECEIVED, during).label("received"),
            _sum(_WAIVED, during).label("waived"),
            _sum(None).label("closing"),
        )
        .where(
            LedgerEntry.site_id == site,
            LedgerEntry.account == Account.DUE,
            col(LedgerEntry.booked_on) <= as_of,
            col(LedgerEntry.bill_id).in_(_maybe_open(site, first - timedelta(days=1))),
        )
        .group_by(col(LedgerEntry.bill_id))
        .having(opening > 0)
        .subquery()
    )
    rows = s.exec(
        select(  # type: ignore[call-overload]
            Bill.item_id,
            Premises.building_id,
            func.count(),
            func.sum(per_bill.c.opening),
            func.sum(per_bill.c.received),
            func.sum(per_bill.c.waived),
            func.sum(per_bill.c.closing),
        )
        .select_from(per_bill)
        .join(Bill, col(Bill.id) == per_bill.c.bill_id)
        .join(Premises, col(Premises.id) == col(Bill.premises_id))
        .where(col(Bill.month) < str(month))
        .group_by(col(Bill.item_id), col(Premises.building_id))
    ).all()
    return {
        (i, b): Arrears(int(n), int(o), -int(got), -int(w), int(c))
        for i, b, n, o, got, w, c in rows
    }


def _roll(
    keys: Iterable[tuple[int, int | None]],
    sums: dict[tuple[int, int | None], Sums],
    arrears: dict[tuple[int, int | None], Arrears],
    by: int,
) -> dict[Any, tuple[Sums, Arrears]]:
    out: dict[Any, tuple[Sums, Arrears]] = {}
    for k in keys:
        a, b = out.get(k[by], (Sums(), Arrears()))
        out[k[by]] = (a + sums.get(k, Sums()), b + arrears.get(k, Arrears()))
    return out


def collection(s: Session, site: str, month: Month, as_of: date) -> Collection:
    """收费率 of ``month`` at ``site`` as of the end of ``as_of`` (Shanghai date):

    * the month's bills are those with ``Bill.month == month`` (charges, adjustments, late
      fees) whose ``bill`` entry is booked on or before ``as_of``; billed, received, waived
      and outstanding sum their entries booked on or before ``as_of`` (so a bill paid before
      its month counts, and a payment after ``as_of`` does not); rate = received /
      (billed − waived);
    * arrears brought forward are the bills of earlier months with something open at
      00:00 of the month's first day (entries booked before it); received and waived are
      their entries booked from the first day through ``as_of``; rate = received / opening.

    Per site, per building (``Premises.building_id``) and per fee item. BillingError if
    ``as_of`` is before the month's first day."""
    _check_day(month, as_of)
    sums = _month_sums(s, site, month, as_of)
    arrears = _arrears(s, site, month, as_of)
    names = _Names(s, site)
    keys = sorted(set(sums) | set(arrears), key=lambda k: (k[0], k[1] or 0))
    total = Row(
        "",
        site,
        sum(sums.values(), Sums()),
        sum(arrears.values(), Arrears()),
    )
    buildings = [
        Row(*names.building(b), *v)
        for b, v in sorted(
            _roll(keys, sums, arrears, 1).items(), key=lambda x: names.building(x[0])
        )
    ]
    items = [
        Row(names.item(i)[0], names.item(i)[1], *v)
        for i, v in sorted(_roll(keys, sums, arrears, 0).items(), key=lambda x: names.item(x[0]))
    ]
    return Collection(site, str(month), as_of, total, buildings, items)


# -- aging ------------------------------------------------------------------------------------
BUCKETS = ("not_due", "d0_30", "d31_90", "d91_180", "d181_365", "over_365")
BUCKET_NAMES = ("未到期", "0–30天", "31–90天", "91–180天", "181–365天", "365天以上")


def bucket(days_past_due: int) -> int:
    """The index in BUCKETS of a bill ``days_past_due`` days past its due date (negative:
    not yet due; 0, the due day itself, is in 0–30)."""
    for i, top in enumerate((-1, 30, 90, 180, 365)):
        if days_past_due <= top:
            return i
    return 5


@dataclass(frozen=True)
class AgingRow:
    key: str  # premises or building code; "" for the site
    name: str
    building: str
    buckets: tuple[int, ...]  # fen, in the order of BUCKETS

    @property
    def total(self) -> int:
        return sum(self.buckets)


@dataclass(frozen=True)
class Aging:
    site: str
    as_of: date
    total: AgingRow
    buildings: list[AgingRow]
    premises: list[AgingRow]


def _add(a: tuple[int, ...], i: int, fen: int) -> tuple[int, ...]:
    return tuple(v + fen if j == i else v for j, v in enumerate(a))


def aging(s: Session, site: str, as_of: date) -> Aging:
    """账龄 of what is outstanding at the end of ``as_of``: each bill's open amount (its due
    entries booked on or before ``as_of``) in the bucket of (``as_of`` − ``Bill.due_on``)
    days; per site, per building and per premises (only premises owing something)."""
    open_ = _sum(None)
    per_bill = (
        select(LedgerEntry.bill_id, open_.label("open"))
        .where(
            LedgerEntry.site_id == site,
            LedgerEntry.account == Account.DUE,
            col(LedgerEntry.booked_on) <= as_of,
            col(LedgerEntry.bill_id).in_(_maybe_open(site, as_of)),
        )
        .group_by(col(LedgerEntry.bill_id))
        .having(open_ > 0)
        .subquery()
    )
    rows = s.exec(
        select(  # type: ignore[call-overload]
            Premises.id, Premises.code, Premises.building_id, Bill.due_on, per_bill.c.open
        )
        .select_from(per_bill)
        .join(Bill, col(Bill.id) == per_bill.c.bill_id)
        .join(Premises, col(Premises.id) == col(Bill.premises_id))
    ).all()
    names = _Names(s, site)
    zero = (0,) * len(BUCKETS)
    places: dict[int, tuple[str, int | None, tuple[int, ...]]] = {}
    for pid, code, bid, due_on, fen in rows:
        i = bucket((as_of - due_on).days)
        c, b, v = places.get(pid, (code, bid, zero))
        places[pid] = (c, b, _add(v, i, int(fen)))
    per_building: dict[int | None, tuple[int, ...]] = {}
    for _, bid, v in places.values():
        per_building[bid] = tuple(map(sum, zip(per_building.get(bid, zero), v, strict=True)))
    premises = sorted(
        (AgingRow(c, c, names.building(b)[0], v) for c, b, v in places.values()),
        key=lambda r: r.key,
    )
    buildings = sorted(
        (AgingRow(*names.building(b), names.building(b)[0], v) for b, v in per_building.items()),
        key=lambda r: r.key,
    )
    total = tuple(map(sum, zip(zero, *(r.buckets for r in buildings), strict=True)))
    return Aging(site, as_of, AgingRow("", site, "", total), buildings, premises)


# -- fee detail and summary -------------------------------------------------------------------
@dataclass(frozen=True)
class DetailLine:
    """One bill line (收费明细); ``period_last`` is the period's last day (inclusive)."""

    bill_id: int
    premises: str
    building: str
    item: str
    item_name: str
    category: str
    kind: str
    period_start: date
    period_last: date
    due_on: date
    billed: int
    received: int
    waived: int
    outstanding: int


def detail(s: Session, site: str, month: Month, as_of: date) -> list[DetailLine]:
    """Every bill of ``month`` booked on or before ``as_of``, with its entries to that day,
    by premises code, fee item and period."""
    _check_day(month, as_of)
    rows = s.exec(
        select(  # type: ignore[call-overload]
            Bill,
            Premises.code,
            Premises.building_id,
            _sum(_BILLED),
            _sum(_RECEIVED),
            _sum(_WAIVED),
            _sum(None),
        )
        .select_from(LedgerEntry)
        .join(Bill, col(Bill.id) == col(LedgerEntry.bill_id))
        .join(Premises, col(Premises.id) == col(Bill.premises_id))
        .where(
            Bill.site_id == site,
            Bill.month == str(month),
            LedgerEntry.account == Account.DUE,
            col(LedgerEntry.booked_on) <= as_of,
        )
        .group_by(col(Bill.id), col(Premises.code), col(Premises.building_id))
    ).all()
    names = _Names(s, site)
    out = []
    for b, code, bid, billed, got, waived, left in rows:
        item = names.item(b.item_id)
        out.append(
            DetailLine(
                b.id,
                code,
                names.building(bid)[0],
                item[0],
                item[1],
                b.category,
                b.kind,
                b.period_start,
                b.period_end - timedelta(days=1),
                b.due_on,
                int(billed),
                -int(got),
                -int(waived),
                int(left),
            )
        )
    out.sort(key=lambda x: (x.premises, x.item, x.period_start, x.bill_id))
    return out


@dataclass(frozen=True)
class Summary:
    site: str
    month: str
    as_of: date
    total: Row
    items: list[Row]  # key: item code
    categories: list[Row]  # key: category


def summary(s: Session, site: str, month: Month, as_of: date) -> Summary:
    """收费汇总 of ``month`` as of ``as_of`` (as :func:`collection` counts its bills): per
    fee item and per category (the bill's category)."""
    _check_day(month, as_of)
    sums = _month_sums(s, site, month, as_of)
    names = _Names(s, site)
    by_item: dict[int, Sums] = {}
    for (i, _), v in sums.items():
        by_item[i] = by_item.get(i, Sums()) + v
    items = sorted(
        (Row(names.item(i)[0], names.item(i)[1], v) for i, v in by_item.items()),
        key=lambda r: r.key,
    )
    by_cat: dict[str, Sums] = {}
    for i, v in by_item.items():
        c = names.item(i)[2]
        by_cat[c] = by_cat.get(c, Sums()) + v
    categories = [Row(c, c, v) for c, v in sorted(by_cat.items())]
    return Summary(
        site, str(month), as_of, Row("", site, sum(by_item.values(), Sums())), items, categories
    )


# -- a cashier's daily close ------------------------------------------------------------------
@dataclass(frozen=True)
class MethodTotal:
    method: str
    count: int
    fen: int


@dataclass(frozen=True)
class ClosePayment:
    receipt_no: str
    method: str
    amount_fen: int
    premises_id: int
    paid_at: datetime
    voided_at: datetime | None
    voided_by: str | None
    void_reason: str
    entries_fen: int  # its paid + deposit entries, whatever happened since


@dataclass(frozen=True)
class DailyClose:
    """日结 of one cashier's day: counted payments by method; voided ones apart."""

    site: str
    day: date
    cashier: str
    methods: list[MethodTotal]
    count: int
    total_fen: int
    voided: list[ClosePayment]
    payments: list[ClosePayment]  # every payment of the day, voided ones too
    first_receipt: str | None
    last_receipt: str | None
    receipts: int
    gaps: list[str]  # numbers between first and last that no payment of the site has
    others: list[str]  # numbers between them taken by other cashiers (not gaps)
    entries_fen: int  # Σ paid + deposit entries of the counted payments
    mismatches: list[str] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return not self.mismatches and self.entries_fen == self.total_fen

    @property
    def gap_free(self) -> bool:
        return not self.gaps


def _seq(receipt: str) -> tuple[int, int] | None:
    year, _, n = receipt.partition("-")
    return (int(year), int(n)) if year.isdigit() and n.isdigit() else None


def daily_close(s: Session, site: str, day: date, cashier: str) -> DailyClose:
    """The close of ``cashier``'s payments at ``site`` paid on ``day`` (``Payment.paid_on``,
    Shanghai). A payment voided (at any time up to now) is listed apart and not counted.
    Receipts: first, last, how many, and every number between first and last that no
    payment of the site holds (a gap: flagged). Each counted payment's amount must equal
    its ``paid`` + ``deposit`` entries; each difference is a mismatch (logged at error)."""
    pays = list(
        s.exec(
            select(Payment)
            .where(Payment.site_id == site, Payment.paid_on == day, Payment.cashier == cashier)
            .order_by(col(Payment.receipt_no))
        ).all()
    )
    ids = [p.id for p in pays]
    # what each payment booked: its paid entries (negative, on the due account) and its
    # deposit (positive, on the prepaid account); the reversals of a void are not in it
    money = case(
        (
            and_(col(LedgerEntry.account) == Account.DUE, col(LedgerEntry.kind) == Entry.PAID),
            -col(LedgerEntry.amount_fen),
        ),
        (
            and_(
                col(LedgerEntry.account) == Account.PREPAID,
                col(LedgerEntry.kind) == Entry.DEPOSIT,
            ),
            col(LedgerEntry.amount_fen),
        ),
        else_=0,
    )
    booked = {
        pid: int(v)
        for pid, v in s.exec(
            select(LedgerEntry.payment_id, func.sum(money))
            .where(col(LedgerEntry.payment_id).in_(ids))
            .group_by(col(LedgerEntry.payment_id))
        ).all()
    }
    listed = [
        ClosePayment(
            p.receipt_no,
            p.method,
            p.amount_fen,
            p.premises_id,
            p.paid_at,
            p.voided_at,
            p.voided_by,
            p.void_reason,
            booked.get(p.id, 0),
        )
        for p in pays
    ]
    counted = [x for x in listed if x.voided_at is None]
    methods = []
    for m in [*(m.value for m in Method), *sorted({x.method for x in counted} - set(Method))]:
        of_m = [x for x in counted if x.method == m]
        if of_m:
            methods.append(MethodTotal(m, len(of_m), sum(x.amount_fen for x in of_m)))
    mismatches = [
        f"receipt {x.receipt_no}: paid {x.amount_fen} fen, entries {x.entries_fen} fen"
        for x in counted
        if x.entries_fen != x.amount_fen
    ]
    numbers = sorted(q for p in pays if (q := _seq(p.receipt_no)) is not None)
    gaps: list[str] = []
    others: list[str] = []
    if numbers:  # one day: one year of numbers
        year, lo, hi = numbers[0][0], numbers[0][1], numbers[-1][1]
        mine = {n for _, n in numbers}
        taken = set()
        for r in s.exec(
            select(Payment.receipt_no).where(
                Payment.site_id == site,
                col(Payment.receipt_no) >= f"{year}-{lo:06d}",
                col(Payment.receipt_no) <= f"{year}-{hi:06d}",
            )
        ).all():
            q = _seq(r)
            if q is not None and q[0] == year:
                taken.add(q[1])
        for n in range(lo, hi + 1):
            if n not in taken:
                gaps.append(f"{year}-{n:06d}")
            elif n not in mine:
                others.append(f"{year}-{n:06d}")
    first, last = (
        (f"{y}-{n:06d}" for y, n in (numbers[0], numbers[-1])) if numbers else (None, None)
    )
    total = sum(x.amount_fen for x in counted)
    entries = sum(x.entries_fen for x in counted)
    if entries != total and not mismatches:
        mismatches.append(f"payments {total} fen, entries {entries} fen")
    if mismatches or gaps:
        log.error(
            "daily close %s %s %s: mismatches %s, receipt gaps %s",
            site,
            day,
            cashier,
            mismatches,
            gaps,
        )
    return DailyClose(
        site,
        day,
        cashier,
        methods,
        len(counted),
        total,
        [x for x in listed if x.voided_at is not None],
        listed,
        first,
        last,
        len(numbers),
        gaps,
        others,
        entries,
        mismatches,
    )


# -- HQ's live collections --------------------------------------------------------------------
@dataclass(frozen=True)
class SiteToday:
    site: str
    count: int
    total_fen: int
    methods: list[MethodTotal]
    voided: int  # payments of today voided since (not counted)


@dataclass(frozen=True)
class Live:
    day: date
    sites: list[SiteToday]
    count: int
    total_fen: int
    methods: list[MethodTotal]
    latest: list[Payment]


def live(s: Session, day: date, sites: Sequence[str] | None, latest: int = 20) -> Live:
    """Payments paid on ``day`` (Shanghai) at ``sites`` (None: every site), straight from
    the payment table: per site and method (count, fen) without voided ones, the grand
    total, and the ``latest`` payments of the day (voided ones too, they say so)."""
    where: list[ColumnElement[bool]] = [col(Payment.paid_on) == day]
    if sites is not None:
        where.append(col(Payment.site_id).in_(list(sites)))
    rows = s.exec(
        select(  # type: ignore[call-overload]
            Payment.site_id,
            Payment.method,
            col(Payment.voided_at).is_(None),
            func.count(),
            func.sum(Payment.amount_fen),
        )
        .where(*where)
        .group_by(col(Payment.site_id), col(Payment.method), col(Payment.voided_at).is_(None))
    ).all()
    per: dict[str, dict[str, MethodTotal]] = {}
    voided: dict[str, int] = {}
    for site, method, counted, n, fen in rows:
        if not counted:
            voided[site] = voided.get(site, 0) + int(n)
            continue
        per.setdefault(site, {})[method] = MethodTotal(method, int(n), int(fen))
    order = [m.value for m in Method]

    def methods(d: dict[str, MethodTotal]) -> list[MethodTotal]:
        return sorted(d.values(), key=lambda m: order.index(m.method) if m.method in order else 9)

    out = []
    everything: dict[str, MethodTotal] = {}
    for site in sorted(set(per) | set(voided)):
        ms = methods(per.get(site, {}))
        for m in ms:
            e = everything.get(m.method, MethodTotal(m.method, 0, 0))
            everything[m.method] = MethodTotal(m.method, e.count + m.count, e.fen + m.fen)
        out.append(
            SiteToday(
                site, sum(m.count for m in ms), sum(m.fen for m in ms), ms, voided.get(site, 0)
            )
        )
    feed = list(
        s.exec(
            select(Payment)
            .where(*where)
            .order_by(col(Payment.paid_at).desc(), col(Payment.id).desc())
            .limit(latest)
        ).all()
    )
    return Live(
        day,
        out,
        sum(x.count for x in out),
        sum(x.total_fen for x in out),
        methods(everything),
        feed,
    )
