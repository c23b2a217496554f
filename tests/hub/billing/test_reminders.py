"""Reminders by SMS and WeChat through the outbox, against the local providers of
simulators/messaging.py over real HTTP: they check the hub's HMAC signature (SMS) and access
tokens (WeChat) and answer as the providers document (codes, errcodes, fees).

What a user notices: one SMS request carries the payers' phones and amounts; a second run
sends nothing; a payer who pays while the first batch is out gets no message; a provider
that fails and recovers sends the batch once; an expired WeChat token is renewed; a bad
signature is refused by the provider."""

from __future__ import annotations

import asyncio
import hashlib
import time
import urllib.error
import urllib.request
from datetime import UTC, date, datetime, timedelta

import orjson
import pytest
from sqlmodel import Session, col, select

from hub.billing.models import Method
from hub.billing.payments import DeskPayment, pay_at_desk
from hub.billing.periods import Month
from hub.billing.reminders import Kind, ReminderSender, messages, pick, run_reminders
from hub.billing.runs import run_bills
from hub.models import utcnow
from hub.notify.models import Notification
from hub.notify.providers import SMS_PATH, SmsChannel, WechatChannel, sms_signature
from hub.property.models import Person
from simulators.messaging import SmsPlatform, WechatPlatform, segments
from tests.hub.billing.community import SITE, property_fee, rooms
from tests.hub.billing.test_arrears import owners

NOW = datetime(2026, 7, 20, 2, 0, tzinfo=UTC)
ON = date(2026, 7, 20)
SECRET = b"sms-access-secret-only-for-these-tests"
OWED = 3 * 67125  # Q1..Q3 of 物业费 for 89.50 m² at 2.50 元
TEMPLATES = {"arrears": "SMS_ARREARS", "warning": "SMS_WARNING"}


@pytest.fixture
def owing(engine):
    """Three rooms, owners 13800000001..3, each owing Q1..Q3 on 07-20."""
    ids = rooms(engine, 3)
    people = owners(engine, ids)
    property_fee(engine, ids)
    run_bills(engine, SITE, Month(2026, 7), "finance", now=NOW)
    return ids, people


def sms_sender(engine, url: str, *, secret: bytes = SECRET, batch: int = 100) -> ReminderSender:
    channel = SmsChannel(url, "wuye-hub", secret, "阳光物业", TEMPLATES, timeout_s=5)
    return ReminderSender(engine, {"sms": channel}, batch=batch, first_s=0.05, cap_s=0.2)


def outbox(engine) -> list[Notification]:
    with Session(engine) as s:
        return list(s.exec(select(Notification).order_by(col(Notification.id))))


async def remind(sender: ReminderSender, kind: Kind = Kind.ARREARS, on: date = ON, **kw):
    return await asyncio.to_thread(run_reminders, sender, SITE, kind, on, **kw)


def pay(engine, premises: int, amount: int, key: str) -> None:
    with Session(engine, expire_on_commit=False) as s:
        pay_at_desk(s, SITE, DeskPayment(premises, Method.CASH, amount, key), "cash1", now=NOW)


async def test_one_sms_batch_carries_every_payer_and_a_second_run_sends_nothing(engine, owing):
    async with SmsPlatform(SECRET) as sms:
        sender = sms_sender(engine, sms.url)
        r = await remind(sender)
        assert (r.picked.payers, r.picked.queued, r.tally.sent, r.tally.cost_fen) == (3, 3, 3, 30)
        (req,) = sms.requests  # one call to the provider for the three of them
        assert (req.status, req.code) == (200, "OK")
        assert req.phones == ["13800000001", "13800000002", "13800000003"]
        texts = {m.phone: m.text for m in sms.sent}
        assert texts["13800000002"] == (
            "【阳光物业】尊敬的张二，您的房屋1-1-0102截至2026-07-20欠费2,013.75元，请尽快缴纳。"
        )
        assert all(segments(t) == 1 for t in texts.values())
        rows = outbox(engine)
        assert [(n.channel, n.status, n.cost_fen, n.attempts) for n in rows] == [
            ("sms", "delivered", 10, 1)
        ] * 3
        assert {n.key for n in rows} == {"remind:sunny:arrears:2026-07"}
        # again the same day, or later that month: nobody is told twice, nothing is sent
        for day in (ON, date(2026, 7, 28)):
            again = await remind(sender, on=day)
            assert (again.picked.queued, again.picked.already, again.tally.sent) == (0, 3, 0)
        assert len(sms.requests) == 1 and len(outbox(engine)) == 3
        # a new month is a new reminder
        august = await remind(sender, on=date(2026, 8, 3))
        assert august.tally.sent == 3 and len(sms.requests) == 2


async def test_a_payer_who_pays_while_the_first_batch_is_out_gets_nothing(engine, owing):
    ids, _ = owing
    async with SmsPlatform(SECRET) as sms:
        # the third payer pays at the desk while the provider handles the first batch
        sms.on_request = lambda req: pay(engine, ids[2], OWED, "paid-meanwhile")
        r = await remind(sms_sender(engine, sms.url, batch=2))
        assert (r.picked.queued, r.tally.sent, r.tally.skipped) == (3, 2, 1)
        assert [req.phones for req in sms.requests] == [["13800000001", "13800000002"]]
        assert [n.status for n in outbox(engine)] == ["delivered", "delivered", "skipped"]
        assert "paid" in outbox(engine)[2].last_error


async def test_a_partly_paid_payer_is_told_what_is_left_and_one_who_paid_nothing(engine, owing):
    ids, _ = owing
    async with SmsPlatform(SECRET) as sms:
        sender = sms_sender(engine, sms.url)
        picked = await asyncio.to_thread(pick, engine, SITE, Kind.ARREARS, ON, {"sms"})
        assert picked.queued == 3
        pay(engine, ids[0], OWED, "all-of-it")  # after picking, before sending
        pay(engine, ids[1], OWED - 100, "all-but-1-yuan")
        tally = await asyncio.to_thread(sender.run_once, utcnow(), picked.keys)
        assert (tally.sent, tally.skipped) == (2, 1)
        assert [m.phone for m in sms.sent] == ["13800000002", "13800000003"]
        assert "欠费1.00元" in sms.sent[0].text


async def test_a_provider_that_fails_then_recovers_sends_the_batch_once(engine, owing):
    async with SmsPlatform(SECRET) as sms:
        sms.fail = 2  # 503 ServiceUnavailable twice
        sender = sms_sender(engine, sms.url)
        r = await remind(sender)
        assert (r.tally.sent, r.tally.retrying) == (0, 3)
        n = outbox(engine)[0]
        assert (n.status, n.attempts, n.last_status) == ("pending", 1, 503)
        assert "ServiceUnavailable" in n.last_error
        assert await asyncio.to_thread(sender.run_once) == type(r.tally)()  # not due yet
        # the clock moves past the back-off (0.05 s, doubling, capped at 0.2 s)
        later = utcnow() + timedelta(seconds=1)
        second = await asyncio.to_thread(sender.run_once, later)
        assert second.retrying == 3
        third = await asyncio.to_thread(sender.run_once, later + timedelta(seconds=1))
        assert (third.sent, third.cost_fen) == (3, 30)
        assert [q.status for q in sms.requests] == [503, 503, 200]
        assert sorted(m.phone for m in sms.sent) == ["13800000001", "13800000002", "13800000003"]
        assert [(x.status, x.attempts) for x in outbox(engine)] == [("delivered", 3)] * 3
        assert (
            await asyncio.to_thread(sender.run_once, later + timedelta(hours=1)) == type(r.tally)()
        )


async def test_two_runs_at_once_send_each_message_once(engine, owing):
    async with SmsPlatform(SECRET) as sms:
        a, b = sms_sender(engine, sms.url, batch=1), sms_sender(engine, sms.url, batch=1)
        ra, rb = await asyncio.gather(remind(a), remind(b))
        assert ra.picked.queued + rb.picked.queued == 3
        assert ra.tally.sent + rb.tally.sent == 3
        assert sorted(m.phone for m in sms.sent) == ["13800000001", "13800000002", "13800000003"]


async def test_the_provider_refuses_a_bad_signature_and_a_replayed_request(engine, owing):
    async with SmsPlatform(SECRET) as sms:
        r = await remind(sms_sender(engine, sms.url, secret=b"not the secret"))
        assert (r.tally.sent, r.tally.retrying) == (0, 3)
        assert [(q.status, q.code) for q in sms.requests] == [(401, "SignatureDoesNotMatch")]
        assert sms.sent == [] and "SignatureDoesNotMatch" in outbox(engine)[0].last_error
        # signed as the hub signs, twice with one nonce: the copy is refused
        body = orjson.dumps(
            {
                "sign_name": "阳光物业",
                "template_id": "SMS_WARNING",
                "messages": [
                    {
                        "phone": "13900000009",
                        "params": {"name": "王", "rooms": "1", "amount": "1.00", "due": "x"},
                    }
                ],
            }
        )
        ts = int(time.time())
        headers = {
            "X-Sms-Key": "wuye-hub",
            "X-Sms-Timestamp": str(ts),
            "X-Sms-Nonce": "nonce-1",
            "X-Sms-Signature": sms_signature(SECRET, ts, "nonce-1", body),
        }

        def post(h: dict[str, str]) -> tuple[int, dict]:
            req = urllib.request.Request(sms.url + SMS_PATH, body, h, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    return resp.status, orjson.loads(resp.read())
            except urllib.error.HTTPError as exc:
                return exc.code, orjson.loads(exc.read())

        status, answer = await asyncio.to_thread(post, headers)
        assert status == 200 and answer["results"][0]["code"] == "OK"
        status, answer = await asyncio.to_thread(post, headers)
        assert (status, answer["code"]) == (401, "NonceReused")
        old = {**headers, "X-Sms-Timestamp": str(ts - 3600), "X-Sms-Nonce": "nonce-2"}
        old["X-Sms-Signature"] = sms_signature(SECRET, ts - 3600, "nonce-2", body)
        assert (await asyncio.to_thread(post, old))[1]["code"] == "RequestExpired"
        assert hashlib.sha256(body).hexdigest()  # the signature covers the body's digest


async def test_a_bad_phone_is_refused_for_good_and_costs_nothing(engine, owing):
    _, people = owing
    with Session(engine) as s:
        p = s.get(Person, people[0])
        assert p is not None
        p.phone = "02162345678"  # a landline: no SMS
        s.commit()
    async with SmsPlatform(SECRET) as sms:
        sender = sms_sender(engine, sms.url)
        r = await remind(sender)
        assert (r.tally.sent, r.tally.failed, r.tally.cost_fen) == (2, 1, 20)
        n = outbox(engine)[0]
        assert (n.status, n.cost_fen) == ("failed", None) and "InvalidPhoneNumber" in n.last_error
        later = utcnow() + timedelta(hours=1)
        assert (await asyncio.to_thread(sender.run_once, later)).sent == 0  # never again


async def test_wechat_template_messages_renew_an_expired_token(engine, owing):
    _, people = owing
    with Session(engine) as s:
        for pid, openid in zip(people, ("oWX-0001", "oWX-0002", None), strict=True):
            p = s.get(Person, pid)
            assert p is not None
            p.wechat_openid = openid
        s.commit()
    async with WechatPlatform("wx-test", "app-secret") as wx, SmsPlatform(SECRET) as sms:
        channels = {
            "wechat": WechatChannel(
                wx.url,
                "wx-test",
                "app-secret",
                {"arrears": "TPL_ARREARS", "warning": "TPL_WARNING"},
            ),
            "sms": SmsChannel(sms.url, "wuye-hub", SECRET, "阳光物业", TEMPLATES),
        }
        sender = ReminderSender(engine, channels, first_s=0.05, cap_s=0.2)
        r = await remind(sender)
        # WeChat for those with an openid (free), SMS for the third (10 fen)
        assert (r.tally.sent, r.tally.cost_fen) == (3, 10)
        assert [m.touser for m in wx.sent] == ["oWX-0001", "oWX-0002"]
        assert wx.sent[0].data == {
            "thing1": "1-1-0101",
            "amount2": "¥2,013.75",
            "time3": "2026-01-16",
            "thing4": "请尽快缴纳",
        }
        assert [m.phone for m in sms.sent] == ["13800000003"] and wx.token_requests == 1
        # the token expires; the next messages (warnings of Q4, due 16 Oct) get 42001,
        # a new token, and go out
        run_bills(engine, SITE, Month(2026, 9), "finance", now=NOW + timedelta(days=60))
        wx.expire_tokens()
        w = await remind(sender, Kind.WARNING, date(2026, 10, 10), within_days=7)
        assert w.tally.sent == 3 and wx.token_requests == 2
        assert wx.answers == [0, 0, 42001, 0, 0]
        assert (
            wx.sent[-1].template_id == "TPL_WARNING" and wx.sent[-1].data["time3"] == "2026-10-16"
        )


async def test_wechat_refuses_a_wrong_appsecret_and_someone_not_following(engine, owing):
    _, people = owing
    with Session(engine) as s:
        for pid in people:
            p = s.get(Person, pid)
            assert p is not None
            p.wechat_openid = f"oWX-{pid}"
        s.commit()
    async with WechatPlatform("wx-test", "app-secret", unfollowed={f"oWX-{people[1]}"}) as wx:
        tpl = {"arrears": "TPL_ARREARS", "warning": "TPL_WARNING"}
        wrong = ReminderSender(engine, {"wechat": WechatChannel(wx.url, "wx-test", "nope", tpl)})
        r = await remind(wrong)
        assert (r.tally.sent, r.tally.retrying, wx.token_requests) == (0, 3, 0)
        assert "40125" in outbox(engine)[0].last_error  # invalid appsecret
        right = ReminderSender(
            engine, {"wechat": WechatChannel(wx.url, "wx-test", "app-secret", tpl)}
        )
        t = await asyncio.to_thread(right.run_once, utcnow() + timedelta(hours=1))
        assert (t.sent, t.failed, t.cost_fen) == (2, 1, 0)
        assert "43004" in outbox(engine)[1].last_error and outbox(engine)[1].status == "failed"


def test_one_message_per_person_with_the_total_of_their_premises():
    from hub.billing.arrears import OwedBill, Owing, Payer

    def owing(pid: int, code: str, person: int, phone: str, fen: int) -> Owing:
        bill = OwedBill(
            pid,
            pid,
            "物业费",
            "charge",
            date(2026, 1, 1),
            date(2026, 4, 1),
            date(2026, 1, 16),
            fen,
            185,
        )
        return Owing(pid, code, "1", Payer(person, "李", phone), (bill,))

    rows = [
        owing(1, "1-1-0101", 7, "13800000007", 100),
        owing(2, "P-017", 7, "13800000007", 50),
        owing(3, "1-1-0102", 8, "", 10),
    ]
    found, unreachable = messages(SITE, Kind.ARREARS, ON, rows, {}, {"sms"})
    assert unreachable == 1 and len(found) == 1
    m = found[0]
    assert (m.person_id, m.premises, m.amount_fen, m.channel) == (
        7,
        ("1-1-0101", "P-017"),
        150,
        "sms",
    )
    found, _ = messages(SITE, Kind.ARREARS, ON, rows, {8: "oWX"}, {"sms", "wechat"})
    assert [(m.person_id, m.channel) for m in found] == [(7, "sms"), (8, "wechat")]
    assert messages(SITE, Kind.ARREARS, ON, rows, {}, set()) == ([], 3)
