"""Reminders (催费, 缴费预警) by SMS and WeChat, through the notification outbox.

A run for a site and day *picks* the payers who owe (arrears) or have bills falling due
(warnings) and writes one ``notification`` row per payer into the outbox, in one
transaction; the rows are then *sent* in batches by :class:`ReminderSender`.

- One message per person per kind and period: the outbox's unique ``(key, recipient,
  channel)`` with ``key`` = ``remind:{site}:arrears:{month}`` (one arrears reminder a
  month) or ``remind:{site}:warning:{due date}`` (one warning per due date) and
  ``recipient`` = ``person:{id}``, inserted with ON CONFLICT DO NOTHING: a second run, or
  two at once, adds nothing; a person already told through another channel is not picked.
- A person paying several premises gets one message with their total.
- WeChat (free) when the person has an openid and WeChat is configured, else SMS (each
  billed segment costs ``sms_price_fen``); nobody reachable: counted, not queued.
- Right before each batch goes out its bills are read again: a message whose bills have
  been paid meanwhile is ``skipped``; one partly paid says what is left.
- A batch the provider did not take is retried after the notify sender's capped, jittered
  back-off; a recipient the provider refuses (a bad number) is ``failed`` for good. Each
  sent message records what it cost (``cost_fen``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select, update

from hub.billing import arrears
from hub.billing.periods import local_date
from hub.billing.receipts import yuan
from hub.db import session_scope
from hub.models import utcnow
from hub.notify.models import DeliveryStatus, Notification
from hub.notify.providers import BatchChannel, Outcome, Outgoing, SmsChannel, WechatChannel
from hub.notify.sender import backoff
from hub.property.models import Person
from hub.settings import HubSettings

log = logging.getLogger(__name__)
PENDING = DeliveryStatus.PENDING.value


class Kind(StrEnum):
    ARREARS = "arrears"  # 催费: bills past due
    WARNING = "warning"  # 缴费预警: bills falling due soon


EVENTS = {Kind.ARREARS: "billing.arrears", Kind.WARNING: "billing.due_soon"}


@dataclass(frozen=True, slots=True)
class Message:
    """What one person is to be told: their premises, bills and total."""

    person_id: int
    name: str
    channel: str
    key: str
    premises: tuple[str, ...]
    bill_ids: tuple[int, ...]
    amount_fen: int
    cycles: int
    due_on: date  # the oldest due date (arrears) or the first falling due (warnings)


def key_of(site: str, kind: Kind, on: date, due_on: date) -> str:
    """The de-duplication key: one arrears reminder a month, one warning per due date."""
    if kind is Kind.ARREARS:
        return f"remind:{site}:arrears:{on:%Y-%m}"
    return f"remind:{site}:warning:{due_on:%Y-%m-%d}"


def channel_for(phone: str, openid: str | None, channels: Collection[str]) -> str | None:
    """WeChat when possible (it costs nothing), else SMS; None: no way to reach them."""
    if openid and "wechat" in channels:
        return "wechat"
    if phone and "sms" in channels:
        return "sms"
    return None


def messages(
    site: str,
    kind: Kind,
    on: date,
    owings: Sequence[arrears.Owing],
    openids: dict[int, str],
    channels: Collection[str],
) -> tuple[list[Message], int]:
    """(a message per payer, how many premises had a payer nobody can reach), pure."""
    by_person: dict[int, list[arrears.Owing]] = {}
    unreachable = 0
    for o in owings:
        if (
            o.payer is None
            or channel_for(o.payer.phone, openids.get(o.payer.person_id), channels) is None
        ):
            unreachable += 1
            continue
        by_person.setdefault(o.payer.person_id, []).append(o)
    out = []
    for pid, owed in sorted(by_person.items()):
        payer = owed[0].payer
        assert payer is not None
        channel = channel_for(payer.phone, openids.get(pid), channels)
        assert channel is not None
        due = min(o.oldest_due for o in owed)
        out.append(
            Message(
                person_id=pid,
                name=payer.name,
                channel=channel,
                key=key_of(site, kind, on, due),
                premises=tuple(o.code for o in owed),
                bill_ids=tuple(b.bill_id for o in owed for b in o.bills),
                amount_fen=sum(o.amount_fen for o in owed),
                cycles=sum(o.cycles for o in owed),
                due_on=due,
            )
        )
    return out, unreachable


@dataclass
class Tally:
    """What sending did: messages sent, skipped (paid meanwhile), failed for good, left to
    retry, and what the sent ones cost."""

    sent: int = 0
    skipped: int = 0
    failed: int = 0
    retrying: int = 0
    cost_fen: int = 0

    def add(self, other: Tally) -> None:
        for k in ("sent", "skipped", "failed", "retrying", "cost_fen"):
            setattr(self, k, getattr(self, k) + getattr(other, k))


@dataclass
class Picked:
    """What picking did: payers found, messages queued now, already told, unreachable."""

    payers: int = 0
    queued: int = 0
    already: int = 0
    unreachable: int = 0
    keys: set[str] = field(default_factory=set)


def _insert(s: Session) -> Any:
    ins = (postgresql if s.get_bind().dialect.name == "postgresql" else sqlite).insert
    return ins(Notification.__table__).on_conflict_do_nothing(  # type: ignore[attr-defined]
        index_elements=["key", "recipient", "channel"]
    )


def pick(
    engine: Engine,
    site: str,
    kind: Kind,
    on: date,
    channels: Collection[str],
    *,
    within_days: int = 7,
    min_days: int = 0,
    by: str = "",
) -> Picked:
    """Queue a reminder for every payer of ``site`` who owes on ``on`` (arrears at least
    ``min_days`` overdue) or has bills due within ``within_days`` (warnings); committed."""
    with session_scope(engine) as s:
        if kind is Kind.ARREARS:
            owings = arrears.arrears(s, site, on, min_days=min_days)
        else:
            owings = arrears.due_soon(s, site, on, within_days)
        ids = {o.payer.person_id for o in owings if o.payer is not None}
        openids = {
            p.id: p.wechat_openid
            for p in s.exec(select(Person).where(col(Person.id).in_(sorted(ids))))
            if p.id is not None and p.wechat_openid
        }
        found, unreachable = messages(site, kind, on, owings, openids, channels)
        told = set(
            s.exec(
                select(Notification.key, Notification.recipient).where(
                    col(Notification.key).in_(sorted({m.key for m in found}))
                )
            ).all()
        )
        fresh = [m for m in found if (m.key, f"person:{m.person_id}") not in told]
        now = utcnow()
        rows = [
            {
                "key": m.key,
                "event": EVENTS[kind],
                "site_id": site,
                "severity": None,
                "recipient": f"person:{m.person_id}",
                "role": "payer",
                "channel": m.channel,
                "payload": {
                    "kind": kind.value,
                    "on": on.isoformat(),
                    "person_id": m.person_id,
                    "name": m.name,
                    "premises": list(m.premises),
                    "bill_ids": list(m.bill_ids),
                    "amount_fen": m.amount_fen,
                    "cycles": m.cycles,
                    "due_on": m.due_on.isoformat(),
                    "by": by,
                },
                "status": PENDING,
                "attempts": 0,
                "created_at": now,
                "next_at": now,
                "last_error": "",
            }
            for m in fresh
        ]
        table = Notification.__table__  # type: ignore[attr-defined]
        made = s.execute(_insert(s).returning(table.c.id), rows).all() if rows else []
    return Picked(
        len(found), len(made), len(found) - len(made), unreachable, {m.key for m in found}
    )


def params_for(channel: str, kind: Kind, payload: dict[str, Any], owed_fen: int) -> dict[str, str]:
    """The template parameters (SMS) or keywords (WeChat) of one message."""
    rooms = "、".join(payload["premises"])
    if channel == "wechat":  # 类目模板 keywords: thing ≤ 20 characters
        return {
            "thing1": rooms if len(rooms) <= 20 else rooms[:19] + "…",
            "amount2": f"¥{yuan(owed_fen)}",
            "time3": payload["due_on"],
            "thing4": "请尽快缴纳" if kind is Kind.ARREARS else "请按时缴纳",
        }
    return {
        "name": payload["name"],
        "rooms": rooms,
        "amount": yuan(owed_fen),
        "cycles": str(payload["cycles"]),
        "date": payload["on"],
        "due": payload["due_on"],
    }


class ReminderSender:
    """Sends queued reminders in batches; a thread once :meth:`start` ed (if any channel)."""

    def __init__(
        self,
        engine: Engine,
        channels: dict[str, BatchChannel],
        *,
        batch: int = 100,
        price_fen: dict[str, int] | None = None,
        first_s: float = 1.0,
        cap_s: float = 300.0,
        timeout_s: float = 10.0,
        poll_s: float = 1.0,
    ) -> None:
        self.engine, self.channels, self.batch = engine, channels, batch
        self.price_fen = price_fen or {"sms": 10}
        self.first_s, self.cap_s, self.poll_s = first_s, cap_s, poll_s
        self.timeout_s = timeout_s
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: HubSettings, engine: Engine) -> ReminderSender:
        return cls(
            engine,
            build_channels(settings),
            batch=settings.reminder_batch,
            price_fen={"sms": settings.sms_price_fen},
            first_s=settings.notify_retry_first_s,
            cap_s=settings.notify_retry_cap_s,
            timeout_s=settings.notify_timeout_s,
            poll_s=settings.notify_poll_s,
        )

    def start(self) -> None:
        if self.channels:
            self._thread = threading.Thread(target=self._run, name="reminders", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self.run_once()
                failing = False
            except Exception:
                if not failing:  # an outage is logged once, then quietly until it ends
                    log.exception("reminder sender failed; trying again")
                failing = True
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def run_once(self, now: datetime | None = None, keys: Collection[str] | None = None) -> Tally:
        """One attempt at every due reminder (of ``keys`` only, if given), batch by batch."""
        now = now or utcnow()
        tally = Tally()
        tried: set[int] = set()  # one attempt each per pass, however the clock is set
        for name, ch in sorted(self.channels.items()):
            while not self._stop.is_set():
                n = min(self.batch, ch.batch_max)
                # a batch ends well before its lease: at most three calls a message (WeChat:
                # token, send, send again), each within the timeout
                lease = now + timedelta(seconds=3 * n * self.timeout_s + 60)
                claimed = self._claim(name, n, now, lease, keys, tried)
                if not claimed:
                    break
                tried |= {c.id for c in claimed if c.id is not None}
                tally.add(self._send(ch, claimed, now, lease))
        return tally

    def _claim(
        self,
        channel: str,
        n: int,
        now: datetime,
        lease: datetime,
        keys: Collection[str] | None,
        tried: Collection[int],
    ) -> list[Notification]:
        free = or_(col(Notification.lease_until).is_(None), col(Notification.lease_until) <= now)
        with Session(self.engine, expire_on_commit=False) as s:
            q = select(Notification.id).where(
                col(Notification.status) == PENDING,
                col(Notification.channel) == channel,
                col(Notification.event).in_(list(EVENTS.values())),
                col(Notification.next_at) <= now,
                free,
            )
            if keys is not None:
                q = q.where(col(Notification.key).in_(sorted(keys)))
            if tried:
                q = q.where(col(Notification.id).not_in(sorted(tried)))
            ids = list(s.exec(q.order_by(col(Notification.id)).limit(n)).all())
            if not ids:
                return []
            got = s.execute(
                update(Notification)
                .where(col(Notification.id).in_(ids), col(Notification.status) == PENDING, free)
                .values(lease_until=lease)
                .returning(col(Notification.id))
            ).all()
            s.commit()
            rows = s.exec(
                select(Notification)
                .where(col(Notification.id).in_([r[0] for r in got]))
                .order_by(col(Notification.id))
            ).all()
            return list(rows)

    def _send(
        self, ch: BatchChannel, rows: list[Notification], now: datetime, lease: datetime
    ) -> Tally:
        """Re-read what each message's bills still owe, send the rest, record each."""
        tally = Tally()
        outgoing: list[Outgoing] = []
        by_id = {n.id: n for n in rows}
        with Session(self.engine) as s:
            people = {
                p.id: p
                for p in s.exec(
                    select(Person).where(col(Person.id).in_([n.payload["person_id"] for n in rows]))
                )
            }
            for n in rows:
                assert n.id is not None
                owed = arrears.still_owed(s, n.payload["bill_ids"])
                p = people.get(n.payload["person_id"])
                to = (p.wechat_openid if ch.name == "wechat" else p.phone) if p else ""
                if owed == 0:
                    self._final(n, lease, DeliveryStatus.SKIPPED, "paid meanwhile: not sent")
                    tally.skipped += 1
                elif not to:
                    self._final(n, lease, DeliveryStatus.FAILED, f"no {ch.name} address any more")
                    tally.failed += 1
                else:
                    kind = Kind(n.payload["kind"])
                    outgoing.append(Outgoing(n.id, to, params_for(ch.name, kind, n.payload, owed)))
        for kind in sorted({by_id[m.nid].payload["kind"] for m in outgoing}):
            part = [m for m in outgoing if by_id[m.nid].payload["kind"] == kind]
            try:
                outcomes = ch.send_batch(kind, part)
            except Exception as exc:  # a channel's bug must not stop the others
                log.exception("channel %s failed on a batch of %d", ch.name, len(part))
                why = f"{type(exc).__name__}: {exc}"[:200]
                outcomes = [Outcome(m.nid, False, False, None, why) for m in part]
            for got in outcomes:
                tally.add(self._record(by_id[got.nid], got, ch.name, now, lease))
        return tally

    @staticmethod
    def _mine(n: Notification, lease: datetime) -> tuple[Any, ...]:
        return (
            col(Notification.id) == n.id,
            col(Notification.status) == PENDING,
            col(Notification.lease_until) == lease,  # not taken over after the lease ran out
        )

    def _final(self, n: Notification, lease: datetime, status: DeliveryStatus, why: str) -> None:
        with Session(self.engine) as s:
            s.execute(
                update(Notification)
                .where(*self._mine(n, lease))
                .values(status=status.value, last_error=why, lease_until=None)
            )
            s.commit()

    def _record(
        self, n: Notification, got: Outcome, channel: str, now: datetime, lease: datetime
    ) -> Tally:
        values: dict[str, Any] = {
            "attempts": col(Notification.attempts) + 1,
            "last_status": got.status,
            "last_error": got.detail[:500],
            "lease_until": None,
        }
        t = Tally()
        if got.sent:
            t.sent, t.cost_fen = 1, got.units * self.price_fen.get(channel, 0)
            values |= {
                "status": DeliveryStatus.DELIVERED.value,
                "delivered_at": utcnow(),
                "cost_fen": t.cost_fen,
            }
        elif got.final:
            t.failed = 1
            values["status"] = DeliveryStatus.FAILED.value
        else:
            t.retrying = 1
            wait = backoff(n.attempts + 1, self.first_s, self.cap_s)
            values["next_at"] = max(now, utcnow()) + timedelta(seconds=wait)
            if n.attempts == 0:
                log.warning("reminder %d via %s not sent (%s); retrying", n.id, channel, got.detail)
        with Session(self.engine) as s:
            s.execute(update(Notification).where(*self._mine(n, lease)).values(**values))
            s.commit()
        return t


def build_channels(settings: HubSettings) -> dict[str, BatchChannel]:
    """The reminder channels these settings configure (none without their URLs)."""
    out: dict[str, BatchChannel] = {}
    if settings.sms_url:
        out["sms"] = SmsChannel(
            settings.sms_url,
            settings.sms_key_id,
            settings.sms_access_secret().encode(),
            settings.sms_sign_name,
            settings.sms_templates,
            batch_max=settings.reminder_batch,
            timeout_s=settings.notify_timeout_s,
        )
    if settings.wechat_url:
        out["wechat"] = WechatChannel(
            settings.wechat_url,
            settings.wechat_appid,
            settings.wechat_app_secret(),
            settings.wechat_templates,
            timeout_s=settings.notify_timeout_s,
        )
    return out


@dataclass
class RunResult:
    site: str
    kind: Kind
    on: date
    picked: Picked
    tally: Tally


def run_reminders(
    sender: ReminderSender,
    site: str,
    kind: Kind,
    on: date | None = None,
    *,
    within_days: int = 7,
    min_days: int = 0,
    by: str = "",
) -> RunResult:
    """Pick and queue the reminders of ``site`` for ``on`` (today in Shanghai), then make one
    attempt at them; a batch that failed is retried by the sender's thread (or the next
    :meth:`ReminderSender.run_once`)."""
    on = on or local_date(utcnow())
    picked = pick(
        sender.engine,
        site,
        kind,
        on,
        sender.channels,
        within_days=within_days,
        min_days=min_days,
        by=by,
    )
    tally = sender.run_once(keys=picked.keys) if picked.keys else Tally()
    return RunResult(site, kind, on, picked, tally)
