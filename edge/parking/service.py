"""The parking service at the edge: vehicles in, decisions out, every one durable first.

A plate (camera) or card (reader) at a gate is decided from the local :class:`LotState`
alone, the decision and the session change are committed together with a critical
``park`` record in the outbox (one SQLite transaction), and only then the gate moves.
The hub's ``sync`` messages replace or change the state; each applied version is made
durable, then confirmed with ``synced``. At an exit that would be held for an unpaid fee,
the hub is asked first when it is reachable (a visitor may have just paid online). The
lot is not held while the answer is awaited: other lanes keep deciding. An ask that goes
unanswered (the hub is down, the broker up) makes the edge treat the hub as unreachable
until it hears from it again or ``HUB_RETRY_S`` have passed, so that an outage costs one
wait of ``ASK_TIMEOUT``, not one per car.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import orjson

from edge.parking.lot import LotState, OpenSession, SyncGap, Verdict
from protocols.mqtt import Kind, Topic
from protocols.parking.messages import (
    Action,
    Answer,
    Ask,
    Direction,
    Lease,
    ListEntry,
    Paid,
    Pass,
    Policy,
    RecordKind,
    Sync,
    Synced,
)

log = logging.getLogger(__name__)

ASK_TIMEOUT = 1.5  # s: how long an exit waits for the hub before sending the car to the booth
HUB_RETRY_S = 30.0  # s: after an unanswered ask, exits do not ask again for this long

_SCHEMA = """
CREATE TABLE IF NOT EXISTS parking_state (
    lot     TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    body    BLOB NOT NULL            -- passes, lists, paid, policy as JSON
);
CREATE TABLE IF NOT EXISTS parking_session (
    session  TEXT PRIMARY KEY,       -- a car inside
    lot      TEXT NOT NULL,
    body     BLOB NOT NULL
);
"""


class Gate(Protocol):
    async def open(self) -> None: ...


class Outbox(Protocol):
    async def put_with(
        self, work: Callable[[sqlite3.Connection], Any], messages: list[tuple[str, bytes, int]]
    ) -> Any: ...

    async def read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any: ...


class HubLink(Protocol):
    handlers: dict[Kind, Callable[[bytes], Awaitable[None]]]

    def publish_now(self, kind: Kind, body: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class Lane:
    gate: str
    direction: Direction


def now_ms() -> int:
    return int(time.time() * 1000)


class ParkingService:
    def __init__(
        self,
        site: str,
        gateway: str,
        lot: str,
        lanes: Mapping[str, Lane],
        gates: Mapping[str, Gate],
        outbox: Outbox,
        link: HubLink,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.site, self.gateway = site, gateway
        self.lanes, self.gates = dict(lanes), dict(gates)
        self.outbox, self.link = outbox, link
        self.clock = clock
        self.state = LotState(lot)
        self._topic = str(Topic(site, gateway, Kind.PARK))
        self._lock = asyncio.Lock()
        self._asks: dict[str, asyncio.Future[Answer]] = {}
        self.decisions = 0
        self.bad_syncs = 0
        self.gate_failures = 0
        self.after_sync: list[Callable[[], None]] = []  # run after each sync applied
        self.asks = 0  # exits that asked the hub about a payment
        self.asks_paid = 0  # ... and were let out thanks to a payment learnt from the answer
        self.asks_unanswered = 0
        self._hub_silent_until = 0.0  # monotonic: no asks before (an ask went unanswered)
        self.latencies: list[float] = []  # s, event in to gate command out (bench reads it)
        link.handlers[Kind.SYNC] = self.on_sync
        link.handlers[Kind.ANSWER] = self.on_answer

    @property
    def lot(self) -> str:
        return self.state.lot

    async def start(self) -> None:
        """Load the state and the open sessions kept beside the outbox."""
        lot = self.lot

        def load(db: sqlite3.Connection) -> tuple[Any, list[Any]]:
            db.executescript(_SCHEMA)
            row = db.execute(
                "SELECT version, body FROM parking_state WHERE lot=?", (lot,)
            ).fetchone()
            sessions = db.execute("SELECT body FROM parking_session WHERE lot=?", (lot,)).fetchall()
            return row, sessions

        row, sessions = await self.outbox.read(load)
        if row is not None:
            self._restore(row[0], orjson.loads(row[1]))
        for (body,) in sessions:
            d = orjson.loads(body)
            d["lease"] = Lease(d["lease"])
            d["booth_paid"] = [tuple(x) for x in d["booth_paid"]]
            s = OpenSession(**d)
            self.state.sessions[s.session] = s
        self.confirm()
        log.info(
            "parking %s: state version %d, %d passes, %d cars inside",
            lot,
            self.state.version,
            len(self.state.passes),
            len(self.state.sessions),
        )

    def _restore(self, version: int, body: dict[str, Any]) -> None:
        st = self.state
        st.version = version
        st.passes = {k: Pass.model_validate(v) for k, v in body["passes"].items()}
        st.lists = {k: ListEntry.model_validate(v) for k, v in body["lists"].items()}
        st.paid = {k: Paid.model_validate(v) for k, v in body["paid"].items()}
        if body.get("policy") is not None:
            from protocols.parking import parse_rule

            st.policy = Policy.model_validate(body["policy"])
            st.rule = parse_rule(st.policy.rule, "stored lot policy")

    def _state_body(self, st: LotState) -> bytes:
        return orjson.dumps(
            {
                "passes": {k: v.model_dump(mode="json") for k, v in st.passes.items()},
                "lists": {k: v.model_dump(mode="json") for k, v in st.lists.items()},
                "paid": {k: v.model_dump(mode="json") for k, v in st.paid.items()},
                "policy": st.policy.model_dump(mode="json") if st.policy else None,
            }
        )

    # -- vehicles ------------------------------------------------------------------------------
    async def vehicle(
        self, gate: str, plate: str | None = None, card: str | None = None, at: int | None = None
    ) -> Verdict:
        """A plate or card at ``gate``: decide, record durably, then open if decided so."""
        t0 = time.perf_counter()
        lane = self.lanes[gate]
        at = self.clock() if at is None else at
        async with self._lock:
            if lane.direction is Direction.IN:
                verdict = self.state.decide_entry(plate, card, at)
            else:
                verdict = self.state.decide_exit(plate, card, at, hub_reachable=self._reachable())
            ask = (
                lane.direction is Direction.OUT
                and verdict.action is Action.BOOTH
                and verdict.due_fen > 0
                and self._reachable()
            )
            if not ask:
                await self._record(gate, lane.direction, verdict, plate, card, at)
        if ask:
            verdict = await self._ask_then_decide(gate, verdict, plate, card, at)
        self.decisions += 1
        if verdict.action is Action.OPEN:
            await self._open(gate)
        self.latencies.append(time.perf_counter() - t0)
        log.info(
            "%s %s %s: %s (%s)", gate, lane.direction, plate or card, verdict.action, verdict.reason
        )
        return verdict

    async def booth_payment(
        self, gate: str, plate: str | None, fen: int, operator: str, card: str | None = None
    ) -> Verdict:
        """The booth took ``fen`` for the car at exit ``gate``; record it, then let it out."""
        if fen < 0:
            raise ValueError("a booth payment is never negative")
        at = self.clock()
        async with self._lock:
            s = self.state.inside(plate, card)
            session = s.session if s is not None else uuid.uuid4().hex
            record = self._body(
                RecordKind.BOOTH_PAYMENT,
                session,
                at,
                gate=gate,
                plate=plate,
                card=card,
                paid_fen=fen,
                operator=operator,
            )
            row = None
            if s is not None:
                row = OpenSession(**{**asdict(s), "booth_paid": [*s.booth_paid, (at, fen)]})
            await self.outbox.put_with(self._session_work(put=row), [record])
            if row is not None:
                self.state.sessions[row.session] = row
            verdict = self.state.decide_exit(plate, card, at, hub_reachable=self._reachable())
            if verdict.action is not Action.OPEN:
                # the booth let the car out whatever the computed fee (it was there)
                verdict = Verdict(
                    Action.OPEN,
                    f"booth: {operator} took {fen} fen and let it out",
                    session,
                    verdict.lease,
                    verdict.entry_at,
                    verdict.fee_fen,
                    verdict.paid_fen + (fen if s is None else 0),
                )
            await self._record(gate, Direction.OUT, verdict, plate, card, at, operator=operator)
        await self._open(gate)
        return verdict

    async def correct_plate(self, session: str, plate: str, operator: str) -> None:
        """A misread plate corrected at the booth: the session carries the right plate."""
        at = self.clock()
        async with self._lock:
            s = self.state.sessions.get(session)
            if s is None:
                raise KeyError(f"no car inside with session {session}")
            row = OpenSession(**{**asdict(s), "plate": plate})
            record = self._body(
                RecordKind.CORRECTION,
                session,
                at,
                plate=plate,
                corrected_from=s.plate,
                operator=operator,
                entry_at=s.entry_at,
            )
            await self.outbox.put_with(self._session_work(put=row), [record])
            self.state.sessions[session] = row

    def _reachable(self) -> bool:
        if time.monotonic() < self._hub_silent_until:
            return False
        return bool(getattr(self.link, "online", None) and self.link.online.is_set())  # type: ignore[attr-defined]

    def _heard_from_hub(self) -> None:
        self._hub_silent_until = 0.0

    async def _open(self, gate: str) -> None:
        try:
            await self.gates[gate].open()
        except Exception:  # the record stands; the booth sees the fault on the gate
            self.gate_failures += 1
            log.exception("gate %s did not open", gate)

    async def _record(
        self,
        gate: str,
        direction: Direction,
        v: Verdict,
        plate: str | None,
        card: str | None,
        at: int,
        operator: str | None = None,
    ) -> None:
        kind = RecordKind.ENTRY if direction is Direction.IN else RecordKind.EXIT
        body = self._body(
            kind,
            v.session,
            at,
            gate=gate,
            plate=plate,
            card=card,
            action=v.action,
            reason=v.reason,
            lease=v.lease,
            entry_at=v.entry_at if kind is RecordKind.EXIT else None,
            fee_fen=v.fee_fen,
            paid_fen=v.paid_fen,
            unpaid_fen=v.unpaid_fen,
            operator=operator,
        )
        put = drop = None
        if v.action is Action.OPEN and kind is RecordKind.ENTRY:
            put = OpenSession(v.session, plate, card, at, v.lease)
            drop = v.closes
        elif v.action is Action.OPEN:
            drop = v.session
        await self.outbox.put_with(self._session_work(put=put, drop=drop), [body])
        if drop is not None:
            self.state.sessions.pop(drop, None)
        if put is not None:
            self.state.sessions[put.session] = put

    def _body(
        self, kind: RecordKind, session: str, at: int, **fields: Any
    ) -> tuple[str, bytes, int]:
        ts = self.clock()
        body = {"ts": ts, "lot": self.lot, "kind": kind, "session": session, "at": at}
        body.update({k: v for k, v in fields.items() if v not in (None, "", 0)})
        return self._topic, orjson.dumps(body), ts

    def _session_work(
        self, put: OpenSession | None = None, drop: str | None = None
    ) -> Callable[[sqlite3.Connection], None]:
        lot = self.lot

        def work(db: sqlite3.Connection) -> None:
            if drop is not None:
                db.execute("DELETE FROM parking_session WHERE session=?", (drop,))
            if put is not None:
                db.execute(
                    "INSERT OR REPLACE INTO parking_session VALUES (?,?,?)",
                    (put.session, lot, orjson.dumps(asdict(put))),
                )

        return work

    # -- the hub -------------------------------------------------------------------------------
    async def _ask_then_decide(
        self, gate: str, held: Verdict, plate: str | None, card: str | None, at: int
    ) -> Verdict:
        """Ask the hub whether ``held``'s session was paid, then decide again and record.

        The lot's lock is not held while waiting: the state may change meanwhile (a sync
        bringing the payment), so the decision is made again from the state as it is then.
        """
        self.asks += 1
        answer = await self._ask(held, plate, card, at)
        async with self._lock:
            fresh = [p for p in answer.paid if p.id not in self.state.paid] if answer else []
            if fresh:
                await self._keep_paid(fresh)
            verdict = self.state.decide_exit(plate, card, at, hub_reachable=self._reachable())
            if fresh and verdict.action is Action.OPEN:
                self.asks_paid += 1
            await self._record(gate, Direction.OUT, verdict, plate, card, at)
        return verdict

    async def _ask(
        self, held: Verdict, plate: str | None, card: str | None, at: int
    ) -> Answer | None:
        """The hub's answer about ``held``'s session; None if it could not be asked or
        did not answer in time (then the hub counts as unreachable for a while)."""
        ask_id = uuid.uuid4().hex
        ask = Ask(
            gw=self.gateway,
            id=ask_id,
            lot=self.lot,
            session=held.session,
            plate=plate or card or "?",
            ts=at,
        )
        fut: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._asks[ask_id] = fut
        try:
            if not self.link.publish_now(Kind.ASK, ask.model_dump_json().encode()):
                return None
            async with asyncio.timeout(ASK_TIMEOUT):
                return await fut
        except TimeoutError:
            self.asks_unanswered += 1
            self._hub_silent_until = time.monotonic() + HUB_RETRY_S
            log.warning(
                "the hub did not answer about session %s in time; not asking for %.0f s",
                held.session,
                HUB_RETRY_S,
            )
            return None
        finally:
            self._asks.pop(ask_id, None)

    async def _keep_paid(self, paid: list[Paid]) -> None:
        # payments learnt from an answer are kept at once; the sync that follows repeats them
        st = self.state
        before = dict(st.paid)
        st.paid.update((p.id, p) for p in paid)
        body, version = self._state_body(st), st.version
        try:
            await self.outbox.put_with(self._state_work(version, body), [])
        except BaseException:
            st.paid = before
            raise

    def _state_work(self, version: int, body: bytes) -> Callable[[sqlite3.Connection], None]:
        lot = self.lot

        def work(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO parking_state VALUES (?,?,?)", (lot, version, body))

        return work

    async def on_answer(self, payload: bytes) -> None:
        try:
            answer = Answer.model_validate_json(payload)
        except ValueError as exc:
            log.warning("malformed answer from the hub: %s", str(exc).splitlines()[0])
            return
        self._heard_from_hub()  # even a late answer says the hub is back
        fut = self._asks.get(answer.id)
        if fut is not None and not fut.done():
            fut.set_result(answer)

    async def on_sync(self, payload: bytes) -> None:
        try:
            sync = Sync.model_validate_json(payload)
        except ValueError as exc:
            self.bad_syncs += 1
            log.warning("malformed sync from the hub: %s", str(exc).splitlines()[0])
            return
        self._heard_from_hub()
        if sync.lot != self.lot:
            self.bad_syncs += 1
            log.warning("sync for lot %s ignored: this gateway runs %s", sync.lot, self.lot)
            return
        async with self._lock:
            trial = LotState(
                self.lot,
                self.state.version,
                dict(self.state.passes),
                dict(self.state.lists),
                dict(self.state.paid),
                self.state.policy,
                self.state.rule,
            )
            try:
                trial.apply(sync)
            except SyncGap as exc:
                log.info("%s: asking for a full snapshot", exc)
                self.confirm()  # says the version we hold; the hub sends a snapshot
                return
            except ValueError as exc:
                self.bad_syncs += 1
                log.error("sync version %d refused: %s", sync.version, exc)
                return
            if trial.version != self.state.version or sync.base is None:
                await self.outbox.put_with(
                    self._state_work(trial.version, self._state_body(trial)), []
                )
                st = self.state
                st.version, st.passes, st.lists, st.paid = (
                    trial.version,
                    trial.passes,
                    trial.lists,
                    trial.paid,
                )
                st.policy, st.rule = trial.policy, trial.rule
        self.confirm()
        for hook in self.after_sync:
            hook()

    def confirm(self) -> None:
        """Tell the hub which version is held (durably) here."""
        msg = Synced(gw=self.gateway, lot=self.lot, version=self.state.version, ts=self.clock())
        self.link.publish_now(Kind.SYNCED, msg.model_dump_json().encode())
