"""A stand-in for the hub's side of delivery, for tests of the edge without a hub.

It speaks the contract (protocols/README.md, "Delivery"): it records the seqs of every
sequenced message a gateway publishes and answers each with ``committed``, the highest seq
below which it has them all. Without it an edge never frees its outbox: only the hub's
word does. Tests of the hub itself use the real ingest.
"""

from __future__ import annotations

import threading
import time

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from protocols.mqtt import Committed, Kind, Topic

SEQUENCED = {Kind.DATA, Kind.EVENT, Kind.ACK, Kind.PARK}


class Committer:
    def __init__(self, port: int, client_id: str = "test-committer") -> None:
        self._streams: dict[str, str] = {}  # gateway -> stream, from its birth
        self._seen: dict[str, set[int]] = {}
        self._mark: dict[str, int] = {}
        self._lock = threading.Lock()
        subscribed = threading.Event()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        c.on_connect = lambda c, u, f, rc, p: c.subscribe("wuye/v1/+/+/#", qos=1)
        c.on_subscribe = lambda c, u, mid, rc, p: subscribed.set()
        c.on_message = self._on_message
        c.connect("127.0.0.1", port, keepalive=5)
        c.loop_start()
        self.client = c
        if not subscribed.wait(10):
            raise TimeoutError("subscription not confirmed")

    def _on_message(self, c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        t = Topic.parse(msg.topic)
        body = orjson.loads(msg.payload)
        with self._lock:
            if t.kind is Kind.BIRTH:
                if self._streams.get(t.gateway) != body["stream"]:
                    self._streams[t.gateway] = body["stream"]
                    self._seen[t.gateway], self._mark[t.gateway] = set(), 0
            elif t.kind in SEQUENCED and t.gateway in self._streams:
                seen = self._seen[t.gateway]
                seen.add(body["seq"])
                mark = self._mark[t.gateway]
                while mark + 1 in seen:
                    mark += 1
                    seen.discard(mark)
                self._mark[t.gateway] = mark
            else:
                return
            if t.gateway not in self._streams:
                return
            c_ = Committed(
                stream=self._streams[t.gateway],
                seq=self._mark[t.gateway],
                max=max(self._seen[t.gateway], default=self._mark[t.gateway]),
                ts=int(time.time() * 1000),
            )
        c.publish(str(Topic(t.site, t.gateway, Kind.COMMITTED)), c_.dumps(), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
