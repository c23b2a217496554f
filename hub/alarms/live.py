"""Alarm changes, live: published on the broker after each commit, fanned out to browsers.

Whatever changes an alarm (an ingest process, the dispatcher's tick, a person through the
API) publishes the alarm as it now is on ``wuye-hub/v1/alarms/{site}`` once its transaction
has committed. Each API process subscribes and hands every change to the server-sent-event
streams of the browsers watching that site, so ingest and API may run in different
processes and the page still needs no polling. A browser that connects gets the active
alarms first (from the database), then the changes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from hub.alarms.models import Alarm
from hub.settings import HubSettings

log = logging.getLogger(__name__)
ROOT = "wuye-hub/v1/alarms"  # outside wuye/v1/#: ingest never consumes it
QUEUE = 1000  # changes waiting for one slow browser before it is dropped


def public(a: Alarm) -> dict[str, Any]:
    def t(x: datetime | None) -> str | None:
        return x.isoformat() if x is not None else None

    return {
        "id": a.id,
        "site_id": a.site_id,
        "gateway_id": a.gateway_id,
        "device_id": a.device_id,
        "alarm_type": a.alarm_type,
        "rule": a.rule,
        "severity": a.severity,
        "active": a.active,
        "acknowledged": a.acknowledged,
        "message": a.message,
        "details": a.details,
        "started_at": t(a.started_at),
        "last_seen_at": t(a.last_seen_at),
        "acked_at": t(a.acked_at),
        "acked_by": a.acked_by,
        "cleared_at": t(a.cleared_at),
        "work_order_id": a.work_order_id,
    }


def messages(alarms: Iterable[Alarm]) -> list[tuple[str, bytes]]:
    """(topic, payload) of each changed alarm that has an id (is stored)."""
    return [(f"{ROOT}/{a.site_id}", orjson.dumps(public(a))) for a in alarms if a.id is not None]


class Publisher:
    """A small MQTT client for processes that change alarms outside ingest (API, ticks)."""

    def __init__(self, settings: HubSettings, client_id: str) -> None:
        u = urlsplit(settings.mqtt_url)
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        if settings.mqtt_username:
            self._client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
        self._client.connect_async(u.hostname or "127.0.0.1", u.port or 1883, keepalive=30)
        self._client.loop_start()

    def publish(self, alarms: Iterable[Alarm]) -> None:
        for topic, payload in messages(alarms):
            self._client.publish(topic, payload, qos=1)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class Broadcaster:
    """Subscribes to alarm changes and feeds one asyncio queue per watching browser."""

    def __init__(self, settings: HubSettings, client_id: str) -> None:
        self.settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchers: dict[asyncio.Queue[dict[str, Any]], str | None] = {}
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.received = 0
        u = urlsplit(settings.mqtt_url)
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        if settings.mqtt_username:
            c.username_pw_set(settings.mqtt_username, settings.mqtt_password)
        c.on_connect = lambda cl, u_, f, rc, p: cl.subscribe(f"{ROOT}/#", qos=1)
        c.on_subscribe = lambda *a: self.connected.set()
        c.on_disconnect = lambda *a: self.connected.clear()
        c.on_message = self._on_message
        c.reconnect_delay_set(1, 10)
        self._client = c
        self._host, self._port = u.hostname or "127.0.0.1", u.port or 1883

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def watch(self, site: str | None) -> asyncio.Queue[dict[str, Any]]:
        """A queue of the changes of ``site`` (None: every site); :meth:`leave` when done."""
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE)
        with self._lock:
            self._watchers[q] = site
        return q

    def leave(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        with self._lock:
            self._watchers.pop(q, None)

    def _on_message(self, c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        try:
            alarm = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            log.warning("unreadable alarm change on %s", msg.topic)
            return
        self.received += 1
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._fan_out, alarm)

    def _fan_out(self, alarm: dict[str, Any]) -> None:
        with self._lock:
            watchers = list(self._watchers.items())
        for q, site in watchers:
            if site is not None and alarm.get("site_id") != site:
                continue
            try:
                q.put_nowait(alarm)
            except asyncio.QueueFull:  # a browser that stopped reading: it reconnects
                self.leave(q)
                log.warning("a live alarm stream fell %d changes behind; dropped", QUEUE)
