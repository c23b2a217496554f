"""Arrears (欠费) as of a day from the ledger, bills falling due (缴费预警), the arrears list
as xlsx, reminder notices (催费单) as PDF read back with pypdf, and who may see them."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader
from sqlmodel import Session, select

from hub.billing.arrears import arrears, arrears_xlsx, due_soon, notices_pdf
from hub.billing.models import Method
from hub.billing.payments import DeskPayment, pay_at_desk
from hub.billing.periods import Month
from hub.billing.receipts import in_words
from hub.billing.runs import run_bills
from hub.property.models import Occupancy, Person
from tests.hub.billing.community import SITE, fixed_fee, property_fee, rooms
from tests.hub.property.test_property_api import login

NOW = datetime(2026, 7, 20, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai: the run, booked 07-20
QUARTER = 67125  # 89.50 m² × 2.50 元 × 3 months
RUBBISH = 1500


def owners(engine, premises: list[int], site: str = SITE) -> list[int]:
    """An owner for each premises, 张一 13800000001, 张二 13800000002 ... from 2025."""
    ids = []
    with Session(engine) as s:
        for i, pid in enumerate(premises, 1):
            p = Person(
                site_id=site, name=f"张{'一二三四五六七八九'[i - 1]}", phone=f"1380000000{i}"
            )
            s.add(p)
            s.flush()
            assert p.id is not None
            s.add(
                Occupancy(
                    premises_id=pid,
                    person_id=p.id,
                    role="owner",
                    start=date(2025, 1, 1),
                    recorded_by="test",
                )
            )
            ids.append(p.id)
        s.commit()
    return ids


def pay_all(engine, premises: int, amount: int, key: str, now: datetime = NOW) -> None:
    with Session(engine, expire_on_commit=False) as s:
        pay_at_desk(s, SITE, DeskPayment(premises, Method.CASH, amount, key), "cash1", now=now)


@pytest.fixture
def owing(engine):
    """Two rooms with owners, billed through July at 07-20: Q1..Q3 property fee (due 16 Jan,
    16 Apr, 16 Jul) and January..June's rubbish fee (due the 11th of the next month); a
    third room, ownerless and billed nothing."""
    ids = rooms(engine, 3)
    owners(engine, ids[:2])
    property_fee(engine, ids[:2])
    fixed_fee(engine, ids[:2], RUBBISH)
    run_bills(engine, SITE, Month(2026, 7), "finance", now=NOW)
    return ids


def test_arrears_on_a_day_are_what_the_ledger_said_that_day(engine, owing):
    with Session(engine) as s:
        assert arrears(s, SITE, date(2026, 7, 19)) == []  # nothing was billed before the run
        rows = arrears(s, SITE, date(2026, 7, 20))
    assert [o.code for o in rows] == ["1-1-0101", "1-1-0102"]
    a = rows[0]
    assert a.payer is not None and (a.payer.name, a.payer.masked_phone) == ("张一", "138****0001")
    assert a.amount_fen == 3 * QUARTER + 6 * RUBBISH
    assert a.cycles == 9  # three quarters and six months: distinct periods
    assert a.oldest_due == date(2026, 1, 16) and a.days_overdue == 185
    assert [(b.item, b.period, b.days_overdue) for b in a.bills[:2]] == [
        ("物业费", "2026-01-01至2026-03-31", 185),
        ("垃圾清运费", "2026-01-01至2026-01-31", 159),
    ]
    # room 2 pays everything on 07-21: still in arrears on the 20th, not on the 22nd
    pay_all(
        engine, owing[1], rows[1].amount_fen, "pay-all-0102", datetime(2026, 7, 21, 2, tzinfo=UTC)
    )
    with Session(engine) as s:
        assert [o.code for o in arrears(s, SITE, date(2026, 7, 20))] == ["1-1-0101", "1-1-0102"]
        assert [o.code for o in arrears(s, SITE, date(2026, 7, 22))] == ["1-1-0101"]
        # filters: the building, days overdue of the oldest bill, one premises
        assert arrears(s, SITE, date(2026, 7, 20), building="2") == []
        assert len(arrears(s, SITE, date(2026, 7, 20), building="1")) == 2
        assert arrears(s, SITE, date(2026, 7, 20), min_days=186) == []
        (only,) = arrears(s, SITE, date(2026, 7, 20), min_days=185, premises_id=owing[0])
        assert only.amount_fen == 3 * QUARTER + 6 * RUBBISH  # every bill, not only the old


def test_bills_falling_due_are_those_still_owed(engine, owing):
    with Session(engine) as s:
        soon = due_soon(s, SITE, date(2026, 7, 10), 7)
    # Q3 (due 16 Jul) and June's rubbish fee (due 11 Jul), for both rooms
    assert [(o.code, [b.due_on.day for b in o.bills]) for o in soon] == [
        ("1-1-0101", [11, 16]),
        ("1-1-0102", [11, 16]),
    ]
    # room 1 pays the oldest first: all but 1 fen of everything; only Q3 is left of it
    with Session(engine) as s:
        owed = arrears(s, SITE, date(2026, 7, 20))[0].amount_fen
    pay_all(engine, owing[0], owed - 1, "pay-most-0101")
    with Session(engine) as s:
        soon = due_soon(s, SITE, date(2026, 7, 10), 7)
        assert [(o.code, o.amount_fen) for o in soon] == [
            ("1-1-0101", 1),
            ("1-1-0102", QUARTER + RUBBISH),
        ]
        assert due_soon(s, SITE, date(2026, 7, 10), 0) == []


def test_the_arrears_list_exports_to_xlsx_with_phones_masked(engine, owing):
    with Session(engine) as s:
        rows = arrears(s, SITE, date(2026, 7, 20))
    wb = load_workbook(io.BytesIO(arrears_xlsx(rows, date(2026, 7, 20))))
    head, *body = list(wb.worksheets[0].values)
    assert head[:4] == ("房屋", "楼栋", "缴费人", "电话")
    assert body[0][:6] == ("1-1-0101", "1", "张一", "138****0001", 9, 2103.75)
    assert body[-1][:2] == ("合计", None) and body[-1][5] == 2 * 2103.75
    detail = list(wb.worksheets[1].values)
    assert len(detail) == 1 + 2 * 9 and detail[1][:3] == (
        "1-1-0101",
        "物业费",
        "2026-01-01至2026-03-31",
    )


def text_of(pdf: bytes) -> list[str]:
    assert pdf.startswith(b"%PDF-")
    return [p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages]


def test_reminder_notices_are_one_page_per_premises_in_chinese(engine, owing):
    with Session(engine) as s:
        rows = arrears(s, SITE, date(2026, 7, 20))
    pages = text_of(notices_pdf("阳光花园", rows, date(2026, 7, 20)))
    assert len(pages) == 2
    first = pages[0]
    for words in (
        "阳光花园 缴费通知单（催费单）",
        "尊敬的 张一",
        "截至 2026年07月20日，您的房屋 1-1-0101 尚有以下费用未缴",
        "物业费",
        "2026-01-01至2026-03-31",
        "2026-01-16",
        "185天",
        "671.25",
        "垃圾清运费",
        f"合计（大写）：{in_words(210375)}",
        "合计：¥2,103.75",
    ):
        assert words in first, words
    assert in_words(210375) == "贰仟壹佰零叁元柒角伍分"
    assert "1-1-0102" in pages[1] and "张二" in pages[1]
    assert "无欠费" in text_of(notices_pdf("阳光花园", [], date(2026, 7, 20)))[0]


# -- over the API --------------------------------------------------------------------------------
@pytest.fixture
def site_owing(api):
    """s1's room 1-1-0101 billed 3 quarters of 物业费 (25000 fen each) with an owner."""
    engine = api.app.state.engine
    ids = rooms(engine, 2, site="s1", area="100.00")
    owners(engine, ids, site="s1")
    property_fee(engine, ids[:1], site="s1", prices=((date(2026, 1, 1), "250"),))
    run_bills(engine, "s1", Month(2026, 7), "fin1", now=NOW)
    return ids


def test_staff_of_the_site_read_arrears_and_others_are_refused(api, site_owing):
    url = "/api/v1/sites/s1/arrears?on=2026-07-20"
    for who in ("admin", "mgr1", "fin1", "cash1"):
        r = api.get(url, headers=login(api, who))
        assert r.status_code == 200, (who, r.text)
    got = r.json()
    assert (got["premises"], got["cycles"], got["amount_fen"]) == (1, 3, 3 * 75000)
    (item,) = got["items"]
    assert (item["code"], item["payer_name"], item["payer_phone"]) == (
        "1-1-0101",
        "张一",
        "138****0001",
    )
    assert item["oldest_due"] == "2026-01-16" and item["days_overdue"] == 185
    assert "13800000001" not in r.text  # the full number never leaves through the API
    assert api.get(url + "&min_days=200", headers=login(api, "fin1")).json()["items"] == []
    assert api.get(url + "&building=9", headers=login(api, "fin1")).json()["premises"] == 0
    for who in ("eng1", "owner1"):
        r = api.get(url, headers=login(api, who))
        assert r.status_code == 403 and r.json()["detail"], who
    assert api.get(url, headers=login(api, "mgr2")).status_code == 404  # s1 is not his
    # one premises, the xlsx and the notices, the same way
    pid = site_owing[0]
    r = api.get(f"/api/v1/premises/{pid}/arrears?on=2026-07-20", headers=login(api, "cash1"))
    assert r.json()["amount_fen"] == 3 * 75000
    assert (
        api.get(f"/api/v1/premises/{site_owing[1]}/arrears", headers=login(api, "cash1")).json()
        is None
    )
    assert api.get(f"/api/v1/premises/{pid}/arrears", headers=login(api, "mgr2")).status_code == 404
    r = api.get("/api/v1/sites/s1/arrears.xlsx?on=2026-07-20", headers=login(api, "cash1"))
    assert r.status_code == 200 and r.content.startswith(b"PK")
    r = api.get("/api/v1/sites/s1/arrears/notices.pdf?on=2026-07-20", headers=login(api, "mgr1"))
    assert r.status_code == 200 and "Sunny Garden 缴费通知单" in text_of(r.content)[0]
    assert api.get("/api/v1/sites/s1/arrears.xlsx", headers=login(api, "eng1")).status_code == 403
    r = api.get(
        "/api/v1/sites/s1/due-soon?on=2026-07-10&within_days=7", headers=login(api, "cash1")
    )
    assert r.status_code == 200 and r.json()["amount_fen"] == 75000  # Q3, due 16 Jul


def test_reminder_runs_are_for_managers_and_finance(api, site_owing):
    body = {"kind": "arrears", "on": "2026-07-20"}
    for who, code in (("cash1", 403), ("eng1", 403), ("owner1", 403), ("mgr2", 404)):
        r = api.post("/api/v1/sites/s1/reminder-runs", json=body, headers=login(api, who))
        assert r.status_code == code, (who, r.text)
    assert (
        "a cashier may not"
        in api.post(
            "/api/v1/sites/s1/reminder-runs", json=body, headers=login(api, "cash1")
        ).json()["detail"]
    )
    # no SMS or WeChat configured here: the payer is found, but nobody can be reached
    r = api.post("/api/v1/sites/s1/reminder-runs", json=body, headers=login(api, "fin1"))
    assert r.status_code == 200, r.text
    assert (r.json()["payers"], r.json()["unreachable"], r.json()["sent"]) == (0, 1, 0)
    assert api.get("/api/v1/sites/s1/reminders", headers=login(api, "cash1")).json() == []


def test_managers_record_a_wechat_openid(api, site_owing):
    with Session(api.app.state.engine) as s:
        person = s.exec(select(Person).where(Person.phone == "13800000001")).one().id
    url = f"/api/v1/persons/{person}/wechat-openid"
    body = {"openid": "oWX-abcdef"}
    assert api.put(url, json=body, headers=login(api, "fin1")).status_code == 403
    assert api.put(url, json=body, headers=login(api, "mgr2")).status_code == 404
    assert api.put(url, json={"openid": "x;drop"}, headers=login(api, "mgr1")).status_code == 422
    r = api.put(url, json=body, headers=login(api, "mgr1"))
    assert r.status_code == 200 and r.json() == {
        "person_id": person,
        "name": "张一",
        "phone": "138****0001",
        "wechat": True,
    }
    assert api.put(url, json={"openid": None}, headers=login(api, "mgr1")).json()["wechat"] is False
