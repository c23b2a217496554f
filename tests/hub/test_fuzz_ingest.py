"""Fuzz of ingest: payloads made from the message schemas and mutated, through a real
Mosquitto into a real hub (SQLite and PostgreSQL).

Each example publishes a batch of data messages of one gateway, some as the contract says
and some mutated: fields of the wrong type or out of range, fields missing or extra,
unicode and NUL in names, values that do not fit their point's declared type, bytes cut,
flipped or appended, payloads over the limit, a topic that names another gateway, device
or kind. Then a valid sentinel; once it is stored, everything before it has been handled.
The hub must stay alive, and every message must have exactly one fate: applied (its seq
held and its values stored, once) or a dead letter holding its exact payload. Every
message made as the contract says is applied.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import orjson
import paho.mqtt.client as paho
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from sqlmodel import Session, select

from hub.db import make_engine
from hub.ingest import Consumer
from hub.models import DeadLetter, Seen, Telemetry
from hub.runtime import make_consumer
from hub.settings import load_settings
from tests.support.fuzz import TALLY, fuzz

SITE, GW = "fz", "gw-f"
T0 = 1_795_334_400_000
DEVICES = ("em-1", "em-2")
POINTS = {  # name -> (profile type, kind)
    "voltage": ("float32", "measurement"),
    "kwh": ("uint32", "counter"),
    "door": ("bit", "status"),
}
MAX_PAYLOAD = 4096


def birth() -> bytes:
    points = [
        {"name": n, "unit": "", "kind": k, "type": t, "writable": False}
        for n, (t, k) in POINTS.items()
    ]
    devices = [
        {"id": d, "profile": "em-1p", "bus": "b", "unit": 1, "interval_s": 1.0, "points": points}
        for d in DEVICES
    ]
    body = {
        "v": 1,
        "gw": GW,
        "site": SITE,
        "bdseq": 0,
        "stream": "f" * 32,
        "ts": T0,
        "agent": "fuzz",
        "devices": devices,
    }
    return orjson.dumps(body)


def value_of(point: str) -> st.SearchStrategy[Any]:
    t, _ = POINTS[point]
    if t == "bit":
        return st.booleans()
    if t == "uint32":
        return st.integers(0, 2**32 - 1)
    return st.floats(-1e6, 1e6, allow_nan=False)


@st.composite
def valid(draw: st.DrawFn) -> dict[str, Any]:
    """A data message as the contract and the birth say (seq and ts filled in later)."""
    names = draw(st.lists(st.sampled_from(sorted(POINTS)), min_size=1, max_size=3, unique=True))
    return {
        "v": 1,
        "gw": GW,
        "hist": draw(st.booleans()),
        "dev": draw(st.sampled_from(DEVICES)),
        "values": {n: draw(value_of(n)) for n in names},
    }


WRONG = st.one_of(
    st.text(max_size=20),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=2**53, max_value=2**70),
    st.integers(max_value=0),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
FIELDS = ("v", "gw", "seq", "ts", "hist", "dev", "values")

# (what, how): each mutation returns (topic, payload) from a valid message's (topic, body)
Mutation = tuple[str, Any]


@st.composite
def mutation(draw: st.DrawFn) -> Mutation:
    kind = draw(
        st.sampled_from(
            ["type", "missing", "extra", "value", "name", "bytes", "oversize", "topic", "unicode"]
        )
    )
    if kind == "type":
        return kind, (draw(st.sampled_from(FIELDS)), draw(WRONG))
    if kind == "missing":
        return kind, draw(st.sampled_from([f for f in FIELDS if f != "v"] + ["v"]))
    if kind == "extra":
        return kind, (draw(st.text(min_size=1, max_size=10)), draw(WRONG))
    if kind == "value":  # a value that does not fit its point: a string, a bool for a number
        point = draw(st.sampled_from(sorted(POINTS)))
        bad = (
            draw(st.one_of(st.integers(), st.floats(allow_nan=False), st.text()))
            if POINTS[point][0] == "bit"
            else draw(st.one_of(st.booleans(), st.text(), st.none(), st.just(1e30)))
        )
        return kind, (point, bad)
    if kind == "name":
        return kind, draw(st.text(min_size=0, max_size=70))
    if kind == "bytes":
        return kind, (
            draw(st.sampled_from(["cut", "flip", "append", "latin1"])),
            draw(st.integers(0, 10_000)),
        )
    if kind == "oversize":
        return kind, None
    if kind == "topic":
        where = draw(st.sampled_from(["gateway", "device", "kind", "site"]))
        other = {"site": "fz-other", "gateway": "gw-z", "device": "em-9"}.get(where) or draw(
            st.sampled_from(["weather", "event", "ack", "park", "status", "birth", "ask"])
        )
        return kind, (where, other)
    return kind, draw(st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=8))


def mutate(topic: str, body: dict[str, Any], m: Mutation) -> tuple[str, bytes, bool]:
    """The mutated (topic, payload), and whether it can still be a valid message."""
    kind, how = m
    body = dict(body)
    if kind == "type":
        field, value = how
        body[field] = value
        # a wrong type for seq, v, gw or dev is never valid; for hist, ts or values (an empty
        # dict, a ts of 0) the drawn value may happen to be one the contract allows
        return topic, json.dumps(body).encode(), field in ("hist", "ts", "values")
    if kind == "missing":
        body.pop(how, None)
        return topic, json.dumps(body).encode(), how == "hist"  # hist defaults to false
    if kind == "extra":
        name, value = how
        body[name] = value
        return topic, json.dumps(body).encode(), name in FIELDS
    if kind == "value":
        point, bad = how
        body["values"] = {**body["values"], point: bad}
        number = type(bad) in (int, float)  # 1e30 fits a float point, not a counter
        return topic, json.dumps(body).encode(), number and POINTS[point][1] == "measurement"
    if kind == "name":
        body["values"] = {**body["values"], how: 1.0}
        return topic, json.dumps(body).encode(), True  # a well-formed new name is taken
    if kind == "bytes":
        raw = json.dumps(body).encode()
        op, at = how
        at %= raw.index(b'"seq"')  # seq and ts stay as drawn: the oracle finds the message
        if op == "cut":
            raw = raw[:at]
        elif op == "flip":
            raw = raw[:at] + bytes([raw[at] ^ 0x5A]) + raw[at + 1 :]
        elif op == "append":
            raw += b"}garbage"
        else:
            raw = raw.replace(b'"values"', b'"v\xe9lues"')  # not UTF-8
        return topic, raw, op == "flip"
    if kind == "oversize":
        body["errors"] = {"voltage": "x" * 400}
        body["values"] = {**body["values"], **{f"p{i}": i for i in range(600)}}
        return topic, json.dumps(body).encode(), False
    if kind == "topic":
        parts = topic.split("/")
        where, other = how  # another's site, gateway or device, or another kind's parser
        parts[{"site": 2, "gateway": 3, "kind": 4, "device": 5}[where]] = other
        return "/".join(parts), json.dumps(body).encode(), False
    body["dev"] = how  # unicode where an id goes
    return topic, json.dumps(body, ensure_ascii=False).encode(), False


class Hub:
    """A broker, a real ingest on it, a publisher; what the hub stored, read back."""

    def __init__(self, broker: Any, db_url: str) -> None:
        settings = load_settings(
            database_url=db_url, mqtt_url=broker.url, ingest_linger_ms=20, max_payload=MAX_PAYLOAD
        )
        self.engine = make_engine(db_url)
        self.consumer: Consumer = make_consumer(settings, self.engine)
        self.consumer.start()
        assert self.consumer.connected.wait(10)
        self.pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="fuzz-pub")
        self.pub.connect("127.0.0.1", broker.port)
        self.pub.loop_start()
        self.seqs = itertools.count(1)
        self.publish(f"wuye/v1/{SITE}/{GW}/birth", birth())

    def publish(self, topic: str, payload: bytes) -> None:
        self.pub.publish(topic, payload, qos=1).wait_for_publish(10)

    def held(self, seq: int) -> bool:
        with Session(self.engine) as s:
            return s.get(Seen, (GW, "f" * 32, seq)) is not None

    def until_held(self, seq: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.held(seq):
            assert self.consumer.alive, f"ingest died: {self.consumer.failed!r}"
            left = deadline - time.monotonic()
            assert left > 0, f"seq {seq} never stored"
            with self.consumer.applied:
                self.consumer.applied.wait(min(left, 0.5))

    def close(self) -> None:
        self.pub.loop_stop()
        self.pub.disconnect()
        self.consumer.stop()
        self.engine.dispose()


def test_fuzz_ingest_through_a_real_broker(broker, db_url):
    hub = Hub(broker, db_url)
    counts = {"examples": 0, "messages": 0, "mutated": 0, "applied": 0, "dead letters": 0}
    sent: list[
        tuple[str, bytes, int, bool, bool]
    ] = []  # topic, payload, seq, mutated, may be valid

    @fuzz(150)
    @given(st.lists(st.tuples(valid(), st.none() | mutation()), min_size=5, max_size=40))
    def batch(messages: list[tuple[dict[str, Any], Mutation | None]]) -> None:
        counts["examples"] += 1
        for body, m in messages:
            seq = next(hub.seqs)
            body = {**body, "seq": seq, "ts": T0 + seq}
            topic = f"wuye/v1/{SITE}/{GW}/data/{body['dev']}"
            if m is None:
                payload, maybe = json.dumps(body).encode(), True
            else:
                topic, payload, maybe = mutate(topic, body, m)
            hub.publish(topic, payload)
            sent.append((topic, payload, seq, m is not None, maybe))
        sentinel = next(hub.seqs)
        body = {
            "v": 1,
            "gw": GW,
            "seq": sentinel,
            "ts": T0 + sentinel,
            "dev": "em-1",
            "values": {"voltage": 1.0},
        }
        hub.publish(f"wuye/v1/{SITE}/{GW}/data/em-1", orjson.dumps(body))
        sent.append((f"wuye/v1/{SITE}/{GW}/data/em-1", orjson.dumps(body), sentinel, False, True))
        hub.until_held(sentinel)  # one consumer, in order: all before it has been handled

    try:
        batch()
        assert hub.consumer.alive
        with Session(hub.engine) as s:
            letters = [d.payload for d in s.exec(select(DeadLetter))]
            held = {q for q in s.exec(select(Seen.seq).where(Seen.gateway_id == GW))}
            rows = s.exec(select(Telemetry.device, Telemetry.ts)).all()
    finally:
        hub.close()
    dead = set(letters)
    stored_ts = {int(t.timestamp() * 1000) for _, t in rows}
    for topic, payload, seq, mutated, maybe in sent:
        is_dead = payload[:MAX_PAYLOAD] in dead  # one over the limit is kept cut to it
        applied = not is_dead and seq in held
        assert is_dead or applied, f"lost: {topic} {payload[:120]!r}"
        if not mutated:
            assert applied, f"a valid message was refused: {payload[:120]!r}"
        if applied and mutated:
            assert maybe, f"an invalid message was applied: {topic} {payload[:120]!r}"
        counts["applied" if applied else "dead letters"] += 1
        counts["messages"] += 1
        counts["mutated"] += mutated
    # each applied data message is one telemetry row: none applied twice, none lost
    assert len(rows) == counts["applied"], "applied messages and stored rows differ"
    assert {T0 + seq for _, p, seq, m, _ in sent if not m} <= stored_ts
    TALLY.add(f"hub ingest via broker ({hub.engine.dialect.name})", **counts)
