"""Hub ingest rate per process: messages/s and values/s (50 values a message).

The load is made repeatable by queueing it in the broker first: each consumer's persistent
session is created, the consumer disconnects, N messages are published (QoS 1) and wait in
Mosquitto, then the consumer process starts and drains them. Measured from its first to its
last message. The ceiling is a subscriber that only counts (paho, manual acks), drained the
same way in the same run. Stores: SQLite, PostgreSQL, VictoriaMetrics (latest values and the
de-duplication table still in PostgreSQL).

    .venv/bin/python -m bench.hub_ingest --messages 40000 --runs 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.common import median, record
from deploy.mosquitto import Mosquitto
from deploy.victoria import Victoria

VALUES = 50
GATEWAYS = 20
DEVICES = 10  # per gateway
PG = os.environ.get("WUYE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _points() -> list[dict[str, Any]]:
    return [
        {
            "name": f"p{i:02d}",
            "unit": "",
            "kind": "counter" if i < 2 else "measurement",
            "type": "float32",
        }
        for i in range(VALUES)
    ]


def births() -> list[tuple[str, bytes]]:
    out = []
    for g in range(GATEWAYS):
        gw = f"gw-{g:03d}"
        out.append(
            (
                f"wuye/v1/bench/{gw}/birth",
                orjson.dumps(
                    {
                        "v": 1,
                        "gw": gw,
                        "site": "bench",
                        "bdseq": 0,
                        "stream": uuid.uuid4().hex,
                        "ts": 0,
                        "agent": "bench",
                        "devices": [
                            {
                                "id": f"d{d:02d}",
                                "profile": "synthetic",
                                "bus": "b",
                                "unit": d + 1,
                                "interval_s": 1.0,
                                "points": _points(),
                            }
                            for d in range(DEVICES)
                        ],
                    }
                ),
            )
        )
    return out


def data(n: int) -> list[tuple[str, bytes]]:
    """n data messages round-robin over gateways and devices, each gateway in sequence."""
    t0 = int(time.time() * 1000) - n * 10
    seq = [0] * GATEWAYS
    out = []
    for i in range(n):
        g, d = i % GATEWAYS, (i // GATEWAYS) % DEVICES
        seq[g] += 1
        values = {f"p{k:02d}": round(1000 + i * 0.01 + k, 2) for k in range(VALUES)}
        out.append(
            (
                f"wuye/v1/bench/gw-{g:03d}/data/d{d:02d}",
                orjson.dumps(
                    {
                        "v": 1,
                        "gw": f"gw-{g:03d}",
                        "seq": seq[g],
                        "hist": False,
                        "ts": t0 + i * 10,
                        "dev": f"d{d:02d}",
                        "values": values,
                    }
                ),
            )
        )
    return out


def _session(port: int, client_id: str, subs: list[tuple[str, int]]) -> None:
    """Create a persistent session with these subscriptions, then leave."""
    done = threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(subs)
    c.on_subscribe = lambda *a: done.set()
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    assert done.wait(10)
    c.disconnect()
    c.loop_stop()


def publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=paho.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.connect("127.0.0.1", port)
    c.loop_start()
    last = None
    for topic, payload in messages:
        last = c.publish(topic, payload, qos=1)
    assert last is not None
    last.wait_for_publish(120)
    c.disconnect()
    c.loop_stop()


def count_child(port: int, n: int) -> None:
    """The ceiling: receive and acknowledge n messages, doing nothing else."""
    got = 0
    t0 = 0.0
    done = threading.Event()

    def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        nonlocal got, t0
        if got == 0:
            t0 = time.perf_counter()
        got += 1
        c.ack(msg.mid, msg.qos)
        if got >= n:
            done.set()

    c = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-count", protocol=paho.MQTTv5, manual_ack=True
    )
    c.on_message = on_message
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 1000
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    done.wait(600)
    print(f"DONE {got} {time.perf_counter() - t0:.3f}", flush=True)


def ingest_child(port: int, n: int, db: str, influx: str | None, instance: str) -> None:
    """A hub ingest process (the real Consumer) that reports when n messages are applied.

    With n = 0 it stops once nothing has arrived for 3 s (its share of a split stream),
    and reports the time from its first to its last applied batch.
    """
    from hub.db import make_engine, upgrade
    from hub.runtime import make_consumer
    from hub.settings import load_settings

    settings = load_settings(
        database_url=db,
        mqtt_url=f"mqtt://127.0.0.1:{port}",
        influx_url=influx,
        spill_dir=Path(tempfile.mkdtemp()),
    )
    upgrade(db)
    consumer = make_consumer(settings, make_engine(db), instance=instance)
    consumer.start()
    t0 = last = None
    seen = 0
    while (consumer.stats.received < n) if n else (last is None or time.perf_counter() - last < 3):
        got = consumer.stats.received
        if got != seen:
            seen, last = got, time.perf_counter()
            t0 = t0 or last  # first batch applied: close enough to the first message
        time.sleep(0.01)
    elapsed = (last or 0) - (t0 or 0) if not n else time.perf_counter() - (t0 or 0)
    s = consumer.stats
    print(f"DONE {s.received} {elapsed:.3f} {s.values} {s.duplicates} {s.dead}", flush=True)
    consumer.stop()


def _run_child(args: list[str]) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.hub_ingest", *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("DONE")), None)
    if line is None:
        raise RuntimeError(f"child failed: {out.stderr[-2000:]}")
    return line.split()[1:]


def _pg_database() -> tuple[str, Any]:
    name = f"wuye_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(PG, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    return PG.rsplit("/", 1)[0] + f"/{name}", lambda: admin.execute(
        f'DROP DATABASE "{name}" WITH (FORCE)'
    )


def twice(n: int, workdir: Path) -> dict[str, float]:
    """Two ingest processes on one shared subscription, into one PostgreSQL database."""
    broker = Mosquitto(workdir).start()
    db, drop = _pg_database()
    try:
        for i in (1, 2):
            _session(
                broker.port,
                f"hub-ingest-bench{i}",
                [("$share/wuye-ingest/wuye/#", 1), ("wuye/v1/+/+/birth", 1)],
            )
        publish(broker.port, births())
        publish(broker.port, data(n))
        from hub.db import upgrade

        upgrade(db)  # once, before two processes race to do it
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.hub_ingest",
                    "ingest",
                    str(broker.port),
                    "0",
                    db,
                    "",
                    f"bench{i}",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in (1, 2)
        ]
        outs = [c.communicate(timeout=900)[0] for c in children]
        parts = [next(x for x in o.splitlines() if x.startswith("DONE")).split()[1:] for o in outs]
        values = sum(int(p[2]) for p in parts)
        secs = max(float(p[1]) for p in parts)
        return {
            "msgs_per_s": n / secs,
            "values_per_s": values / secs,
            "split": [int(p[0]) for p in parts],
        }
    finally:
        broker.stop()
        drop()


def once(n: int, store: str, workdir: Path) -> dict[str, float]:
    broker = Mosquitto(workdir).start()
    vm = None
    drop = None
    try:
        if store == "ceiling":
            _session(broker.port, "bench-count", [("wuye/#", 1)])
        else:
            group = "wuye-ingest"
            _session(
                broker.port,
                "hub-ingest-bench",
                [(f"$share/{group}/wuye/#", 1), ("wuye/v1/+/+/birth", 1)],
            )
        publish(broker.port, births())
        publish(broker.port, data(n))
        total = n + GATEWAYS + (GATEWAYS if store != "ceiling" else 0)  # births twice
        if store == "ceiling":
            got, secs = _run_child(["count", str(broker.port), str(n + GATEWAYS)])
            return {
                "msgs_per_s": int(got) / float(secs),
                "values_per_s": int(got) / float(secs) * VALUES,
            }
        if store == "sqlite":
            db = f"sqlite:///{workdir / f'hub-{uuid.uuid4().hex[:6]}.db'}"
            influx = None
        else:
            db, drop = _pg_database()
            influx = None
            if store == "victoria":
                vm = Victoria(workdir / f"vm-{uuid.uuid4().hex[:6]}").start()
                influx = vm.url
        got, secs, values, dups, dead = _run_child(
            ["ingest", str(broker.port), str(total), db, influx or "", "bench"]
        )
        assert int(dead) == 0, f"{dead} dead letters"
        return {
            "msgs_per_s": int(got) / float(secs),
            "values_per_s": int(values) / float(secs),
            "duplicates": int(dups),
        }
    finally:
        broker.stop()
        if vm is not None:
            vm.stop()
        if drop is not None:
            drop()


def main() -> None:
    if sys.argv[1:2] == ["count"]:
        count_child(int(sys.argv[2]), int(sys.argv[3]))
        return
    if sys.argv[1:2] == ["ingest"]:
        ingest_child(
            int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5] or None, sys.argv[6]
        )
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=40_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--stores", default="ceiling,sqlite,postgresql,victoria,postgresql-2proc")
    args = ap.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        for store in args.stores.split(","):
            runs = [
                twice(args.messages, Path(d))
                if store == "postgresql-2proc"
                else once(args.messages, store, Path(d))
                for _ in range(args.runs)
            ]
            results[store] = {
                "runs": runs,
                "median_msgs_per_s": round(median([r["msgs_per_s"] for r in runs])),
                "median_values_per_s": round(median([r["values_per_s"] for r in runs])),
            }
            print(store, results[store], flush=True)
    ceiling = results.get("ceiling", {}).get("median_msgs_per_s")
    if ceiling:
        for r in results.values():
            r["of_ceiling"] = round(r["median_msgs_per_s"] / ceiling, 3)
    record(
        "hub_ingest",
        "bench.hub_ingest",
        {
            "messages": args.messages,
            "values_per_message": VALUES,
            "results": results,
            "target": ">= half the counting ceiling, >= 100,000 values/s into PostgreSQL",
        },
    )


if __name__ == "__main__":
    main()
