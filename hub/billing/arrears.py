"""Arrears (欠费) and bills falling due (缴费预警), read from the ledger; the arrears list as
xlsx and reminder notices (催费单) as PDF.

A bill is in arrears on a day when its due date is before that day and the ledger's entries
for it booked on or before that day leave something owed: arrears as of a past date are
what was owed then, not what the ``open_fen`` cache says now. Bills falling due are the
other way round: those due within N days that are still owed now (a warning is about the
future; a payment made today must stop it).
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from openpyxl import Workbook
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen import canvas
from sqlalchemy import func
from sqlmodel import Session, col, select

from hub.billing.models import Account, Bill, FeeItem, LedgerEntry
from hub.billing.receipts import FONT, in_words, yuan
from hub.property.models import Building, Premises
from hub.property.people import mask_phone
from hub.property.service import payer_on


@dataclass(frozen=True, slots=True)
class OwedBill:
    """One bill still owed: what for, over which period, how much, since when."""

    bill_id: int
    premises_id: int
    item: str
    kind: str
    period_start: date
    period_end: date  # first day after
    due_on: date
    open_fen: int
    days_overdue: int  # 0 (or less: days left) for a bill not yet due

    @property
    def period(self) -> str:
        last = self.period_end - timedelta(days=1)
        return f"{self.period_start:%Y-%m-%d}至{last:%Y-%m-%d}"


@dataclass(frozen=True, slots=True)
class Payer:
    person_id: int
    name: str
    phone: str  # in full: for sending only; lists and exports show it masked

    @property
    def masked_phone(self) -> str:
        return mask_phone(self.phone)


@dataclass(frozen=True, slots=True)
class Owing:
    """What one premises owes on a day: its bills, their cycles, amount and oldest due date."""

    premises_id: int
    code: str
    building: str
    payer: Payer | None
    bills: tuple[OwedBill, ...]

    @property
    def amount_fen(self) -> int:
        return sum(b.open_fen for b in self.bills)

    @property
    def cycles(self) -> int:
        """Distinct periods owed (a quarter's property fee and its rubbish fee: one)."""
        return len({(b.period_start, b.period_end) for b in self.bills})

    @property
    def oldest_due(self) -> date:
        return min(b.due_on for b in self.bills)

    @property
    def days_overdue(self) -> int:
        return max(b.days_overdue for b in self.bills)


def _open_as_of(s: Session, site: str, on: date, bill_ids: list[int] | None) -> dict[int, int]:
    """bill id -> what its entries booked on or before ``on`` leave owed (> 0 only)."""
    q = (
        select(LedgerEntry.bill_id, func.sum(LedgerEntry.amount_fen))
        .where(
            LedgerEntry.site_id == site,
            LedgerEntry.account == Account.DUE,
            col(LedgerEntry.booked_on) <= on,
            col(LedgerEntry.bill_id).is_not(None),
        )
        .group_by(col(LedgerEntry.bill_id))
        .having(func.sum(LedgerEntry.amount_fen) > 0)
    )
    if bill_ids is not None:
        q = q.where(col(LedgerEntry.bill_id).in_(bill_ids))
    return {int(b): int(v) for b, v in s.exec(q).all() if b is not None}


def _owings(
    s: Session, site: str, on: date, bills: list[tuple[Bill, int]], payer_day: date
) -> list[Owing]:
    """Group (bill, owed) by premises, with codes, buildings, item names and payers."""
    by_premises: dict[int, list[tuple[Bill, int]]] = defaultdict(list)
    for b, owed in bills:
        by_premises[b.premises_id].append((b, owed))
    if not by_premises:
        return []
    premises = {
        p.id: p for p in s.exec(select(Premises).where(col(Premises.id).in_(sorted(by_premises))))
    }
    buildings = {b.id: b.code for b in s.exec(select(Building).where(Building.site_id == site))}
    names = {i.id: i.name for i in s.exec(select(FeeItem).where(FeeItem.site_id == site))}
    out = []
    for pid, rows in by_premises.items():
        p = premises[pid]
        who = payer_on(s, pid, payer_day)
        payer = (
            Payer(who.person.id, who.person.name, who.person.phone)
            if who is not None and who.person.id is not None
            else None
        )
        owed_bills = tuple(
            OwedBill(
                bill_id=b.id or 0,
                premises_id=pid,
                item=names.get(b.item_id, "") + (" 滞纳金" if b.kind == "late_fee" else ""),
                kind=b.kind,
                period_start=b.period_start,
                period_end=b.period_end,
                due_on=b.due_on,
                open_fen=fen,
                days_overdue=(on - b.due_on).days,
            )
            for b, fen in sorted(rows, key=lambda r: (r[0].due_on, r[0].id or 0))
        )
        out.append(Owing(pid, p.code, buildings.get(p.building_id, ""), payer, owed_bills))
    return sorted(out, key=lambda o: o.code)


def arrears(
    s: Session,
    site: str,
    on: date,
    *,
    building: str | None = None,
    min_days: int = 0,
    premises_id: int | None = None,
) -> list[Owing]:
    """Premises of ``site`` owing bills due before ``on`` (as the ledger stood on ``on``),
    by code; only those in ``building``, whose oldest bill is at least ``min_days`` overdue,
    or the one premises asked for. The payer is who pays on ``on``."""
    q = select(Bill).where(Bill.site_id == site, col(Bill.due_on) < on)
    if premises_id is not None:
        q = q.where(Bill.premises_id == premises_id)
    if building is not None:
        q = (
            q.join(Premises, col(Premises.id) == col(Bill.premises_id))
            .join(Building, col(Building.id) == col(Premises.building_id))
            .where(Building.code == building)
        )
    candidates = list(s.exec(q))
    owed = _open_as_of(
        s, site, on, [b.id for b in candidates if b.id] if premises_id is not None else None
    )
    found = _owings(s, site, on, [(b, owed[b.id]) for b in candidates if b.id in owed], on)
    # a premises is picked by its oldest bill, and shows everything it owes
    return [o for o in found if o.days_overdue >= min_days]


def due_soon(s: Session, site: str, on: date, within_days: int) -> list[Owing]:
    """Premises with bills due from ``on`` to ``on`` + ``within_days`` that are owed now."""
    q = select(Bill).where(
        Bill.site_id == site,
        col(Bill.due_on) >= on,
        col(Bill.due_on) <= on + timedelta(days=within_days),
        col(Bill.open_fen) > 0,
    )
    return _owings(s, site, on, [(b, b.open_fen) for b in s.exec(q)], on)


def still_owed(s: Session, bill_ids: list[int]) -> int:
    """What these bills leave owed now (the caches, as a payment just wrote them)."""
    if not bill_ids:
        return 0
    total = s.exec(
        select(func.coalesce(func.sum(Bill.open_fen), 0)).where(col(Bill.id).in_(bill_ids))
    ).one()
    return int(total)


# -- documents ---------------------------------------------------------------------------------
HEAD = ["房屋", "楼栋", "缴费人", "电话", "欠费期数", "欠费金额（元）", "最早应缴日", "逾期天数"]


def _yuan(fen: int) -> Decimal:
    """Fen as 元 for a cell: exact (a Decimal), never through a float."""
    return Decimal(fen).scaleb(-2)


def arrears_xlsx(rows: list[Owing], on: date) -> bytes:
    """The arrears list as a workbook: one row per premises (phones masked), then each bill."""
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = f"欠费 {on:%Y-%m-%d}"
    ws.append(HEAD)
    for o in rows:
        ws.append(
            [
                o.code,
                o.building,
                o.payer.name if o.payer else "",
                o.payer.masked_phone if o.payer else "",
                o.cycles,
                _yuan(o.amount_fen),
                o.oldest_due,
                o.days_overdue,
            ]
        )
    ws.append([])
    ws.append(
        ["合计", "", "", "", sum(o.cycles for o in rows), _yuan(sum(o.amount_fen for o in rows))]
    )
    detail = wb.create_sheet("明细")
    detail.append(["房屋", "收费项目", "所属期间", "欠费金额（元）", "应缴日", "逾期天数"])
    for o in rows:
        for b in o.bills:
            detail.append([o.code, b.item, b.period, _yuan(b.open_fen), b.due_on, b.days_overdue])
    for sheet in (ws, detail):
        for cells in sheet.iter_rows(min_row=2):
            for c in cells:
                if isinstance(c.value, float | Decimal):
                    c.number_format = "#,##0.00"
                elif isinstance(c.value, date):
                    c.number_format = "yyyy-mm-dd"
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def notices_pdf(site_name: str, rows: list[Owing], on: date) -> bytes:
    """Reminder notices (催费单), one A4 page per premises, as a PDF."""
    if FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(FONT))
    buf = io.BytesIO()
    width, height = A4
    c = canvas.Canvas(buf, pagesize=A4)
    c.setTitle(f"{site_name} 催费单 {on:%Y-%m-%d}")
    for o in rows:
        c.setFont(FONT, 18)
        c.drawCentredString(width / 2, height - 25 * mm, f"{site_name} 缴费通知单（催费单）")
        c.setFont(FONT, 11)
        y = height - 40 * mm
        who = o.payer.name if o.payer else "业主"
        c.drawString(20 * mm, y, f"尊敬的 {who}：")
        y -= 7 * mm
        c.drawString(
            20 * mm,
            y,
            f"截至 {on:%Y年%m月%d日}，您的房屋 {o.code} 尚有以下费用未缴，请尽快缴纳。",
        )
        y -= 12 * mm
        cols = (20 * mm, 55 * mm, 115 * mm, 150 * mm, width - 20 * mm)
        c.line(20 * mm, y + 4 * mm, width - 20 * mm, y + 4 * mm)
        for x, label in zip(
            cols[:4], ("收费项目", "所属期间", "应缴日期", "逾期天数"), strict=True
        ):
            c.drawString(x, y, label)
        c.drawRightString(cols[4], y, "金额（元）")
        y -= 8 * mm
        for b in o.bills:
            c.drawString(cols[0], y, b.item)
            c.drawString(cols[1], y, b.period)
            c.drawString(cols[2], y, f"{b.due_on:%Y-%m-%d}")
            c.drawString(cols[3], y, f"{b.days_overdue}天")
            c.drawRightString(cols[4], y, yuan(b.open_fen))
            y -= 7 * mm
            if y < 60 * mm:
                c.drawString(cols[0], y, "……（其余明细见对账单）")
                y -= 7 * mm
                break
        c.line(20 * mm, y + 4 * mm, width - 20 * mm, y + 4 * mm)
        y -= 3 * mm
        c.drawString(20 * mm, y, f"合计（大写）：{in_words(o.amount_fen)}")
        c.drawRightString(width - 20 * mm, y, f"合计：¥{yuan(o.amount_fen)}")
        y -= 12 * mm
        c.drawString(20 * mm, y, "如已缴纳，请忽略本通知。缴费请至物业服务中心或通过线上缴费。")
        y -= 10 * mm
        c.drawRightString(width - 20 * mm, y, f"{site_name} 物业服务中心  {on:%Y-%m-%d}")
        c.showPage()
    if not rows:
        c.setFont(FONT, 12)
        c.drawCentredString(width / 2, height / 2, f"截至 {on:%Y-%m-%d} 无欠费")
        c.showPage()
    c.save()
    return buf.getvalue()
