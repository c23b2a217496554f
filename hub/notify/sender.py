"""The background sender: delivers the outbox's due notifications, retrying until a 2xx.

Each attempt is recorded in its own transaction as soon as it is made: a notification
answered 2xx is marked ``delivered`` and never claimed again; one that failed is due again
after a capped, jittered exponential back-off. A sender claims a notification before
sending it by a conditional UPDATE that sets a lease (``lease_until``), so two senders (two
hub processes) never send it at the same moment; if the hub dies mid-attempt, the lease
runs out and the next sender tries again. That one resend of an attempt whose answer was
never recorded is the only way a receiver sees a notification twice, with the same
``X-Wuye-Delivery`` id.
"""

from __future__ import annotations

import logging
import random
import threading
import weakref
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, or_
from sqlmodel import Session, col, select, update

from hub.models import utcnow
from hub.notify.channels import Attempt, Channel, build_channels
from hub.notify.models import DeliveryStatus, Notification
from hub.settings import HubSettings

log = logging.getLogger(__name__)
PENDING, DELIVERED, EXPIRED = (
    DeliveryStatus.PENDING.value,
    DeliveryStatus.DELIVERED.value,
    DeliveryStatus.EXPIRED.value,
)

_live: weakref.WeakSet[Sender] = weakref.WeakSet()


def wake_senders() -> None:
    """Something was committed to the outbox: senders of this process look now."""
    for sender in list(_live):
        sender.wake()


def backoff(attempts: int, first_s: float, cap_s: float) -> float:
    """Seconds to wait after ``attempts`` failed attempts: doubling, ±20 %, never over cap."""
    base = first_s * 2.0 ** min(attempts - 1, 60)
    return min(cap_s, base * random.uniform(0.8, 1.2))


class Sender:
    """Delivers due notifications through ``channels``; a thread once :meth:`start` ed.

    Notifications for a channel this process lacks stay pending (another process, or this
    one configured later, sends them) until they are given up after ``give_up_s``.
    """

    def __init__(
        self,
        engine: Engine,
        channels: dict[str, Channel],
        *,
        first_s: float = 1.0,
        cap_s: float = 300.0,
        timeout_s: float = 10.0,
        give_up_s: float = 86400.0,
        poll_s: float = 1.0,
        batch: int = 50,
    ) -> None:
        self.engine, self.channels = engine, channels
        self.first_s, self.cap_s, self.give_up_s = first_s, cap_s, give_up_s
        self.lease = timedelta(seconds=2 * timeout_s + 1)  # an attempt ends well before
        self.poll_s, self.batch = poll_s, batch
        self.attempts = self.delivered = self.failed = 0  # counters since start
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: HubSettings, engine: Engine) -> Sender:
        return cls(
            engine,
            build_channels(settings),
            first_s=settings.notify_retry_first_s,
            cap_s=settings.notify_retry_cap_s,
            timeout_s=settings.notify_timeout_s,
            give_up_s=settings.notify_give_up_s,
            poll_s=settings.notify_poll_s,
        )

    def start(self) -> None:
        _live.add(self)
        self._thread = threading.Thread(target=self._run, name="notify-sender", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
        _live.discard(self)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            busy = False
            try:
                busy = self.run_once() >= self.batch
                if failing:
                    log.warning("notification sender works again")
                failing = False
            except Exception:
                # an outage (the database away) is logged once, then quietly until it ends
                if not failing:
                    log.exception("notification sender failed; trying again")
                failing = True
            if not busy:
                self._wake.wait(self.poll_s)
                self._wake.clear()

    def run_once(self, now: datetime | None = None) -> int:
        """Expire the hopeless, then make one attempt at each due notification (up to a
        batch); the number of attempts made. ``now`` is the clock (tests move it on)."""
        now = now or utcnow()
        with Session(self.engine) as s:
            s.execute(
                update(Notification)
                .where(
                    col(Notification.status) == PENDING,
                    col(Notification.created_at) < now - timedelta(seconds=self.give_up_s),
                    or_(
                        col(Notification.lease_until).is_(None),
                        col(Notification.lease_until) <= now,
                    ),
                )
                .values(status=EXPIRED, lease_until=None)
            )
            s.commit()
            if not self.channels:
                return 0
            due = s.exec(
                select(Notification.id)
                .where(
                    col(Notification.status) == PENDING,
                    col(Notification.next_at) <= now,
                    col(Notification.channel).in_(sorted(self.channels)),
                    or_(
                        col(Notification.lease_until).is_(None),
                        col(Notification.lease_until) <= now,
                    ),
                )
                .order_by(col(Notification.next_at), col(Notification.id))
                .limit(self.batch)
            ).all()
        made = 0
        for nid in due:
            if self._stop.is_set():
                break
            if nid is not None and self._attempt(nid, now):
                made += 1
        return made

    def _attempt(self, nid: int, now: datetime) -> bool:
        """Claim, send and record one notification; False if another sender has it."""
        lease = now + self.lease
        with Session(self.engine, expire_on_commit=False) as s:
            claimed: Any = s.execute(
                update(Notification)
                .where(
                    col(Notification.id) == nid,
                    col(Notification.status) == PENDING,
                    or_(
                        col(Notification.lease_until).is_(None),
                        col(Notification.lease_until) <= now,
                    ),
                )
                .values(lease_until=lease)
            )
            s.commit()
            if claimed.rowcount != 1:
                return False
            n = s.get(Notification, nid, populate_existing=True)
            if n is None:
                return False
            s.expunge(n)
        channel = self.channels[n.channel]
        try:
            got = channel.send(n)
        except Exception as exc:  # a channel's bug must not stop the others
            log.exception("channel %s failed on notification %d", n.channel, nid)
            got = Attempt(None, f"{type(exc).__name__}: {exc}"[:200])
        self._record(n, got, lease)
        return True

    def _record(self, n: Notification, got: Attempt, lease: datetime) -> None:
        now = utcnow()
        self.attempts += 1
        mine = (
            col(Notification.id) == n.id,
            col(Notification.status) == PENDING,
            col(Notification.lease_until) == lease,  # not taken over after our lease ran out
        )
        with Session(self.engine) as s:
            if got.delivered:
                self.delivered += 1
                s.execute(
                    update(Notification)
                    .where(*mine)
                    .values(
                        status=DELIVERED,
                        delivered_at=now,
                        attempts=col(Notification.attempts) + 1,
                        last_status=got.status,
                        last_error="",
                        lease_until=None,
                    )
                )
            else:
                self.failed += 1
                wait = backoff(n.attempts + 1, self.first_s, self.cap_s)
                if n.attempts == 0:
                    log.warning(
                        "notification %d to %s via %s not delivered (%s %s); retrying",
                        n.id,
                        n.recipient,
                        n.channel,
                        got.status,
                        got.detail,
                    )
                s.execute(
                    update(Notification)
                    .where(*mine)
                    .values(
                        attempts=col(Notification.attempts) + 1,
                        next_at=now + timedelta(seconds=wait),
                        last_status=got.status,
                        last_error=got.detail[:500],
                        lease_until=None,
                    )
                )
            s.commit()
