"""A subscriber process that counts what the gateways under test deliver: the witness.

``python -m bench.tally PORT`` subscribes with QoS 1 to our data topics (``wuye/v1/...``)
and to ThingsBoard's gateway telemetry topic, prints ``READY`` once subscribed, then answers
every line it reads on stdin with one JSON line of the counts since it started::

    {"wuye": {"messages": 120, "values": 1200, "errors": 0, "hist": 0},
     "tb": {"messages": 118, "values": 1180, "errors": 0, "hist": 0}}

``values`` counts decoded values (the keys of a message's ``values``), ``errors`` points
reported as errors instead of values, ``hist`` our messages marked historical (a backlog).
It exits at the end of stdin, so it never outlives the benchmark that started it.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

OURS = "wuye/v1/+/+/data/+"
TB = "v1/gateway/telemetry"


def _zero() -> dict[str, int]:
    return {"messages": 0, "values": 0, "errors": 0, "hist": 0}


def main() -> None:
    port = int(sys.argv[1])
    lock = threading.Lock()
    counts: dict[str, dict[str, int]] = {"wuye": _zero(), "tb": _zero()}
    subscribed = threading.Event()

    def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        body: Any = orjson.loads(msg.payload)
        if msg.topic == TB:
            # {"device": [{"ts": ..., "values": {...}}, ...], ...}
            family = "tb"
            entries = [e for per_device in body.values() for e in per_device]
            values = sum(len(e.get("values", {})) for e in entries)
            errors = hist = 0
        else:
            family = "wuye"
            values = len(body.get("values", {}))
            errors = len(body.get("errors", {}))
            hist = int(bool(body.get("hist")))
        with lock:
            c_ = counts[family]
            c_["messages"] += 1
            c_["values"] += values
            c_["errors"] += errors
            c_["hist"] += hist

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-tally-{port}")
    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_connect = lambda c, u, f, rc, p: c.subscribe([(OURS, 1), (TB, 1)])
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not subscribed.wait(10):
        sys.exit("tally: no SUBACK within 10 s")
    print("READY", flush=True)
    for _line in sys.stdin:
        with lock:
            snapshot = orjson.dumps(counts).decode()
        print(snapshot, flush=True)
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
