"""The edge's MQTT link: sends the outbox in order, QoS 1, with a bounded in-flight window.

Each connection is a fresh paho client whose will is the Death for a new birth/death
sequence (bdseq), so the hub can match a death to its birth. On connect the Birth goes
out (retained) first, then the outbox from its oldest unacknowledged message: messages
made before this connection was up are marked historical and paced by a token bucket,
so a reconnect after a long outage neither floods the broker nor reorders anything.
A PUBACK only says the broker has a message: it leaves the outbox when the hub's
``committed`` watermark covers it. The hub lists the gaps it misses and the highest seq it
has seen; the edge sends those gaps again, and the tail above the hub's highest seq when
that stands still for ``resend_after`` seconds while the broker has accepted more (a
broker that restarted or dropped a queue). Reconnects back off exponentially with jitter.

A broker that goes away is noticed at once when its socket closes, and within
1.5 x keepalive (default 5 s -> at most 7.5 s) when the link silently drops.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from edge.config import BrokerConfig
from edge.outbox import Message, Outbox
from protocols.mqtt import Birth, Committed, Death, Kind, Topic

log = logging.getLogger(__name__)
PAGE = 1000  # messages read from the outbox at a time


class LinkState(StrEnum):
    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"
    CLOSED = "closed"


class TokenBucket:
    """At most ``rate`` tokens a second, bursts up to one second's worth."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.tokens = rate
        self.stamp = clock()

    async def take(self) -> None:
        while True:
            now = self.clock()
            self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await asyncio.sleep((1 - self.tokens) / self.rate)


def envelope(gw: bytes, msg: Message, hist: bool) -> bytes:
    """The wire payload: the stored JSON body with version, gateway, seq and hist in front.

    The body is always a JSON object written by orjson, so splicing is exact and saves a
    parse and re-dump per message on the hot path.
    """
    head = b'{"v":1,"gw":"%s","seq":%d,"hist":%s,' % (gw, msg.seq, b"true" if hist else b"false")
    return head + msg.body[1:]


class MqttLink:
    """Owns the broker connection; use :meth:`run` as a task and :meth:`close` to stop."""

    def __init__(
        self,
        site: str,
        gateway: str,
        broker: BrokerConfig,
        outbox: Outbox,
        birth: Callable[[int, str], Birth],
        on_command: Callable[[bytes], Awaitable[None]],
        *,
        window: int = 100,
        replay_rate: float = 2000,
        resend_after: float = 30.0,
    ) -> None:
        self.site, self.gateway = site, gateway
        self.broker = broker
        self.outbox = outbox
        self.birth = birth
        self.on_command = on_command
        # what arrives from the hub, by topic kind (parking adds sync and answer)
        self.handlers: dict[Kind, Callable[[bytes], Awaitable[None]]] = {
            Kind.CMD: on_command,
            Kind.COMMITTED: self._on_committed,
        }
        self.resend_after = resend_after
        self.resent = 0  # messages sent again because the hub missed them
        self.bad_committed = 0
        self._acked_top = 0  # the highest seq the broker has acknowledged
        self._hub_max = 0  # the highest seq the hub has seen, as it last said
        self._progress_at = time.monotonic()  # when the hub's highest seq last went up
        self._tail_at = 0.0  # when the tail was last sent again
        self._asked: dict[int, float] = {}  # gaps sent again (by their last seq), and when
        self._resend: list[tuple[int, int]] = []  # runs to send again, oldest first
        self._hub_heard = False  # a committed for this stream came on this connection
        self._progress = asyncio.Event()  # a PUBACK or a committed came (drain waits on it)
        self.window = window
        self.replay = TokenBucket(replay_rate)
        self.state = LinkState.OFFLINE
        self.changed = asyncio.Condition()  # notified on every state change
        self.online = asyncio.Event()
        self.connected_since_ms = 0
        self.bdseq = -1
        self.sent = 0
        self.acked = 0
        self.replayed = 0
        self.connects = 0
        self._gw = gateway.encode()
        self._client: paho.Client | None = None
        self._inflight: dict[int, Message] = {}
        self._slot = asyncio.Event()
        self._lost = asyncio.Event()
        self._suback: asyncio.Future[Any] | None = None
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()

    def _set_state(self, state: LinkState) -> None:
        self.state = state
        self._progress.set()  # a drain waiting for acks stops waiting on a closed link
        if state is not LinkState.ONLINE:
            self.online.clear()

        async def notify() -> None:
            async with self.changed:
                self.changed.notify_all()

        self._spawn(notify())

    # -- connection lifecycle ----------------------------------------------------------------
    async def run(self) -> None:
        delay = 0.5
        try:
            while not self._closing:
                self._set_state(LinkState.CONNECTING)
                started = time.monotonic()
                try:
                    await self._connect()
                except (OSError, ConnectionError, TimeoutError) as exc:
                    log.warning("broker %s unreachable: %r", self.broker.url, exc)
                else:
                    await self._serve()
                    if time.monotonic() - started > 30:
                        delay = 0.5
                await self._teardown()
                if self._closing:
                    break
                self._set_state(LinkState.OFFLINE)
                wait = random.uniform(delay / 2, delay)
                log.info("reconnecting to %s in %.1fs", self.broker.url, wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, 30.0)
        finally:
            # also when cancelled: paho's thread must not outlive the event loop
            await asyncio.shield(self._teardown())
            self._set_state(LinkState.CLOSED)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        self.bdseq = await self.outbox.next_bdseq()
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.broker.client_id or self.gateway,
            clean_session=True,
            reconnect_on_failure=False,
        )
        death = Topic(self.site, self.gateway, Kind.DEATH)
        client.will_set(str(death), Death(gw=self.gateway, bdseq=self.bdseq).dumps(), 1, True)
        if self.broker.username:
            client.username_pw_set(self.broker.username, self.broker.password())
        client.max_inflight_messages_set(self.window)
        client.max_queued_messages_set(0)
        connack: asyncio.Future[Any] = loop.create_future()
        self._suback = suback = loop.create_future()
        self._lost = asyncio.Event()
        lost = self._lost

        def call(fn: Callable[..., Any], *args: Any) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(fn, *args)

        def on_connect(c: paho.Client, u: Any, flags: Any, rc: Any, props: Any) -> None:
            call(_settle, connack, rc)

        def on_disconnect(c: paho.Client, u: Any, flags: Any, rc: Any, props: Any) -> None:
            call(lost.set)
            call(_settle, connack, rc)

        acks: list[int] = []

        def on_subscribe(c: paho.Client, u: Any, mid: int, rcs: Any, props: Any) -> None:
            call(_settle, suback, rcs)

        def on_publish(c: paho.Client, u: Any, mid: int, rc: Any, props: Any) -> None:
            # hand acks over in batches: one loop wake-up per burst, not per message
            acks.append(mid)
            if len(acks) == 1:
                call(self._on_acks, acks)

        def on_message(c: paho.Client, u: Any, msg: paho.MQTTMessage) -> None:
            call(self._dispatch, msg.topic, bytes(msg.payload))

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        self._client = client
        await asyncio.to_thread(
            client.connect, self.broker.host, self.broker.port, self.broker.keepalive
        )
        client.loop_start()
        async with asyncio.timeout(10):
            rc = await connack
        if rc.is_failure:
            raise ConnectionError(f"broker refused the connection: {rc}")

    async def _teardown(self) -> None:
        self.online.clear()
        client, self._client = self._client, None
        self._inflight.clear()
        if client is not None:
            client.disconnect()
            # joining paho's thread can take its select timeout: not on the loop's thread
            await asyncio.to_thread(client.loop_stop)

    async def _serve(self) -> None:
        assert self._client is not None
        client = self._client
        self.connects += 1
        self.connected_since_ms = int(time.time() * 1000)
        client.subscribe([(str(Topic(self.site, self.gateway, k)), 1) for k in self.handlers])
        # online only once the broker has the subscription: no command can slip past
        assert self._suback is not None
        async with asyncio.timeout(10):
            granted = await self._suback
        if any(rc.is_failure for rc in granted):
            log.error("broker refused a subscription of %s: %s", sorted(self.handlers), granted)
        birth = self.birth(self.bdseq, self.outbox.stream)
        client.publish(str(Topic(self.site, self.gateway, Kind.BIRTH)), birth.dumps(), 1, True)
        self._set_state(LinkState.ONLINE)
        self.online.set()
        log.info("connected to %s (bdseq %d)", self.broker.url, self.bdseq)
        sender = asyncio.create_task(self._send_loop(client), name="mqtt-send")
        lost = asyncio.create_task(self._lost.wait(), name="mqtt-lost")
        try:
            await asyncio.wait({sender, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sender, lost):
                t.cancel()
            await asyncio.gather(sender, lost, return_exceptions=True)
        if sender.done() and not sender.cancelled() and sender.exception():
            log.error("sender failed", exc_info=sender.exception())
        if not self._closing:
            log.warning("lost the broker; %d messages wait in the outbox", self.outbox.depth)

    # -- sending -------------------------------------------------------------------------------
    async def _send_loop(self, client: paho.Client) -> None:
        cursor = 0
        since = self.connected_since_ms
        self._resend.clear()  # this connection sends everything not yet held anyway
        self._hub_heard = False
        self._progress_at = time.monotonic()
        while True:
            if self._resend:
                first, last = self._resend[0]
                page = await self.outbox.fetch(first - 1, PAGE)
                rows = [
                    m
                    for m in page
                    if m.seq <= last and m.seq <= cursor and not self.outbox.is_released(m.seq)
                ]
                if len(page) == PAGE and page[-1].seq < last:  # the run goes on past this page
                    self._resend[0] = (page[-1].seq + 1, last)
                else:
                    self._resend.pop(0)
                for m in rows:
                    if not await self._publish(client, m, hist=True):
                        return
                    self.resent += 1
                continue
            room = self.window - len(self._inflight)
            if room <= 0:
                self._slot.clear()
                await self._slot.wait()
                continue
            page = await self.outbox.fetch(cursor, PAGE)
            batch = [m for m in page if not self.outbox.is_released(m.seq)]
            if page and not batch:
                cursor = page[-1].seq  # all held by the hub, their delete not yet committed
                continue
            if not batch:
                async with self.outbox.committed:
                    if self.outbox.last_seq <= cursor and not self._resend:
                        await self.outbox.committed.wait()
                continue
            for m in batch:
                if not await self._publish(client, m, hist=m.created < since):
                    return  # the connection is gone; the outbox still has it
                cursor = m.seq

    async def _publish(self, client: paho.Client, m: Message, hist: bool) -> bool:
        """One QoS 1 publish within the window (historical ones paced); False when the
        connection is gone."""
        while len(self._inflight) >= self.window:
            self._slot.clear()
            await self._slot.wait()
        if hist:
            await self.replay.take()
            self.replayed += 1
        info = client.publish(m.topic, envelope(self._gw, m, hist), qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            return False
        self._inflight[info.mid] = m
        self.sent += 1
        return True

    def _on_acks(self, acks: list[int]) -> None:
        # list.pop/append are atomic under the GIL; the paho thread may keep appending
        while acks:
            m = self._inflight.pop(acks.pop(), None)
            if m is None:
                continue  # birth, status or death
            self.acked += 1
            self._acked_top = max(self._acked_top, m.seq)
        self._slot.set()
        self._progress.set()

    async def _on_committed(self, payload: bytes) -> None:
        """The hub's watermark: forget what it holds, send again what it misses."""
        try:
            c = Committed.model_validate_json(payload)
        except ValidationError as exc:
            self.bad_committed += 1
            log.warning("bad committed message from the hub: %s", exc.errors()[0]["msg"])
            return
        if c.stream != self.outbox.stream:
            return  # about a sequence this outbox no longer is (or not yet)
        self._hub_heard = True
        self.outbox.release(c.seq)
        self._progress.set()
        now = time.monotonic()
        if c.max > self._hub_max:
            self._hub_max, self._progress_at = c.max, now
        # a gap shrinks from its start as the resent messages arrive (its end stays), so an
        # ask is remembered by the run's end: the shrunk gap is not asked for again at once
        wanted = [(a, b) for a, b in c.gaps if now - self._asked.get(b, -1e9) >= self.resend_after]
        for _, b in wanted:
            self._asked[b] = now
        top = self._acked_top
        if (
            top > max(c.max, c.seq)
            and now - self._progress_at >= self.resend_after
            and now - self._tail_at >= self.resend_after
        ):
            # the broker took these and the hub never saw them, nor anything newer since
            log.warning(
                "the hub misses seqs %d..%d the broker took: sending them again",
                max(c.max, c.seq) + 1,
                top,
            )
            wanted.append((max(c.max, c.seq) + 1, top))
            self._tail_at = now
        # forget asks about what the hub now holds
        self._asked = {b: t for b, t in self._asked.items() if b > c.seq}
        if wanted:
            self._resend.extend(sorted(wanted))
            async with self.outbox.committed:
                self.outbox.committed.notify_all()  # wakes an idle send loop

    def _dispatch(self, topic: str, payload: bytes) -> None:
        try:
            handler = self.handlers.get(Kind(topic.rsplit("/", 1)[-1]))
        except ValueError:
            return
        if handler is not None:
            self._spawn(handler(payload))

    def publish_now(self, kind: Kind, body: bytes) -> bool:
        """Publish outside the outbox (QoS 1; requests and confirmations that are simply
        made again if lost); False while offline."""
        client = self._client
        if client is None or self.state is not LinkState.ONLINE:
            return False
        client.publish(str(Topic(self.site, self.gateway, kind)), body, qos=1)
        return True

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- extras ---------------------------------------------------------------------------------
    def publish_status(self, payload: bytes) -> None:
        """Retained QoS 0 health snapshot; dropped when offline (the next one replaces it)."""
        if self._client is not None and self.state is LinkState.ONLINE:
            self._client.publish(str(Topic(self.site, self.gateway, Kind.STATUS)), payload, 0, True)

    async def drain(self, timeout: float) -> bool:
        """Wait until everything committed is held by the hub (or, when no hub has spoken on
        this connection, by the broker: nothing else would ever say so); False on timeout.
        What is not held yet stays in the outbox and is sent after the next start."""
        try:
            async with asyncio.timeout(timeout):
                while self.state is LinkState.ONLINE:
                    self._progress.clear()  # before the check: a PUBACK after it wakes us
                    await self.outbox.flush()  # deletes what the hub released, now
                    if not self._inflight and (
                        self.outbox.depth == 0
                        or (not self._hub_heard and self._acked_top >= self.outbox.last_seq)
                    ):
                        return True
                    await self._progress.wait()
        except TimeoutError:
            pass
        return False

    async def close(self) -> None:
        """Publish the death (a clean shutdown sends no will) and disconnect."""
        self._closing = True
        client = self._client
        if client is not None and self.state is LinkState.ONLINE:
            death = Death(gw=self.gateway, bdseq=self.bdseq).dumps()
            info = client.publish(str(Topic(self.site, self.gateway, Kind.DEATH)), death, 1, True)
            await asyncio.to_thread(info.wait_for_publish, 2.0)
        self._lost.set()


def _settle(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)
