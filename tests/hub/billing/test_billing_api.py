"""Billing as its users drive it through the API: a manager sets up a fee, finance runs the
bills, a cashier takes a payment and prints the receipt, an owner reads his statement; and
who is refused what (403 with the reason, another site's things 404)."""

from __future__ import annotations

import io

import pytest
from pypdf import PdfReader

from tests.hub.property.test_property_api import login

GENERATE = {
    "buildings": 1,
    "units": 1,
    "floors": 2,
    "rooms_per_floor": 2,
    "areas": [{"built": "100.00", "interior": "80.00"}],
}
FEE = {
    "code": "PROP",
    "name": "物业费",
    "category": "property",
    "kind": "area",
    "cycle_months": 3,
    "timing": "prepaid",
    "advance_days": 15,
    "due_days": 15,
    "prices": [{"effective_from": "2026-01-01", "unit_fen": "250"}],
}


@pytest.fixture
def billed(api):
    mgr, fin = login(api, "mgr1"), login(api, "fin1")
    assert (
        api.post("/api/v1/sites/s1/premises/generate", json=GENERATE, headers=mgr).status_code
        == 201
    )
    rooms = api.get("/api/v1/sites/s1/premises", headers=mgr).json()["items"]
    r = api.post("/api/v1/sites/s1/fee-items", json=FEE, headers=mgr)
    assert r.status_code == 201, r.text
    item = r.json()["id"]
    r = api.post(
        f"/api/v1/sites/s1/fee-items/{item}/bindings",
        json={"premises": [p["id"] for p in rooms], "start": "2026-01-01"},
        headers=mgr,
    )
    assert r.json() == {"bound": 4}
    r = api.post("/api/v1/sites/s1/bill-runs?wait=true", json={"month": "2026-07"}, headers=fin)
    assert r.status_code == 202, r.text
    run = r.json()
    assert api.get(f"/api/v1/bill-runs/{run['id']}", headers=fin).json() == run
    assert (run["status"], run["lines"], run["total_fen"]) == ("done", 12, 12 * 75000)
    return {p["code"]: p["id"] for p in rooms}, item


def test_a_cashier_takes_a_payment_and_prints_its_receipt(api, billed):
    rooms, _ = billed
    room = rooms["1-1-0101"]
    cash = login(api, "cash1")
    st = api.get(f"/api/v1/premises/{room}/statement", headers=cash).json()
    assert st["outstanding_fen"] == 3 * 75000 and len(st["bills"]) == 3
    assert st["bills"][0]["basis"]["pieces"][0]["built_area_m2"] == "100.00"
    body = {
        "premises_id": room,
        "method": "cash",
        "amount_fen": 80000,
        "payer_name": "李四",
        "to_prepaid": "",
    }
    r = api.post("/api/v1/sites/s1/payments", json=body, headers=cash)
    assert r.status_code == 422  # no Idempotency-Key
    key = {**cash, "Idempotency-Key": "desk-0001-abc"}
    r = api.post("/api/v1/sites/s1/payments", json=body, headers=key)
    assert r.status_code == 201, r.text
    pay = r.json()
    assert (pay["receipt_no"], pay["cashier"], pay["to_prepaid_fen"]) == ("2026-000001", "cash1", 0)
    again = api.post("/api/v1/sites/s1/payments", json=body, headers=key).json()
    assert again["id"] == pay["id"]  # a retried request is the same payment
    st = api.get(f"/api/v1/premises/{room}/statement", headers=cash).json()
    assert st["outstanding_fen"] == 3 * 75000 - 80000 and st["paid_fen"] == 80000
    assert [b["open_fen"] for b in st["bills"]] == [0, 75000 - 5000, 75000]
    pdf = api.get(f"/api/v1/payments/{pay['id']}/receipt.pdf", headers=cash)
    assert pdf.headers["content-type"] == "application/pdf"
    text = PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
    assert "Sunny Garden 收款收据" in text and "捌佰元整" in text and "李四" in text
    # more than owed with nowhere to put it: refused, and the receipt number is not used up
    r = api.post(
        "/api/v1/sites/s1/payments",
        headers={**cash, "Idempotency-Key": "desk-0002-abc"},
        json={"premises_id": room, "method": "pos", "amount_fen": 10**7},
    )
    assert r.status_code == 422 and "prepaid" in r.json()["detail"]
    # finance voids a payment typed wrong; the cashier may not
    r = api.post(f"/api/v1/payments/{pay['id']}/void", json={"reason": "wrong room"}, headers=cash)
    assert r.status_code == 403 and "cashier may not" in r.json()["detail"]
    r = api.post(
        f"/api/v1/payments/{pay['id']}/void",
        json={"reason": "wrong room"},
        headers=login(api, "fin1"),
    )
    assert r.status_code == 200 and r.json()["void_reason"] == "wrong room"
    st = api.get(f"/api/v1/premises/{room}/statement", headers=cash).json()
    assert st["outstanding_fen"] == 3 * 75000


def test_who_may_do_what(api, billed):
    rooms, _ = billed
    room = rooms["1-1-0101"]
    eng, cash, mgr2 = login(api, "eng1"), login(api, "cash1"), login(api, "mgr2")
    r = api.get(f"/api/v1/premises/{room}/statement", headers=eng)
    assert r.status_code == 403 and "engineer may not" in r.json()["detail"]
    assert api.get(f"/api/v1/premises/{room}/statement", headers=mgr2).status_code == 404
    assert api.get("/api/v1/sites/s1/fee-items", headers=mgr2).status_code == 404
    r = api.post("/api/v1/sites/s1/fee-items", json=FEE | {"code": "X"}, headers=cash)
    assert r.status_code == 403
    r = api.post("/api/v1/sites/s1/bill-runs", json={"month": "2026-08"}, headers=cash)
    assert r.status_code == 403
    r = api.post(
        "/api/v1/sites/s1/payments",
        headers={**login(api, "mgr1"), "Idempotency-Key": "k" * 8},
        json={"premises_id": room, "method": "cash", "amount_fen": 100},
    )
    assert r.status_code == 403  # managers approve; cashiers and finance take money
    r = api.post(
        "/api/v1/sites/s1/payments",
        headers={**cash, "Idempotency-Key": "k" * 8},
        json={"premises_id": rooms["1-1-0102"] + 1000, "method": "cash", "amount_fen": 100},
    )
    assert r.status_code == 404
    # an owner sees his own room only
    owner = login(api, "owner1")
    r = api.post(
        f"/api/v1/premises/{room}/occupancies",
        headers=login(api, "mgr1"),
        json={
            "person": {"name": "王五", "phone": "13800138000", "username": "owner1"},
            "role": "owner",
            "start": "2025-06-01",
        },
    )
    assert r.status_code == 201, r.text
    mine = api.get("/api/v1/me/statements", headers=owner).json()
    assert [s["premises_id"] for s in mine] == [room] and mine[0]["outstanding_fen"] == 3 * 75000
    assert (
        api.get(f"/api/v1/premises/{rooms['1-1-0102']}/statement", headers=owner).status_code == 404
    )
    r = api.post(
        "/api/v1/sites/s1/payments",
        headers={**owner, "Idempotency-Key": "k" * 8},
        json={"premises_id": room, "method": "cash", "amount_fen": 100},
    )
    assert r.status_code == 403


def test_bad_input_is_refused_whole(api, billed):
    mgr, fin = login(api, "mgr1"), login(api, "fin1")
    no_date = FEE | {"code": "P2", "prices": [{"unit_fen": "250"}]}
    assert api.post("/api/v1/sites/s1/fee-items", json=no_date, headers=mgr).status_code == 422
    no_price = FEE | {"code": "P3", "prices": []}
    r = api.post("/api/v1/sites/s1/fee-items", json=no_price, headers=mgr)
    assert r.status_code == 422 and "effective date" in r.json()["detail"]
    assert (
        api.post("/api/v1/sites/s1/fee-items", json=FEE, headers=mgr).status_code == 422
    )  # exists
    r = api.post(
        "/api/v1/sites/s1/fee-items", json=FEE | {"code": "P4", "cycle_months": 5}, headers=mgr
    )
    assert r.status_code == 422
    assert api.post("/api/v1/sites/s1/months/2026-08/close", headers=fin).status_code == 201
    r = api.post("/api/v1/sites/s1/bill-runs", json={"month": "2026-08"}, headers=fin)
    assert r.status_code == 409 and "closed" in r.json()["detail"]
    r = api.post("/api/v1/sites/s1/bill-runs", json={"month": "2026-13"}, headers=fin)
    assert r.status_code == 422


def test_a_manager_waives_and_a_cashier_may_not(api, billed):
    rooms, _ = billed
    room = rooms["1-1-0101"]
    cash, mgr = login(api, "cash1"), login(api, "mgr1")
    bill = api.get(f"/api/v1/premises/{room}/statement", headers=cash).json()["bills"][0]
    body = {"amount_fen": 5000, "reason": "空置房减免"}
    r = api.post(f"/api/v1/bills/{bill['id']}/waive", json=body, headers=cash)
    assert r.status_code == 403 and "site managers approve" in r.json()["detail"]
    r = api.post(f"/api/v1/bills/{bill['id']}/waive", json={"amount_fen": 5000}, headers=mgr)
    assert r.status_code == 422  # no reason
    r = api.post(f"/api/v1/bills/{bill['id']}/waive", json=body, headers=mgr)
    assert r.status_code == 201 and r.json()["open_fen"] == 75000 - 5000
    st = api.get(f"/api/v1/premises/{room}/statement", headers=cash).json()
    assert st["waived_fen"] == 5000 and st["outstanding_fen"] == 3 * 75000 - 5000
    r = api.post(
        f"/api/v1/bills/{bill['id']}/waive", json=body | {"amount_fen": 10**6}, headers=mgr
    )
    assert r.status_code == 409
    assert (
        api.post(
            f"/api/v1/bills/{bill['id']}/waive", json=body, headers=login(api, "mgr2")
        ).status_code
        == 404
    )


def test_a_refund_is_asked_by_finance_and_approved_by_a_manager(api, billed):
    rooms, _ = billed
    room = rooms["1-1-0102"]
    cash, fin, mgr = login(api, "cash1"), login(api, "fin1"), login(api, "mgr1")
    pay = api.post(
        "/api/v1/sites/s1/payments",
        headers={**cash, "Idempotency-Key": "refund-pay-1"},
        json={"premises_id": room, "method": "transfer", "amount_fen": 75000},
    ).json()
    bill = api.get(f"/api/v1/premises/{room}/statement", headers=cash).json()["bills"][0]
    ask = {"amount_fen": 80000, "reason": "重复缴费", "bill_id": bill["id"]}
    r = api.post(f"/api/v1/payments/{pay['id']}/refunds", json=ask, headers=fin)
    assert r.status_code == 409 and "at most 750.00" in r.json()["detail"]
    r = api.post(
        f"/api/v1/payments/{pay['id']}/refunds", json=ask | {"amount_fen": 75000}, headers=fin
    )
    assert r.status_code == 201 and r.json()["status"] == "requested"
    refund = r.json()["id"]
    assert api.post(f"/api/v1/refunds/{refund}/approve", json={}, headers=fin).status_code == 403
    r = api.post(f"/api/v1/refunds/{refund}/approve", json={"note": "核实无误"}, headers=mgr)
    assert r.status_code == 200 and r.json()["decided_by"] == "mgr1"
    assert api.post(f"/api/v1/refunds/{refund}/approve", json={}, headers=mgr).status_code == 409
    assert [x["status"] for x in api.get("/api/v1/sites/s1/refunds", headers=fin).json()] == [
        "approved"
    ]
    st = api.get(f"/api/v1/premises/{room}/statement", headers=cash).json()
    assert (st["billed_fen"], st["paid_fen"]) == (3 * 75000 - 75000, 0)
