"""``python -m hub ingest``: take in what the edges publish, acknowledging only after commit.

Data, events and acks arrive through an MQTT shared subscription (``$share/GROUP/wuye/#``),
so several ingest processes split the load. Retained messages are never delivered to shared
subscriptions, so births and deaths also come through a plain subscription (each process
applies them; that is idempotent).

paho-mqtt holds each PUBACK until :meth:`Consumer._flush` has committed the batch the message
belongs to (``manual_ack``). The session is persistent (MQTT 5, fixed client id, session
expiry), so after a crash the broker redelivers what was never acknowledged to the restarted
process; the ``seen`` table makes those redeliveries no-ops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import Engine, delete
from sqlmodel import col

from hub import delivery
from hub.alarms import live
from hub.apply import HUB_KINDS, Applier, DatabaseDown, Raw, TelemetrySink, kind_of
from hub.db import session_scope
from hub.models import Seen, utcnow
from hub.settings import HubSettings

log = logging.getLogger(__name__)
SESSION_EXPIRY_S = 7 * 24 * 3600
HOUSEKEEPING_S = 3600


@dataclass(slots=True)
class Stats:
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    dead: int = 0
    values: int = 0
    batches: int = 0
    failures: int = 0


class InjectedDeath(BaseException):
    """Raised by the test hook ``WUYE_HUB_TEST_DIE_TOPIC``: the ingest thread dies as a bug
    would kill it, past every per-message guard."""


class Consumer:
    """Runs on its own thread (:meth:`start`); :meth:`stop` drains and disconnects."""

    def __init__(
        self, settings: HubSettings, engine: Engine, sink: TelemetrySink, instance: str = "1"
    ) -> None:
        self.settings = settings
        self.applier = Applier(
            engine, sink, settings.max_payload, gap_grace=timedelta(seconds=settings.gap_grace_s)
        )
        self.sink = sink
        self.client_id = f"hub-ingest-{instance}"
        self.stats = Stats()
        self.connected = threading.Event()
        # why the ingest thread died (None while it runs): /health says not ready, and the
        # process exits non-zero through ``on_failure`` so that its supervisor restarts it
        self.failed: BaseException | None = None
        self.on_failure: Callable[[BaseException], None] | None = None
        self.applied = threading.Condition()  # notified after each batch is committed
        self._queue: deque[tuple[int, int, Raw]] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = self._make_client()

    def _make_client(self) -> paho.Client:
        c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5,
            manual_ack=True,
        )
        if self.settings.mqtt_username:
            c.username_pw_set(self.settings.mqtt_username, self.settings.mqtt_password)
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *a: self.connected.clear()
        c.on_message = self._on_message
        # connected means subscribed: only then can nothing published slip past us
        c.on_subscribe = lambda *a: self.connected.set()
        c.reconnect_delay_set(1, 10)
        return c

    # -- MQTT ------------------------------------------------------------------------------
    def _on_connect(
        self, c: paho.Client, u: object, flags: object, rc: object, props: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            log.error("broker refused ingest: %s", rc)
            return
        group = self.settings.ingest_group
        c.subscribe(
            [
                (f"$share/{group}/wuye/#", 1),
                ("wuye/v1/+/+/birth", 1),  # retained births skip shared subscriptions
                ("wuye/v1/+/+/death", 1),
            ]
        )
        self.connected.set()
        log.info("ingest %s connected (group %s)", self.client_id, group)

    def _on_message(self, c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        if kind_of(msg.topic) in HUB_KINDS:
            # the hub's own messages to the edges (its watermarks, after every batch) come
            # back through the wildcard: nothing to apply, nothing to count
            if msg.qos > 0:
                c.ack(msg.mid, msg.qos)
            return
        with self._cond:
            self._queue.append((msg.mid, msg.qos, Raw(msg.topic, bytes(msg.payload))))
            # the first message ends the idle wait (the linger starts), a full batch the linger
            if len(self._queue) == 1 or len(self._queue) >= self.settings.ingest_batch:
                self._cond.notify()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        u = urlsplit(self.settings.mqtt_url)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        # how many unacknowledged messages the broker may send us: room for two batches
        props.ReceiveMaximum = min(65535, 2 * self.settings.ingest_batch)
        self._client.connect_async(
            u.hostname or "127.0.0.1",
            u.port or 1883,
            keepalive=10,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(30)
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def alive(self) -> bool:
        """The ingest thread runs (or has not been started)."""
        return self.failed is None and (self._thread is None or self._thread.is_alive())

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            # every message's failure is caught below this: reaching here is a bug
            self.failed = exc
            self.connected.clear()
            log.critical("the ingest thread died; the process must be restarted", exc_info=exc)
            if self.on_failure is not None:
                self.on_failure(exc)

    def _loop(self) -> None:
        linger = self.settings.ingest_linger_ms / 1000
        last_spill = time.monotonic()
        last_housekeeping = 0.0  # at start, then hourly
        last_watermarks = time.monotonic()
        doom = self.settings.test_die_topic
        while not self._stop.is_set():
            with self._cond:
                if not self._queue:
                    self._cond.wait(0.5)
                if self._queue and len(self._queue) < self.settings.ingest_batch:
                    self._cond.wait(linger)
                n = min(len(self._queue), self.settings.ingest_batch)
                batch = [self._queue.popleft() for _ in range(n)]
            if doom and any(raw.topic == doom for _, _, raw in batch):
                raise InjectedDeath(f"test hook: a message on {doom}")
            if batch:
                self._flush(batch)
            if time.monotonic() - last_spill > 1.0:
                deliver = getattr(self.sink, "deliver_spill", None)
                if deliver is not None:
                    try:
                        deliver()
                    except Exception:  # the spill stays on disk for the next try
                        log.exception("delivering spilled telemetry failed")
                last_spill = time.monotonic()
            if time.monotonic() - last_watermarks > self.settings.watermark_interval_s:
                self._remind_watermarks()
                last_watermarks = time.monotonic()
            if time.monotonic() - last_housekeeping > HOUSEKEEPING_S:
                self._housekeeping()
                last_housekeeping = time.monotonic()
        with self._cond:
            rest = list(self._queue)
            self._queue.clear()
        if rest:
            self._flush(rest)

    def _remind_watermarks(self) -> None:
        """Tell every online gateway what the hub holds of its stream (see hub/delivery.py)."""
        try:
            with session_scope(self.applier.engine) as s:
                replies = delivery.for_online(s, self.applier.gap_grace)
        except Exception:
            log.exception("reading watermarks failed; will try again")
            return
        for topic, payload in replies:
            self._client.publish(topic, payload, qos=1)

    def _housekeeping(self) -> None:
        """Prune what has aged out: SQL telemetry past retention, and old ``seen`` rows.

        A (gateway, stream, seq) older than ``seen_retention_days`` cannot be redelivered
        any more: brokers and edges let go of messages long before that.
        """
        try:
            prune = getattr(self.sink, "prune", None)
            removed = prune(self.applier.engine) if prune is not None else 0
            cutoff = utcnow() - timedelta(days=self.settings.seen_retention_days)
            with session_scope(self.applier.engine) as s:
                seen = s.execute(delete(Seen).where(col(Seen.at) < cutoff)).rowcount  # type: ignore[attr-defined]
            if removed or seen:
                log.info("housekeeping: %d telemetry rows and %d seen ids pruned", removed, seen)
        except Exception:
            log.exception("housekeeping failed; will try again")

    def _flush(self, batch: list[tuple[int, int, Raw]]) -> None:
        down_since = 0.0
        while True:
            try:
                out = self.applier.apply([raw for _, _, raw in batch])
                break
            except DatabaseDown as exc:
                # keep the batch (unacknowledged) and retry; an outage is logged once, then
                # every minute while it lasts
                self.stats.failures += 1
                now = time.monotonic()
                if now - down_since > 60:
                    log.error("ingest batch of %d not stored (%s); retrying", len(batch), exc)
                    down_since = now
                if self._stop.wait(1.0):
                    return  # not acknowledged: the broker redelivers after a restart
        # after the commit: answers to edges' questions, and alarm changes for live pages
        for topic, payload in out.replies + live.messages(out.alarms):
            self._client.publish(topic, payload, qos=1)
        for mid, qos, _ in batch:
            if qos > 0:
                self._client.ack(mid, qos)
        with self.applied:
            self.applied.notify_all()
        s = self.stats
        s.received += len(batch)
        s.applied += out.applied
        s.duplicates += out.duplicates
        s.dead += out.dead
        s.values += out.values
        s.batches += 1
