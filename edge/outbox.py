"""The store-and-forward outbox: every sequenced message is on disk before it is published.

SQLite in WAL mode with ``synchronous=FULL``: a commit is on the platter (or flash) when it
returns. Messages are group-committed every ``commit_interval`` seconds to spare SD cards;
a critical message (billing-grade readings, status changes such as fault bits, gate and
payment events, command results)
makes the commit happen at once, coalescing with whatever else is pending.

The sequence number is SQLite's AUTOINCREMENT rowid: assigned at commit, never reused,
across restarts too. A message is deleted only once the hub says it has committed it (its
``committed`` watermark, :meth:`Outbox.release`), never on the broker's PUBACK: a broker
that restarts or drops a queue loses nothing the edge still keeps, and a crash means
re-sending (the hub de-duplicates on gateway+seq), never loss of anything committed.
When the capacity is reached the oldest telemetry goes, and the ``outbox_dropped`` event
that says so is written in the same transaction: a crash cannot drop without announcing.

All database work runs on one dedicated thread, so fsyncs never stall the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    topic    TEXT    NOT NULL,
    body     BLOB    NOT NULL,
    created  INTEGER NOT NULL,   -- ms since epoch, when the message was made
    critical INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commands (
    id      TEXT PRIMARY KEY,    -- commands already acted on: a redelivery is not redone
    status  TEXT NOT NULL,
    created INTEGER NOT NULL
);
"""
# per-row overhead SQLite adds to the payload (rowid, header, index cell), for the capacity
ROW_OVERHEAD = 40


@dataclass(frozen=True, slots=True)
class Message:
    """A committed message. ``body`` is a JSON object without gw/seq/hist (added at send)."""

    seq: int
    topic: str
    body: bytes
    created: int
    critical: bool

    @property
    def size(self) -> int:
        return len(self.body) + len(self.topic) + ROW_OVERHEAD


@dataclass(frozen=True, slots=True)
class Dropped:
    """What a capacity enforcement threw away (oldest non-critical first)."""

    count: int
    first_seq: int
    last_seq: int
    # the dropped seqs as contiguous runs: critical rows kept between them are not in them
    ranges: tuple[tuple[int, int], ...] = ()


@dataclass(slots=True)
class _Work:
    fn: Callable[[sqlite3.Connection], Any]
    messages: list[tuple[str, bytes, int]]  # (topic, body, created): critical, in order
    future: asyncio.Future[Any]
    result: Any = None
    error: Exception | None = None


class Outbox:
    """Durable queue of outgoing messages. Use as ``async with Outbox(path) as ob:``."""

    def __init__(
        self,
        path: Path,
        *,
        commit_interval: float = 1.0,
        max_bytes: int = 256 * 1024 * 1024,
        drop_events: Callable[[Dropped], list[tuple[str, bytes, int]]] | None = None,
    ) -> None:
        """``drop_events`` makes the messages (topic, body, created) that announce a drop;
        they are committed with the drop itself."""
        self.path = path
        self.commit_interval = commit_interval
        self.max_bytes = max_bytes
        self.drop_events = drop_events
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple[str, bytes, int, int]] = []
        self.released = 0  # the hub holds every seq up to here (its watermark)
        self._release_to = 0  # rows up to here are deleted with the next commit
        self._waiters: list[asyncio.Future[None]] = []
        self._work: list[_Work] = []
        self._wake = asyncio.Event()
        self._urgent = False
        self._committer: asyncio.Task[None] | None = None
        self.committed = asyncio.Condition()
        self.stream = ""
        self.bytes = 0  # payload bytes (+ overhead) of the rows on disk
        self.depth = 0  # rows on disk
        self.oldest: int | None = None  # created ms of the oldest row on disk
        self.last_seq = 0
        self.dropped_total = 0
        self.commits = 0

    # -- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> Outbox:
        await self._run(self._open)
        self._committer = asyncio.create_task(self._commit_loop(), name="outbox-commit")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer
        await self.flush()
        await self._run(self._close)
        self._pool.shutdown(wait=True)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key='stream'").fetchone()
        if row is None:
            self.stream = uuid.uuid4().hex
            db.execute("INSERT INTO meta VALUES ('stream', ?)", (self.stream,))
        else:
            self.stream = row[0]
        self._recount(db)
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # -- writing ---------------------------------------------------------------------------
    def put_nowait(self, topic: str, body: bytes, *, created: int, critical: bool) -> None:
        """Queue a message for the next group commit (at once if ``critical``)."""
        self._pending.append((topic, body, created, int(critical)))
        if critical:
            self._urgent = True
            self._wake.set()

    async def put(self, topic: str, body: bytes, *, created: int, critical: bool) -> None:
        """Queue a message and return once it is committed (synced to disk)."""
        self.put_nowait(topic, body, created=created, critical=critical)
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._urgent = True
        self._wake.set()
        await fut

    async def put_with(
        self, work: Callable[[sqlite3.Connection], T], messages: list[tuple[str, bytes, int]]
    ) -> T:
        """Run ``work`` on the database and append critical ``messages``, atomically, now.

        Both happen in one transaction (a savepoint inside the group commit), so state the
        edge keeps beside the outbox (a parking session) and the record of the change can
        never disagree after a crash. Returns what ``work`` returns; if it raises, nothing
        of it is kept and the exception is raised here.
        """
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._work.append(_Work(work, messages, fut))
        self._urgent = True
        self._wake.set()
        return await fut  # type: ignore[no-any-return]

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the outbox's database thread (reads of state kept beside it)."""
        return await self._run(self._with_db, fn)

    def _with_db(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._db is not None
        return fn(self._db)

    def release(self, upto: int) -> None:
        """The hub has committed every seq up to ``upto``: delete those with the next commit.

        Only the hub's word frees a row (a PUBACK says only that the broker has it)."""
        if upto > self.released:
            self.released = upto
            self._release_to = upto

    def is_released(self, seq: int) -> bool:
        """The hub holds it (the delete may still ride on the next commit)."""
        return seq <= self.released

    async def flush(self) -> None:
        """Commit everything pending now."""
        if self._pending or self._release_to or self._waiters or self._work:
            await self._commit()

    async def _commit_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.commit_interval)
            self._wake.clear()
            if self._pending or self._release_to or self._waiters or self._work:
                try:
                    await self._commit()
                except sqlite3.Error:
                    log.exception("outbox commit failed; retrying in %.1fs", self.commit_interval)

    async def _commit(self) -> None:
        rows, self._pending = self._pending, []
        release, self._release_to = self._release_to, 0
        waiters, self._waiters = self._waiters, []
        work, self._work = self._work, []
        self._urgent = False
        try:
            dropped = await self._run(self._write, rows, release, work)
        except BaseException:
            # keep them for the next try; nothing was published from them
            self._pending[:0] = rows
            self._release_to = max(self._release_to, release)
            self._waiters[:0] = waiters
            self._work[:0] = work
            raise
        for item in work:
            if not item.future.done():
                if item.error is not None:
                    item.future.set_exception(item.error)
                else:
                    item.future.set_result(item.result)
        self.commits += 1
        for w in waiters:
            if not w.done():
                w.set_result(None)
        if dropped is not None:
            self.dropped_total += dropped.count
        async with self.committed:
            self.committed.notify_all()

    def _write(
        self,
        rows: list[tuple[str, bytes, int, int]],
        release: int,
        work: list[_Work] = [],  # noqa: B006 (never mutated)
    ) -> Dropped | None:
        assert self._db is not None
        db = self._db
        depth, size = self.depth, self.bytes
        db.execute("BEGIN IMMEDIATE")
        try:
            if release:
                n, freed = db.execute(
                    f"SELECT COUNT(*), COALESCE(SUM(LENGTH(body)+LENGTH(topic)+{ROW_OVERHEAD}),0)"
                    " FROM outbox WHERE seq <= ?",
                    (release,),
                ).fetchone()
                if n:
                    db.execute("DELETE FROM outbox WHERE seq <= ?", (release,))
                    depth, size = depth - n, size - freed
            if rows:
                db.executemany(
                    "INSERT INTO outbox (topic, body, created, critical) VALUES (?,?,?,?)", rows
                )
                depth += len(rows)
                size += sum(len(b) + len(t) + ROW_OVERHEAD for t, b, _, _ in rows)
            for item in work:
                db.execute("SAVEPOINT work")
                try:
                    item.result = item.fn(db)
                    db.executemany(
                        "INSERT INTO outbox (topic, body, created, critical) VALUES (?,?,?,1)",
                        item.messages,
                    )
                except Exception as exc:
                    db.execute("ROLLBACK TO work")
                    item.error = exc
                else:
                    depth += len(item.messages)
                    size += sum(len(b) + len(t) + ROW_OVERHEAD for t, b, _ in item.messages)
                db.execute("RELEASE work")
            self.depth, self.bytes = depth, size
            dropped = self._enforce_capacity(db) if self.bytes > self.max_bytes else None
            if dropped is not None and self.drop_events is not None:
                # announced in the same transaction: no crash can drop without saying so
                events = self.drop_events(dropped)
                db.executemany(
                    "INSERT INTO outbox (topic, body, created, critical) VALUES (?,?,?,1)", events
                )
                self.depth += len(events)
                self.bytes += sum(len(b) + len(t) + ROW_OVERHEAD for t, b, _ in events)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._recount(db)
            raise
        self._refresh(db)
        return dropped

    def _recount(self, db: sqlite3.Connection) -> None:
        """Depth and size from a full scan: at open, and after a failed commit."""
        n, size = db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(LENGTH(body)+LENGTH(topic)+{ROW_OVERHEAD}),0) "
            "FROM outbox"
        ).fetchone()
        self.depth, self.bytes = n, size
        self._refresh(db)

    def _refresh(self, db: sqlite3.Connection) -> None:
        """Oldest row and last sequence: index look-ups, cheap at any depth."""
        row = db.execute("SELECT created FROM outbox ORDER BY seq LIMIT 1").fetchone()
        self.oldest = row[0] if row else None
        seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
        self.last_seq = seq[0] if seq else 0

    def _enforce_capacity(self, db: sqlite3.Connection) -> Dropped | None:
        """Delete the oldest non-critical rows until the outbox fits its capacity."""
        excess = self.bytes - self.max_bytes
        victims: list[int] = []
        freed = 0
        cur = db.execute(
            f"SELECT seq, LENGTH(body)+LENGTH(topic)+{ROW_OVERHEAD} FROM outbox "
            "WHERE critical=0 ORDER BY seq"
        )
        for seq, size in cur:
            if freed >= excess:
                break
            victims.append(seq)
            freed += size
        cur.close()
        if not victims:
            log.error("outbox over capacity with critical messages only; keeping them all")
            return None
        db.executemany("DELETE FROM outbox WHERE seq=?", ((s,) for s in victims))
        self.depth -= len(victims)
        self.bytes -= freed
        log.warning("outbox full: dropped %d oldest telemetry messages", len(victims))
        return Dropped(len(victims), victims[0], victims[-1], _runs(victims))

    # -- reading ---------------------------------------------------------------------------
    async def fetch(self, after: int, limit: int) -> list[Message]:
        """Committed messages with seq > ``after``, oldest first."""
        return await self._run(self._fetch, after, limit)

    def _fetch(self, after: int, limit: int) -> list[Message]:
        assert self._db is not None
        cur = self._db.execute(
            "SELECT seq, topic, body, created, critical FROM outbox WHERE seq > ? "
            "ORDER BY seq LIMIT ?",
            (after, limit),
        )
        return [Message(s, t, b, c, bool(k)) for s, t, b, c, k in cur]

    # -- small durable state ----------------------------------------------------------------
    async def next_bdseq(self) -> int:
        """Birth/death sequence for a new connection, durable so a death matches its birth."""
        return await self._run(self._next_bdseq)

    def _next_bdseq(self) -> int:
        assert self._db is not None
        row = self._db.execute("SELECT value FROM meta WHERE key='bdseq'").fetchone()
        value = int(row[0]) + 1 if row else 0
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('bdseq', ?)", (str(value),))
        return value

    async def command_status(self, command_id: str) -> str | None:
        return await self._run(self._command_status, command_id)

    def _command_status(self, command_id: str) -> str | None:
        assert self._db is not None
        row = self._db.execute("SELECT status FROM commands WHERE id=?", (command_id,)).fetchone()
        return row[0] if row else None

    async def record_command(self, command_id: str, status: str) -> None:
        await self._run(self._record_command, command_id, status)

    def _record_command(self, command_id: str, status: str) -> None:
        assert self._db is not None
        now = int(time.time() * 1000)
        self._db.execute(
            "INSERT OR REPLACE INTO commands VALUES (?,?,?)", (command_id, status, now)
        )
        # a week of command ids is far longer than any broker redelivers
        self._db.execute("DELETE FROM commands WHERE created < ?", (now - 7 * 86400_000,))


def _runs(seqs: list[int]) -> tuple[tuple[int, int], ...]:
    """Ascending ``seqs`` as (first, last) runs of consecutive numbers."""
    runs: list[tuple[int, int]] = []
    for q in seqs:
        if runs and q == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], q)
        else:
            runs.append((q, q))
    return tuple(runs)
