"""A subscriber process that only counts messages: the ceiling and the witness.

Prints ``READY`` once subscribed, then ``COUNT n seconds`` when ``n`` messages arrived, or
with fewer after ``timeout`` seconds (optional fourth argument, default 600).
"""

from __future__ import annotations

import sys
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    port, topic, want = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 600.0
    done = threading.Event()
    state = {"n": 0, "t0": 0.0}

    def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        if state["n"] == 0:
            state["t0"] = time.perf_counter()
        state["n"] += 1
        if state["n"] >= want:
            done.set()

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-counter-{port}")
    c.on_message = on_message
    c.on_subscribe = lambda *a: print("READY", flush=True)
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, qos=1)
    c.connect("127.0.0.1", port)
    c.loop_start()
    done.wait(timeout)
    print(f"COUNT {state['n']} {time.perf_counter() - state['t0']:.3f}", flush=True)
    c.disconnect()
    c.loop_stop()


if __name__ == "__main__":
    main()
