"""No user reaches, nor learns of, an object of another site or another owner (SQLite
and PostgreSQL).

Each route that takes an object by its id is asked, by a user of Sunny Garden, for the
same kind of object of Lotus Court: the answer is 404 with the words of a missing one,
and carries nothing of Lotus Court. The same request for Sunny Garden's object answers
otherwise (the route is reachable: the 404 is the scope's, not a typo's). A site named by
the caller outside his own is 403. Lists never show the other site's rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlmodel import Session

from hub.auth import Role
from hub.models import User
from tests.hub.test_workorders import PNG, password_hash
from tests.hub.two_sites import RULE, Hub, SiteData, two_sites

POLICY = {"capacity": 20, "rule": RULE, "monthly_fen": 25000}
WINDOW = {"start": "2026-11-01T00:00:00+08:00", "end": "2026-11-02T00:00:00+08:00"}
PASS = {"plate": "沪A22222", "start": WINDOW["start"], "end": WINDOW["end"]}
HISTORY = {"point": "outlet_pressure", **WINDOW}

# (who, method, path with the other site's ids, keyword arguments, control answer for
# the caller's own site's ids)
BY_ID: list[tuple[str, str, str, dict[str, Any], int]] = [
    ("mgr-sunny", "get", "/api/v1/alarms/{alarm_id}", {}, 200),
    ("eng-sunny", "post", "/api/v1/alarms/{alarm_id}/ack", {"json": {}}, 200),
    ("mgr-sunny", "post", "/api/v1/alarms/{alarm_id}/comment", {"json": {"note": "x"}}, 200),
    ("mgr-sunny", "get", "/api/v1/workorders/{wo_id}", {}, 200),
    ("owner-sunny", "get", "/api/v1/workorders/{wo_id}", {}, 200),
    ("eng-sunny", "post", "/api/v1/workorders/{wo_id}/start", {}, 200),
    ("owner-sunny", "get", "/api/v1/workorders/{wo_id}/attachments/{name}", {}, 200),
    (
        "mgr-sunny",
        "post",
        "/api/v1/workorders/{wo_id}/attachments",
        {"files": [("files", ("p.png", PNG + b"scope", "image/png"))]},
        201,
    ),
    ("eng-sunny", "get", "/api/v1/commands/{command_id}", {}, 200),
    ("mgr-sunny", "get", "/api/v1/devices/{gateway}/{device}/latest", {}, 200),
    ("owner-sunny", "get", "/api/v1/devices/{gateway}/{device}/latest", {}, 200),
    ("fin-sunny", "get", "/api/v1/devices/{gateway}/{device}/history", {"params": HISTORY}, 200),
    ("fin-sunny", "get", "/api/v1/lots/{lot_id}", {}, 200),
    ("mgr-sunny", "put", "/api/v1/lots/{lot_id}/policy", {"json": POLICY}, 200),
    ("mgr-sunny", "post", "/api/v1/lots/{lot_id}/passes", {"json": PASS}, 201),
    (
        "mgr-sunny",
        "post",
        "/api/v1/lots/{lot_id}/lists",
        {"json": {"plate": "沪A33333", "kind": "deny", "start": WINDOW["start"]}},
        201,
    ),
    ("eng-sunny", "get", "/api/v1/lots/{lot_id}/sessions", {}, 200),
    ("owner-sunny", "get", "/api/v1/lots/{lot_id}/passes", {}, 200),
    ("fin-sunny", "get", "/api/v1/lots/{lot_id}/reports/revenue", {"params": WINDOW}, 200),
    (
        "owner-sunny",
        "post",
        "/api/v1/lots/{lot_id}/passes/purchase",
        {"json": {"plate": "沪A11111", "months": 1}, "headers": {"Idempotency-Key": "k" * 8}},
        422,  # no payment channel here: the lot was found
    ),
    ("mgr-sunny", "delete", "/api/v1/lots/{lot_id}/passes/{pass_id}", {}, 204),
    ("mgr-sunny", "patch", "/api/v1/notifications/subscriptions/{sub_id}", {"json": {}}, 200),
    ("mgr-sunny", "delete", "/api/v1/notifications/subscriptions/{sub_id}", {}, 204),
    ("mgr-sunny", "put", "/api/v1/engineers/{username}", {"json": {"on_duty": False}}, 200),
    ("mgr-sunny", "post", "/api/v1/workorders/{wo_id}/close", {"json": {"note": "x"}}, 200),
]
# objects named in the body: the other site's are answered as missing too
IN_BODY: list[tuple[str, str, str, dict[str, Any], int, int]] = [
    (
        "eng-sunny",
        "post",
        "/api/v1/commands",
        {
            "json": {
                "gateway": "{gateway}",
                "device": "{device}",
                "point": "pressure_setpoint",
                "value": 0.4,
            }
        },
        202,
        404,
    ),
    (
        "mgr-sunny",
        "post",
        "/api/v1/lots",
        {
            "json": {
                "id": "lot-new",
                "site_id": "sunny-garden",
                "gateway_id": "{gateway}",
                "policy": POLICY,
            }
        },
        201,
        422,  # a lot at Sunny Garden may not drive Lotus Court's gateway
    ),
]
NAMED_SITE = [
    ("mgr-sunny", "/api/v1/sites/{site}/gateways"),
    ("eng-sunny", "/api/v1/sites/{site}/devices"),
    ("mgr-sunny", "/api/v1/sites/{site}/deadletters"),
    ("mgr-sunny", "/api/v1/alarms?site={site}"),
    ("mgr-sunny", "/api/v1/workorders?site={site}"),
    ("mgr-sunny", "/api/v1/engineers?site={site}"),
    ("fin-sunny", "/api/v1/payments?site={site}"),
    (
        "mgr-sunny",
        "/api/v1/workorders/reports/sites?site={site}&start=2026-11-01T00:00:00Z"
        "&end=2026-11-02T00:00:00Z",
    ),
]
LISTS = [
    "/api/v1/sites",
    "/api/v1/devices",
    "/api/v1/alarms",
    "/api/v1/workorders",
    "/api/v1/engineers",
    "/api/v1/payments",
    "/api/v1/notifications",
    "/api/v1/notifications/subscriptions",
    "/api/v1/workorders/reports/sites?start=2026-01-01T00:00:00Z&end=2026-12-31T00:00:00Z",
    "/api/v1/workorders/reports/alarms?start=2026-01-01T00:00:00Z&end=2026-12-31T00:00:00Z",
]
CALLERS = ("mgr-sunny", "eng-sunny", "fin-sunny", "owner-sunny")


@pytest.fixture
def hub(engine, db_url, tmp_path) -> Iterator[Hub]:
    with two_sites(engine, db_url, tmp_path) as h:
        with Session(engine) as s:  # Sunny Garden's other owner: a neighbour
            s.add(
                User(
                    username="neighbour-sunny",
                    password_hash=password_hash(),
                    role=Role.OWNER,
                    sites=["sunny-garden"],
                )
            )
            s.commit()
        yield h


def _fill(value: Any, data: SiteData) -> Any:
    if isinstance(value, str):
        return value.format(**data.ids)
    if isinstance(value, dict):
        return {k: _fill(v, data) for k, v in value.items()}
    return value


def _ask(hub: Hub, who: str, method: str, path: str, kw: dict[str, Any], data: SiteData):
    kw = dict(kw)
    kw["headers"] = {**hub.auth(who), **kw.get("headers", {})}
    for key in ("json", "params"):
        if key in kw:
            kw[key] = _fill(kw[key], data)
    return hub.client.request(method.upper(), path.format(**data.ids), **kw)


def _leaks(hub: Hub, text: str, asked: str = "") -> list[str]:
    return sorted(m for m in hub.lotus.markers if m in text and m not in asked)


def test_another_sites_objects_are_not_found_and_not_shown(hub: Hub) -> None:
    wrong = []
    for who, method, path, kw, own in BY_ID:
        theirs = _ask(hub, who, method, path, kw, hub.lotus)
        asked = path.format(**hub.lotus.ids)  # its own words echoed are no leak
        mine = _ask(hub, who, method, path, kw, hub.sunny)
        if theirs.status_code != 404 or _leaks(hub, theirs.text, asked) or mine.status_code != own:
            wrong.append((who, method, path, theirs.status_code, theirs.text, mine.status_code))
    for who, method, path, kw, own, code in IN_BODY:
        theirs = _ask(hub, who, method, path, kw, hub.lotus)
        asked = str(_fill(kw, hub.lotus))
        mine = _ask(hub, who, method, path, kw, hub.sunny)
        if theirs.status_code != code or _leaks(hub, theirs.text, asked) or mine.status_code != own:
            wrong.append((who, method, path, theirs.status_code, theirs.text, mine.status_code))
    assert wrong == [], "\n".join(map(str, wrong))


def test_a_site_named_outside_ones_own_is_forbidden(hub: Hub) -> None:
    wrong = []
    for who, path in NAMED_SITE:
        theirs = hub.client.get(path.format(site="lotus-court"), headers=hub.auth(who))
        mine = hub.client.get(path.format(site="sunny-garden"), headers=hub.auth(who))
        if (
            theirs.status_code != 403
            or _leaks(hub, theirs.text, "lotus-court")
            or not mine.is_success
        ):
            wrong.append((who, path, theirs.status_code, theirs.text, mine.status_code))
    assert wrong == [], "\n".join(map(str, wrong))


@pytest.mark.parametrize("who", CALLERS)
def test_lists_show_nothing_of_another_site(hub: Hub, who: str) -> None:
    for path in LISTS:
        r = hub.client.get(path, headers=hub.auth(who))
        assert r.status_code < 500 and _leaks(hub, r.text) == [], (who, path, r.text)


def test_an_owner_reaches_neither_a_neighbours_device_repair_nor_pass(hub: Hub) -> None:
    neighbour = hub.auth("neighbour-sunny")
    ids = hub.sunny.ids
    for path in (
        f"/api/v1/devices/{ids['gateway']}/{ids['device']}/latest",
        f"/api/v1/workorders/{ids['wo_id']}",
        f"/api/v1/workorders/{ids['wo_id']}/attachments/{ids['name']}",
    ):
        r = hub.client.get(path, headers=neighbour)
        assert r.status_code == 404 and "owner-sunny" not in r.text, (path, r.text)
    r = hub.client.post(
        f"/api/v1/workorders/{ids['wo_id']}/rate", json={"rating": 5}, headers=neighbour
    )
    assert r.status_code == 404
    assert hub.client.get("/api/v1/workorders", headers=neighbour).json() == []
    passes = hub.client.get(f"/api/v1/lots/{ids['lot_id']}/passes", headers=neighbour)
    assert passes.status_code == 200 and passes.json() == []  # owner-sunny's is not his
    assert hub.client.get("/api/v1/devices", headers=neighbour).json() == []
