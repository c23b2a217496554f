"""Vouchers (记账凭证) for finance software (金蝶, 用友): the ledger of a site over some days
as double entries on the accounts finance keeps, by a configurable chart.

Each ledger entry is one leg; the other is known from its kind (see the table in
docs/BILLING.md, "Reports"): a bill is receivable against revenue, a payment is money
(cash or bank by the payment's method) against receivable or the prepaid balance, a waiver
is the waiver account against receivable, and so on. A prepaid ``deduct`` entry is the twin
of the ``paid`` entry without a payment that it came with (a bill paid from the prepaid
balance) and is not booked twice. One voucher per day and business (应收, 减免, 收款,
预存抵扣, 作废, 退款), one line per account; each balances, and :func:`vouchers` asserts it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from sqlalchemy import func
from sqlmodel import Session, col, select

from hub.billing.errors import BillingError
from hub.billing.models import Account, Entry, LedgerEntry, Payment
from hub.settings import DEFAULT_ACCOUNTS

# the businesses, in the order their vouchers are numbered within a day
BUSINESSES = {
    "bills": "应收",
    "waivers": "减免",
    "receipts": "收款",
    "deductions": "预存抵扣",
    "voids": "作废冲回",
    "refunds": "退款",
}


@dataclass(frozen=True)
class VoucherLine:
    day: date
    voucher_no: str  # YYYYMMDD-NN: the same whatever range is exported
    summary: str
    account: str
    debit_fen: int
    credit_fen: int


@dataclass(frozen=True)
class Voucher:
    day: date
    voucher_no: str
    business: str
    summary: str
    lines: list[VoucherLine]

    @property
    def debit_fen(self) -> int:
        return sum(x.debit_fen for x in self.lines)

    @property
    def credit_fen(self) -> int:
        return sum(x.credit_fen for x in self.lines)


class Chart:
    """Roles (``cash``, ``receivable``, ``revenue.property`` ...) to account codes."""

    def __init__(self, codes: Mapping[str, str]) -> None:
        self.codes = {**DEFAULT_ACCOUNTS, **codes}

    def money(self, method: str | None) -> str:
        return self.codes.get(method or "money") or self.codes["money"]

    def revenue(self, category: str) -> str:
        return self.codes.get(f"revenue.{category}") or self.codes["revenue.other"]

    def waiver(self, category: str) -> str:
        return self.codes["waiver"] or self.revenue(category)


def _legs(
    chart: Chart, account: str, kind: str, category: str, method: str | None, fen: int
) -> tuple[str, str, str, int] | None:
    """(business, debit account, credit account, fen) of a sum of entries; None for a
    prepaid deduction's twin."""
    due, held = chart.codes["receivable"], chart.codes["prepaid"]
    if account == Account.DUE:
        match kind:
            case Entry.BILL:
                return "bills", due, chart.revenue(category), fen
            case Entry.WAIVED:
                return "waivers", chart.waiver(category), due, -fen
            case Entry.PAID if method is None:
                return "deductions", held, due, -fen
            case Entry.PAID:
                return "receipts", chart.money(method), due, -fen
            case Entry.UNPAID:
                return "voids", due, chart.money(method), fen
            case Entry.CREDIT:
                return "refunds", chart.revenue(category), due, -fen
            case Entry.REFUND:
                return "refunds", due, chart.money(method), fen
    elif account == Account.PREPAID:
        match kind:
            case Entry.DEPOSIT:
                return "receipts", chart.money(method), held, fen
            case Entry.DEDUCT:
                return None
            case Entry.VOID:
                return "voids", held, chart.money(method), -fen
            case Entry.REFUND:
                return "refunds", held, chart.money(method), -fen
    raise BillingError(f"no voucher rule for {account}/{kind} entries: add one before exporting")


def vouchers(
    s: Session, site: str, start: date, end: date, codes: Mapping[str, str]
) -> list[Voucher]:
    """The vouchers of ``site`` for the entries booked from ``start`` through ``end``
    (``booked_on``, Shanghai), by the chart ``codes`` (settings.billing_accounts).
    BillingError for a range backwards or over a year, or an entry kind with no rule."""
    if end < start or (end - start).days > 366:
        raise BillingError("vouchers are exported for 1 to 366 days, from a day to a later one")
    chart = Chart(codes)
    rows = s.exec(
        select(  # type: ignore[call-overload]
            LedgerEntry.booked_on,
            LedgerEntry.account,
            LedgerEntry.kind,
            LedgerEntry.category,
            Payment.method,
            func.sum(LedgerEntry.amount_fen),
        )
        .select_from(LedgerEntry)
        .outerjoin(Payment, col(Payment.id) == col(LedgerEntry.payment_id))
        .where(
            LedgerEntry.site_id == site,
            col(LedgerEntry.booked_on) >= start,
            col(LedgerEntry.booked_on) <= end,
        )
        .group_by(
            col(LedgerEntry.booked_on),
            col(LedgerEntry.account),
            col(LedgerEntry.kind),
            col(LedgerEntry.category),
            col(Payment.method),
        )
    ).all()
    # per (day, business): account -> debit minus credit
    nets: dict[tuple[date, str], dict[str, int]] = {}
    for day, account, kind, category, method, fen in rows:
        legs = _legs(chart, account, kind, category, method, int(fen))
        if legs is None:
            continue
        business, debit, credit, amount = legs
        net = nets.setdefault((day, business), {})
        net[debit] = net.get(debit, 0) + amount
        net[credit] = net.get(credit, 0) - amount
    out = []
    order = list(BUSINESSES)
    for day in sorted({d for d, _ in nets}):
        n = 0
        for business in order:
            net = nets.get((day, business), {})
            if not any(net.values()):
                continue
            n += 1
            no = f"{day:%Y%m%d}-{n:02d}"
            text = f"{day.isoformat()} {site} {BUSINESSES[business]}"
            lines = [
                VoucherLine(day, no, text, code, max(v, 0), max(-v, 0))
                for code, v in sorted(net.items(), key=lambda x: (x[1] < 0, x[0]))
                if v
            ]
            v = Voucher(day, no, business, text, lines)
            # every entry went in as a debit and a credit of the same amount
            assert v.debit_fen == v.credit_fen, f"voucher {no} does not balance: {net}"
            out.append(v)
    return out
