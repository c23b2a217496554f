"""Fuzz of Modbus replies as the edge meets them: the bus owner (edge/bus.py, pymodbus
underneath) and the poller (edge/poller.py) against a Modbus TCP peer that answers
requests with replies hypothesis makes.

The peer is a small server in this file. A reply is built for the request it answers
(its transaction id, unit, function and count), then broken: another function, unit or
transaction id, a byte count or MBAP length that lies, an exception code, bytes mutated,
silence, a closed connection, noise. What must hold:

- the bus returns values only if the peer sent a reply to that very request (right
  transaction id, unit, function and byte count) carrying exactly those values, and an
  exception reply only if it sent one to that request; otherwise NoReply or
  TransportError, never another exception; a well-formed reply is always taken;
- the poller, one device of whose answers garbage, records errors for it and keeps
  polling: the other device on the bus keeps delivering its right values, and the bad one
  comes back once it answers properly again.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from edge.bus import ExceptionReply, ModbusBus
from edge.config import DeviceConfig, TcpBus
from edge.poller import BusPoller, Device, DeviceState, Sample
from protocols.codec import decode_point
from protocols.errors import DecodeError, DeviceError, TransportError
from protocols.mqtt import EventKind
from protocols.profile import Profile, load_profiles
from protocols.registers import Read, Table, plan_reads
from tests.support.fuzz import TALLY, Edit, apply_edits, edits, fuzz

FUNCTION = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}
SLOW = 5.0  # a reply that must be taken: a bound no loaded machine reaches
FAST = 0.02  # a reply that may be refused: waiting it out is the price of each


@dataclass(frozen=True, slots=True)
class Request:
    tid: int
    unit: int
    function: int
    address: int
    count: int

    @property
    def is_bits(self) -> bool:
        return self.function in (1, 2)

    @property
    def byte_count(self) -> int:
        return (self.count + 7) // 8 if self.is_bits else 2 * self.count


def memory(function: int, address: int) -> int:
    """What the good device holds: a register word, or a bit (0 or 1)."""
    word = (address * 7919 + function * 104729) & 0xFFFF
    return word & 1 if function in (1, 2) else word


def _mbap(tid: int, unit: int, pdu: bytes, length: int | None = None) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1 if length is None else length, unit) + pdu


def _data(req: Request, values: list[int]) -> bytes:
    if req.is_bits:
        packed = bytearray(req.byte_count)
        for i, bit in enumerate(values):
            packed[i // 8] |= (bit & 1) << (i % 8)
        return bytes(packed)
    return b"".join(struct.pack(">H", v & 0xFFFF) for v in values)


def reply_to(req: Request, values: list[int], function: int | None = None) -> bytes:
    """A well-formed reply to ``req`` carrying ``values`` (optionally as another function)."""
    data = _data(req, values)
    # a byte count past 255 (a lying reply) wraps, as a byte does
    return _mbap(req.tid, req.unit, bytes((function or req.function, len(data) & 0xFF)) + data)


def taken(req: Request, sent: bytes) -> list[Any]:
    """What ``sent`` holds that answers ``req`` by the Modbus TCP spec: a frame with its
    transaction id, unit and function, and exactly the byte count the request implies:
    its values, keyed by address; or an exception reply to its function, ("exception",
    code), where a stray byte after the code is let pass (harmless: no values)."""
    out: list[Any] = []
    for i in range(len(sent) - 8):
        tid, pid, length, unit = struct.unpack(">HHHB", sent[i : i + 7])
        pdu = sent[i + 7 : i + 6 + length]
        if (tid, pid, unit) != (req.tid, 0, req.unit) or len(pdu) != length - 1 or not pdu:
            continue
        if pdu[0] == req.function | 0x80 and len(pdu) >= 2:  # pymodbus ignores bytes after
            out.append(("exception", pdu[1]))
        elif pdu[0] == req.function and len(pdu) == 2 + req.byte_count == 2 + pdu[1]:
            data = pdu[2:]
            if req.is_bits:
                values = [bool(data[k // 8] >> (k % 8) & 1) for k in range(req.count)]
            else:
                values = [int.from_bytes(data[2 * k : 2 * k + 2], "big") for k in range(req.count)]
            out.append({req.address + k: v for k, v in enumerate(values)})
    return out


@dataclass(frozen=True)
class Reply:
    """How the bad device answers one request."""

    kind: str
    values: tuple[int, ...] = ()
    code: int = 0
    other: int = 1  # another function, unit or transaction id: an offset from the right one
    noise: bytes = b""
    edits: tuple[Edit, ...] = ()

    # kinds whose reply is well-formed: the bus must take it
    WELL_FORMED = frozenset(("answer", "exception", "stale then answer"))

    def render(self, req: Request) -> bytes | None:
        """The bytes sent back; None: the connection is closed instead."""
        values = [self.values[i % len(self.values)] for i in range(req.count)]
        good = reply_to(req, values)
        match self.kind:
            case "answer":
                return good
            case "exception":
                return _mbap(req.tid, req.unit, bytes((req.function | 0x80, self.code)))
            case "stale then answer":  # a late reply to an earlier request, then this one
                earlier = req.tid - 1 if req.tid > 1 else 65000  # pymodbus wraps to 1
                stale = Request(earlier, req.unit, req.function, 0, req.count)
                return reply_to(stale, [v ^ 1 for v in values]) + good
            case "other function":
                wrong = [f for f in (1, 2, 3, 4) if f != req.function][self.other % 3]
                return reply_to(req, values, wrong)
            case "exception to another function":
                wrong = [f for f in (1, 2, 3, 4) if f != req.function][self.other % 3]
                return _mbap(req.tid, req.unit, bytes((wrong | 0x80, self.code)))
            case "other unit":
                return reply_to(
                    Request(req.tid, (req.unit + self.other) & 0xFF, *_rest(req)), values
                )
            case "other transaction":
                tid = (req.tid + self.other) & 0xFFFF
                return reply_to(Request(tid, req.unit, *_rest(req)), values)
            case "transaction 0":  # pymodbus never sends it, and took it for any request
                return reply_to(Request(0, req.unit, *_rest(req)), values)
            case "byte count":  # more or fewer values than asked for
                n = max(0, req.count + self.other - 128)
                more = Request(req.tid, req.unit, req.function, req.address, n)
                return reply_to(more, [self.values[i % len(self.values)] for i in range(n)])
            case "length":  # the MBAP length field lies
                pdu = good[7:]
                return _mbap(req.tid, req.unit, pdu, (len(pdu) + 1 + self.other - 128) & 0xFFFF)
            case "mutated":
                return apply_edits(good, list(self.edits))
            case "noise":
                return self.noise
            case "silence":
                return b""
            case "noise then answer":
                return self.noise + good
        return None  # "close"


def _rest(req: Request) -> tuple[int, int, int]:
    return req.function, req.address, req.count


KINDS = (*sorted(Reply.WELL_FORMED), "other function", "exception to another function")
KINDS += ("other unit", "other transaction", "transaction 0", "byte count", "length")
KINDS += ("mutated", "mutated", "mutated", "noise", "silence", "close", "noise then answer")
replies = st.builds(
    Reply,
    kind=st.sampled_from(KINDS),
    values=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=8).map(tuple),
    code=st.integers(0, 255),
    other=st.integers(1, 255),
    noise=st.binary(max_size=40),
    edits=edits(b"\x00\x01\x02\x03\x04\x80\x83\xff").map(tuple),
)


@dataclass
class Peer:
    """A Modbus TCP server: ``good`` units answer from :func:`memory`; a request to another
    unit is answered with the next of ``script`` (properly once it has run out)."""

    good: set[int]
    script: deque[Reply] = field(default_factory=deque)
    log: list[tuple[Request, Reply | None, bytes | None]] = field(default_factory=list)
    port: int = 0
    _connections: dict[asyncio.Task[None], asyncio.StreamWriter] = field(default_factory=dict)

    def answer(self, req: Request) -> bytes | None:
        if req.unit in self.good or not self.script:
            values = [memory(req.function, req.address + i) for i in range(req.count)]
            self.log.append((req, None, reply_to(req, values)))
            return self.log[-1][2]
        reply = self.script.popleft()
        self.log.append((req, reply, reply.render(req)))
        return self.log[-1][2]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            while True:
                head = await reader.readexactly(7)
                tid, _, length, unit = struct.unpack(">HHHB", head)
                pdu = await reader.readexactly(length - 1)
                function, address, count = struct.unpack(">BHH", pdu[:5])
                sent = self.answer(Request(tid, unit, function, address, count))
                if sent is None:
                    break
                writer.write(sent)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._connections.pop(task, None)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Peer]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            try:
                yield self
            finally:
                handlers = list(self._connections)
                for writer in self._connections.values():
                    writer.close()  # the handler's read ends, and with it the handler
                await asyncio.gather(*handlers)


def _bus(peer: Peer) -> ModbusBus:
    return ModbusBus(TcpBus(type="tcp", name="fuzz", host="127.0.0.1", port=peer.port), SLOW)


reads = st.builds(
    Read,
    st.sampled_from(Table),
    st.integers(0, 1000),
    st.integers(1, 20),
)


async def _one_bus(script: list[tuple[Read, Reply]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    async with Peer(good=set()).running() as peer:
        bus = _bus(peer)
        try:
            for read, reply in script:
                peer.script.append(reply)
                timeout = SLOW if reply.kind in Reply.WELL_FORMED else FAST
                try:
                    got: Any = await bus.read(7, read, timeout)
                except ExceptionReply as exc:
                    got = ("exception", exc.code)
                except (DeviceError, TransportError) as exc:
                    got = type(exc).__name__
                req, _, sent = peer.log[-1]
                assert req.function == FUNCTION[read.table] and req.count == read.count
                possible = taken(req, sent or b"")
                if isinstance(got, str):  # refused: fine, unless it was well-formed
                    assert reply.kind not in Reply.WELL_FORMED, (reply, sent, got)
                else:
                    assert got in possible, (reply, sent, got)
                outcome = "taken" if not isinstance(got, str) else "refused"
                counts[outcome] = counts.get(outcome, 0) + 1
        finally:
            await bus.close()
    return counts


@fuzz(150)
@given(st.lists(st.tuples(reads, replies), min_size=1, max_size=4))
def test_the_bus_takes_a_reply_only_if_it_answers_the_request(
    script: list[tuple[Read, Reply]],
) -> None:
    counts = asyncio.run(_one_bus(script))
    TALLY.add("modbus bus.read", examples=1, replies=len(script), **counts)


PROFILES = load_profiles()


def _device(id: str, unit: int, profile: Profile, timeout: float, retries: int) -> Device:
    cfg = DeviceConfig(
        id=id,
        bus="fuzz",
        unit=unit,
        profile=profile.name,
        interval=0.001,  # as fast as the bus goes: the test waits on samples, not time
        timeout=timeout,
        retries=retries,
        backoff_max=0.001,  # and a device gone offline is probed again at once
    )
    return Device(cfg, profile, plan_reads([p.span for p in profile.points], 8))


def expected(profile: Profile) -> tuple[dict[str, Any], set[str]]:
    """The values the good device's points decode to, and those that decode to nothing."""
    values, errors = {}, set()
    for p in profile.points:
        table = {a: memory(FUNCTION[p.table], a) for a in range(p.address, p.address + 4)}
        try:
            values[p.name] = decode_point(p, table)
        except DecodeError:
            errors.add(p.name)
    return values, errors


async def _one_poller(script: list[Reply], retries: int) -> dict[str, int]:
    good = _device("em-1", 1, PROFILES["em-1p"], SLOW, 0)
    bad = _device("ps-2", 2, PROFILES["pump-station"], FAST, retries)
    samples: list[Sample] = []
    events: list[tuple[str, EventKind]] = []
    done = asyncio.Event()
    since: int | None = None  # samples taken before the script had run out

    def on_sample(sample: Sample) -> None:
        nonlocal since
        samples.append(sample)
        if peer.script:
            return
        if since is None:
            since = len(samples)
        elif {s.device for s in samples[since:]} == {"em-1", "ps-2"}:
            done.set()  # both delivered a poll begun after the last bad reply

    async with Peer(good={1}, script=deque(script)).running() as peer:
        bus = _bus(peer)
        poller = BusPoller(bus, [good, bad], on_sample, lambda d, k, _: events.append((d, k)))
        run = asyncio.create_task(poller.run(), name="poller")
        finished = asyncio.create_task(done.wait(), name="both-delivered")
        try:
            # 30 s: a bound on a wedged poller, not a wait
            await asyncio.wait([run, finished], timeout=30, return_when=asyncio.FIRST_COMPLETED)
            assert not run.done(), f"the poller stopped: {run.exception()!r}"
            assert finished.done(), (
                f"not both delivered after the script: {len(peer.script)} replies left, "
                f"{len(samples)} samples, {bad.state} {bad.failures} {bad.last_error!r}, "
                f"{good.state} {good.failures} {good.last_error!r}"
            )
        finally:
            for task in (run, finished):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await bus.close()

    values, errors = expected(PROFILES["em-1p"])
    mine = [s for s in samples if s.device == "em-1"]
    assert mine and all(s.values == values and set(s.errors) == errors for s in mine)
    unanswered = sum(
        1 for req, reply, sent in peer.log if reply is not None and not taken(req, sent or b"")
    )
    # each reply that answers nothing is a failed transaction, and without retries a
    # failed poll of that device
    assert bus.failures >= unanswered, (bus.failures, unanswered, peer.log)
    if not retries:
        assert bad.failures >= unanswered, (bad.failures, unanswered, peer.log)
    if bad.failures:
        offline, online = ("ps-2", EventKind.DEVICE_OFFLINE), ("ps-2", EventKind.DEVICE_ONLINE)
        assert offline in events and [e for e in events if e[0] == "ps-2"][-1] == online
    assert bad.state is DeviceState.ONLINE
    return {
        "replies": len(script),
        "replies answering nothing": unanswered,
        "good samples": len(mine),
        "bad polls failed": bad.failures,
        "bus transactions": bus.transactions,
    }


@fuzz(40)
@given(st.lists(replies, min_size=1, max_size=6), st.integers(0, 1))
def test_garbage_from_one_device_leaves_the_poller_and_the_other_device_alone(
    script: list[Reply], retries: int
) -> None:
    counts = asyncio.run(_one_poller(script, retries))
    TALLY.add("modbus poller", examples=1, **counts)
