"""A plain paho subscriber that records what the broker delivers, for assertions."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    @property
    def json(self) -> Any:
        return orjson.loads(self.payload)


class Subscriber:
    def __init__(self, port: int, topic: str = "wuye/#", client_id: str = "test-sub") -> None:
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        c.on_subscribe = lambda c, u, mid, rc, p: self._subscribed.set()
        c.on_message = self._on_message
        c.connect("127.0.0.1", port, keepalive=5)
        c.loop_start()
        self.client = c
        if not self._subscribed.wait(10):
            raise TimeoutError("subscription not confirmed")

    def _on_message(self, c: paho.Client, u: Any, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 20) -> None:
        """Block until ``predicate(messages)`` holds; AssertionError on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.messages), timeout):
                raise AssertionError(
                    f"condition not met in {timeout}s; got {len(self.messages)} messages"
                )

    def of_kind(self, kind: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if m.topic.split("/")[4] == kind]

    def sequenced(self) -> list[dict[str, Any]]:
        with self._cond:
            return [
                m.json for m in self.messages if m.topic.split("/")[4] in ("data", "event", "ack")
            ]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
