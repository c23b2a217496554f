"""Work orders at the hub (SQLite and PostgreSQL): opened by alarms exactly once, dispatched
round-robin, every step through the API with the lifecycle's refusals, owners' repair
requests with photos, SLA breaches recorded once, reports."""

from __future__ import annotations

import csv
import functools
import io
import threading
from datetime import timedelta

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import inspect
from sqlmodel import Session, SQLModel, col, select

from hub.alarms import service as alarms
from hub.alarms.models import Alarm
from hub.api.app import create_app
from hub.auth import Role, hash_password, issue_token
from hub.db import alembic_config, session_scope, upgrade
from hub.models import User, utcnow
from hub.notify import service as notify_service
from hub.notify.models import Notification
from hub.settings import load_settings
from hub.workorders import dispatching, from_alarms, service, sla
from hub.workorders.lifecycle import (
    SYSTEM,
    Action,
    Actor,
    IllegalTransition,
    InvalidAction,
    NotPermitted,
    Priority,
    Source,
    transition,
)
from hub.workorders.lifecycle import Role as LRole
from hub.workorders.models import WorkOrderAudit, WorkOrderRecord
from protocols.alarms.engine import Change, ChangeKind
from protocols.alarms.model import Severity
from tests.hub.test_alarms import Feed

PW = "correct horse battery"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def settings_for(db_url, tmp_path, **kw):
    return load_settings(
        database_url=db_url,
        mqtt_url="mqtt://127.0.0.1:9",  # nobody there: the API needs no broker here
        secret_file=tmp_path / "secret",
        embedded_ingest=False,
        attachments_dir=tmp_path / "attachments",
        attachment_max_bytes=4096,
        notify_secret_file=tmp_path / "notify-secret",
        **kw,
    )


@functools.cache
def password_hash() -> str:
    return hash_password(PW)  # argon2 on purpose slow: once for every test user


def add_users(engine, *users: tuple[str, Role, list[str]]) -> None:
    with session_scope(engine) as s:
        for name, role, sites in users:
            s.add(User(username=name, password_hash=password_hash(), role=role, sites=sites))


@pytest.fixture
def people(engine):
    """Site s1: two plumbers (one on duty), an electrician, a manager, two owners; s2: a
    plumber on duty; an HQ admin."""
    add_users(
        engine,
        ("admin", Role.HQ_ADMIN, []),
        ("mgr1", Role.SITE_MANAGER, ["s1"]),
        ("pl-a", Role.ENGINEER, ["s1"]),
        ("pl-b", Role.ENGINEER, ["s1"]),
        ("el-a", Role.ENGINEER, ["s1"]),
        ("pl-z", Role.ENGINEER, ["s2"]),
        ("owner1", Role.OWNER, ["s1"]),
        ("owner2", Role.OWNER, ["s1"]),
    )
    with Session(engine) as s:
        dispatching.set_duty(s, "pl-a", "mgr1", skills=["plumbing"], on_duty=True)
        dispatching.set_duty(s, "pl-b", "mgr1", skills=["plumbing"], on_duty=False)
        dispatching.set_duty(s, "el-a", "mgr1", skills=["electrical"], on_duty=True)
        dispatching.set_duty(s, "pl-z", "admin", skills=["plumbing"], on_duty=True)


@pytest.fixture
def hooks(db_url, tmp_path):
    undo = from_alarms.install(settings_for(db_url, tmp_path))
    yield
    undo()


def orders(engine) -> list[WorkOrderRecord]:
    with Session(engine) as s:
        return list(s.exec(select(WorkOrderRecord).order_by(col(WorkOrderRecord.id))))


def trail(engine, order_id) -> list[WorkOrderAudit]:
    with Session(engine) as s:
        return service.trail(s, order_id)


def notes(engine, event=None) -> list[tuple[str, str]]:
    with Session(engine) as s:
        q = select(Notification).order_by(col(Notification.id))
        if event:
            q = q.where(Notification.event == event)
        return [(n.event, n.recipient) for n in s.exec(q)]


# -- from alarms ---------------------------------------------------------------------------------
def test_a_pump_pressure_alarm_opens_one_order_for_the_plumber_on_duty(engine, people, hooks):
    feed = Feed(engine)
    feed.pressure(0, 0.22)
    (alarm,) = feed.pressure(31, 0.22)  # major after 30 s
    (wo,) = orders(engine)
    assert (wo.source, wo.alarm_id, wo.site_id) == ("alarm", alarm.id, "s1")
    assert (wo.priority, wo.skill, wo.state, wo.assignee) == (
        "high",
        "plumbing",
        "accepted",
        "pl-a",
    )
    assert wo.accept_due == wo.created_at + timedelta(minutes=30)
    with Session(engine) as s:
        stored = s.get(Alarm, alarm.id)
        assert stored is not None and stored.work_order_id == wo.id
    assert [(a.action, a.actor, a.to_state) for a in trail(engine, wo.id)] == [
        ("create", "system", "new"),
        ("auto_assign", "system", "accepted"),
    ]
    assert ("workorder.assigned", "pl-a") in notes(engine)
    assert notes(engine, "alarm.raised") == []  # major: nobody asked for those by default

    feed.pressure(40, 0.15)  # critical below 0.18, for 30 s: the same alarm escalates
    feed.pressure(71, 0.15)
    (wo,) = orders(engine)
    assert wo.priority == "urgent" and wo.accept_due == wo.created_at + timedelta(minutes=15)
    told = set(notes(engine, "alarm.raised"))
    assert told == {
        ("alarm.raised", "pl-a"),
        ("alarm.raised", "pl-b"),
        ("alarm.raised", "el-a"),
    } | {
        ("alarm.raised", "mgr1"),
        ("alarm.raised", "admin"),
    }  # critical: engineers and managers of s1, HQ; not pl-z of s2

    feed.pressure(80, 0.30)  # back above the clear level
    (wo,) = orders(engine)
    assert wo.state == "accepted"  # an engineer finishes it, not the alarm
    steps = trail(engine, wo.id)
    assert [a.action for a in steps] == ["create", "auto_assign", "priority", "alarm_cleared"]
    assert steps[2].details == {"from": "high", "to": "urgent"}
    assert steps[3].note.startswith(f"alarm {alarm.id} cleared at ")
    assert len(orders(engine)) == 1


def test_the_threshold_is_a_setting_compared_by_rank(engine, people):
    undo = alarms.register_hook(
        from_alarms.work_order_hook(service.Config(min_severity=Severity.CRITICAL))
    )
    try:
        feed = Feed(engine)
        feed.pressure(0, 0.22)
        feed.pressure(31, 0.22)  # major: below the threshold
        assert orders(engine) == []
        feed.pressure(40, 0.15)
        (alarm,) = feed.pressure(71, 0.15)  # escalated to critical: now it opens one
        (wo,) = orders(engine)
        assert (wo.alarm_id, wo.priority) == (alarm.id, "urgent")
    finally:
        undo()


def test_two_triggers_at_once_open_one_order(engine, people, hooks):
    """Two ingest processes apply samples that both complete the duration."""
    feeds = [Feed(engine), Feed(engine)]
    feeds[0].pressure(0, 0.22)
    feeds[1].seq = feeds[0].seq
    barrier = threading.Barrier(2)
    errors: list[Exception] = []

    def apply(i: int) -> None:
        feeds[i].seq = 10 + i  # distinct messages, both past the 30 s
        barrier.wait()
        try:
            feeds[i].pressure(31 + i, 0.22)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=apply, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    (wo,) = orders(engine)
    assert wo.alarm_id is not None


def test_the_hook_run_twice_at_once_for_one_alarm_opens_one_order(engine, people):
    """Even without the ingest's gateway lock: the unique alarm_id decides."""
    feed = Feed(engine)  # no hooks installed: the alarm is raised without an order
    feed.pressure(0, 0.22)
    (alarm,) = feed.pressure(31, 0.22)
    assert orders(engine) == []
    hook = from_alarms.work_order_hook(service.Config())
    change = Change(
        ChangeKind.RAISE, "outlet-pressure-low", "outlet_pressure_low", 0, Severity.MAJOR, "low"
    )
    barrier = threading.Barrier(2)
    errors: list[Exception] = []

    def trigger() -> None:
        barrier.wait()
        try:
            with session_scope(engine) as s:
                a = s.get(Alarm, alarm.id)
                assert a is not None
                hook(s, a, change)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=trigger) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    (wo,) = orders(engine)
    assert [a.action for a in trail(engine, wo.id)] == ["create", "auto_assign"]
    with Session(engine) as s:
        stored = s.get(Alarm, alarm.id)
        assert stored is not None and stored.work_order_id == wo.id


def test_alarms_raised_without_the_hooks_get_their_order_from_the_sweep(engine, people):
    """``python -m hub ingest`` alone runs no hooks: the dispatcher's sweep opens the order."""
    feed = Feed(engine)
    feed.pressure(0, 0.22)
    (alarm,) = feed.pressure(31, 0.22)
    assert orders(engine) == []
    config = service.Config()
    assert from_alarms.sweep(engine, config) == 1
    assert from_alarms.sweep(engine, config) == 0
    (wo,) = orders(engine)
    assert (wo.alarm_id, wo.priority, wo.assignee) == (alarm.id, "high", "pl-a")
    with Session(engine) as s:
        stored = s.get(Alarm, alarm.id)
        assert stored is not None and stored.work_order_id == wo.id


def test_round_robin_takes_turns_and_skips_those_off_duty(engine, people):
    config = service.Config()
    with Session(engine) as s:
        dispatching.set_duty(s, "pl-b", "mgr1", on_duty=True)
    got = []
    for i in range(4):
        with session_scope(engine) as s:
            rec = service.open_order(
                s,
                config,
                service.NewOrder("s1", Source.STAFF, f"leak {i}", "mgr1", skill="plumbing"),
                Actor("mgr1", LRole.SITE_MANAGER, frozenset({"s1"})),
            )
            assert rec is not None
            got.append(rec.assignee)
    assert got == ["pl-a", "pl-b", "pl-a", "pl-b"]
    with Session(engine) as s:
        dispatching.set_duty(s, "pl-a", "pl-a", on_duty=False)
        dispatching.set_duty(s, "pl-b", "pl-b", on_duty=False)
    with session_scope(engine) as s:
        rec = service.open_order(
            s,
            config,
            service.NewOrder("s1", Source.STAFF, "drip", "mgr1", skill="plumbing"),
            SYSTEM,
        )
        assert rec is not None and rec.state == "new" and rec.assignee is None
    assert notes(engine, "workorder.unassigned") == [("workorder.unassigned", "mgr1")]


# -- the API ------------------------------------------------------------------------------------
@pytest.fixture
def api(engine, db_url, tmp_path, people):
    settings = settings_for(db_url, tmp_path)
    with TestClient(create_app(settings, engine)) as client:
        yield client


def login(client, user):
    """A token as the login route issues it (argon2 checks are tested in test_api.py)."""
    with Session(client.app.state.engine) as s:
        u = s.exec(select(User).where(User.username == user)).one()
    return {"Authorization": f"Bearer {issue_token(u, client.app.state.secret, 3600)}"}


def lifecycle_message(exc_type, order, actor, action, **kw) -> str:
    with pytest.raises(exc_type) as info:
        transition(order, actor, action, utcnow(), **kw)
    return str(info.value)


def test_every_step_through_the_api_with_the_lifecycles_refusals(api, engine):
    mgr, pla, plb, elx = (login(api, u) for u in ("mgr1", "pl-a", "pl-b", "el-a"))
    r = api.post(
        "/api/v1/workorders",
        json={"site": "s1", "title": "Door closer broken", "skill": "carpentry"},
        headers=mgr,
    )
    assert r.status_code == 201, r.text
    wo = r.json()
    oid = wo["id"]
    assert (wo["state"], wo["assignee"], wo["source"]) == ("new", None, "staff")  # no carpenter
    with Session(engine) as s:
        as_is = service.as_lifecycle(service.get(s, oid))

    def post(action, who, **body):
        return api.post(f"/api/v1/workorders/{oid}/{action}", json=body, headers=who)

    # 409: not possible in this state, with what to do instead
    r = post("finish", pla)
    assert r.status_code == 409
    assert r.json()["detail"] == lifecycle_message(
        IllegalTransition, as_is, Actor("pl-a", LRole.ENGINEER, frozenset({"s1"})), Action.FINISH
    )
    # 422: a dispatch needs the engineer; 403: an engineer may not dispatch
    manager = Actor("mgr1", LRole.SITE_MANAGER, frozenset({"s1"}))
    engineer = Actor("pl-a", LRole.ENGINEER, frozenset({"s1"}))
    r = post("dispatch", mgr)
    assert r.status_code == 422
    assert r.json()["detail"] == lifecycle_message(InvalidAction, as_is, manager, Action.DISPATCH)
    r = post("dispatch", pla, assignee="pl-a")
    assert r.status_code == 403
    assert r.json()["detail"] == lifecycle_message(
        NotPermitted, as_is, engineer, Action.DISPATCH, assignee="pl-a"
    )
    r = post("dispatch", mgr, assignee="pl-z")  # an engineer of another site
    assert r.status_code == 422 and r.json()["detail"] == "pl-z is not an engineer of s1"
    assert post("auto_assign", mgr).status_code == 404  # the hub's own step
    assert post("fly", mgr).status_code == 404

    assert post("dispatch", mgr, assignee="pl-a", note="you are closest").status_code == 200
    r = post("start", plb)
    assert r.status_code == 403
    assert r.json()["detail"] == (
        f"pl-b (engineer) may not start work order {oid}: only its assignee (pl-a) may"
    )
    assert post("start", pla).status_code == 200
    r = post("pause", pla)
    assert r.status_code == 422 and "a note is required" in r.json()["detail"]
    assert post("pause", pla, note="waiting for a part").status_code == 200
    r = post("finish", pla)
    assert r.status_code == 409 and r.json()["detail"].startswith(
        "cannot finish a work order that is paused; resume it first"
    )
    assert post("resume", pla).status_code == 200
    r = post("finish", pla, charge_fen=100)
    assert (
        r.status_code == 422 and r.json()["detail"] == "only a repair an owner filed can be charged"
    )
    assert post("finish", pla, note="closer replaced").status_code == 200
    r = post("confirm", elx)
    assert r.status_code == 403
    r = post("confirm", mgr)
    assert r.status_code == 200 and r.json()["state"] == "follow_up"
    r = post("call_back", mgr, note="resident happy")
    assert r.status_code == 200 and r.json()["state"] == "completed"
    r = post("reopen", mgr, note="again")
    assert r.status_code == 409 and "final" in r.json()["detail"]

    detail = api.get(f"/api/v1/workorders/{oid}", headers=mgr).json()
    assert [(a["action"], a["actor"], a["from_state"], a["to_state"]) for a in detail["audit"]] == [
        ("create", "mgr1", None, "new"),
        ("dispatch", "mgr1", "new", "accepted"),
        ("start", "pl-a", "accepted", "in_progress"),
        ("pause", "pl-a", "in_progress", "paused"),
        ("resume", "pl-a", "paused", "in_progress"),
        ("finish", "pl-a", "in_progress", "finished"),
        ("confirm", "mgr1", "finished", "follow_up"),
        ("call_back", "mgr1", "follow_up", "completed"),
    ]
    assert detail["audit"][1]["note"] == "you are closest"
    assert detail["audit"][1]["details"] == {"assignee": "pl-a"}
    assert detail["audit"][3]["note"] == "waiting for a part"
    assert detail["ended_at"] is not None and detail["possible"] == []
    # pl-a was told of the dispatch (the default subscription: assigned to me)
    assert ("workorder.assigned", "pl-a") in notes(engine)
    # engineers see the board of their site; another site's engineer does not
    assert [w["id"] for w in api.get("/api/v1/workorders", headers=pla).json()] == [oid]
    pz = login(api, "pl-z")
    assert api.get("/api/v1/workorders", headers=pz).json() == []
    assert api.get(f"/api/v1/workorders/{oid}", headers=pz).status_code == 404  # no hint


def test_an_owner_files_a_repair_with_a_photo_pays_and_rates(api, engine, tmp_path):
    o1, o2, mgr, pla = (login(api, u) for u in ("owner1", "owner2", "mgr1", "pl-a"))
    r = api.post(
        "/api/v1/workorders",
        json={
            "site": "s1",
            "title": "厨房水管漏水",
            "description": "under the sink",
            "location": "3-502 kitchen",
            "skill": "plumbing",
            "priority": "urgent",  # owners' requests are normal whatever they ask
        },
        headers=o1,
    )
    assert r.status_code == 201, r.text
    wo = r.json()
    oid = wo["id"]
    assert (wo["source"], wo["priority"], wo["assignee"]) == ("owner", "normal", "pl-a")
    assert (
        api.post("/api/v1/workorders", json={"site": "s2", "title": "x"}, headers=o1).status_code
        == 403
    )

    files = [("files", ("leak.png", PNG, "image/png")), ("files", ("same.png", PNG, "image/png"))]
    r = api.post(f"/api/v1/workorders/{oid}/attachments", files=files, headers=o1)
    assert r.status_code == 201, r.text
    (att,) = r.json()["attachments"]  # the same photo twice is kept once
    assert (att["content_type"], att["size"], att["uploaded_by"]) == (
        "image/png",
        len(PNG),
        "owner1",
    )
    got = api.get(f"/api/v1/workorders/{oid}/attachments/{att['name']}", headers=o1)
    assert got.status_code == 200 and got.content == PNG
    assert (tmp_path / "attachments" / str(oid) / att["name"]).read_bytes() == PNG
    bad = [("files", ("notes.png", b"just text, not a picture", "image/png"))]
    r = api.post(f"/api/v1/workorders/{oid}/attachments", files=bad, headers=o1)
    assert r.status_code == 422 and "only JPEG, PNG or WebP" in r.json()["detail"]
    big = [("files", ("big.png", PNG + b"\x00" * 5000, "image/png"))]
    assert (
        api.post(f"/api/v1/workorders/{oid}/attachments", files=big, headers=o1).status_code == 413
    )

    # owners see only their own
    assert [w["id"] for w in api.get("/api/v1/workorders", headers=o1).json()] == [oid]
    assert api.get("/api/v1/workorders", headers=o2).json() == []
    assert api.get(f"/api/v1/workorders/{oid}", headers=o2).status_code == 404
    assert (
        api.get(f"/api/v1/workorders/{oid}/attachments/{att['name']}", headers=o2).status_code
        == 404
    )
    assert (
        api.post(f"/api/v1/workorders/{oid}/close", json={"note": "x"}, headers=o2).status_code
        == 404
    )

    def post(action, who, **body):
        r = api.post(f"/api/v1/workorders/{oid}/{action}", json=body, headers=who)
        assert r.status_code == 200, r.text
        return r.json()

    post("start", pla)
    post("finish", pla, charge_fen=5000, note="pipe joint replaced")
    assert post("confirm", mgr)["state"] == "awaiting_payment"
    assert post("pay", o1)["state"] == "awaiting_rating"
    r = api.post(f"/api/v1/workorders/{oid}/rate", json={"rating": 6}, headers=o1)
    assert r.status_code == 422 and r.json()["detail"] == "a rating is 1 to 5 stars, got 6"
    done = post("rate", o1, rating=5)
    assert (done["state"], done["rating"], done["paid"], done["charge_fen"]) == (
        "follow_up",
        5,
        True,
        5000,
    )
    actions = [
        a["action"] for a in api.get(f"/api/v1/workorders/{oid}", headers=o1).json()["audit"]
    ]
    assert actions == [
        "create",
        "auto_assign",
        "attachment",
        "start",
        "finish",
        "confirm",
        "pay",
        "rate",
    ]


# -- SLA -----------------------------------------------------------------------------------------
def test_an_sla_breach_is_recorded_once_and_escalated(engine, people):
    config = service.Config()
    with session_scope(engine) as s:
        rec = service.open_order(
            s,
            config,
            service.NewOrder(
                "s1", Source.STAFF, "Lift stuck", "mgr1", priority=Priority.URGENT, skill="lift"
            ),
            SYSTEM,
        )
        assert rec is not None and rec.state == "new"  # no lift engineer on duty
    t0 = rec.created_at
    assert sla.check(engine, config, t0 + timedelta(minutes=15)) == 0  # exactly on time
    assert sla.check(engine, config, t0 + timedelta(minutes=16)) == 1
    assert sla.check(engine, config, t0 + timedelta(minutes=17)) == 0  # once
    (wo,) = orders(engine)
    assert wo.accept_breached_at == t0 + timedelta(minutes=16) and wo.finish_breached_at is None
    breached = [a for a in trail(engine, wo.id) if a.action == "sla_breached"]
    assert len(breached) == 1 and breached[0].details["deadline"] == "accept"
    assert "accept deadline" in breached[0].note and "1 min late" in breached[0].note
    # the site's manager hears of it, and HQ (an urgent order counts as critical)
    assert sorted(notes(engine, "workorder.sla_breached")) == [
        ("workorder.sla_breached", "admin"),
        ("workorder.sla_breached", "mgr1"),
    ]
    assert sla.check(engine, config, t0 + timedelta(hours=4, minutes=1)) == 1  # finish
    assert sla.check(engine, config, t0 + timedelta(hours=5)) == 0
    assert len(notes(engine, "workorder.sla_breached")) == 4


def test_engineers_duty_and_reports_through_the_api(api, engine):
    mgr, pla, plb = (login(api, u) for u in ("mgr1", "pl-a", "pl-b"))
    listed = {e["username"]: e for e in api.get("/api/v1/engineers?site=s1", headers=mgr).json()}
    assert set(listed) == {"pl-a", "pl-b", "el-a"}
    assert (listed["pl-a"]["skills"], listed["pl-a"]["on_duty"]) == (["plumbing"], True)
    r = api.put("/api/v1/engineers/pl-b", json={"on_duty": True}, headers=plb)  # himself
    assert r.status_code == 200 and r.json()["on_duty"] is True
    assert (
        api.put("/api/v1/engineers/pl-b", json={"skills": ["lift"]}, headers=plb).status_code == 403
    )
    assert (
        api.put("/api/v1/engineers/pl-b", json={"on_duty": False}, headers=pla).status_code == 403
    )
    r = api.put("/api/v1/engineers/pl-b", json={"skills": ["plumbing", "lift"]}, headers=mgr)
    assert r.status_code == 200 and r.json()["skills"] == ["lift", "plumbing"]
    assert (
        api.put("/api/v1/engineers/pl-z", json={"on_duty": False}, headers=mgr).status_code == 404
    )
    r = api.put("/api/v1/engineers/pl-b", json={"skills": ["Bad Skill"]}, headers=mgr)
    assert r.status_code == 422

    # reports: time to acknowledge alarms, time to finish work orders
    with session_scope(engine) as s:
        rec = service.open_order(
            s,
            service.Config(),
            service.NewOrder("s1", Source.STAFF, "tap", "mgr1", skill="plumbing"),
            SYSTEM,
        )
        assert rec is not None and rec.id is not None
        oid = rec.id
    for action in ("start", "finish"):
        assert api.post(f"/api/v1/workorders/{oid}/{action}", headers=pla).status_code == 200
    start, end = (
        (utcnow() - timedelta(hours=1)).isoformat(),
        (utcnow() + timedelta(hours=1)).isoformat(),
    )
    q = {"start": start, "end": end}
    rows = api.get("/api/v1/workorders/reports/engineers", params=q, headers=mgr).json()
    assert [(r["site"], r["engineer"], r["orders"], r["finished"]) for r in rows] == [
        ("s1", "pl-a", 1, 1)
    ]
    assert rows[0]["finish_mean_s"] is not None and rows[0]["accept_breaches"] == 0
    r = api.get("/api/v1/workorders/reports/sites", params={**q, "format": "csv"}, headers=mgr)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    (row,) = list(csv.DictReader(io.StringIO(r.text)))
    assert (row["site"], row["orders"]) == ("s1", "1")
    feed = Feed(engine)  # an alarm (in the feed's time), acknowledged 90 s after it started
    feed.pressure(0, 0.22)
    (alarm,) = feed.pressure(31, 0.22)
    with session_scope(engine) as s:
        a = s.get(Alarm, alarm.id)
        assert a is not None
        a.acknowledged, a.acked_by, a.acked_at = True, "pl-a", a.started_at + timedelta(seconds=90)
    around = {"start": (a.started_at - timedelta(hours=1)).isoformat(), "end": end}
    around["end"] = (a.started_at + timedelta(hours=1)).isoformat()
    (row,) = api.get("/api/v1/workorders/reports/alarms", params=around, headers=mgr).json()
    assert (row["site"], row["alarms"], row["acknowledged"], row["ack_mean_s"]) == (
        "s1",
        1,
        1,
        90.0,
    )
    assert api.get("/api/v1/workorders/reports/sites", params=q, headers=pla).status_code == 403
    assert api.get("/api/v1/workorders/reports/nope", params=q, headers=mgr).status_code == 404


def test_migration_0007_matches_the_models_and_goes_down_and_up(db_url, engine):
    with engine.connect() as c:  # what `alembic check` does: nothing left to autogenerate
        diff = compare_metadata(
            MigrationContext.configure(c, opts={"compare_type": True}), SQLModel.metadata
        )
    assert diff == []
    with Session(engine) as s:  # the default subscriptions are seeded
        assert len(notify_service.list_subscriptions(s, None)) == 6
    command.downgrade(alembic_config(db_url), "0006")
    assert "work_order" not in inspect(engine).get_table_names()
    upgrade(db_url)
    assert {"work_order", "work_order_audit", "notification"} <= set(
        inspect(engine).get_table_names()
    )
