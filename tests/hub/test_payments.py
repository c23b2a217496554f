"""Payment orders, notifications and the sandbox channel, on SQLite and PostgreSQL.

Where the channel is involved, the hub (uvicorn, in a thread) and simulators/paychannel.py
talk real HTTP: the hub registers the order, the test pays it at the provider, and the
provider notifies the hub, with the faults a real provider shows.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, select

from hub.api.app import create_app
from hub.auth import Role, create_user
from hub.db import alembic_config, make_engine, session_scope, upgrade
from hub.payments import (
    IdempotencyConflict,
    NotificationOutcome,
    OrderNotPayable,
    PaymentNotification,
    PaymentOrder,
    PaymentStatus,
    SandboxChannel,
    SignatureError,
    build_channels,
    close_order,
    create_order,
    handle_notification,
    prepare_payment,
    register_on_paid,
    signing,
)
from hub.settings import HubSettings, load_settings
from protocols.errors import ConfigError
from simulators.paychannel import PayChannelSimulator, RetryPolicy

ROOT = Path(__file__).resolve().parents[2]
SECRET = b"only-for-these-tests-0123456789abcdef"
KIND = "test_subject"
PW = "correct horse battery"
FAST = RetryPolicy(first_s=0.05, cap_s=0.2, attempts=4, timeout_s=10)
T0 = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
CREDITED, DUPLICATE, REFUSED, ERROR = (
    NotificationOutcome.CREDITED,
    NotificationOutcome.DUPLICATE,
    NotificationOutcome.REFUSED,
    NotificationOutcome.ERROR,
)


# -- helpers -------------------------------------------------------------------------------


class Credits:
    """The subject being credited: a row per crediting, written in the paying transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.fail = 0  # raise in the next N calls
        self.calls = 0
        self.during = None  # called inside the handler (to hold the transaction open)
        with engine.begin() as c:
            c.execute(text("CREATE TABLE test_credit (order_id VARCHAR(64), amount_fen BIGINT)"))

    def __call__(self, session: Session, order: PaymentOrder) -> None:
        self.calls += 1
        assert order.status == PaymentStatus.PAID and order.channel_txn_id
        if self.fail > 0:
            self.fail -= 1
            raise RuntimeError("ledger unavailable")
        session.connection().execute(
            text("INSERT INTO test_credit (order_id, amount_fen) VALUES (:o, :a)"),
            {"o": order.id, "a": order.amount_fen},
        )
        if self.during is not None:
            self.during()

    def count(self, order_id: str) -> int:
        with self.engine.connect() as c:
            return c.execute(
                text("SELECT count(*) FROM test_credit WHERE order_id = :o"), {"o": order_id}
            ).scalar_one()


@pytest.fixture
def credits(engine):
    c = Credits(engine)
    unregister = register_on_paid(KIND, c)
    yield c
    unregister()


def new_order(engine: Engine, key: str = "k1", amount: int = 500, **kw) -> PaymentOrder:
    with Session(engine, expire_on_commit=False) as s:
        return create_order(
            s,
            subject_kind=kw.pop("subject_kind", KIND),
            subject_id=kw.pop("subject_id", "session-1"),
            site_id=kw.pop("site_id", "s1"),
            amount_fen=amount,
            idempotency_key=key,
            channel="sandbox",
            **kw,
        )


def signed(order_id: str, amount: int, txn: str = "TXN-1", at: datetime = T0, secret=SECRET):
    body = json.dumps(
        {
            "v": 1,
            "event": "payment.succeeded",
            "order_id": order_id,
            "txn_id": txn,
            "amount_fen": amount,
            "currency": "CNY",
            "paid_at": "2026-11-23T01:00:00+00:00",
        }
    ).encode()
    ts = int(at.timestamp())
    sig = hmac.new(secret, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Wuye-Timestamp": str(ts), "X-Wuye-Signature": sig}, body


CHANNEL = SandboxChannel("http://127.0.0.1:9", SECRET, "http://127.0.0.1:9/notify")


def notify(engine: Engine, headers, body, now: datetime = T0, channel=CHANNEL):
    with Session(engine, expire_on_commit=False) as s:
        return handle_notification(s, channel, headers, body, now=now)


def order_row(engine: Engine, order_id: str) -> PaymentOrder:
    with Session(engine) as s:
        order = s.get(PaymentOrder, order_id)
        assert order is not None
        s.expunge(order)
        return order


def outcomes(engine: Engine, order_id: str | None = None) -> list[tuple[str, bool]]:
    with Session(engine) as s:
        q = select(PaymentNotification).order_by(col(PaymentNotification.id))
        if order_id is not None:
            q = q.where(PaymentNotification.order_id == order_id)
        return [(n.outcome, n.signature_ok) for n in s.exec(q).all()]


def hub_settings(url: str, tmp_path: Path, **kw) -> HubSettings:
    kw.setdefault("pay_sandbox_secret", SECRET.decode())
    return load_settings(
        database_url=url,
        secret_file=tmp_path / "secret",
        mqtt_url="mqtt://127.0.0.1:1",  # commands are not exercised here
        embedded_ingest=False,
        **kw,
    )


@contextmanager
def running_hub(
    url: str, engine: Engine, tmp_path: Path, sandbox_url: str, **kw
) -> Iterator[HubSettings]:
    """The hub's API served by uvicorn in a thread on a free port, as in production."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections queue until uvicorn has started
    port = sock.getsockname()[1]
    settings = hub_settings(
        url,
        tmp_path,
        pay_sandbox_url=sandbox_url,
        pay_notify_url=f"http://127.0.0.1:{port}",
        **kw,
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, engine), log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="hub-api")
    thread.start()
    try:
        yield settings
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def checkout(engine: Engine, settings: HubSettings, key: str, amount: int = 500):
    """What parking's exit route will do: an order, registered with the channel."""
    order = new_order(engine, key, amount, payer="沪A12345", details={"lot": "north"})
    with Session(engine, expire_on_commit=False) as s:
        info = prepare_payment(s, build_channels(settings)["sandbox"], order)
    return order, info


async def pay(sim: PayChannelSimulator, order_id: str, **faults) -> str:
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{sim.url}/orders/{order_id}/pay", json={"faults": faults})
    assert r.status_code == 200, r.text
    return r.json()["txn_id"]


def until(predicate, timeout: float = 20, what: str = "condition") -> None:
    """Poll state that has no event to wait on (a database, another process), with a deadline."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout}s")
        tick.wait(0.02)


# -- signing (pure) ------------------------------------------------------------------------


def test_signature_is_hmac_sha256_over_timestamp_dot_body():
    body = b'{"a":1}'
    expected = hmac.new(b"k", b"1795400000." + body, hashlib.sha256).hexdigest()
    assert signing.sign(b"k", 1795400000, body) == expected
    headers = {"x-wuye-timestamp": "1795400000", "X-WUYE-SIGNATURE": expected.upper()}
    assert signing.verify(b"k", headers, body) == 1795400000
    for bad_headers, bad_body in [
        (headers, body + b" "),  # body changed
        ({**headers, "x-wuye-timestamp": "1795400001"}, body),  # re-dated
        ({"x-wuye-signature": expected}, body),  # no timestamp
        ({**headers, "x-wuye-timestamp": "-5"}, body),
        ({**headers, "X-WUYE-SIGNATURE": "zz" + expected[2:]}, body),
    ]:
        with pytest.raises(SignatureError):
            signing.verify(b"k", bad_headers, bad_body)


def test_a_sandbox_is_refused_in_production(tmp_path):
    with pytest.raises(ConfigError, match="PAY_SANDBOX_URL"):
        load_settings(environment="production", jwt_secret="x" * 40, pay_sandbox_url="http://x")


def test_the_shared_secret_is_generated_once_when_not_given(tmp_path):
    settings = load_settings(pay_secret_file=tmp_path / "var" / "pay")
    first = settings.pay_secret()
    assert len(first) >= 48 and settings.pay_secret() == first
    assert (tmp_path / "var" / "pay").stat().st_mode & 0o777 == 0o600


# -- orders --------------------------------------------------------------------------------


def test_order_creation_is_idempotent(engine):
    a = new_order(engine, "key-1", 500, payer="沪A12345", details={"lot": "north"})
    assert (a.status, a.amount_fen, a.currency, a.channel_txn_id) == ("created", 500, "CNY", None)
    again = new_order(engine, "key-1", 500, payer="沪A12345", details={"lot": "north"})
    assert again.id == a.id
    with pytest.raises(IdempotencyConflict, match="key-1"):
        new_order(engine, "key-1", 600, payer="沪A12345", details={"lot": "north"})
    with pytest.raises(IdempotencyConflict):
        new_order(engine, "key-1", 500, payer="沪A12345", details={"lot": "south"})
    assert new_order(engine, "key-2", 500).id != a.id
    assert new_order(engine, "key-1", 500, site_id="s2").id != a.id  # another caller's scope
    for amount in (0, -1, 5.0, True):
        with pytest.raises(ValueError, match="amount_fen"):
            new_order(engine, "key-3", amount)

    # the same key from four requests at once: one order
    barrier, ids = threading.Barrier(4), []

    def create() -> None:
        barrier.wait()
        ids.append(new_order(engine, "key-race", 800).id)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 4 and len(set(ids)) == 1
    with Session(engine) as s:
        assert len(s.exec(select(PaymentOrder)).all()) == 4


def test_a_closed_order_is_not_credited_and_cannot_be_prepared(engine, credits):
    order = new_order(engine)
    with Session(engine, expire_on_commit=False) as s:
        closed = close_order(s, order.id)
        assert closed.status == PaymentStatus.CLOSED and closed.closed_at is not None
        with pytest.raises(OrderNotPayable):
            prepare_payment(s, CHANNEL, closed)
    out = notify(engine, *signed(order.id, 500))
    # the payer's money is at the provider: stop the resends, finance refunds from the record
    assert (out.kind, out.http_status) == (REFUSED, 200) and "refund" in out.reason
    assert order_row(engine, order.id).status == PaymentStatus.CLOSED
    assert credits.count(order.id) == 0


# -- notifications (service level) ---------------------------------------------------------


def test_a_notification_credits_once_and_a_resend_a_day_later_is_a_duplicate(engine, credits):
    order = new_order(engine)
    headers, body = signed(order.id, 500, at=T0)
    out = notify(engine, headers, body, now=T0 + timedelta(seconds=2))
    assert (out.kind, out.http_status, out.order_id) == (CREDITED, 200, order.id)
    paid = order_row(engine, order.id)
    assert (paid.status, paid.channel_txn_id) == (PaymentStatus.PAID, "TXN-1")
    assert paid.paid_at == datetime(2026, 11, 23, 1, 0, tzinfo=UTC)

    later = T0 + timedelta(hours=25)
    # the channel's resend, signed anew, 25 hours later (no cache has remembered anything)
    out = notify(engine, *signed(order.id, 500, at=later), now=later)
    assert (out.kind, out.http_status, out.reason) == (
        DUPLICATE,
        200,
        "duplicate, already credited",
    )
    # the very same bytes, with the old signature: still a duplicate, not "stale"
    out = notify(engine, headers, body, now=later)
    assert (out.kind, out.http_status) == (DUPLICATE, 200)
    assert credits.count(order.id) == 1 and credits.calls == 1
    assert outcomes(engine, order.id) == [
        ("credited", True),
        ("duplicate", True),
        ("duplicate", True),
    ]


def test_a_stale_signature_never_credits_but_the_fresh_resend_does(engine, credits):
    order = new_order(engine)
    out = notify(engine, *signed(order.id, 500, at=T0 - timedelta(hours=1)), now=T0)
    assert (out.kind, out.http_status) == (REFUSED, 401) and "stale" in out.reason
    assert order_row(engine, order.id).status == PaymentStatus.CREATED
    out = notify(engine, *signed(order.id, 500, at=T0), now=T0)
    assert out.kind == CREDITED and credits.count(order.id) == 1


def test_bad_signatures_and_wrong_amounts_are_refused_and_recorded(engine, credits):
    order = new_order(engine)
    forged = signed(order.id, 500, secret=b"guessed")
    out = notify(engine, *forged)
    assert (out.kind, out.http_status) == (REFUSED, 401) and "signature" in out.reason
    out = notify(engine, {}, b"{}")
    assert (out.kind, out.http_status) == (REFUSED, 401)
    out = notify(engine, *signed(order.id, 1))  # correctly signed, wrong amount
    assert (out.kind, out.http_status) == (REFUSED, 400) and "differs" in out.reason
    headers, _ = signed(order.id, 500)
    bad_shape = b'{"v":1,"event":"payment.succeeded","order_id":"x","amount_fen":"500"}'
    headers = {**headers, "X-Wuye-Signature": signing.sign(SECRET, int(T0.timestamp()), bad_shape)}
    assert notify(engine, headers, bad_shape).http_status == 400
    out = notify(engine, *signed("no-such-order", 500))
    assert (out.kind, out.http_status) == (REFUSED, 400)
    assert order_row(engine, order.id).status == PaymentStatus.CREATED
    assert credits.calls == 0
    assert outcomes(engine) == [
        ("refused", False),
        ("refused", False),
        ("refused", True),
        ("refused", True),
        ("refused", True),
    ]
    with Session(engine) as s:
        first = s.exec(select(PaymentNotification).order_by(col(PaymentNotification.id))).first()
        assert first is not None and first.body == forged[1] and first.order_id is None
        assert first.headers["x-wuye-signature"] == forged[0]["X-Wuye-Signature"]
    # one transaction number cannot pay two orders
    assert notify(engine, *signed(order.id, 500, txn="T-9")).kind == CREDITED
    other = new_order(engine, "k2")
    out = notify(engine, *signed(other.id, 500, txn="T-9"))
    assert (out.kind, out.http_status) == (REFUSED, 400) and order.id in out.reason
    assert credits.count(other.id) == 0


def test_identical_notifications_at_the_same_moment_credit_once(engine, credits):
    for round_ in range(6):
        order = new_order(engine, f"race-{round_}")
        headers, body = signed(order.id, 500, txn=f"TXN-{round_}")
        barrier, got = threading.Barrier(3), []

        def deliver(headers=headers, body=body, barrier=barrier, got=got) -> None:
            barrier.wait()
            got.append(notify(engine, headers, body).kind)  # its own session and connection

        threads = [threading.Thread(target=deliver) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(got) == [CREDITED, DUPLICATE, DUPLICATE], got
        assert credits.count(order.id) == 1
    assert credits.calls == 6


# row locks: SQLite serialises whole write transactions instead, so PostgreSQL only
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_on_postgresql_the_second_notification_waits_for_the_first_and_finds_it_paid(
    engine, db_url, credits
):
    order = new_order(engine)
    headers, body = signed(order.id, 500)
    inside = threading.Event()

    def blocked_on_the_row() -> bool:
        with engine.connect() as c:
            return bool(
                c.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND query LIKE 'UPDATE payment_order%'"
                    )
                ).scalar_one()
            )

    def hold_until_the_other_waits() -> None:
        inside.set()
        until(blocked_on_the_row, what="the second UPDATE waiting on the row lock")

    credits.during = hold_until_the_other_waits
    first: list[object] = []
    t = threading.Thread(target=lambda: first.append(notify(engine, headers, body).kind))
    t.start()
    assert inside.wait(20)
    credits.during = None
    second = notify(engine, headers, body)  # blocks on the row until the first commits
    t.join()
    assert (first, second.kind) == ([CREDITED], DUPLICATE)
    assert credits.count(order.id) == 1 and credits.calls == 1


# -- hub and sandbox over HTTP -------------------------------------------------------------


async def test_pay_at_the_sandbox_and_the_order_is_paid_once(engine, db_url, tmp_path, credits):
    async with PayChannelSimulator(SECRET, retry=FAST) as sim:
        with running_hub(db_url, engine, tmp_path, sim.url) as settings:
            order, info = await asyncio.to_thread(checkout, engine, settings, "exit-1", 1200)
            assert info == {
                "channel": "sandbox",
                "pay_url": f"{sim.url}/pay/{order.id}",
                "qr": f"{sim.url}/pay/{order.id}",
            }
            assert order_row(engine, order.id).status == PaymentStatus.PENDING
            registered = sim.order(order.id)
            assert registered.amount_fen == 1200
            assert (
                registered.notify_url == f"{settings.pay_notify_url}/api/v1/payments/notify/sandbox"
            )
            # the visitor's retry (same key, same request): same order, registered again
            again, _ = await asyncio.to_thread(checkout, engine, settings, "exit-1", 1200)
            assert again.id == order.id and len(sim.orders) == 1

            txn = await pay(sim, order.id)
            await sim.wait_for(lambda: sim.order(order.id).settled)
            async with httpx.AsyncClient(base_url=settings.pay_notify_url or "") as hub:
                public = (await hub.get(f"/api/v1/payments/{order.id}")).json()
                unknown = await hub.get("/api/v1/payments/nope")
    assert [d.status for d in registered.deliveries] == [200]
    assert registered.deliveries[0].answer.startswith('{"outcome":"credited"')
    paid = order_row(engine, order.id)
    assert (paid.status, paid.channel_txn_id, paid.amount_fen) == ("paid", txn, 1200)
    assert credits.count(order.id) == 1 and credits.calls == 1
    assert outcomes(engine, order.id) == [("credited", True)]
    # anyone holding the order id sees its status, and nothing personal
    assert public["status"] == "paid" and public["amount_fen"] == 1200
    assert "payer" not in public and "details" not in public
    assert unknown.status_code == 404


async def test_copies_at_once_and_resends_after_the_answer_credit_once(
    engine, db_url, tmp_path, credits
):
    async with PayChannelSimulator(SECRET, retry=FAST) as sim:
        with running_hub(db_url, engine, tmp_path, sim.url) as settings:
            order, _ = await asyncio.to_thread(checkout, engine, settings, "exit-2")
            await pay(sim, order.id, copies=3, resend_after_ack=2)
            await sim.wait_for(lambda: sim.order(order.id).settled)
            async with httpx.AsyncClient() as client:  # and once more by hand
                r = await client.post(f"{sim.url}/orders/{order.id}/notify")
                assert r.status_code == 200
            await sim.wait_for(lambda: len(sim.order(order.id).deliveries) == 6)
    assert [d.status for d in sim.order(order.id).deliveries] == [200] * 6
    assert Counter(o for o, _ in outcomes(engine, order.id)) == {"credited": 1, "duplicate": 5}
    assert credits.count(order.id) == 1 and credits.calls == 1


async def test_bad_signatures_are_refused_until_a_good_one_credits(
    engine, db_url, tmp_path, credits
):
    async with PayChannelSimulator(SECRET, retry=FAST) as sim:
        with running_hub(db_url, engine, tmp_path, sim.url) as settings:
            order, _ = await asyncio.to_thread(checkout, engine, settings, "exit-3")
            await pay(sim, order.id, bad_signature=2)
            await sim.wait_for(lambda: sim.order(order.id).settled)
            async with httpx.AsyncClient(base_url=settings.pay_notify_url or "") as hub:
                garbage = await hub.post("/api/v1/payments/notify/sandbox", content=b"paid!")
                nowhere = await hub.post("/api/v1/payments/notify/alipay", content=b"{}")
    assert [(d.status, d.signed_ok) for d in sim.order(order.id).deliveries] == [
        (401, False),
        (401, False),
        (200, True),
    ]
    assert outcomes(engine, order.id) == [("credited", True)]
    assert outcomes(engine) == [
        ("refused", False),
        ("refused", False),
        ("credited", True),
        ("refused", False),
    ]
    assert garbage.status_code == 401 and garbage.json()["outcome"] == "refused"
    assert nowhere.status_code == 404
    assert credits.count(order.id) == 1


async def test_a_wrong_amount_is_refused_every_time(engine, db_url, tmp_path, credits):
    async with PayChannelSimulator(SECRET, retry=FAST) as sim:
        with running_hub(db_url, engine, tmp_path, sim.url) as settings:
            order, _ = await asyncio.to_thread(checkout, engine, settings, "exit-4", 500)
            await pay(sim, order.id, amount_fen=1)
            await sim.wait_for(lambda: sim.order(order.id).settled)
    assert [d.status for d in sim.order(order.id).deliveries] == [400] * FAST.attempts
    assert not sim.order(order.id).acknowledged
    assert outcomes(engine, order.id) == [("refused", True)] * FAST.attempts
    assert order_row(engine, order.id).status == PaymentStatus.PENDING
    assert credits.calls == 0


async def test_a_failing_handler_commits_nothing_and_the_resend_credits(
    engine, db_url, tmp_path, credits
):
    credits.fail = 1
    async with PayChannelSimulator(SECRET, retry=FAST) as sim:
        with running_hub(db_url, engine, tmp_path, sim.url) as settings:
            order, _ = await asyncio.to_thread(checkout, engine, settings, "exit-5")
            await pay(sim, order.id)
            await sim.wait_for(lambda: sim.order(order.id).settled)
    assert [d.status for d in sim.order(order.id).deliveries] == [500, 200]
    assert outcomes(engine, order.id) == [("error", True), ("credited", True)]
    assert credits.calls == 2 and credits.count(order.id) == 1
    assert order_row(engine, order.id).status == PaymentStatus.PAID


def test_the_sandbox_runs_as_its_own_process_and_shares_a_generated_secret(tmp_path):
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade(url)
    engine = make_engine(url)
    credits = Credits(engine)
    unregister = register_on_paid(KIND, credits)
    secret_file = tmp_path / "var" / "pay-sandbox-secret"  # neither side is given a secret
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("WUYE_PAYCHANNEL_SECRET", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators.paychannel",
            "--port",
            "0",
            "--secret-file",
            str(secret_file),
            "--retry-first-s",
            "0.05",
            "--attempts",
            "3",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY "), line
        sim_url = json.loads(line.removeprefix("READY "))["url"]
        with running_hub(
            url, engine, tmp_path, sim_url, pay_sandbox_secret=None, pay_secret_file=secret_file
        ) as settings:
            order, info = checkout(engine, settings, "exit-cli", 700)
            page = httpx.get(info["pay_url"])
            assert page.status_code == 200 and "¥7.00" in page.text
            assert httpx.post(info["pay_url"]).status_code == 200  # the payer's button

            def settled() -> bool:
                return httpx.get(f"{sim_url}/orders/{order.id}").json()["settled"]

            until(settled, what="the sandbox's notification answered")
        state = httpx.get(f"{sim_url}/orders/{order.id}").json()
        assert [d["status"] for d in state["deliveries"]] == [200]
        assert order_row(engine, order.id).status == PaymentStatus.PAID
        assert credits.count(order.id) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        unregister()
        engine.dispose()


# -- the finance list and who may read what ------------------------------------------------


def test_the_list_is_scoped_by_site_and_role(engine, db_url, tmp_path, credits):
    with session_scope(engine) as s:
        create_user(s, "admin", PW, Role.HQ_ADMIN)
        create_user(s, "fin1", PW, Role.FINANCE, ["s1"])
        create_user(s, "mgr2", PW, Role.SITE_MANAGER, ["s2"])
        create_user(s, "eng1", PW, Role.ENGINEER, ["s1"])
    a = new_order(engine, "a", 500, payer="沪A12345")
    b = new_order(engine, "b", 900, site_id="s2")
    now = datetime.now(UTC)
    assert notify(engine, *signed(a.id, 500, at=now), now=now).kind == CREDITED
    assert notify(engine, *signed(b.id, 900, secret=b"forged", at=now), now=now).kind == REFUSED

    with TestClient(create_app(hub_settings(db_url, tmp_path), engine)) as client:

        def get(user: str | None, path: str, **params):
            headers = {}
            if user:
                token = client.post(
                    "/api/v1/auth/token", data={"username": user, "password": PW}
                ).json()["access_token"]
                headers = {"Authorization": f"Bearer {token}"}
            return client.get(path, headers=headers, params=params)

        def ids(user: str, **params) -> list[str]:
            r = get(user, "/api/v1/payments", **params)
            assert r.status_code == 200, r.text
            return [o["id"] for o in r.json()]

        assert sorted(ids("admin")) == sorted([a.id, b.id])
        assert ids("fin1") == [a.id] and ids("fin1", site="s1") == [a.id]
        assert ids("mgr2") == [b.id]
        assert ids("admin", status="paid") == [a.id] and ids("admin", status="created") == [b.id]
        full = get("fin1", "/api/v1/payments").json()[0]
        assert (full["payer"], full["channel_txn_id"], full["status"]) == (
            "沪A12345",
            "TXN-1",
            "paid",
        )
        assert get("fin1", "/api/v1/payments", site="s2").status_code == 403
        assert get("eng1", "/api/v1/payments").status_code == 403
        assert get(None, "/api/v1/payments").status_code == 401
        assert get(None, f"/api/v1/payments/{b.id}").json()["status"] == "created"
        assert get("admin", "/api/v1/payments", status="bogus").status_code == 422
        assert get("fin1", "/api/v1/payments/notifications/counts").status_code == 403
        counts = get("admin", "/api/v1/payments/notifications/counts").json()
        assert counts == {
            "credited": 1,
            "duplicate": 0,
            "refused": 1,
            "error": 0,
            "bad_signature": 1,
        }


# -- migration -----------------------------------------------------------------------------


def test_0004_adds_the_payment_tables_and_the_models_match_the_migrations(empty_db_url):
    url = empty_db_url
    upgrade(url, "0003")
    engine = make_engine(url)
    with engine.begin() as c:
        c.execute(
            text("INSERT INTO site (id, name, created_at) VALUES ('s1', 'Sunny', :t)"),
            {"t": "2026-11-22 08:00:00+00:00"},
        )
    upgrade(url)
    tables = set(inspect(engine).get_table_names())
    assert {"payment_order", "payment_notification", "site"} <= tables
    order = new_order(engine, "m1", 100)
    assert order_row(engine, order.id).status == PaymentStatus.CREATED
    with engine.connect() as c:  # what `alembic check` does: nothing left to autogenerate
        diff = compare_metadata(
            MigrationContext.configure(c, opts={"compare_type": True}), SQLModel.metadata
        )
    assert diff == []
    # the database itself refuses a non-positive amount
    with pytest.raises(IntegrityError, match=r"(?i)check|constraint"), engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO payment_order (id, subject_kind, subject_id, site_id, amount_fen,"
                " currency, channel, status, idempotency_key, request_hash, details,"
                " created_at) VALUES ('x', 'k', 's', 's1', 0, 'CNY', 'sandbox', 'created',"
                " 'i', 'h', '{}', :t)"
            ),
            {"t": "2026-11-22 08:00:00+00:00"},
        )
    command.downgrade(alembic_config(url), "0003")
    assert "payment_order" not in set(inspect(engine).get_table_names())
    upgrade(url)
    assert "payment_order" in set(inspect(engine).get_table_names())
    engine.dispose()
