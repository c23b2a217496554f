"""Billing reports as finance, HQ and a cashier read them: a small site billed month by
month, paid at the desk (one payment voided), and every report's numbers checked against a
plain replay of the ledger rows in Python (not the reports' SQL) and against hand sums."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from openpyxl import load_workbook
from sqlmodel import Session, select

from hub.billing import reports
from hub.billing.models import Bill, LedgerEntry, Method, Payment
from hub.billing.payments import DeskPayment, pay_at_desk, void_payment
from hub.billing.periods import Month
from hub.billing.runs import run_bills
from hub.billing.vouchers import vouchers
from hub.property.models import Building, Premises
from hub.settings import DEFAULT_ACCOUNTS
from tests.hub.billing.community import SITE, fixed_fee, property_fee, rooms
from tests.hub.property.test_property_api import login

Q = 67125  # a quarter's property fee: 89.50 m² × 2.50 元 × 3
G = 1500  # a month's rubbish fee (postpaid: billed the month after)


def at(m: int, d: int) -> datetime:
    return datetime(2026, m, d, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


def desk(engine, site, room, fen, key, method=Method.CASH, cashier="li", when=None):
    with Session(engine, expire_on_commit=False) as s:
        return pay_at_desk(
            s, site, DeskPayment(room, method, fen, key, to_prepaid=""), cashier, now=when
        )


def build(engine, site=SITE):
    """Rooms A..D (A, B, C in building 1, D moved to building 2), billed Jan to Apr, paid:
    20 Jan A pays Q1; 10 Feb B pays 300 元; 5 Mar C pays Q1 + Jan + Feb rubbish (li), wang
    takes 100 元 for D's Q1, li 10 元 more for D by mistake (voided the same day)."""
    a, b, c, d = rooms(engine, 4, site=site)
    with Session(engine) as s:
        b2 = Building(site_id=site, code="2", name="2栋")
        s.add(b2)
        s.flush()
        room = s.get(Premises, d)
        assert room is not None
        room.building_id = b2.id
        s.commit()
    property_fee(engine, [a, b, c, d], site=site)
    fixed_fee(engine, [a, b, c, d], G, site=site)
    for m, day in ((1, 5), (2, 3), (3, 2), (4, 2)):
        run_bills(engine, site, Month(2026, m), "fin", now=at(m, day))
    pays = {
        "A": desk(engine, site, a, Q, "p1", when=at(1, 20)),
        "B1": desk(engine, site, b, 30000, "p2", Method.POS, when=at(2, 10)),
        "C": desk(engine, site, c, Q + 2 * G, "p3", Method.TRANSFER, when=at(3, 5)),
        "E": desk(engine, site, d, 10000, "p4", cashier="wang", when=at(3, 5)),
        "D": desk(engine, site, d, 1000, "p5", when=at(3, 5)),
    }
    with Session(engine) as s:
        void_payment(
            s, site, pays["D"].id, "fin", "wrong room", now=datetime(2026, 3, 5, 3, 0, tzinfo=UTC)
        )
    return {"A": a, "B": b, "C": c, "D": d}, pays


@pytest.fixture
def site(engine):
    return build(engine)


def rows(engine):
    with Session(engine) as s:
        bills = {b.id: b for b in s.exec(select(Bill))}
        entries = list(s.exec(select(LedgerEntry).where(LedgerEntry.account == "due")))
        places = {p.id: p for p in s.exec(select(Premises))}
        buildings = {b.id: b.code for b in s.exec(select(Building))}
    return bills, entries, places, buildings


def replay(entries, keep, through):
    """Per bill: [billed, received, waived, open] of its entries booked by ``through``."""
    out: dict[int, list[int]] = {}
    for e in entries:
        if e.booked_on > through or not keep(e):
            continue
        v = out.setdefault(e.bill_id, [0, 0, 0, 0])
        v[0] += e.amount_fen if e.kind in ("bill", "credit") else 0
        v[1] -= e.amount_fen if e.kind in ("paid", "refund", "unpaid") else 0
        v[2] -= e.amount_fen if e.kind == "waived" else 0
        v[3] += e.amount_fen
    return out


def test_collection_rate_of_a_month_and_of_the_arrears_brought_forward(engine, site):
    bills, entries, places, buildings = rows(engine)
    with Session(engine) as s:
        c = reports.collection(s, SITE, Month(2026, 3), date(2026, 3, 31))
    # March's bills: Q2 and February's rubbish fee of 4 rooms; of them C paid February's
    assert (c.total.sums.bills, c.total.sums.billed) == (8, 4 * (Q + G))
    assert (c.total.sums.received, c.total.sums.waived) == (G, 0)
    assert c.total.sums.outstanding == 4 * (Q + G) - G
    assert c.total.sums.rate == "0.55"  # 1500 / 274500 = 0.546 %
    # brought forward on 1 Mar: Q1 of B (less 300 元), C, D; January's rubbish of all four
    a = c.total.arrears
    assert a.opening == (Q - 30000) + 2 * Q + 4 * G and a.bills == 7
    assert a.received == Q + G + 10000  # C's and D's; D's 10 元 came and went (voided)
    assert a.outstanding == a.opening - a.received
    assert a.rate == f"{Decimal(100 * (Q + G + 10000)) / Decimal(a.opening):.2f}"
    # the same from the rows, per building and per item
    of_month = replay(entries, lambda e: bills[e.bill_id].month == "2026-03", date(2026, 3, 31))
    for row in c.buildings:
        mine = [
            v
            for bid, v in of_month.items()
            if buildings.get(places[bills[bid].premises_id].building_id) == row.key
        ]
        assert row.sums.billed == sum(v[0] for v in mine)
        assert row.sums.received == sum(v[1] for v in mine)
        assert row.sums.outstanding == sum(v[3] for v in mine)
    assert [r.key for r in c.buildings] == ["1", "2"]
    assert {r.key: r.arrears.opening for r in c.buildings} == {
        "1": (Q - 30000) + Q + 3 * G,
        "2": Q + G,
    }
    assert {r.key: (r.sums.billed, r.arrears.received) for r in c.items} == {
        "GARB": (4 * G, G),
        "PROP": (4 * Q, Q + 10000),
    }
    opening = replay(entries, lambda e: bills[e.bill_id].month < "2026-03", date(2026, 2, 28))
    assert a.opening == sum(v[3] for v in opening.values() if v[3] > 0)
    # as of a day in the month, only what was booked by then
    with Session(engine) as s:
        early = reports.collection(s, SITE, Month(2026, 3), date(2026, 3, 4))
        assert early.total.arrears.received == 0 and early.total.sums.received == 0
        with pytest.raises(ValueError, match="first day"):
            reports.collection(s, SITE, Month(2026, 3), date(2026, 2, 28))


def test_aging_as_of_a_past_day_is_unchanged_by_later_payments(engine, site):
    ids, _ = site
    places = rows(engine)[2]
    with Session(engine) as s:
        before = reports.aging(s, SITE, date(2026, 3, 31))
    desk(engine, SITE, ids["B"], Q - 30000, "late", when=at(4, 10))
    with Session(engine) as s:
        after = reports.aging(s, SITE, date(2026, 3, 31))
        april = reports.aging(s, SITE, date(2026, 4, 30))
    assert after == before
    # 31 Mar: Q1 (due 16 Jan, 74 days) and January's rubbish (due 11 Feb, 48 days) are in
    # 31–90; February's (due 11 Mar, 20 days) in 0–30; Q2 (due 16 Apr) is not due yet
    b = dict(zip(reports.BUCKETS, before.total.buckets, strict=True))
    assert b["d31_90"] == (Q - 30000) + (Q - 10000) + 3 * G
    assert b["d0_30"] == 3 * G and b["not_due"] == 4 * Q
    assert b["d91_180"] == b["d181_365"] == b["over_365"] == 0
    by_room = {r.key: r for r in before.premises}
    code = {k: places[v].code for k, v in ids.items()}
    assert by_room[code["B"]].total == (Q - 30000) + 2 * G + Q
    assert by_room[code["C"]].total == Q  # paid to February
    assert by_room[code["D"]].building == "2"
    # the replay: every bill's entries to the day, bucketed by hand
    bills, entries, _, _ = rows(engine)  # with the April payment
    for day, report in ((date(2026, 3, 31), before), (date(2026, 4, 30), april)):
        total = [0] * 6
        for bid, v in replay(entries, lambda e: True, day).items():
            if v[3] > 0:
                total[reports.bucket((day - bills[bid].due_on).days)] += v[3]
        assert list(report.total.buckets) == total
        assert sum(r.total for r in report.premises) == sum(total)
        assert sum(r.total for r in report.buildings) == sum(total)
    # by 30 April B has paid Q1; it owes Q2 and January to March's rubbish fees
    assert {r.key: r for r in april.premises}[code["B"]].total == Q + 3 * G


def test_buckets_are_days_past_the_due_date():
    table = [(-1, 0), (0, 1), (30, 1), (31, 2), (90, 2), (91, 3), (180, 3), (181, 4)]
    table += [(365, 4), (366, 5), (4000, 5)]
    assert [reports.bucket(d) for d, _ in table] == [b for _, b in table]
    assert reports.rate_pct(1, 3) == "33.33" and reports.rate_pct(2, 3) == "66.67"
    assert reports.rate_pct(1, 8) == "12.50" and reports.rate_pct(0, 0) is None
    assert reports.rate_pct(1, 200000) == "0.00" and reports.rate_pct(1, 20000) == "0.01"


def test_detail_and_summary_of_a_month(engine, site):
    bills, entries, places, _ = rows(engine)
    with Session(engine) as s:
        lines = reports.detail(s, SITE, Month(2026, 3), date(2026, 3, 31))
        sm = reports.summary(s, SITE, Month(2026, 3), date(2026, 3, 31))
    of_month = replay(entries, lambda e: bills[e.bill_id].month == "2026-03", date(2026, 3, 31))
    assert len(lines) == 8 and {x.bill_id for x in lines} == set(of_month)
    for x in lines:
        b = bills[x.bill_id]
        assert x.premises == places[b.premises_id].code
        assert [x.billed, x.received, x.waived, x.outstanding] == of_month[x.bill_id]
        assert x.billed == x.received + x.waived + x.outstanding
    q2 = next(x for x in lines if x.item == "PROP")
    assert (q2.period_start, q2.period_last, q2.billed) == (date(2026, 4, 1), date(2026, 6, 30), Q)
    assert {r.key: r.sums.billed for r in sm.items} == {"GARB": 4 * G, "PROP": 4 * Q}
    assert {r.key: r.sums.received for r in sm.categories} == {"other": G, "property": 0}
    assert sm.total.sums.billed == sum(x.billed for x in lines)


def test_a_cashiers_daily_close_counts_his_payments_and_lists_the_void_apart(engine, site):
    pays = site[1]
    with Session(engine) as s:
        d = reports.daily_close(s, SITE, date(2026, 3, 5), "li")
    assert [(m.method, m.count, m.fen) for m in d.methods] == [("transfer", 1, Q + 2 * G)]
    assert (d.count, d.total_fen, d.entries_fen) == (1, Q + 2 * G, Q + 2 * G)
    assert [v.receipt_no for v in d.voided] == [pays["D"].receipt_no] == ["2026-000005"]
    assert (d.first_receipt, d.last_receipt, d.receipts) == ("2026-000003", "2026-000005", 2)
    assert d.gap_free and d.others == ["2026-000004"]  # wang's, between li's two
    assert d.balanced and d.mismatches == []
    with Session(engine) as s:
        w = reports.daily_close(s, SITE, date(2026, 3, 5), "wang")
        assert (w.total_fen, w.entries_fen, w.receipts) == (10000, 10000, 1)
        none = reports.daily_close(s, SITE, date(2026, 3, 6), "li")
        assert (none.count, none.receipts, none.first_receipt) == (0, 0, None)


def test_a_daily_close_flags_a_receipt_gap_and_a_payment_without_entries(engine, site, caplog):
    ids, _ = site
    with Session(engine) as s:
        s.add(
            Payment(
                site_id=SITE,
                receipt_no="2026-000008",
                method="cash",
                amount_fen=500,
                premises_id=ids["A"],
                cashier="li",
                paid_at=at(3, 5),
                paid_on=date(2026, 3, 5),
            )
        )
        s.commit()
        d = reports.daily_close(s, SITE, date(2026, 3, 5), "li")
    assert d.gaps == ["2026-000006", "2026-000007"] and not d.gap_free
    assert d.mismatches == ["receipt 2026-000008: paid 500 fen, entries 0 fen"]
    assert not d.balanced and "receipt gaps" in caplog.text


def test_live_collections_count_a_payment_once_committed_and_not_a_voided_one(engine, site):
    with Session(engine) as s:
        lv = reports.live(s, date(2026, 3, 5), None, latest=2)
        assert [(x.site, x.count, x.total_fen, x.voided) for x in lv.sites] == [
            (SITE, 2, Q + 2 * G + 10000, 1)
        ]
        assert [(m.method, m.fen) for m in lv.methods] == [("cash", 10000), ("transfer", Q + 2 * G)]
        assert [p.receipt_no for p in lv.latest] == ["2026-000005", "2026-000004"]
        assert reports.live(s, date(2026, 3, 5), ["elsewhere"]).sites == []
    desk(engine, SITE, site[0]["B"], 700, "more", when=at(3, 5))
    with Session(engine) as s:
        assert reports.live(s, date(2026, 3, 5), [SITE]).total_fen == Q + 2 * G + 10000 + 700


def test_vouchers_balance_and_use_the_configured_codes(engine, site):
    codes = {"cash": "100101", "waiver": "5601"}
    with Session(engine) as s:
        vs = vouchers(s, SITE, date(2026, 1, 1), date(2026, 4, 30), {**DEFAULT_ACCOUNTS, **codes})
    assert vs and all(v.debit_fen == v.credit_fen for v in vs)
    by_no = {v.voucher_no: v for v in vs}
    jan = [v for v in vs if v.day == date(2026, 1, 5)]
    assert [(v.voucher_no, v.business) for v in jan] == [("20260105-01", "bills")]
    assert {(x.account, x.debit_fen, x.credit_fen) for x in jan[0].lines} == {
        ("1122", 4 * Q, 0),
        ("6001", 0, 4 * Q),
    }
    assert {(x.account, x.debit_fen, x.credit_fen) for x in by_no["20260120-01"].lines} == {
        ("100101", Q, 0),
        ("1122", 0, Q),
    }
    # 5 Mar: receipts (transfer to the bank, cash), then the void taking the cash back
    mar5 = {v.business: v for v in vs if v.day == date(2026, 3, 5)}
    assert set(mar5) == {"receipts", "voids"}
    assert {(x.account, x.debit_fen) for x in mar5["receipts"].lines if x.debit_fen} == {
        ("1002", Q + 2 * G),
        ("100101", 10000 + 1000),
    }
    assert {(x.account, x.debit_fen, x.credit_fen) for x in mar5["voids"].lines} == {
        ("1122", 1000, 0),
        ("100101", 0, 1000),
    }
    # receivable over the whole history = what is outstanding
    _, entries, _, _ = rows(engine)
    recv = sum(x.debit_fen - x.credit_fen for v in vs for x in v.lines if x.account == "1122")
    assert recv == sum(e.amount_fen for e in entries)
    rubbish = sum(x.credit_fen for v in vs for x in v.lines if x.account == "6051")
    assert rubbish == 3 * 4 * G  # January to March's rubbish fees, billed Feb to Apr
    with Session(engine) as s, pytest.raises(ValueError, match="366 days"):
        vouchers(s, SITE, date(2026, 4, 30), date(2026, 1, 1), DEFAULT_ACCOUNTS)


# -- through the API -----------------------------------------------------------------------
def xlsx(r):
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/vnd.openxml")
    return load_workbook(io.BytesIO(r.content))


def fen(cell) -> int:
    return int(Decimal(str(cell)) * 100)


@pytest.fixture
def served(api):
    return build(api.app.state.engine, site="s1")


def test_reports_through_the_api_and_their_workbooks(api, served):
    fin = login(api, "fin1")
    base = "/api/v1/sites/s1/reports"
    c = api.get(f"{base}/collection?month=2026-03&as_of=2026-03-31", headers=fin).json()
    assert c["total"]["sums"]["billed_fen"] == 4 * (Q + G)
    assert c["total"]["sums"]["rate_pct"] == "0.55"
    assert c["total"]["arrears"]["received_fen"] == Q + G + 10000
    wb = xlsx(api.get(f"{base}/collection?month=2026-03&as_of=2026-03-31&format=xlsx", headers=fin))
    assert wb.sheetnames == ["按楼栋", "按收费项目"]
    ws = wb["按楼栋"]
    head = [c.value for c in ws[1]]
    assert head[:8] == [
        "楼栋",
        "名称",
        "笔数",
        "应收金额",
        "实收金额",
        "减免金额",
        "欠费金额",
        "收费率(%)",
    ]
    last = [c.value for c in ws[ws.max_row]]
    assert last[0] == "合计" and fen(last[3]) == 4 * (Q + G) and last[7] == "0.55"
    assert ws.cell(ws.max_row, 4).number_format == "#,##0.00"
    assert fen(last[head.index("期初欠费")]) == c["total"]["arrears"]["opening_fen"]

    a = api.get(f"{base}/aging?as_of=2026-03-31", headers=fin).json()
    wb = xlsx(api.get(f"{base}/aging?as_of=2026-03-31&format=xlsx", headers=fin))
    assert wb.sheetnames == ["按楼栋", "按房屋"]
    ws = wb["按房屋"]
    assert [c.value for c in ws[1]][2:] == [
        "未到期",
        "0–30天",
        "31–90天",
        "91–180天",
        "181–365天",
        "365天以上",
        "欠费合计",
    ]
    assert (
        fen(ws.cell(ws.max_row, 9).value) == a["total"]["total_fen"] == sum(a["total"]["buckets"])
    )
    assert ws.max_row == 1 + len(a["premises"]) + 1

    d = api.get(f"{base}/detail?month=2026-03&as_of=2026-03-31", headers=fin).json()
    ws = xlsx(api.get(f"{base}/detail?month=2026-03&as_of=2026-03-31&format=xlsx", headers=fin))[
        "收费明细"
    ]
    assert ws.max_row == 1 + len(d["lines"]) + 1 == 10
    assert fen(ws.cell(ws.max_row, 10).value) == sum(x["billed_fen"] for x in d["lines"])
    assert fen(ws.cell(ws.max_row, 13).value) == sum(x["outstanding_fen"] for x in d["lines"])

    sm = api.get(f"{base}/summary?month=2026-03&as_of=2026-03-31", headers=fin).json()
    wb = xlsx(api.get(f"{base}/summary?month=2026-03&as_of=2026-03-31&format=xlsx", headers=fin))
    assert wb.sheetnames == ["按收费项目", "按类别"]
    assert (
        fen(wb["按类别"].cell(wb["按类别"].max_row, 5).value) == sm["total"]["sums"]["received_fen"]
    )

    dc = api.get(f"{base}/daily-close?day=2026-03-05&cashier=li", headers=fin).json()
    assert (dc["total_fen"], dc["balanced"], dc["gap_free"]) == (Q + 2 * G, True, True)
    wb = xlsx(api.get(f"{base}/daily-close?day=2026-03-05&cashier=li&format=xlsx", headers=fin))
    assert wb.sheetnames == ["日结", "收款明细", "作废"]
    summary = {r[0].value: r for r in wb["日结"].iter_rows(min_row=2)}
    assert fen(summary["合计"][2].value) == dc["total_fen"] and summary["断号"][1].value == "无"
    assert wb["作废"].max_row == 2 and wb["作废"].cell(2, 1).value == "2026-000005"

    v = api.get(f"{base}/vouchers?start=2026-01-01&end=2026-04-30", headers=fin).json()
    assert v["accounts"]["cash"] == "1001"
    assert all(x["debit_fen"] == x["credit_fen"] for x in v["vouchers"])
    ws = xlsx(api.get(f"{base}/vouchers?start=2026-01-01&end=2026-04-30&format=xlsx", headers=fin))[
        "凭证"
    ]
    assert [c.value for c in ws[1]] == [
        "日期",
        "凭证号",
        "摘要",
        "科目代码",
        "借方金额",
        "贷方金额",
    ]
    total = [c.value for c in ws[ws.max_row]]
    assert fen(total[4]) == fen(total[5]) == sum(x["debit_fen"] for x in v["vouchers"])

    live = api.get("/api/v1/reports/live?day=2026-03-05&latest=5", headers=login(api, "admin"))
    assert live.status_code == 200, live.text
    assert (live.json()["count"], live.json()["total_fen"]) == (2, Q + 2 * G + 10000)
    assert len(live.json()["latest"]) == 3  # the voided one too, saying so
    mine = api.get("/api/v1/reports/live?day=2026-03-05", headers=login(api, "mgr2")).json()
    assert mine["sites"] == [] and mine["total_fen"] == 0  # s2 took nothing


def test_who_reads_which_report(api, served):
    base = "/api/v1/sites/s1/reports"
    q = "collection?month=2026-03"
    for who in ("admin", "mgr1", "fin1"):
        assert api.get(f"{base}/{q}", headers=login(api, who)).status_code == 200
    for who, why in (
        ("eng1", "engineer may not"),
        ("cash1", "cashier may not"),
        ("owner1", "staff"),
    ):
        r = api.get(f"{base}/{q}", headers=login(api, who))
        assert r.status_code == 403 and why in r.json()["detail"], (who, r.text)
    assert api.get(f"{base}/{q}", headers=login(api, "mgr2")).status_code == 404
    assert api.get(f"{base}/aging", headers=login(api, "mgr2")).status_code == 404
    cash = login(api, "cash1")
    r = api.get(f"{base}/daily-close?day=2026-03-05", headers=cash)
    assert r.status_code == 200 and r.json()["cashier"] == "cash1"
    r = api.get(f"{base}/daily-close?day=2026-03-05&cashier=li", headers=cash)
    assert r.status_code == 403 and "his own" in r.json()["detail"]
    r = api.get(f"{base}/daily-close?day=2026-03-05", headers=login(api, "fin1"))
    assert r.status_code == 422
    for who in ("eng1", "cash1", "owner1"):
        assert api.get("/api/v1/reports/live", headers=login(api, who)).status_code == 403
    r = api.get(f"{base}/collection?month=2026-13", headers=login(api, "fin1"))
    assert r.status_code == 422
    r = api.get(f"{base}/vouchers?start=2026-05-01&end=2026-01-01", headers=login(api, "fin1"))
    assert r.status_code == 422


def test_the_chart_of_accounts_is_checked_when_settings_load():
    from pydantic import ValidationError

    from hub.settings import load_settings

    chart = load_settings(billing_accounts={"cash": "100101"}).billing_accounts
    assert chart["cash"] == "100101" and chart["receivable"] == "1122"  # the rest default
    with pytest.raises(ValidationError, match="unknown account roles"):
        load_settings(billing_accounts={"cassh": "1001"})
    with pytest.raises(ValidationError, match="without a code"):
        load_settings(billing_accounts={"prepaid": " "})
