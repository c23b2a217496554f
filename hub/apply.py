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
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import Engine, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

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
from protocols.mqtt import Ack, Birth, Data, Death, Event, EventKind, Kind, Status, Topic, parse
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
    ) -> None:
        self.engine = engine
        self.sink = sink
        self.rulebook = rulebook if rulebook is not None else alarms.RuleBook()
        self.max_payload = max_payload
        self.burst = BurstLog()
        self._devices: dict[tuple[str, str], int] = {}
        self._counters: dict[int, frozenset[str]] = {}  # device -> its counter points
        self._has_latest: set[int] = set()  # devices known to have a row in ``latest``
        self._gw_site: dict[str, str] = {}  # a gateway's site never changes once known
        self._sql = _Statements(engine.dialect.name)

    def apply(self, batch: Sequence[Raw]) -> Outcome:
        """Apply ``batch`` and commit; raises only when the database itself fails."""
        out = Outcome()
        parsed: list[tuple[Topic, Any, Raw]] = []
        dead: list[tuple[Raw, str, str | None]] = []
        for raw in batch:
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
                continue
            parsed.append((topic, msg, raw))
        with session_scope(self.engine) as s:
            for topic, msg, raw in parsed:
                if isinstance(msg, Birth):
                    refused = self._birth(s, topic, msg)
                    if refused:
                        dead.append((raw, refused, topic.gateway))
                    else:
                        parking.on_birth(s, topic.gateway)
                elif isinstance(msg, Death):
                    self._death(s, topic, msg)
                elif isinstance(msg, Status):
                    self._status(s, topic.gateway, msg)
                elif isinstance(msg, Synced):
                    parking.on_synced(s, topic, msg)
                elif isinstance(msg, Ask):
                    reply = parking.answer(s, topic, msg)
                    answer_to = Topic(topic.site, topic.gateway, Kind.ANSWER)
                    out.replies.append((str(answer_to), reply.model_dump_json().encode()))
            sequenced = []
            sequenced_kinds = Data | Event | Ack | ParkRecord
            mine = [(t, m, r) for t, m, r in parsed if isinstance(m, sequenced_kinds)]
            for t, _, _ in mine:
                if t.gateway not in self._gw_site:
                    self._gw_site[t.gateway] = self._gateway(s, t.site, t.gateway).site_id
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
            out.applied = len(fresh)
            self.refused: list[tuple[Raw, str, str | None]] = []
            self.device_events: list[alarms.DeviceEvent] = []
            out.values, samples = self._apply_sequenced(s, fresh)
            out.alarms = alarms.on_samples(s, self.rulebook, samples, self.device_events)
            dead += self.refused
            self._count(s, sequenced, fresh)
            del locked
            for raw, reason, gw_id in dead:
                self.burst.bad(raw.topic, reason)
                s.add(
                    DeadLetter(
                        topic=raw.topic[:512],
                        gateway_id=gw_id,
                        reason=reason,
                        payload=raw.payload[: self.max_payload],
                    )
                )
                if gw_id is not None:
                    s.execute(
                        update(Gateway)
                        .where(col(Gateway.id) == gw_id)
                        .values(bad=col(Gateway.bad) + 1)
                    )
                out.reasons[reason.split(":")[0]] += 1
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
        self._gw_site[gw.id] = gw.site_id
        if gw.site_id != topic.site:
            return f"gateway {gw.id!r} belongs to site {gw.site_id!r}, not {topic.site!r}"
        if b.stream == gw.stream and b.bdseq < gw.bdseq:
            return None  # a stale retained birth
        if not gw.stream:
            # data came before the birth: it was recorded under an unknown stream
            s.execute(
                update(Seen)
                .where(col(Seen.gateway_id) == gw.id, col(Seen.stream) == "")
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
            self._counters[dev.id] = frozenset(p.name for p in d.points if p.kind == "counter")
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
        self._devices[key] = pk
        return int(pk)

    def _stream(self, s: Session, gateway: str) -> str:
        gw = s.get(Gateway, gateway)
        assert gw is not None  # created by _gateway earlier in this batch
        return gw.stream

    # -- sequenced messages ------------------------------------------------------------------
    def _dedupe(self, s: Session, items: list[tuple[Topic, Any, Raw]]) -> list[tuple[Topic, Any]]:
        """The items not applied before (nor twice within this batch)."""
        if not items:
            return []
        streams = {t.gateway: self._stream(s, t.gateway) for t, _, _ in items}
        rows = {(t.gateway, streams[t.gateway], m.seq): (t, m) for t, m, _ in items}
        now = utcnow()
        params = [{"gateway_id": g, "stream": st, "seq": q, "at": now} for g, st, q in rows]
        new = {tuple(r) for r in s.connection().execute(self._sql.seen, params)}
        return [tm for key, tm in rows.items() if key in new]

    def _apply_sequenced(
        self, s: Session, fresh: list[tuple[Topic, Any]]
    ) -> tuple[int, list[alarms.Sample]]:
        samples: list[Sample] = []
        for_alarms: list[alarms.Sample] = []
        latest: dict[int, dict[str, list[float]]] = {}
        readings: list[dict[str, Any]] = []
        counters = self._counter_points(s, fresh)
        n_values = 0
        for t, m in fresh:
            if isinstance(m, Data):
                pk = self._device(s, t.site, t.gateway, m.dev)
                values = {point: float(value) for point, value in m.values.items()}
                samples.append(Sample(t.site, t.gateway, m.dev, pk, m.ts, values))
                for_alarms.append(alarms.Sample(pk, m.ts, m.values))
                n_values += len(values)
                points = latest.setdefault(pk, {})
                for point, v in values.items():
                    cur = points.get(point)
                    if cur is None or cur[1] < m.ts:
                        points[point] = [v, m.ts, m.seq]
                for point in counters.get(pk, ()):
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
                self._ack(s, t, m)
            elif isinstance(m, ParkRecord):
                refused = parking.apply_record(s, t, m)
                if refused:
                    self.refused.append(
                        (Raw(str(t), m.model_dump_json().encode()), refused, t.gateway)
                    )
        if samples:
            self.sink.write(s, samples)
        conn = s.connection()
        if latest:
            self._merge_latest(s, latest)
        if readings:
            conn.execute(self._sql.reading, readings)
        return n_values, for_alarms

    def _counter_points(
        self, s: Session, fresh: Iterable[tuple[Topic, Any]]
    ) -> dict[int, frozenset[str]]:
        """Device -> the points its birth declared billing-grade counters."""
        out: dict[int, frozenset[str]] = {}
        for pk in {
            self._device(s, t.site, t.gateway, m.dev) for t, m in fresh if isinstance(m, Data)
        }:
            names = self._counters.get(pk)
            if names is None:
                dev = s.get(Device, pk)
                names = frozenset(
                    p["name"] for p in (dev.points if dev else []) if p.get("kind") == "counter"
                )
                self._counters[pk] = names
            if names:
                out[pk] = names
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
        self._has_latest.update(latest)

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
            # the dropped runs (critical messages kept between them are not gaps)
            runs = e.detail.get("ranges") or [[e.detail.get("first_seq"), e.detail.get("last_seq")]]
            gw = s.get(Gateway, t.gateway)
            assert gw is not None
            for run in runs:
                if not (isinstance(run, list) and len(run) == 2):
                    continue
                first, last = run
                if isinstance(first, int) and isinstance(last, int) and first <= last:
                    s.add(
                        Gap(
                            gateway_id=t.gateway,
                            stream=gw.stream,
                            first_seq=first,
                            last_seq=last,
                            reason="dropped_by_edge",
                        )
                    )

    def _ack(self, s: Session, t: Topic, a: Ack) -> None:
        cmd = s.get(Command, a.id, with_for_update=True)
        if cmd is None or cmd.gateway_id != t.gateway:
            log.warning("ack for unknown command %s from %s", a.id, t.gateway)
            return
        if cmd.status == "pending":
            cmd.status, cmd.detail, cmd.acked_at = a.status.value, a.detail, ms_to_dt(a.ts)

    def _count(
        self, s: Session, items: list[tuple[Topic, Any, Raw]], fresh: list[tuple[Topic, Any]]
    ) -> None:
        """Per-gateway counters, last seen, and gaps in the sequence."""
        by_gw: dict[str, list[int]] = defaultdict(list)
        for t, m in fresh:
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
        for seq in seqs:
            if seq > gw.max_seq + 1:
                s.add(
                    Gap(
                        gateway_id=gw.id,
                        stream=gw.stream,
                        first_seq=gw.max_seq + 1,
                        last_seq=seq - 1,
                    )
                )
                gw.gaps += seq - 1 - gw.max_seq
                gw.max_seq = seq
            elif seq == gw.max_seq + 1:
                gw.max_seq = seq
            else:
                self._fill(s, gw, seq)

    def _fill(self, s: Session, gw: Gateway, seq: int) -> None:
        """A late message arrived inside a recorded gap: shrink or split the gap."""
        s.flush()
        gap = (
            s.execute(
                select(Gap).where(
                    col(Gap.gateway_id) == gw.id,
                    col(Gap.stream) == gw.stream,
                    col(Gap.reason) == "missing",
                    col(Gap.first_seq) <= seq,
                    col(Gap.last_seq) >= seq,
                )
            )
            .scalars()
            .first()
        )
        if gap is None:
            return
        gw.gaps -= 1
        if gap.first_seq == gap.last_seq:
            s.delete(gap)
        elif seq == gap.first_seq:
            gap.first_seq += 1
        elif seq == gap.last_seq:
            gap.last_seq -= 1
        else:
            s.add(
                Gap(
                    gateway_id=gw.id,
                    stream=gw.stream,
                    first_seq=seq + 1,
                    last_seq=gap.last_seq,
                    detected_at=gap.detected_at,
                )
            )
            gap.last_seq = seq - 1


def _gateway_of(topic: str) -> str | None:
    parts = topic.split("/")
    return parts[3] if len(parts) > 3 and parts[:2] == ["wuye", "v1"] else None
