"""Receipts (收款收据) as PDF, with the amount in figures and in Chinese capitals (大写).

The text uses reportlab's built-in CID font STSong-Light (Adobe-GB1): the PDF names it and
every reader with the Adobe CJK fallbacks (pdf.js, Chromium, Acrobat, poppler) renders it, so
nothing needs to be installed or embedded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date, datetime

from reportlab.lib.pagesizes import A5, landscape
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen import canvas
from sqlmodel import Session, col, select

from hub.billing.models import Bill, Entry, FeeItem, LedgerEntry, Payment
from hub.billing.periods import SHANGHAI
from hub.models import Site
from hub.property.models import Premises

FONT = "STSong-Light"
_DIGITS = "零壹贰叁肆伍陆柒捌玖"
_UNITS = ("", "拾", "佰", "仟")
_SECTIONS = ("", "万", "亿", "万")
METHODS = {"cash": "现金", "pos": "刷卡", "transfer": "转账", "online": "线上支付"}


def _four(g: int) -> str:
    out, zero = "", False
    for pos in (3, 2, 1, 0):
        d = g // 10**pos % 10
        if d == 0:
            zero = bool(out)
            continue
        if zero:
            out += "零"
            zero = False
        out += _DIGITS[d] + _UNITS[pos]
    return out


def _yuan(n: int) -> str:
    groups = []
    while n:
        groups.append(n % 10000)
        n //= 10000
    out, gap = "", False
    for i in reversed(range(len(groups))):
        g = groups[i]
        if g == 0:
            gap = bool(out)
            continue
        if out and (gap or g < 1000):
            out += "零"
        out += _four(g) + _SECTIONS[i]
        gap = False
    return out


def in_words(fen: int) -> str:
    """An amount of fen in Chinese financial capitals: 67125 → 陆佰柒拾壹元贰角伍分."""
    if fen < 0:
        return "负" + in_words(-fen)
    yuan, jiao, f = fen // 100, fen // 10 % 10, fen % 10
    if fen == 0:
        return "零元整"
    out = _yuan(yuan) + "元" if yuan else ""
    if jiao:
        out += _DIGITS[jiao] + "角"
    elif f and yuan:
        out += "零"
    out += _DIGITS[f] + "分" if f else "整"
    return out


def yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100:,}.{abs(fen) % 100:02d}"


@dataclass(frozen=True)
class ReceiptLine:
    item: str
    period: str
    fen: int


def receipt_lines(s: Session, payment: Payment) -> list[ReceiptLine]:
    """What the payment paid, bill by bill, and what it put on the prepaid balance."""
    entries = s.exec(
        select(LedgerEntry)
        .where(LedgerEntry.payment_id == payment.id)
        .order_by(col(LedgerEntry.id))
    ).all()
    bills = {
        b.id: b
        for b in s.exec(
            select(Bill).where(col(Bill.id).in_([e.bill_id for e in entries if e.bill_id]))
        ).all()
    }
    items = {
        i.id: i.name
        for i in s.exec(
            select(FeeItem).where(col(FeeItem.id).in_([b.item_id for b in bills.values()]))
        )
    }
    out = []
    for e in entries:
        if e.kind == Entry.PAID and e.bill_id in bills:
            b = bills[e.bill_id]
            last = date.fromordinal(b.period_end.toordinal() - 1)
            period = f"{b.period_start:%Y-%m-%d}至{last:%Y-%m-%d}"
            name = items.get(b.item_id, "")
            if b.kind == "late_fee":
                name += " 滞纳金"
            out.append(ReceiptLine(name, period, -e.amount_fen))
        elif e.kind == Entry.DEPOSIT:
            label = "预存款" + (f"（{e.category}）" if e.category else "")
            out.append(ReceiptLine(label, "", e.amount_fen))
    return out


def receipt_pdf(s: Session, payment: Payment) -> bytes:
    """The receipt of ``payment`` as a one-page A5 PDF."""
    if FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(FONT))
    site = s.get(Site, payment.site_id)
    premises = s.get(Premises, payment.premises_id)
    lines = receipt_lines(s, payment)
    buf = io.BytesIO()
    width, height = landscape(A5)
    c = canvas.Canvas(buf, pagesize=(width, height))
    c.setTitle(f"收据 {payment.receipt_no}")
    c.setFont(FONT, 16)
    c.drawCentredString(
        width / 2, height - 18 * mm, f"{site.name if site else payment.site_id} 收款收据"
    )
    c.setFont(FONT, 10)
    local: datetime = payment.paid_at.astimezone(SHANGHAI)
    y = height - 28 * mm
    c.drawString(15 * mm, y, f"收据编号：{payment.receipt_no}")
    c.drawRightString(width - 15 * mm, y, f"收款时间：{local:%Y-%m-%d %H:%M}")
    y -= 6 * mm
    c.drawString(15 * mm, y, f"房屋：{premises.code if premises else payment.premises_id}")
    c.drawString(80 * mm, y, f"缴款人：{payment.payer_name or '-'}")
    c.drawRightString(
        width - 15 * mm, y, f"付款方式：{METHODS.get(payment.method, payment.method)}"
    )
    y -= 9 * mm
    c.line(15 * mm, y + 3 * mm, width - 15 * mm, y + 3 * mm)
    c.drawString(15 * mm, y - 1 * mm, "收费项目")
    c.drawString(80 * mm, y - 1 * mm, "所属期间")
    c.drawRightString(width - 15 * mm, y - 1 * mm, "金额（元）")
    y -= 7 * mm
    for line in lines:
        c.drawString(15 * mm, y, line.item)
        c.drawString(80 * mm, y, line.period)
        c.drawRightString(width - 15 * mm, y, yuan(line.fen))
        y -= 6 * mm
        if y < 40 * mm:
            c.drawString(15 * mm, y, "……（明细见账单）")
            y -= 6 * mm
            break
    c.line(15 * mm, y + 3 * mm, width - 15 * mm, y + 3 * mm)
    y -= 3 * mm
    c.drawString(15 * mm, y, f"合计（大写）：{in_words(payment.amount_fen)}")
    c.drawRightString(width - 15 * mm, y, f"合计：¥{yuan(payment.amount_fen)}")
    y -= 8 * mm
    c.drawString(15 * mm, y, f"收款人：{payment.cashier}")
    if payment.reference:
        c.drawString(80 * mm, y, f"交易参考号：{payment.reference}")
    if payment.voided_at is not None:
        c.setFont(FONT, 40)
        c.setFillColorRGB(0.8, 0, 0)
        c.drawCentredString(width / 2, height / 2, "已作废")
        c.setFont(FONT, 10)
        c.drawCentredString(width / 2, height / 2 - 8 * mm, f"作废原因：{payment.void_reason}")
    c.showPage()
    c.save()
    return buf.getvalue()
