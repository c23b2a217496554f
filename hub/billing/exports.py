"""The billing reports as xlsx workbooks: one writer per report, Chinese headers, amounts in
元 as numbers formatted ``#,##0.00`` (exact: Decimal(fen) / 100, never a float)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font
from openpyxl.worksheet.worksheet import Worksheet

from hub.billing.reports import (
    BUCKET_NAMES,
    Aging,
    AgingRow,
    Collection,
    DailyClose,
    DetailLine,
    Row,
    Summary,
)
from hub.billing.vouchers import Voucher

MONEY = "#,##0.00"
TOTAL = "合计"
CATEGORIES = {
    "property": "物业费",
    "parking": "车位费",
    "utilities": "水电",
    "deposit": "押金",
    "rent": "租金",
    "other": "其他",
}
METHODS = {"cash": "现金", "pos": "刷卡", "transfer": "转账", "online": "线上"}


class Money(int):
    """Fen, to be written as 元."""


def yuan(fen: int) -> Decimal:
    return Decimal(fen) / 100


def _text(v: Any) -> Any:
    """A string as a cell may hold it: control characters (from a query, say) dropped."""
    return ILLEGAL_CHARACTERS_RE.sub("", v) if isinstance(v, str) else v


def _sheet(wb: Workbook, title: str, head: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    ws: Worksheet = wb.create_sheet(title)
    ws.append([_text(h) for h in head])
    for c in ws[1]:
        c.font = Font(bold=True)
    for row in rows:
        ws.append([yuan(v) if isinstance(v, Money) else _text(v) for v in row])
        for cell, v in zip(ws[ws.max_row], row, strict=True):
            if isinstance(v, Money):
                cell.number_format = MONEY
    for i, h in enumerate(head, start=1):
        ws.column_dimensions[ws.cell(1, i).column_letter].width = max(10, 2 * len(h) + 4)
    ws.freeze_panes = "A2"


def _book() -> Workbook:
    wb = Workbook()
    wb.remove(wb.active)
    return wb


def _bytes(wb: Workbook) -> bytes:
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


SUMS_HEAD = ["笔数", "应收金额", "实收金额", "减免金额", "欠费金额", "收费率(%)"]
ARREARS_HEAD = ["往期笔数", "期初欠费", "本期收回", "本期减免", "尚欠金额", "清欠率(%)"]


def _sums(r: Row) -> list[Any]:
    x = r.sums
    return [
        x.bills,
        Money(x.billed),
        Money(x.received),
        Money(x.waived),
        Money(x.outstanding),
        x.rate or "",
    ]


def _arrears(r: Row) -> list[Any]:
    a = r.arrears
    return [
        a.bills,
        Money(a.opening),
        Money(a.received),
        Money(a.waived),
        Money(a.outstanding),
        a.rate or "",
    ]


def collection_xlsx(c: Collection) -> bytes:
    """Sheets 按楼栋 and 按收费项目, each the month's bills then the arrears brought forward,
    with a 合计 row (the site)."""
    wb = _book()
    for title, key, rows in (("按楼栋", "楼栋", c.buildings), ("按收费项目", "收费项目", c.items)):
        _sheet(
            wb,
            title,
            [key, "名称", *SUMS_HEAD, *ARREARS_HEAD],
            [
                *([r.key, r.name, *_sums(r), *_arrears(r)] for r in rows),
                [TOTAL, f"{c.site} {c.month} 截至 {c.as_of}", *_sums(c.total), *_arrears(c.total)],
            ],
        )
    return _bytes(wb)


def _aging(r: AgingRow, *first: Any) -> list[Any]:
    return [*first, *(Money(v) for v in r.buckets), Money(r.total)]


def aging_xlsx(a: Aging) -> bytes:
    """Sheets 按楼栋 and 按房屋, amounts per bucket, with a 合计 row."""
    wb = _book()
    money = [*BUCKET_NAMES, "欠费合计"]
    _sheet(
        wb,
        "按楼栋",
        ["楼栋", "名称", *money],
        [
            *(_aging(r, r.key, r.name) for r in a.buildings),
            _aging(a.total, TOTAL, f"截至 {a.as_of}"),
        ],
    )
    _sheet(
        wb,
        "按房屋",
        ["房屋编号", "楼栋", *money],
        [*(_aging(r, r.key, r.building) for r in a.premises), _aging(a.total, TOTAL, "")],
    )
    return _bytes(wb)


def detail_xlsx(lines: Sequence[DetailLine]) -> bytes:
    """Sheet 收费明细: one row per bill, a 合计 row."""
    wb = _book()
    head = ["房屋编号", "楼栋", "收费项目", "项目名称", "类别", "类型", "计费起", "计费止"]
    head += ["应缴日期", "应收金额", "实收金额", "减免金额", "欠费金额"]
    _sheet(
        wb,
        "收费明细",
        head,
        [
            *(
                [
                    x.premises,
                    x.building,
                    x.item,
                    x.item_name,
                    CATEGORIES.get(x.category, x.category),
                    x.kind,
                    x.period_start,
                    x.period_last,
                    x.due_on,
                    Money(x.billed),
                    Money(x.received),
                    Money(x.waived),
                    Money(x.outstanding),
                ]
                for x in lines
            ),
            [TOTAL, *[""] * 8]
            + [
                Money(sum(getattr(x, f) for x in lines))
                for f in ("billed", "received", "waived", "outstanding")
            ],
        ],
    )
    return _bytes(wb)


def summary_xlsx(sm: Summary) -> bytes:
    """Sheets 按收费项目 and 按类别, with a 合计 row."""
    wb = _book()
    _sheet(
        wb,
        "按收费项目",
        ["收费项目", "名称", *SUMS_HEAD],
        [*([r.key, r.name, *_sums(r)] for r in sm.items), [TOTAL, sm.month, *_sums(sm.total)]],
    )
    _sheet(
        wb,
        "按类别",
        ["类别", "名称", *SUMS_HEAD],
        [
            *([r.key, CATEGORIES.get(r.key, r.key), *_sums(r)] for r in sm.categories),
            [TOTAL, sm.month, *_sums(sm.total)],
        ],
    )
    return _bytes(wb)


def daily_close_xlsx(d: DailyClose) -> bytes:
    """Sheets 日结 (by method, 合计, receipts and the checks), 收款明细 and 作废."""
    wb = _book()
    rows: list[list[Any]] = [
        [METHODS.get(m.method, m.method), m.count, Money(m.fen)] for m in d.methods
    ]
    rows.append([TOTAL, d.count, Money(d.total_fen)])
    rows.append(["入账合计", "", Money(d.entries_fen)])
    rows.append(["收据号", f"{d.first_receipt or ''} – {d.last_receipt or ''}", d.receipts])
    rows.append(["断号", ", ".join(d.gaps) or "无", len(d.gaps)])
    rows.append(["核对", "一致" if d.balanced else "不一致: " + "; ".join(d.mismatches), ""])
    _sheet(wb, "日结", [f"{d.site} {d.day} {d.cashier}", "笔数", "金额"], rows)
    head = [
        "收据号",
        "方式",
        "金额",
        "房屋",
        "收款时间",
        "入账金额",
        "作废时间",
        "作废人",
        "作废原因",
    ]

    def line(x: Any) -> list[Any]:
        voided = x.voided_at.isoformat() if x.voided_at else ""
        return [
            x.receipt_no,
            METHODS.get(x.method, x.method),
            Money(x.amount_fen),
            x.premises_id,
            x.paid_at.isoformat(),
            Money(x.entries_fen),
            voided,
            x.voided_by or "",
            x.void_reason,
        ]

    _sheet(wb, "收款明细", head, [line(x) for x in d.payments])
    _sheet(wb, "作废", head, [line(x) for x in d.voided])
    return _bytes(wb)


def vouchers_xlsx(vs: Sequence[Voucher]) -> bytes:
    """Sheet 凭证: 日期, 凭证号, 摘要, 科目代码, 借方金额, 贷方金额 (the columns 金蝶 and 用友
    import), and a 合计 row."""
    wb = _book()
    lines = [x for v in vs for x in v.lines]
    _sheet(
        wb,
        "凭证",
        ["日期", "凭证号", "摘要", "科目代码", "借方金额", "贷方金额"],
        [
            *(
                [x.day, x.voucher_no, x.summary, x.account, Money(x.debit_fen), Money(x.credit_fen)]
                for x in lines
            ),
            [
                TOTAL,
                "",
                "",
                "",
                Money(sum(x.debit_fen for x in lines)),
                Money(sum(x.credit_fen for x in lines)),
            ],
        ],
    )
    return _bytes(wb)
