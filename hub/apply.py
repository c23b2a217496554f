"""Apply a batch of MQTT messages to the database: one transaction, exactly once in effect.

The consumer acknowledges the batch to the broker only after :meth:`Applier.apply` has
committed, so a crash means redelivery; ``seen`` (gateway, stream, seq) makes a redelivered
message a no-op. Bad messages become dead letters in the same transaction, and never stop
the good ones around them.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import orjson
from sqlalchemy import Engine, bindparam, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlmodel import Session, col

from hub import delivery
from hub.alarms import service as alarms
from hub.db import session_scope
from hub.models import (
    Command,
    DeadLetter,
    Device,
    Gap,
    Gateway,
    Latest,
    Reading,
    Seen,
    Site,
    utcnow,
)
from hub.parking import service as parking
from protocols.errors import MessageError
from protocols.mqtt import (
    MAX_SEQ,
    Ack,
    Birth,
    Data,
    Death,
    Event,
    EventKind,
    Kind,
    Status,
    Topic,
    parse,
)
from protocols.parking.messages import Ask, ParkRecord, Synced

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Raw:
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Sample:
    """One poll of one device bound for the telemetry store: all its values at one time."""

    site: str
    gateway: str
    device: str
    device_pk: int
    ts_ms: int
    values: dict[str, float]


class TelemetrySink(Protocol):
    def write(self, session: Session, samples: Sequence[Sample]) -> None:
        """Store samples durably before the batch commits (or raise)."""


@dataclass
class Outcome:
    applied: int = 0
    duplicates: int = 0
    dead: int = 0
    values: int = 0
    reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    replies: list[tuple[str, bytes]] = field(default_factory=list)  # to publish after commit
    alarms: list[Any] = field(default_factory=list)  # alarms raised, changed or cleared

    def merge(self, other: Outcome) -> Outcome:
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.dead += other.dead
        self.values += other.values
        for k, n in other.reasons.items():
            self.reasons[k] += n
        self.replies += other.replies
        self.alarms += other.alarms
        return self


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _insert(session: Session, table: Any) -> Any:
    name = session.get_bind().dialect.name
    return (postgresql if name == "postgresql" else sqlite).insert(table)


class _Statements:
    """The hot statements, built once per dialect and run with parameter lists.

    Building a multi-row VALUES statement per batch costs SQLAlchemy a fresh compile of
    tens of thousands of bind parameters; a cached statement with executemany does not.
    """

    def __init__(self, dialect: str) -> None:
        ins = (postgresql if dialect == "postgresql" else sqlite).insert
        seen = Seen.__table__  # type: ignore[attr-defined]
        self.seen = (
            ins(seen)
            .on_conflict_do_nothing()
            .returning(seen.c.gateway_id, seen.c.stream, seen.c.seq)
        )
        latest = Latest.__table__  # type: ignore[attr-defined]
        self.latest_new = ins(latest).on_conflict_do_nothing()
        self.latest_lock = (
            select(latest.c.device, latest.c.points)
            .where(latest.c.device.in_(bindparam("devices", expanding=True)))
            .with_for_update()
        )
        self.latest_set = (
            update(latest)
            .where(latest.c.device == bindparam("pk"))
            .values(points=bindparam("pts", type_=latest.c.points.type))
        )
        self.reading = ins(Reading.__table__).on_conflict_do_nothing()  # type: ignore[attr-defined]


_MISSING = object()


class CacheJournal:
    """Undo for the applier's caches: nothing cached may outlive a rolled-back transaction.

    Every write to a cache during a transaction goes through :meth:`put` or :meth:`add`;
    :meth:`rollback` restores what was there before, :meth:`commit` forgets the undo list.
    (A cache holding a gateway whose insert was rolled back killed ingest on the next batch.)
    """

    def __init__(self) -> None:
        self._undo: list[tuple[Any, Any, Any]] = []

    def put(self, cache: dict[Any, Any], key: Any, value: Any) -> None:
        self._undo.append((cache, key, cache.get(key, _MISSING)))
        cache[key] = value

    def add(self, cache: set[Any], key: Any) -> None:
        if key not in cache:
            self._undo.append((cache, key, _MISSING))
            cache.add(key)

    def commit(self) -> None:
        self._undo.clear()

    def rollback(self) -> None:
        for cache, key, old in reversed(self._undo):
            if isinstance(cache, set):
                cache.discard(key)
            elif old is _MISSING:
                cache.pop(key, None)
            else:
                cache[key] = old
        self._undo.clear()


class DatabaseDown(Exception):
    """The database cannot be reached or is busy: the batch is kept and tried again."""


# errors of the database itself, not of what a message holds: retry, never dead-letter
_TRANSIENT = (OperationalError, InterfaceError, DisconnectionError, SATimeoutError)
# a batch that keeps failing with those while the database answers is split after this many
TRANSIENT_TRIES = 60  # a minute of retries: a lock held longer than that is no passing one


def clean_text(text: str, limit: int = 2000) -> str:
    """Text safe for any column: no NUL (PostgreSQL refuses it), bounded."""
    return text.replace("\x00", "\\0")[:limit]


class BurstLog:
    """Log the first bad message of a burst at warning level, then a count per minute."""

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self.last = -1e9
        self.suppressed = 0

    def bad(self, topic: str, reason: str) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            extra = f" (+{self.suppressed} more since the last report)" if self.suppressed else ""
            log.warning("dead letter from %s: %s%s", topic, reason, extra)
            self.last, self.suppressed = now, 0
        else:
            self.suppressed += 1


class Applier:
    def __init__(
        self,
        engine: Engine,
        sink: TelemetrySink,
        max_payload: int,
        rulebook: alarms.RuleBook | None = None,
        gap_grace: timedelta = timedelta(seconds=2),
    ) -> None:
        self.engine = engine
        # a gap younger than this is not yet reported to the edge: with several ingest
        # processes sharing a stream, a message may just be in another process's batch
        self.gap_grace = gap_grace
        self.sink = sink
        self.rulebook = rulebook if rulebook is not None else alarms.RuleBook()
        self.max_payload = max_payload
        self.burst = BurstLog()
        self._devices: dict[tuple[str, str], int] = {}
        self._types: dict[int, PointTypes] = {}  # device -> its points' types, from its birth
        self._has_latest: set[int] = set()  # devices known to have a row in ``latest``
        self._gw_site: dict[str, str] = {}  # a gateway's site never changes once known
        self._journal = CacheJournal()  # the caches above follow the transaction
        self._transient = 0  # consecutive transient failures
        self._sql = _Statements(engine.dialect.name)

    def apply(self, batch: Sequence[Raw]) -> Outcome:
        """Apply ``batch``: every message is applied or dead-lettered with its reason.

        Never raises for what a message holds. A batch that fails as a whole is split in
        halves to find the message that fails it, and that one alone is dead-lettered (and
        logged with its topic). Raises :class:`DatabaseDown` when the database itself fails:
        the caller keeps the batch and tries again (what was committed of it is then a
        duplicate, a no-op).
        """
        try:
            out = self._apply_once(batch)
        except Exception as exc:
            self._journal.rollback()
            self._check_database(exc)
            if len(batch) == 1:
                return self._dead_alone(batch[0], exc)
            mid = len(batch) // 2
            return self.apply(batch[:mid]).merge(self.apply(batch[mid:]))
        self._journal.commit()
        self._transient = 0
        return out

    def _check_database(self, exc: Exception) -> None:
        """Raise DatabaseDown unless the failure can be blamed on the batch's content."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as probe:
            raise DatabaseDown(f"the database does not answer: {probe}") from exc
        if isinstance(exc, _TRANSIENT):
            # busy or a dropped connection: likely gone by the next try. Only a failure
            # that keeps coming back while the database answers is the batch's own.
            self._transient += 1
            if self._transient < TRANSIENT_TRIES:
                raise DatabaseDown(f"transient database error: {exc}") from exc
        log.warning("batch failed (%s: %s); splitting it", type(exc).__name__, exc)

    def _dead_alone(self, raw: Raw, exc: Exception) -> Outcome:
        """Dead-letter one message that cannot be applied, in a transaction of its own."""
        log.error("message on %s could not be applied; dead-lettered", raw.topic, exc_info=exc)
        reason = clean_text(f"internal error: {type(exc).__name__}: {exc}")
        gw = _gateway_of(raw.topic)
        for gateway in (gw, None) if gw is not None else (None,):
            try:
                with session_scope(self.engine) as s:
                    self._dead_letter(s, raw, reason, gateway)
                    if gateway is not None:
                        self._hold(s, raw)
                break
            except Exception as again:
                self._check_database(again)
        else:
            raise DatabaseDown("a dead letter could not be written")
        out = Outcome(dead=1)
        out.reasons["internal error"] += 1
        return out

    def _hold(self, s: Session, raw: Raw) -> None:
        """A sequenced message dead-lettered alone still holds its place in the sequence
        (as one refused whole does): else its gap, never filled, stops the watermark and
        the edge sends it again for ever."""
        unreadable = _unreadable(raw)
        if unreadable is None:
            return
        t, m, _ = unreadable
        gw = s.get(Gateway, t.gateway, with_for_update=True)
        if gw is None or gw.site_id != t.site:
            return
        seen = s.connection().execute(
            self._sql.seen,
            [{"gateway_id": gw.id, "stream": gw.stream, "seq": m.seq, "at": utcnow()}],
        )
        if seen.first() is not None:  # new: count it and close its place in the sequence
            gw.messages += 1
            self._gaps(s, gw, [m.seq])

    def _dead_letter(self, s: Session, raw: Raw, reason: str, gw_id: str | None) -> None:
        self.burst.bad(raw.topic, reason)
        s.add(
            DeadLetter(
                topic=clean_text(raw.topic, 512),
                gateway_id=gw_id,
                reason=clean_text(reason),
                payload=raw.payload[: self.max_payload],
            )
        )
        if gw_id is not None:
            s.execute(
                update(Gateway).where(col(Gateway.id) == gw_id).values(bad=col(Gateway.bad) + 1)
            )

    def _apply_once(self, batch: Sequence[Raw]) -> Outcome:
        out = Outcome()
        parsed: list[tuple[Topic, Any, Raw]] = []
        dead: list[tuple[Raw, str, str | None]] = []
        for raw in batch:
            if kind_of(raw.topic) in HUB_KINDS:
                continue  # the hub's own (to the edges), seen through the wildcard: not news
            if len(raw.payload) > self.max_payload:
                dead.append(
                    (
                        raw,
                        f"payload of {len(raw.payload)} bytes is over the limit",
                        _gateway_of(raw.topic),
                    )
                )
                continue
            try:
                topic, msg = parse(raw.topic, raw.payload)
            except MessageError as exc:
                dead.append((raw, str(exc), _gateway_of(raw.topic)))
                unreadable = _unreadable(raw)
                if unreadable is not None:  # its seq is held: no gap, the watermark passes
                    parsed.append(unreadable)
                continue
            except Exception as exc:  # a bug in parsing must cost this message only
                log.error("parsing a message on %s failed", raw.topic, exc_info=exc)
                dead.append((raw, f"internal error: {exc!r}", _gateway_of(raw.topic)))
                continue
            parsed.append((topic, msg, raw))
        born: set[str] = set()  # gateways whose birth this batch applied
        with session_scope(self.engine) as s:
            for topic, msg, raw in parsed:
                if isinstance(msg, Birth):
                    refused = self._birth(s, topic, msg)
                    if refused:
                        dead.append((raw, refused, topic.gateway))
                    else:
                        parking.on_birth(s, topic.gateway)
                        born.add(topic.gateway)
                elif isinstance(msg, Death | Status):
                    wrong_site = self._wrong_site(s, topic)
                    if wrong_site:
                        dead.append((raw, wrong_site, topic.gateway))
                    elif isinstance(msg, Death):
                        self._death(s, topic, msg)
                    else:
                        self._status(s, topic.gateway, msg)
                elif isinstance(msg, Synced):
                    parking.on_synced(s, topic, msg)
                elif isinstance(msg, Ask):
                    reply = parking.answer(s, topic, msg)
                    answer_to = Topic(topic.site, topic.gateway, Kind.ANSWER)
                    out.replies.append((str(answer_to), reply.model_dump_json().encode()))
            sequenced = []
            sequenced_kinds = Data | Event | Ack | ParkRecord | Unreadable
            mine = [(t, m, r) for t, m, r in parsed if isinstance(m, sequenced_kinds)]
            for t, _, _ in mine:
                if t.gateway not in self._gw_site:
                    site_id = self._gateway(s, t.site, t.gateway).site_id
                    self._journal.put(self._gw_site, t.gateway, site_id)
            # lock this batch's gateways once, in a stable order (no deadlock between two
            # ingest processes); later look-ups in the batch hit the session's identity map
            ids = sorted({t.gateway for t, _, _ in mine})
            # held for the whole batch: the session's identity map only keeps weak references
            locked = list(
                s.execute(
                    select(Gateway)
                    .where(col(Gateway.id).in_(ids))
                    .order_by(col(Gateway.id))
                    .with_for_update()
                ).scalars()
            )
            for t, m, r in mine:
                site = self._gw_site[t.gateway]
                if site != t.site:
                    dead.append((r, f"gateway {t.gateway!r} belongs to site {site!r}", t.gateway))
                else:
                    sequenced.append((t, m, r))
            fresh = self._dedupe(s, sequenced)
            out.duplicates = len(sequenced) - len(fresh)
            out.applied = sum(not isinstance(m, Unreadable) for _, m, _ in fresh)
            self.refused: list[tuple[Raw, str, str | None]] = []
            self._drops: list[tuple[str, list[tuple[int, int]]]] = []
            self.device_events: list[alarms.DeviceEvent] = []
            out.values, samples = self._apply_sequenced(s, fresh)
            out.alarms = alarms.on_samples(s, self.rulebook, samples, self.device_events)
            dead += self.refused  # seen (held, so no gap) but not applied
            out.applied -= len(self.refused)
            self._count(s, sequenced, fresh)
            for dropper, runs in self._drops:
                gw = s.get(Gateway, dropper)
                assert gw is not None
                delivery.dropped(s, gw, runs)
            # tell each edge what is now held, so it can forget exactly that (and resend gaps)
            for held in sorted({t.gateway for t, _, _ in sequenced} | born):
                gw = s.get(Gateway, held)
                if gw is not None and gw.stream:
                    c = delivery.committed(s, gw, self.gap_grace)
                    out.replies.append(delivery.message(gw, c))
            del locked
            for raw, reason, gw_id in dead:
                self._dead_letter(s, raw, reason, gw_id)
                out.reasons[clean_text(reason.split(":")[0], 100)] += 1
            out.dead = len(dead)
        return out

    # -- registry --------------------------------------------------------------------------
    def _gateway(self, s: Session, site: str, gateway: str) -> Gateway:
        """The gateway's row, locked for this transaction; created (with its site) if new.

        Inserts are conflict-free so that two ingest processes meeting a new gateway at
        once do not fail each other's batch.
        """
        s.execute(
            _insert(s, Site)
            .values(id=site, name=site, created_at=utcnow())
            .on_conflict_do_nothing()
        )
        s.execute(_insert(s, Gateway).values(id=gateway, site_id=site).on_conflict_do_nothing())
        gw = s.get(Gateway, gateway, with_for_update=True, populate_existing=True)
        assert gw is not None
        return gw

    def _birth(self, s: Session, topic: Topic, b: Birth) -> str | None:
        """Register a gateway and its devices; the reason when the birth is refused."""
        gw = self._gateway(s, topic.site, topic.gateway)
        self._journal.put(self._gw_site, gw.id, gw.site_id)
        if gw.site_id != topic.site:
            return f"gateway {gw.id!r} belongs to site {gw.site_id!r}, not {topic.site!r}"
        if b.stream == gw.stream and b.bdseq < gw.bdseq:
            return None  # a stale retained birth
        if not gw.stream:
            # data came before the birth: it, and the gaps it showed, were recorded under an
            # unknown stream (a gap left there would not hold back the new stream's watermark)
            for table in (Seen, Gap):
                s.execute(
                    update(table)
                    .where(col(table.gateway_id) == gw.id, col(table.stream) == "")
                    .values(stream=b.stream)
                )
        elif b.stream != gw.stream:
            log.warning("gateway %s started a new sequence (its outbox was replaced)", gw.id)
            gw.max_seq = 0
        now = utcnow()
        gw.stream, gw.bdseq, gw.agent = b.stream, b.bdseq, b.agent
        gw.online, gw.birth_at, gw.last_seen = True, now, now
        for d in b.devices:
            dev = s.get(Device, self._device(s, topic.site, topic.gateway, d.id))
            assert dev is not None
            dev.profile = d.profile
            dev.points = [p.model_dump(exclude={"v"}) for p in d.points]
            assert dev.id is not None
            self._journal.put(self._types, dev.id, _point_types(d.points))
        return None

    def _death(self, s: Session, topic: Topic, d: Death) -> None:
        gw = s.get(Gateway, topic.gateway, with_for_update=True)
        if gw is not None and d.bdseq == gw.bdseq:
            gw.online = False  # a death for an older connection is stale: ignored

    def _status(self, s: Session, gateway: str, st: Status) -> None:
        # an older retained status (redelivered after a newer one) never replaces it
        newer = ms_to_dt(st.ts)
        s.execute(
            update(Gateway)
            .where(
                col(Gateway.id) == gateway,
                (col(Gateway.status_at).is_(None)) | (col(Gateway.status_at) < newer),
            )
            .values(
                last_seen=utcnow(),
                status={"metrics": st.metrics, "devices": st.devices},
                status_at=newer,
            )
        )

    def _device(self, s: Session, site: str, gateway: str, device: str) -> int:
        key = (gateway, device)
        cached = self._devices.get(key)
        if cached is not None:
            return cached
        stmt = (
            _insert(s, Device)
            .values(gateway_id=gateway, device_id=device, site_id=site, points=[])
            .on_conflict_do_nothing()
        )
        s.execute(stmt)
        pk = s.execute(
            select(col(Device.id)).where(
                col(Device.gateway_id) == gateway,
                col(Device.device_id) == device,
            )
        ).scalar_one()
        assert pk is not None
        self._journal.put(self._devices, key, pk)
        return int(pk)

    def _stream(self, s: Session, gateway: str) -> str:
        gw = s.get(Gateway, gateway)
        assert gw is not None  # created by _gateway earlier in this batch
        return gw.stream

    # -- sequenced messages ------------------------------------------------------------------
    def _dedupe(
        self, s: Session, items: list[tuple[Topic, Any, Raw]]
    ) -> list[tuple[Topic, Any, Raw]]:
        """The items not applied before (nor twice within this batch)."""
        if not items:
            return []
        streams = {t.gateway: self._stream(s, t.gateway) for t, _, _ in items}
        rows = {(t.gateway, streams[t.gateway], m.seq): (t, m, r) for t, m, r in items}
        now = utcnow()
        params = [{"gateway_id": g, "stream": st, "seq": q, "at": now} for g, st, q in rows]
        new = {tuple(r) for r in s.connection().execute(self._sql.seen, params)}
        return [tm for key, tm in rows.items() if key in new]

    def _apply_sequenced(
        self, s: Session, fresh: list[tuple[Topic, Any, Raw]]
    ) -> tuple[int, list[alarms.Sample]]:
        samples: list[Sample] = []
        for_alarms: list[alarms.Sample] = []
        latest: dict[int, dict[str, list[float]]] = {}
        readings: list[dict[str, Any]] = []
        types = self._types_of(s, fresh)
        n_values = 0
        for t, m, r in fresh:
            if isinstance(m, Data):
                pk = self._device(s, t.site, t.gateway, m.dev)
                wrong = types[pk].wrong(m.values)
                if wrong:
                    self.refused.append((r, wrong, t.gateway))
                    continue
                values = {point: float(value) for point, value in m.values.items()}
                samples.append(Sample(t.site, t.gateway, m.dev, pk, m.ts, values))
                for_alarms.append(alarms.Sample(pk, m.ts, m.values))
                n_values += len(values)
                points = latest.setdefault(pk, {})
                for point, v in values.items():
                    cur = points.get(point)
                    if cur is None or cur[1] < m.ts:
                        points[point] = [v, m.ts, m.seq]
                for point in types[pk].counters:
                    if point in m.values:  # exact decimal of what the meter said
                        readings.append(
                            {
                                "device": pk,
                                "point": point,
                                "ts": ms_to_dt(m.ts),
                                "value": Decimal(repr(m.values[point])),
                            }
                        )
            elif isinstance(m, Event):
                self._event(s, t, m)
            elif isinstance(m, Ack):
                refused = self._ack(s, t, m)
                if refused:
                    self.refused.append((r, refused, t.gateway))
            elif isinstance(m, ParkRecord):
                refused = parking.apply_record(s, t, m)
                if refused:
                    self.refused.append((r, refused, t.gateway))
        if samples:
            self.sink.write(s, samples)
        conn = s.connection()
        if latest:
            self._merge_latest(s, latest)
        if readings:
            conn.execute(self._sql.reading, readings)
        return n_values, for_alarms

    def _types_of(
        self, s: Session, fresh: Iterable[tuple[Topic, Any, Raw]]
    ) -> dict[int, PointTypes]:
        """Device -> the types its birth declared for its points."""
        out: dict[int, PointTypes] = {}
        for pk in {
            self._device(s, t.site, t.gateway, m.dev) for t, m, _ in fresh if isinstance(m, Data)
        }:
            types = self._types.get(pk)
            if types is None:
                dev = s.get(Device, pk)
                types = _point_types(dev.points if dev else [])
                self._journal.put(self._types, pk, types)
            out[pk] = types
        return out

    def _merge_latest(self, s: Session, latest: dict[int, dict[str, list[float]]]) -> None:
        """Merge this batch's newest values into ``latest``, point by point, newest wins.

        The rows are locked first, so two ingest processes merging the same device take
        turns instead of one overwriting the other's newer point.
        """
        conn = s.connection()
        missing = [pk for pk in latest if pk not in self._has_latest]
        if missing:
            conn.execute(self._sql.latest_new, [{"device": pk, "points": {}} for pk in missing])
        locked = conn.execute(self._sql.latest_lock, {"devices": list(latest)})
        current: dict[int, Any] = {pk: points for pk, points in locked}
        updates = []
        for pk, points in latest.items():
            merged = dict(current.get(pk) or {})
            changed = False
            for point, entry in points.items():
                old = merged.get(point)
                if old is None or old[1] < entry[1]:  # a historical value never wins
                    merged[point] = entry
                    changed = True
            if changed:
                updates.append({"pk": pk, "pts": merged})
        if updates:
            conn.execute(self._sql.latest_set, updates)
        for pk in latest:
            self._journal.add(self._has_latest, pk)

    def _event(self, s: Session, t: Topic, e: Event) -> None:
        if e.event in (EventKind.DEVICE_ONLINE, EventKind.DEVICE_OFFLINE) and e.dev:
            pk = self._device(s, t.site, t.gateway, e.dev)
            dev = s.get(Device, pk)
            assert dev is not None
            online = e.event is EventKind.DEVICE_ONLINE
            if dev.last_seen is None or dev.last_seen <= ms_to_dt(e.ts):
                dev.online = online
                dev.last_seen = ms_to_dt(e.ts)
            self.device_events.append(alarms.DeviceEvent(pk, e.ts, online, dict(e.detail)))
        elif e.event is EventKind.OUTBOX_DROPPED:
            # the dropped runs (critical messages kept between them are not gaps); a run can
            # only name numbers older than the event itself
            runs = e.detail.get("ranges") or [[e.detail.get("first_seq"), e.detail.get("last_seq")]]
            good = [
                (run[0], run[1])
                for run in runs
                if isinstance(run, list)
                and len(run) == 2
                and all(type(q) is int for q in run)
                and 1 <= run[0] <= run[1] < e.seq
            ]
            self._drops.append((t.gateway, good))

    def _wrong_site(self, s: Session, t: Topic) -> str | None:
        """Why a gateway's death or status on ``t`` is not its own (another site's topic)."""
        gw = s.get(Gateway, t.gateway)
        if gw is not None and gw.site_id != t.site:
            return f"gateway {t.gateway!r} belongs to site {gw.site_id!r}, not {t.site!r}"
        return None

    def _ack(self, s: Session, t: Topic, a: Ack) -> str | None:
        """Record a command's result; why not, if the command is not the sender's."""
        cmd = s.get(Command, a.id, with_for_update=True)
        if cmd is None:
            return f"ack for unknown command {a.id!r}"
        if cmd.gateway_id != t.gateway:
            return f"command {a.id!r} was sent to {cmd.gateway_id!r}, not {t.gateway!r}"
        if cmd.status == "pending":
            cmd.status, cmd.detail, cmd.acked_at = a.status.value, a.detail, ms_to_dt(a.ts)
        return None

    def _count(
        self, s: Session, items: list[tuple[Topic, Any, Raw]], fresh: list[tuple[Topic, Any, Raw]]
    ) -> None:
        """Per-gateway counters, last seen, and gaps in the sequence."""
        by_gw: dict[str, list[int]] = defaultdict(list)
        for t, m, _ in fresh:
            by_gw[t.gateway].append(m.seq)
        total: dict[str, int] = defaultdict(int)
        for t, _, _ in items:
            total[t.gateway] += 1
        now = utcnow()
        for gw_id, n in total.items():
            gw = s.get(Gateway, gw_id)  # locked at the start of the batch
            assert gw is not None
            seqs = sorted(by_gw.get(gw_id, []))
            gw.messages += len(seqs)
            gw.duplicates += n - len(seqs)
            # online comes from birth and death alone: data applied in the same batch as a
            # death must not bring the gateway back
            gw.last_seen = now
            self._gaps(s, gw, seqs)

    def _gaps(self, s: Session, gw: Gateway, seqs: list[int]) -> None:
        late = []
        for seq in seqs:
            if seq > gw.max_seq + 1:
                delivery.missing(s, gw, gw.max_seq + 1, seq - 1)
                gw.max_seq = seq
            elif seq == gw.max_seq + 1:
                gw.max_seq = seq
            else:
                late.append(seq)
        delivery.arrived(s, gw, late)


# Numeric(24, 6) holds counters below 10^18: the largest any meter register reaches, scaled
MAX_COUNTER = Decimal(10) ** 18


@dataclass(frozen=True, slots=True)
class PointTypes:
    """What a device's birth declared of its points: which are counters, which booleans."""

    counters: frozenset[str] = frozenset()
    booleans: frozenset[str] = frozenset()
    numbers: frozenset[str] = frozenset()

    def wrong(self, values: dict[str, Any]) -> str | None:
        """Why ``values`` does not fit the declared types (None when it does).

        Points the birth did not declare are taken as they come (data can precede a birth).
        """
        for point, value in values.items():
            if point in self.booleans and type(value) is not bool:
                return f"values.{point}: the point is boolean, the value {value!r} is not"
            if point in self.numbers and type(value) is bool:
                return f"values.{point}: the point is numeric, the value {value!r} is not"
            if point in self.counters and abs(Decimal(repr(value))) >= MAX_COUNTER:
                return f"values.{point}: counter value {value!r} is out of range"
        return None


def _point_types(points: Iterable[Any]) -> PointTypes:
    counters: set[str] = set()
    booleans: set[str] = set()
    numbers: set[str] = set()
    for p in points:
        info = p if isinstance(p, dict) else p.model_dump()
        name, kind = info.get("name"), info.get("type")
        if not isinstance(name, str):
            continue
        (booleans if kind in ("bool", "bit") else numbers).add(name)
        if info.get("kind") == "counter":
            counters.add(name)
    return PointTypes(frozenset(counters), frozenset(booleans), frozenset(numbers))


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A sequenced message refused whole whose ``seq`` could still be read: a dead letter
    that holds its place in the sequence (else its gap, never filled, would stop the
    watermark and the edge would keep everything after it)."""

    gw: str
    seq: int


def _unreadable(raw: Raw) -> tuple[Topic, Unreadable, Raw] | None:
    try:
        topic = Topic.parse(raw.topic)
        obj = orjson.loads(raw.payload)
    except (MessageError, orjson.JSONDecodeError):
        return None
    if topic.kind not in (Kind.DATA, Kind.EVENT, Kind.ACK, Kind.PARK) or not isinstance(obj, dict):
        return None
    seq = obj.get("seq")
    if type(seq) is not int or not 1 <= seq <= MAX_SEQ or obj.get("gw") != topic.gateway:
        return None
    return topic, Unreadable(topic.gateway, seq), raw


# what the hub publishes to the edges; ingest's wildcard subscription sees them too
HUB_KINDS = frozenset({"cmd", "sync", "answer", "committed"})


def kind_of(topic: str) -> str | None:
    parts = topic.split("/", 5)
    return parts[4] if len(parts) > 4 and parts[0] == "wuye" and parts[1] == "v1" else None


def _gateway_of(topic: str) -> str | None:
    parts = topic.split("/")
    return parts[3] if len(parts) > 3 and parts[:2] == ["wuye", "v1"] else None
