"""Receipts: the amount in capitals as a Chinese receipt writes it, and the PDF's own text."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from pypdf import PdfReader
from sqlmodel import Session

from hub.billing.models import Method
from hub.billing.payments import DeskPayment, pay_at_desk, void_payment
from hub.billing.periods import Month
from hub.billing.receipts import in_words, receipt_pdf
from hub.billing.runs import run_bills
from tests.hub.billing.community import SITE, property_fee, rooms


@pytest.mark.parametrize(
    ("fen", "words"),
    [
        (67125, "陆佰柒拾壹元贰角伍分"),
        (100000, "壹仟元整"),
        (100530, "壹仟零伍元叁角整"),
        (100505, "壹仟零伍元零伍分"),
        (50, "伍角整"),
        (5, "伍分"),
        (0, "零元整"),
        (1000, "壹拾元整"),
        (10000000, "壹拾万元整"),
        (10010000, "壹拾万零壹佰元整"),
        (100000100, "壹佰万零壹元整"),
        (1234567891, "壹仟贰佰叁拾肆万伍仟陆佰柒拾捌元玖角壹分"),
        (10000000000, "壹亿元整"),
        (10000100000, "壹亿零壹仟元整"),
        (20300000000, "贰亿零叁佰万元整"),
    ],
)
def test_amounts_in_capitals(fen, words):
    assert in_words(fen) == words


def text_of(pdf: bytes) -> str:
    assert pdf.startswith(b"%PDF-")
    return "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)


def test_a_receipt_pdf_says_what_was_paid_in_chinese(engine):
    room = rooms(engine, 1)[0]
    property_fee(engine, [room])
    now = datetime(2026, 7, 20, 2, 0, tzinfo=UTC)
    run_bills(engine, SITE, Month(2026, 7), "finance", now=now)
    with Session(engine, expire_on_commit=False) as s:
        p = pay_at_desk(
            s,
            SITE,
            DeskPayment(
                room,
                Method.POS,
                3 * 67125 + 1000,
                "r1",
                payer_name="张三",
                reference="POS-778",
                to_prepaid="",
            ),
            "cashier-li",
            now,
        )
        text = text_of(receipt_pdf(s, p))
    for expected in (
        "收款收据",
        "收据编号：2026-000001",
        "收款时间：2026-07-20 10:00",
        "房屋：1-1-0101",
        "缴款人：张三",
        "付款方式：刷卡",
        "物业费",
        "2026-01-01至2026-03-31",
        "671.25",
        "预存款",
        "10.00",
        "2026-07-01至2026-09-30",
        "合计（大写）：贰仟零贰拾叁元柒角伍分",
        "合计：¥2,023.75",
        "收款人：cashier-li",
        "POS-778",
    ):
        assert expected in text, expected
    assert "已作废" not in text
    with Session(engine, expire_on_commit=False) as s:
        voided = void_payment(s, SITE, p.id, "finance", "收错房号")
        assert "已作废" in text_of(receipt_pdf(s, voided)) and "收错房号" in text_of(
            receipt_pdf(s, voided)
        )
