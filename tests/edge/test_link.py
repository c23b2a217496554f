"""The MQTT link against a real Mosquitto: order, acks, outages, birth and death."""

import asyncio

import orjson

from deploy.mosquitto import Mosquitto
from edge.config import BrokerConfig
from edge.link import LinkState, MqttLink
from edge.outbox import Outbox
from protocols.mqtt import Birth, Kind, Topic, parse
from tests.support.committer import Committer
from tests.support.subscriber import Subscriber

SITE, GW = "test-site", "gw-1"


def birth(bdseq: int, stream: str) -> Birth:
    return Birth(gw=GW, site=SITE, bdseq=bdseq, stream=stream, ts=1, agent="t", devices=())


async def no_commands(payload: bytes) -> None:
    raise AssertionError("no command expected")


def put(ob: Outbox, n: int, created: int) -> None:
    topic = str(Topic(SITE, GW, Kind.DATA, "dev-1"))
    for i in range(n):
        body = orjson.dumps({"ts": created, "dev": "dev-1", "values": {"n": i}})
        ob.put_nowait(topic, body, created=created, critical=False)


async def wait_on(cond: asyncio.Condition, predicate, timeout=20.0):
    async with asyncio.timeout(timeout), cond:
        await cond.wait_for(predicate)


async def test_messages_arrive_in_order_and_leave_the_outbox(broker, tmp_path):
    sub = Subscriber(broker.port)
    hub = Committer(broker.port)  # only the hub's watermark frees the outbox
    async with Outbox(tmp_path / "ob.db", commit_interval=0.05) as ob:
        link = MqttLink(SITE, GW, BrokerConfig(url=broker.url), ob, birth, no_commands, window=8)
        task = asyncio.create_task(link.run())
        await asyncio.wait_for(link.online.wait(), 10)
        put(ob, 500, created=2**41)  # made after the connection: live, not historical
        await asyncio.to_thread(
            sub.wait_for, lambda m: len([x for x in m if "/data/" in x.topic]) >= 500
        )
        await wait_on(ob.committed, lambda: ob.depth == 0)
        await link.close()
        await task
    data = [m.json for m in sub.of_kind("data")]
    assert [d["seq"] for d in data] == list(range(1, 501))
    assert [d["values"]["n"] for d in data] == list(range(500))
    assert not any(d["hist"] for d in data)
    for m in sub.of_kind("data"):
        parse(m.topic, m.payload)  # every message follows the contract
    births = [m.json for m in sub.of_kind("birth")]
    deaths = [m.json for m in sub.of_kind("death")]
    assert births[0]["bdseq"] == deaths[-1]["bdseq"] == 0  # clean shutdown sends the death
    sub.close()
    hub.close()


async def test_outage_backlog_arrives_historical_without_gaps(tmp_path):
    # the broker keeps the subscriber's session over its restart (saved on a graceful stop),
    # so what the edge sends before the subscriber reconnects is queued, not lost to the test
    b = Mosquitto(tmp_path, persistent=True).start()
    sub = Subscriber(b.port)
    async with Outbox(tmp_path / "ob.db", commit_interval=0.05) as ob:
        link = MqttLink(
            SITE,
            GW,
            BrokerConfig(url=b.url, keepalive=2),
            ob,
            birth,
            no_commands,
            window=16,
            replay_rate=5000,
        )
        task = asyncio.create_task(link.run())
        await asyncio.wait_for(link.online.wait(), 10)
        put(ob, 100, created=2**41)
        await asyncio.to_thread(sub.wait_for, lambda m: len(m) >= 101)
        b.stop(graceful=True)
        await wait_on(link.changed, lambda: link.state is not LinkState.ONLINE)
        put(ob, 300, created=1)  # made during the outage
        await ob.flush()
        assert ob.depth >= 300
        b.start()  # same port: what was sent during the outage exists only in the outbox
        await asyncio.wait_for(link.online.wait(), 30)
        # distinct seqs: under load a message may arrive twice (sent, then sent again) before
        # the last ones, and a count of messages stopped waiting too soon
        await asyncio.to_thread(
            sub.wait_for,
            lambda m: len({x.json["seq"] for x in m if "/data/" in x.topic}) >= 400,
        )
        await link.close()
        await task
    b.stop()
    data = [m.json for m in sub.of_kind("data")]
    assert sorted({d["seq"] for d in data}) == list(range(1, 401))
    assert all(d["hist"] for d in data if d["seq"] > 100)
    births = [m.json["bdseq"] for m in sub.of_kind("birth")]
    assert births[-1] >= 1  # a new birth, with a new bdseq, on the reconnect
    sub.close()


async def test_a_gap_shrinking_as_its_resends_arrive_is_not_asked_for_again(tmp_path):
    """The hub lists (3, 99), then (4, 99) once 3 arrived, then (5, 99)...: each is the same
    gap. Queued again each time, a 2,000-message gap became ~N²/2 sends."""
    from protocols.mqtt import Committed

    async with Outbox(tmp_path / "ob.db") as ob:
        link = MqttLink(SITE, GW, BrokerConfig(url="mqtt://127.0.0.1:1"), ob, birth, no_commands)
        for first in (3, 4, 5):
            c = Committed(stream=ob.stream, seq=2, max=100, gaps=((first, 99),), ts=1)
            await link._on_committed(c.dumps())
        assert link._resend == [(3, 99)]
        split = Committed(stream=ob.stream, seq=2, max=100, gaps=((5, 9), (11, 99)), ts=1)
        await link._on_committed(split.dumps())
        assert link._resend == [(3, 99), (5, 9)]  # only the new piece a late 10 cut off
