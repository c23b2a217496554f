"""Sends pending commands to their gateways, again until acknowledged, and expires them.

A command row is committed before it is sent; the edge remembers command ids, so sending
one again (after a hub restart, or a lost publish) never makes a device act twice.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine
from sqlmodel import col, select

from hub.alarms import live
from hub.alarms import service as alarms
from hub.db import session_scope
from hub.models import Command, utcnow
from hub.parking import sync as parking_sync
from hub.settings import HubSettings
from hub.workorders import from_alarms, sla
from hub.workorders import service as workorders
from protocols.mqtt import Command as CommandMsg
from protocols.mqtt import Kind, Topic, Write

log = logging.getLogger(__name__)
RESEND_S = 10.0
ALARM_TICK_S = 5.0
# samples still on their way must not be overtaken: a tick could complete a duration that
# a sample in flight would have broken (protocols/alarms/engine.py, tick)
ALARM_TICK_LAG_MS = 10_000
GRACE = timedelta(seconds=30)  # after expiry, wait this long for the edge's own verdict


class Dispatcher:
    def __init__(self, settings: HubSettings, engine: Engine) -> None:
        self.engine = engine
        self._workorders = workorders.Config.from_settings(settings)
        self.rulebook = alarms.RuleBook()
        self._last_alarm_tick = 0.0
        self._sent: dict[str, float] = {}
        self._kick = threading.Event()
        self._stop = threading.Event()
        u = urlsplit(settings.mqtt_url)
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="hub-commands", protocol=paho.MQTTv5
        )
        if settings.mqtt_username:
            self._client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
        self._client.connect_async(u.hostname or "127.0.0.1", u.port or 1883, keepalive=10)
        self._thread = threading.Thread(target=self._run, name="commands", daemon=True)

    def start(self) -> None:
        self._client.loop_start()
        self._thread.start()

    def alarm_tick(self, now_ms: int | None = None) -> int:
        """Complete alarm durations and silences due by now (less a lag for data in flight)."""
        if time.monotonic() - self._last_alarm_tick < ALARM_TICK_S and now_ms is None:
            return 0
        self._last_alarm_tick = time.monotonic()
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000) - ALARM_TICK_LAG_MS
        changed = 0
        with session_scope(self.engine) as s:
            gateways = alarms.timed_gateways(s)
        for gw in gateways:  # a transaction per gateway: its lock is held briefly
            with session_scope(self.engine) as s:
                done = alarms.tick(s, self.rulebook, [gw], now_ms)
            for topic, payload in live.messages(done):
                self._publish(topic, payload)
            changed += len(done)
        return changed

    def _publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1)

    def kick(self) -> None:
        self._kick.set()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        self._thread.join(10)
        self._client.disconnect()
        self._client.loop_stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("command dispatch failed")
            try:
                if self._client.is_connected():
                    parking_sync.tick(self.engine, self._publish)
            except Exception:
                log.exception("parking sync failed")
            try:
                from_alarms.sweep(self.engine, self._workorders)  # alarms ingest raised alone
                sla.check(self.engine, self._workorders)  # each missed deadline once
            except Exception:
                log.exception("work-order sweep or SLA check failed")
            try:
                self.alarm_tick()
            except Exception:
                log.exception("alarm tick failed")
            self._kick.wait(2.0)
            self._kick.clear()

    def tick(self) -> None:
        now = utcnow()
        with session_scope(self.engine) as s:
            pending = s.exec(
                select(Command).where(Command.status == "pending").order_by(col(Command.created_at))
            ).all()
            for cmd in pending:
                if cmd.expires_at + GRACE < now:
                    cmd.status, cmd.detail = "expired", "no acknowledgement from the gateway"
                    self._sent.pop(cmd.id, None)
                    continue
                if cmd.expires_at < now or not self._client.is_connected():
                    continue
                if time.monotonic() - self._sent.get(cmd.id, -1e9) < RESEND_S:
                    continue
                msg = CommandMsg(
                    id=cmd.id,
                    ts=int(cmd.created_at.timestamp() * 1000),
                    expires=int(cmd.expires_at.timestamp() * 1000),
                    action=Write(dev=cmd.device_id, point=cmd.point, value=cmd.value),
                )
                topic = str(Topic(cmd.site_id, cmd.gateway_id, Kind.CMD))
                self._client.publish(topic, msg.dumps(), qos=1)
                self._sent[cmd.id] = time.monotonic()
