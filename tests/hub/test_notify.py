"""Notifications (SQLite and PostgreSQL): who is told what, and the webhook channel against
a real HTTP receiver (simulators/webhook.py): signed delivery, retries after failures,
exactly one delivery after a 2xx, and a hub killed in the middle of an attempt."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from hub.api.app import create_app
from hub.auth import Role
from hub.db import session_scope
from hub.models import utcnow
from hub.notify import Event, Notification, Sender, WebhookChannel, publish
from hub.notify.sender import backoff
from hub.payments import signing
from protocols.alarms.model import Severity
from simulators.webhook import WebhookReceiver
from tests.hub.test_workorders import add_users, login, settings_for

ROOT = Path(__file__).resolve().parents[2]
SECRET = b"notify-secret-only-for-these-tests-0123456789"


@pytest.fixture
def staff(engine):
    add_users(
        engine,
        ("admin", Role.HQ_ADMIN, []),
        ("mgr1", Role.SITE_MANAGER, ["s1"]),
        ("mgr2", Role.SITE_MANAGER, ["s2"]),
        ("eng1", Role.ENGINEER, ["s1"]),
        ("eng2", Role.ENGINEER, ["s1"]),
        ("eng9", Role.ENGINEER, ["s2"]),
        ("fin1", Role.FINANCE, ["s1"]),
    )


def tell(engine, ev: Event) -> int:
    with session_scope(engine) as s:
        return publish(s, ev)


def outbox(engine) -> list[Notification]:
    with Session(engine) as s:
        return list(s.exec(select(Notification).order_by(col(Notification.id))))


def who(engine, key: str) -> list[str]:
    return sorted(n.recipient for n in outbox(engine) if n.key == key)


def test_default_subscriptions_tell_each_role_of_its_sites_once(engine, staff):
    alarm = {"alarm_id": 1, "message": "Outlet pressure low"}
    assert tell(engine, Event("alarm.raised", "a:1:major", "s1", Severity.MAJOR, alarm)) == 0
    assert tell(engine, Event("alarm.raised", "a:1:critical", "s1", Severity.CRITICAL, alarm)) == 4
    assert who(engine, "a:1:critical") == ["admin", "eng1", "eng2", "mgr1"]  # not s2, not finance
    # published again (a hook run twice, a retried transaction): nobody is told twice
    assert tell(engine, Event("alarm.raised", "a:1:critical", "s1", Severity.CRITICAL, alarm)) == 0
    # assigned: only the assignee among the engineers; HQ only if critical (urgent)
    assert (
        tell(engine, Event("workorder.assigned", "w:1", "s1", Severity.MINOR, assignee="eng2")) == 1
    )
    assert who(engine, "w:1") == ["eng2"]
    assert (
        tell(engine, Event("workorder.assigned", "w:2", "s2", Severity.CRITICAL, assignee="eng9"))
        == 2
    )
    assert who(engine, "w:2") == ["admin", "eng9"]
    assert tell(engine, Event("workorder.sla_breached", "w:3", "s2", Severity.MINOR)) == 1
    assert who(engine, "w:3") == ["mgr2"]
    n = outbox(engine)[0]
    assert (n.event, n.site_id, n.severity, n.role, n.channel, n.status) == (
        "alarm.raised",
        "s1",
        "critical",
        "hq_admin",
        "webhook",
        "pending",
    )
    assert n.payload == alarm


def test_subscriptions_are_edited_through_the_api(api_client, engine):
    mgr1, mgr2, admin, eng = (login(api_client, u) for u in ("mgr1", "mgr2", "admin", "eng1"))
    base = "/api/v1/notifications/subscriptions"
    listed = api_client.get(base, headers=mgr1).json()
    assert {(x["role"], x["event"]) for x in listed} >= {("site_manager", "workorder.sla_breached")}
    assert api_client.get(base, headers=eng).status_code == 403
    body = {"role": "finance", "site_id": "s1", "event": "workorder.sla_breached"}
    assert api_client.post(base, json={**body, "site_id": "*"}, headers=mgr1).status_code == 403
    assert api_client.post(base, json={**body, "site_id": "s2"}, headers=mgr1).status_code == 403
    r = api_client.post(base, json={**body, "event": "nope"}, headers=mgr1)
    assert r.status_code == 422 and "unknown event" in r.json()["detail"]
    r = api_client.post(base, json=body, headers=mgr1)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert api_client.post(base, json=body, headers=mgr1).status_code == 422  # already there
    assert tell(engine, Event("workorder.sla_breached", "w:9", "s1", Severity.MINOR)) == 2
    assert who(engine, "w:9") == ["fin1", "mgr1"]
    r = api_client.patch(f"{base}/{sid}", json={"min_severity": "critical"}, headers=mgr1)
    assert r.status_code == 200 and r.json()["min_severity"] == "critical"
    assert tell(engine, Event("workorder.sla_breached", "w:10", "s1", Severity.MINOR)) == 1
    assert api_client.delete(f"{base}/{sid}", headers=mgr2).status_code == 404  # s1's
    assert api_client.delete(f"{base}/{sid}", headers=mgr1).status_code == 204
    # HQ turns off the critical-alarm messages to engineers everywhere
    (eng_alarms,) = [
        x
        for x in api_client.get(base, headers=admin).json()
        if (x["role"], x["event"]) == ("engineer", "alarm.raised")
    ]
    r = api_client.patch(f"{base}/{eng_alarms['id']}", json={"enabled": False}, headers=admin)
    assert r.status_code == 200
    assert tell(engine, Event("alarm.raised", "a:7", "s1", Severity.CRITICAL)) == 2
    assert who(engine, "a:7") == ["admin", "mgr1"]
    sent = api_client.get("/api/v1/notifications?status=pending", headers=mgr2).json()
    assert sent == []  # s2's manager sees s2's outbox only
    assert len(api_client.get("/api/v1/notifications", headers=mgr1).json()) == 5


@pytest.fixture
def api_client(engine, db_url, tmp_path, staff):
    with TestClient(create_app(settings_for(db_url, tmp_path), engine)) as client:
        yield client


# -- the webhook ---------------------------------------------------------------------------------
def fast_sender(engine, url: str, **kw) -> Sender:
    return Sender(
        engine,
        {"webhook": WebhookChannel(url, SECRET, timeout_s=kw.pop("timeout_s", 5.0))},
        first_s=0.05,
        cap_s=0.2,
        poll_s=0.05,
        **kw,
    )


async def test_a_webhook_is_signed_retried_until_2xx_and_then_never_sent_again(engine, staff):
    assert (
        tell(engine, Event("workorder.sla_breached", "w:1", "s1", Severity.MINOR, {"id": 1})) == 1
    )
    async with WebhookReceiver(SECRET) as rx:
        rx.fail = 2  # the receiver's first two answers are 500
        sender = fast_sender(engine, rx.url)
        sender.start()
        try:
            await rx.wait_for(lambda: sum(r.status == 200 for r in rx.received) == 1)
        finally:
            await asyncio.to_thread(sender.stop)
        assert [r.status for r in rx.received] == [500, 500, 200]
        (n,) = outbox(engine)
        assert (n.status, n.attempts, n.last_status) == ("delivered", 3, 200)
        assert n.delivered_at is not None
        # the signature verifies with the hub's own rules, over the raw body
        for r in rx.received:
            assert r.signed_ok
            signing.verify(SECRET, r.headers, r.raw)
            assert r.delivery == str(n.id)
        body = rx.received[-1].body
        assert body is not None
        assert (body["event"], body["site"], body["to"]) == (
            "workorder.sla_breached",
            "s1",
            {"username": "mgr1", "role": "site_manager"},
        )
        assert body["data"] == {"id": 1} and body["id"] == n.id
        # delivered: however often a sender looks, nothing more is sent
        again = fast_sender(engine, rx.url)
        assert await asyncio.to_thread(again.run_once) == 0
        assert await asyncio.to_thread(again.run_once, utcnow() + timedelta(hours=1)) == 0
        assert len(rx.received) == 3 and rx.first_deliveries() == {str(n.id): 1}


async def test_a_bad_secret_is_refused_and_retried_with_capped_backoff(engine, staff):
    tell(engine, Event("workorder.sla_breached", "w:1", "s1", Severity.MINOR))
    async with WebhookReceiver(b"another secret") as rx:
        sender = fast_sender(engine, rx.url)
        made = await asyncio.to_thread(sender.run_once)
        assert made == 1 and [r.status for r in rx.received] == [401]
        (n,) = outbox(engine)
        assert (n.status, n.attempts, n.last_status) == ("pending", 1, 401)
        assert await asyncio.to_thread(sender.run_once) == 0  # not due yet
    assert all(0.04 <= backoff(k, 0.05, 0.2) <= 0.2 for k in range(1, 40))
    assert 0.8 <= backoff(1, 1.0, 300.0) <= 1.2 and 3.2 <= backoff(3, 1.0, 300.0) <= 4.8
    assert backoff(1000, 1.0, 300.0) == 300.0


async def test_a_hub_killed_mid_delivery_delivers_after_its_restart(engine, db_url, staff):
    tell(engine, Event("workorder.sla_breached", "w:1", "s1", Severity.MINOR))
    async with WebhookReceiver(SECRET) as rx:
        rx.holding = True  # the first request gets no answer: the hub dies waiting
        env = {
            **os.environ,
            "WUYE_HUB_DATABASE_URL": db_url,
            "WUYE_HUB_NOTIFY_WEBHOOK_URL": rx.url,
            "WUYE_HUB_NOTIFY_WEBHOOK_SECRET": SECRET.decode(),
            "WUYE_HUB_NOTIFY_POLL_S": "0.05",
        }
        script = (
            "import threading\n"
            "from hub.db import make_engine\n"
            "from hub.notify import Sender\n"
            "from hub.settings import load_settings\n"
            "st = load_settings()\n"
            "Sender.from_settings(st, make_engine(st.database_url)).start()\n"
            "threading.Event().wait()\n"
        )
        hub = await asyncio.create_subprocess_exec(sys.executable, "-c", script, cwd=ROOT, env=env)
        try:
            await rx.wait_for(lambda: len(rx.received) == 1, timeout=30)
        finally:
            hub.send_signal(signal.SIGKILL)
            await hub.wait()
        (n,) = outbox(engine)
        assert (n.status, n.attempts) == ("pending", 0) and n.lease_until is not None
        # the restarted hub: the dead one's lease runs out, then it sends again, once
        restarted = fast_sender(engine, rx.url)
        assert await asyncio.to_thread(restarted.run_once) == 0  # still leased
        later = n.lease_until + timedelta(seconds=1)
        assert await asyncio.to_thread(restarted.run_once, later) == 1
        (n,) = outbox(engine)
        assert (n.status, n.attempts, n.last_status) == ("delivered", 1, 200)
        assert await asyncio.to_thread(restarted.run_once, later + timedelta(hours=1)) == 0
        assert [r.delivery for r in rx.received] == [str(n.id)] * 2  # same id: de-duplicable
        assert rx.delivered() == {str(n.id): 1}


async def test_undeliverable_notifications_are_given_up_after_a_day(engine, staff):
    tell(engine, Event("workorder.sla_breached", "w:1", "s1", Severity.MINOR))
    sender = fast_sender(engine, "http://127.0.0.1:9/nobody", give_up_s=3600)
    assert await asyncio.to_thread(sender.run_once) == 1  # refused: pending, retried later
    (n,) = outbox(engine)
    assert (n.status, n.last_status) == ("pending", None) and "Error" in n.last_error
    await asyncio.to_thread(sender.run_once, utcnow() + timedelta(hours=2))
    (n,) = outbox(engine)
    assert n.status == "expired"
