"""The property registry through the API: who may read and write what, masked personal
data, imports that name their bad cells, another site's premises answered 404."""

from __future__ import annotations

import functools
import io

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from sqlmodel import Session, select

from hub.api.app import create_app
from hub.auth import Role, hash_password, issue_token
from hub.db import session_scope
from hub.models import User
from hub.settings import load_settings
from tests.hub.property.conftest import resident_id, workbook

PW = "correct horse battery"
ID1 = resident_id("11010519491231002")
OWNERS_HEAD = ["房屋编号", "姓名", "电话", "身份证号", "身份", "入住日期", "迁出日期", "缴费人"]
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@functools.cache
def password_hash() -> str:
    return hash_password(PW)


@pytest.fixture
def api(sites, db_url, tmp_path):
    with session_scope(sites) as s:
        for name, role, sites_ in [
            ("admin", Role.HQ_ADMIN, []),
            ("mgr1", Role.SITE_MANAGER, ["s1"]),
            ("mgr2", Role.SITE_MANAGER, ["s2"]),
            ("eng1", Role.ENGINEER, ["s1"]),
            ("fin1", Role.FINANCE, ["s1"]),
            ("cash1", Role.CASHIER, ["s1"]),
            ("owner1", Role.OWNER, ["s1"]),
            ("owner2", Role.OWNER, ["s1"]),
        ]:
            s.add(User(username=name, password_hash=password_hash(), role=role, sites=sites_))
    settings = load_settings(
        database_url=db_url,
        mqtt_url="mqtt://127.0.0.1:9",
        secret_file=tmp_path / "secret",
        person_key_file=tmp_path / "person-key",
        notify_secret_file=tmp_path / "notify-secret",
        embedded_ingest=False,
    )
    with TestClient(create_app(settings, sites)) as client:
        yield client


def login(client, user):
    with Session(client.app.state.engine) as s:
        u = s.exec(select(User).where(User.username == user)).one()
    return {"Authorization": f"Bearer {issue_token(u, client.app.state.secret, 3600)}"}


GENERATE = {
    "buildings": 1,
    "units": 1,
    "floors": 2,
    "rooms_per_floor": 2,
    "areas": [{"built": "120.50", "interior": "98.30"}, {"built": 89, "interior": "72.00"}],
}


def upload(data: bytes):
    return {"file": ("owners.xlsx", data, XLSX)}


def premises(api, who, site="s1"):
    r = api.get(f"/api/v1/sites/{site}/premises", headers=login(api, who))
    assert r.status_code == 200, r.text
    return {p["code"]: p for p in r.json()["items"]}


def test_managers_write_and_the_rest_of_the_staff_read(api):
    mgr, fin, cash, eng = (login(api, u) for u in ("mgr1", "fin1", "cash1", "eng1"))
    r = api.post("/api/v1/sites/s1/premises/generate", json=GENERATE, headers=mgr)
    assert r.status_code == 201, r.text
    assert r.json() == {"created": 4}
    for who in (cash, fin, eng):
        r = api.post(
            "/api/v1/sites/s1/premises/generate", json=GENERATE | {"code": "X{number}"}, headers=who
        )
        assert r.status_code == 403
        assert "reads the property registry only" in r.json()["detail"]
    page = api.get("/api/v1/sites/s1/premises?limit=3&offset=1", headers=cash).json()
    assert (page["total"], [p["code"] for p in page["items"]]) == (
        4,
        ["1-1-0102", "1-1-0201", "1-1-0202"],
    )
    assert page["items"][0]["built_area"] == "89.00"
    filtered = api.get(
        "/api/v1/sites/s1/premises?building=1&unit=1&state=vacant&kind=room", headers=fin
    )
    assert filtered.json()["total"] == 4
    assert api.get("/api/v1/sites/s1/premises?building=2", headers=fin).json()["total"] == 0
    assert [b["code"] for b in api.get("/api/v1/sites/s1/buildings", headers=eng).json()] == ["1"]
    # the same pattern again: every code is taken, nothing is created
    r = api.post("/api/v1/sites/s1/premises/generate", json=GENERATE, headers=mgr)
    assert r.status_code == 409 and "already registered: 1-1-0101" in r.json()["detail"]
    bad = GENERATE | {"code": "{building}-{unit}-{floor}"}
    r = api.post("/api/v1/sites/s1/premises/generate", json=bad, headers=mgr)
    assert r.status_code == 422 and "gives 1-1-1 twice" in r.json()["detail"]

    owners = workbook(
        业主=[OWNERS_HEAD, ["1-1-0101", "张三", "13812345678", ID1, "业主", "2024-01-01", "", ""]]
    )
    r = api.post("/api/v1/sites/s1/property/import/owners", files=upload(owners), headers=cash)
    assert r.status_code == 403
    r = api.post("/api/v1/sites/s1/property/import/owners", files=upload(owners), headers=mgr)
    assert r.status_code == 200, r.text
    assert r.json() == {"rooms": 0, "occupancies": 1, "people": 1}
    pid = premises(api, "mgr1")["1-1-0101"]["id"]
    # the full phone for managers on the single view; masked for everyone else
    (occ,) = api.get(f"/api/v1/premises/{pid}", headers=mgr).json()["occupants"]
    assert (occ["phone"], occ["id_number"]) == ("13812345678", f"****{ID1[-4:]}")
    for who in (cash, fin, eng):
        (occ,) = api.get(f"/api/v1/premises/{pid}", headers=who).json()["occupants"]
        assert (occ["phone"], occ["id_number"]) == ("138****5678", f"****{ID1[-4:]}")

    body = {
        "effective_from": "2025-01-01",
        "built_area": "121.00",
        "interior_area": "99.00",
        "reason": "re-survey",
    }
    assert api.post(f"/api/v1/premises/{pid}/areas", json=body, headers=cash).status_code == 403
    r = api.post(f"/api/v1/premises/{pid}/areas", json=body, headers=mgr)
    assert r.status_code == 201, r.text
    assert [a["built_area"] for a in r.json()["history"]] == ["120.50", "121.00"]
    assert api.post(f"/api/v1/premises/{pid}/areas", json=body, headers=mgr).status_code == 409
    r = api.post(
        f"/api/v1/premises/{pid}/areas",
        json=body | {"effective_from": "2025-02-01", "interior_area": "130"},
        headers=mgr,
    )
    assert r.status_code == 422 and "more than built area" in r.json()["detail"]
    detail = api.get(f"/api/v1/premises/{pid}", headers=fin).json()
    assert [(a["effective_from"], a["recorded_by"]) for a in detail["areas"]] == [
        ("2000-01-01", "mgr1"),
        ("2025-01-01", "mgr1"),
    ]

    sale = {
        "day": "2025-06-01",
        "buyer": {"name": "王五", "phone": "13900001111", "username": "owner2"},
    }
    assert api.post(f"/api/v1/premises/{pid}/sale", json=sale, headers=cash).status_code == 403
    r = api.post(f"/api/v1/premises/{pid}/sale", json=sale, headers=mgr)
    assert r.status_code == 201, r.text
    assert (r.json()["ended"]["until"], r.json()["new"]["start"]) == ("2025-06-01", "2025-06-01")
    assert r.json()["new"]["phone"] == "139****1111"
    again = api.post(f"/api/v1/premises/{pid}/sale", json=sale, headers=mgr)
    assert again.status_code == 409

    move_in = {"person": {"name": "李四"}, "role": "tenant", "start": "2025-07-01", "payer": True}
    r = api.post(f"/api/v1/premises/{pid}/occupancies", json=move_in, headers=mgr)
    assert r.status_code == 201, r.text
    occ_id = r.json()["id"]
    assert (
        api.post(
            f"/api/v1/occupancies/{occ_id}/move-out", json={"until": "2026-01-01"}, headers=fin
        ).status_code
        == 403
    )
    r = api.post(
        f"/api/v1/occupancies/{occ_id}/move-out", json={"until": "2026-01-01"}, headers=mgr
    )
    assert r.status_code == 200 and r.json()["until"] == "2026-01-01"

    r = api.get("/api/v1/sites/s1/property/export", headers=cash)
    assert r.status_code == 200 and r.headers["content-type"] == XLSX
    wb = load_workbook(io.BytesIO(r.content))
    phones = [row[2] for row in wb["业主"].iter_rows(min_row=2, values_only=True)]
    assert phones == ["138****5678", "139****1111", None]  # 李四 gave none


def test_imports_name_their_bad_cells_and_refuse_what_is_no_workbook(api):
    mgr = login(api, "mgr1")
    rooms = workbook(
        房屋=[
            [
                "building",
                "unit",
                "floor",
                "number",
                "code",
                "use",
                "state",
                "built_area",
                "interior_area",
            ],
            ["1", "1", 1, "0101", "1-1-0101", "residence", "vacant", "80", "70"],
            ["1", "1", 1, "0102", "1-1-0102", "residence", "vacant", "-1", "70"],
        ],
        业主=[OWNERS_HEAD, ["1-1-0101", "张三", "1381234", "", "业主", "2024-01-01", "", ""]],
    )
    r = api.post("/api/v1/sites/s1/property/import/rooms", files=upload(rooms), headers=mgr)
    assert r.status_code == 422
    assert r.json()["detail"]["errors"] == [
        {
            "sheet": "房屋",
            "row": 3,
            "column": "H",
            "header": "built_area",
            "message": "area must be more than 0, not -1",
        },
        {
            "sheet": "业主",
            "row": 2,
            "column": "C",
            "header": "电话",
            "message": "'1381234' is not a phone number (11-digit mobile or area code + number)",
        },
    ]
    assert premises(api, "mgr1") == {}
    r = api.post(
        "/api/v1/sites/s1/property/import/rooms", files=upload(b"PK\x03\x04 broken"), headers=mgr
    )
    assert r.status_code == 422 and "not an xlsx workbook" in r.json()["detail"]
    r = api.post("/api/v1/sites/s1/property/import/rooms", files=upload(b"\x00" * 100), headers=mgr)
    assert r.status_code == 422 and "not an xlsx workbook" in r.json()["detail"]
    # another site's manager may not import here
    r = api.post(
        "/api/v1/sites/s1/property/import/rooms", files=upload(rooms), headers=login(api, "mgr2")
    )
    assert r.status_code == 403


def test_another_sites_premises_is_404_and_owners_see_only_their_own(api):
    mgr = login(api, "mgr1")
    assert (
        api.post("/api/v1/sites/s1/premises/generate", json=GENERATE, headers=mgr).status_code
        == 201
    )
    codes = premises(api, "mgr1")
    mine, other = codes["1-1-0101"]["id"], codes["1-1-0102"]["id"]
    for pid, name, user in [(mine, "张三", "owner1"), (other, "李四", "owner2")]:
        body = {
            "person": {"name": name, "phone": "13812345678", "username": user},
            "role": "owner",
            "start": "2024-01-01",
        }
        assert (
            api.post(f"/api/v1/premises/{pid}/occupancies", json=body, headers=mgr).status_code
            == 201
        )

    mgr2 = login(api, "mgr2")
    r = api.get(f"/api/v1/premises/{mine}", headers=mgr2)
    assert (r.status_code, r.json()["detail"]) == (404, f"no premises {mine}")
    assert api.get("/api/v1/premises/999999", headers=mgr2).json()["detail"] == "no premises 999999"
    area = {"effective_from": "2025-01-01", "built_area": "100", "interior_area": "90"}
    assert api.post(f"/api/v1/premises/{mine}/areas", json=area, headers=mgr2).status_code == 404
    assert api.get("/api/v1/sites/s1/premises", headers=mgr2).status_code == 403
    assert api.get("/api/v1/sites/s2/premises", headers=mgr2).json()["total"] == 0
    assert api.get(f"/api/v1/premises/{mine}", headers=login(api, "admin")).status_code == 200

    owner = login(api, "owner1")
    assert [p["code"] for p in api.get("/api/v1/me/premises", headers=owner).json()] == ["1-1-0101"]
    r = api.get(f"/api/v1/premises/{mine}", headers=owner)
    assert r.status_code == 200 and r.json()["occupants"][0]["phone"] == "138****5678"
    assert api.get(f"/api/v1/premises/{other}", headers=owner).status_code == 404
    assert api.get("/api/v1/sites/s1/premises", headers=owner).status_code == 403
    assert api.post(f"/api/v1/premises/{mine}/areas", json=area, headers=owner).status_code == 403
    assert api.get("/api/v1/premises/0", headers=owner).status_code == 404
