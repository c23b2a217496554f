"""Bad input is answered 4xx, never 5xx (SQLite and PostgreSQL).

Each case is one the hub answered 500 (or with a server error inside) before: ids that
no row can have, nulls in optional fields, numbers wider than their columns, text no
database stores (NUL, a lone surrogate, NaN), strings longer than their columns, times
outside what the hub keeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlmodel import Session

from hub.workorders.models import WorkOrderRecord
from tests.hub.test_workorders import PNG
from tests.hub.two_sites import RULE, Hub, two_sites

BEYOND_64 = 99999999999999999999  # the example
BEYOND_BIGINT = 2**63
BEYOND_INTEGER = 2**31  # fits 64 bits, not PostgreSQL's INTEGER (subscription ids)
PASS = {"plate": "沪A22222", "start": "2026-11-01T00:00:00+08:00", "end": "2026-12-01T00:00:00Z"}
REPORT = "/api/v1/workorders/reports/sites?start={}&end=2026-11-02T00:00:00Z"

# (what, method, path, keyword arguments, answer); ``{wo}``, ``{alarm}``, ``{sub}``,
# ``{lot}``: Sunny Garden's objects. Sent as the HQ admin, who may do anything.
CASES: list[tuple[str, str, str, dict[str, Any], int]] = [
    ("alarm id beyond 64 bits", "GET", f"/api/v1/alarms/{BEYOND_64}", {}, 404),
    ("alarm id beyond BIGINT", "GET", f"/api/v1/alarms/{BEYOND_BIGINT}", {}, 404),
    ("ack beyond 64 bits", "POST", f"/api/v1/alarms/{BEYOND_64}/ack", {"json": {}}, 404),
    (
        "comment beyond 64 bits",
        "POST",
        f"/api/v1/alarms/{BEYOND_64}/comment",
        {"json": {"note": "x"}},
        404,
    ),
    ("work order beyond 64 bits", "GET", f"/api/v1/workorders/{BEYOND_64}", {}, 404),
    ("step beyond 64 bits", "POST", f"/api/v1/workorders/{BEYOND_64}/start", {}, 404),
    (
        "attachment of an order beyond 64 bits",
        "GET",
        f"/api/v1/workorders/{BEYOND_64}/attachments/a.png",
        {},
        404,
    ),
    (
        "upload to an order beyond BIGINT",
        "POST",
        f"/api/v1/workorders/{BEYOND_BIGINT}/attachments",
        {"files": [("files", ("a.png", PNG, "image/png"))]},
        404,
    ),
    (
        "subscription id beyond INTEGER",
        "PATCH",
        f"/api/v1/notifications/subscriptions/{BEYOND_INTEGER}",
        {"json": {"enabled": False}},
        404,
    ),
    (
        "subscription id beyond 64 bits",
        "DELETE",
        f"/api/v1/notifications/subscriptions/{BEYOND_64}",
        {},
        404,
    ),
    ("before_id beyond BIGINT", "GET", f"/api/v1/workorders?before_id={BEYOND_BIGINT}", {}, 422),
    (
        "null enabled",
        "PATCH",
        "/api/v1/notifications/subscriptions/{sub}",
        {"json": {"enabled": None}},
        422,
    ),
    (
        "null only_assignee",
        "PATCH",
        "/api/v1/notifications/subscriptions/{sub}",
        {"json": {"only_assignee": None}},
        422,
    ),
    (
        "null min_severity: every severity, as documented",
        "PATCH",
        "/api/v1/notifications/subscriptions/{sub}",
        {"json": {"min_severity": None}},
        200,
    ),
    (
        "command value beyond 64 bits",
        "POST",
        "/api/v1/commands",
        {
            "json": {
                "gateway": "gw-sunny",
                "device": "ps-sunny",
                "point": "pressure_setpoint",
                "value": BEYOND_64,
            }
        },
        422,
    ),
    (
        "command value NaN",
        "POST",
        "/api/v1/commands",
        {
            "content": b'{"gateway": "gw-sunny", "device": "ps-sunny", '
            b'"point": "pressure_setpoint", "value": NaN}',
            "headers": {"Content-Type": "application/json"},
        },
        422,
    ),
    ("NUL in the path", "GET", "/api/v1/sites/a%00b/devices", {}, 422),
    ("NUL in an id", "GET", "/api/v1/commands/a%00b", {}, 422),
    ("NUL in the query", "GET", "/api/v1/alarms?site=a%00b", {}, 422),
    ("NUL in a visitor's plate", "GET", "/api/v1/parking/{lot}/quote?plate=a%00", {}, 422),
    (
        "NUL in a JSON body",
        "POST",
        "/api/v1/workorders",
        {"json": {"site": "sunny-garden", "title": "a\x00b"}},
        422,
    ),
    (
        "NUL in a login form",
        "POST",
        "/api/v1/auth/token",
        {"data": {"username": "a\x00", "password": "b"}},
        422,
    ),
    (
        "a lone surrogate in a JSON body",
        "POST",
        "/api/v1/alarms/{alarm}/comment",
        {
            "content": b'{"note": "a\\ud800"}',
            "headers": {"Content-Type": "application/json"},
        },
        422,
    ),
    (
        "a site id longer than its column",
        "POST",
        "/api/v1/workorders",
        {"json": {"site": "s" * 65, "title": "x"}},
        422,
    ),
    (
        "a subscription's site longer than its column",
        "POST",
        "/api/v1/notifications/subscriptions",
        {"json": {"role": "engineer", "site_id": "s" * 65, "event": "*"}},
        422,
    ),
    (
        "a lot's gateway longer than its column",
        "POST",
        "/api/v1/lots",
        {
            "json": {
                "id": "lot-x",
                "site_id": "sunny-garden",
                "gateway_id": "g" * 65,
                "policy": {"capacity": 1, "rule": RULE},
            }
        },
        422,
    ),
    (
        "a pass's plate longer than a plate",
        "POST",
        "/api/v1/lots/{lot}/passes",
        {"json": {**PASS, "plate": "沪" * 17}},
        422,
    ),
    (
        "a listed plate longer than a plate",
        "POST",
        "/api/v1/lots/{lot}/lists",
        {"json": {"plate": "沪" * 17, "kind": "deny", "start": PASS["start"]}},
        422,
    ),
    (
        "an empty listed plate",
        "POST",
        "/api/v1/lots/{lot}/lists",
        {"json": {"plate": "", "kind": "deny", "start": PASS["start"]}},
        422,
    ),
    (
        "a pass from before 1970",
        "POST",
        "/api/v1/lots/{lot}/passes",
        {"json": {**PASS, "start": "1969-12-31T00:00:00Z"}},
        422,
    ),
    (
        "a pass to the end of time, in a zone behind UTC",
        "POST",
        "/api/v1/lots/{lot}/passes",
        {"json": {**PASS, "end": "9999-12-31T23:00:00-05:00"}},
        422,
    ),
    (
        "a report from the year 1, in a zone ahead of UTC",
        "GET",
        REPORT.format("0001-01-01T00:00:00%2B05:00"),
        {},
        422,
    ),
]


@pytest.fixture
def hub(engine, db_url, tmp_path) -> Iterator[Hub]:
    with two_sites(engine, db_url, tmp_path) as h:
        yield h


def test_bad_input_is_a_4xx(hub: Hub) -> None:
    ids = hub.sunny.ids
    fill = {"wo": ids["wo_id"], "alarm": ids["alarm_id"], "sub": ids["sub_id"], "lot": "lot-sunny"}
    wrong = []
    for what, method, path, kw, code in CASES:
        kw = {**kw, "headers": {**hub.auth("hq"), **kw.get("headers", {})}}
        r = hub.client.request(method, path.format(**fill), **kw)
        if r.status_code != code:
            wrong.append(f"{what}: {r.status_code} {r.text[:200]}")
    assert wrong == [], "\n".join(wrong)


def test_a_photos_name_is_stored_without_control_characters(hub: Hub) -> None:
    order = hub.sunny.ids["wo_id"]
    body = (
        b'--b\r\nContent-Disposition: form-data; name=files; filename="a\x00\x1bb.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + PNG + b"nul\r\n--b--\r\n"
    )
    r = hub.client.post(
        f"/api/v1/workorders/{order}/attachments",
        content=body,
        headers={**hub.auth("hq"), "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert r.status_code == 201, r.text
    with Session(hub.client.app.state.engine) as s:
        rec = s.get(WorkOrderRecord, order)
        assert rec is not None
        assert [a["filename"] for a in rec.attachments][-1] == "ab.png"


def test_a_charge_wider_than_its_column_is_refused(hub: Hub) -> None:
    order, eng = hub.sunny.ids["wo_id"], hub.auth("eng-sunny")
    assert hub.client.post(f"/api/v1/workorders/{order}/start", headers=eng).status_code == 200
    r = hub.client.post(
        f"/api/v1/workorders/{order}/finish", json={"charge_fen": BEYOND_BIGINT}, headers=eng
    )
    assert r.status_code == 422, r.text
    done = hub.client.post(
        f"/api/v1/workorders/{order}/finish", json={"charge_fen": 5000}, headers=eng
    )
    assert done.status_code == 200 and done.json()["charge_fen"] == 5000
