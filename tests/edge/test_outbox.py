import asyncio
import signal
import sqlite3
import subprocess
import sys

import orjson
import pytest

from edge.outbox import ROW_OVERHEAD, Dropped, Outbox


def body(i: int) -> bytes:
    return b'{"n":%05d,"pad":"%s"}' % (i, b"x" * 50)  # all the same size


async def test_put_is_durable_across_reopen(tmp_path):
    path = tmp_path / "ob.db"
    async with Outbox(path, commit_interval=60) as ob:
        await ob.put("t", body(1), created=1, critical=True)
        ob.put_nowait("t", body(2), created=2, critical=False)
        await ob.put("t", body(3), created=3, critical=True)  # carries 2 along
        stream = ob.stream
    async with Outbox(path) as ob:
        got = await ob.fetch(0, 10)
        assert [m.body for m in got] == [body(1), body(2), body(3)]
        assert [m.seq for m in got] == [1, 2, 3]
        assert ob.stream == stream and ob.depth == 3


async def test_group_commit_waits_for_the_interval_unless_critical(tmp_path):
    async with Outbox(tmp_path / "ob.db", commit_interval=60) as ob:
        ob.put_nowait("t", body(1), created=1, critical=False)
        # fetch awaits the database thread, so the committer had its chance to run
        assert await ob.fetch(0, 10) == []  # still only in memory
        ob.put_nowait("t", body(2), created=2, critical=True)
        async with ob.committed:
            await asyncio.wait_for(ob.committed.wait(), 5)
        assert [m.seq for m in await ob.fetch(0, 10)] == [1, 2]
        assert ob.commits == 1


async def test_sequence_is_never_reused_after_release_and_restart(tmp_path):
    path = tmp_path / "ob.db"
    async with Outbox(path) as ob:
        for i in range(5):
            ob.put_nowait("t", body(i), created=i, critical=False)
        await ob.flush()
        ob.release(5)
        await ob.flush()
        assert ob.depth == 0 and ob.last_seq == 5
    async with Outbox(path) as ob:
        await ob.put("t", body(9), created=9, critical=True)
        assert [m.seq for m in await ob.fetch(0, 10)] == [6]


async def test_only_the_hubs_watermark_frees_rows_and_an_old_one_frees_nothing(tmp_path):
    async with Outbox(tmp_path / "ob.db") as ob:
        for i in range(1, 4):
            await ob.put("t", body(i), created=i, critical=True)
        ob.release(1)
        assert ob.is_released(1) and not ob.is_released(2)
        await ob.flush()
        assert ob.depth == 2 and ob.bytes == 2 * (len(body(2)) + 1 + ROW_OVERHEAD)
        ob.release(1)  # said again, or late: nothing more goes
        ob.release(0)
        await ob.flush()
        assert [m.seq for m in await ob.fetch(0, 10)] == [2, 3]


def announce(d: Dropped) -> list[tuple[str, bytes, int]]:
    return [("event", orjson.dumps({"ranges": [list(r) for r in d.ranges]}), 0)]


async def test_full_outbox_drops_oldest_telemetry_never_critical(tmp_path):
    size = len(body(0)) + 1 + ROW_OVERHEAD
    drops: list[Dropped] = []

    def drop_events(d: Dropped) -> list[tuple[str, bytes, int]]:
        drops.append(d)
        return announce(d)

    async with Outbox(tmp_path / "ob.db", max_bytes=10 * size, drop_events=drop_events) as ob:
        await ob.put("t", body(0), created=0, critical=True)
        for i in range(1, 15):
            ob.put_nowait("t", body(i), created=i, critical=i == 3)
        await ob.flush()
        rows = await ob.fetch(0, 100)
        # seqs 1 and 4 (critical) stay; 2, 3 and 5..7 (the oldest telemetry) made room, and
        # the drop names exactly those runs: the critical message between them is no gap.
        # The event saying so (16) was committed with the drop, critical.
        assert [m.seq for m in rows] == [1, 4, *range(8, 17)]
        assert drops == [Dropped(5, 2, 7, ((2, 3), (5, 7)))] and ob.dropped_total == 5
        assert rows[-1].topic == "event" and rows[-1].critical
        assert orjson.loads(rows[-1].body) == {"ranges": [[2, 3], [5, 7]]}
        for i in range(20):
            ob.put_nowait("t", body(i), created=i, critical=True)
        await ob.flush()
        # over capacity with critical messages: nothing critical is ever dropped
        # (1, 4, these 20, and the events announcing both drops)
        assert sum(m.critical for m in await ob.fetch(0, 100)) == 24


def test_a_crash_between_dropping_and_announcing_cannot_happen(tmp_path):
    """The edge killed right after a drop committed still has the event that announces it:
    the drop and its event are one SQLite transaction."""
    script = f"""
import asyncio, os, orjson
from edge.outbox import Outbox
def announce(d):
    os.write(1, b"dropped\\n")
    return [("event", orjson.dumps({{"ranges": [list(r) for r in d.ranges]}}), 0)]
async def main():
    async with Outbox(__import__("pathlib").Path({str(tmp_path / "ob.db")!r}), max_bytes=2000,
                      drop_events=announce) as ob:
        for i in range(100):
            ob.put_nowait("t", orjson.dumps({{"i": i}}), created=i, critical=False)
        await ob.flush()
        os.kill(os.getpid(), 9)  # no clean exit: whatever is on disk is what survives
asyncio.run(main())
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL and b"dropped" in proc.stdout
    db = sqlite3.connect(tmp_path / "ob.db")
    rows = db.execute("SELECT seq, topic, body FROM outbox ORDER BY seq").fetchall()
    events = [orjson.loads(b) for _, t, b in rows if t == "event"]
    kept = {q for q, t, _ in rows if t == "t"}
    announced = {q for e in events for a, b in e["ranges"] for q in range(a, b + 1)}
    assert events and announced and not announced & kept
    assert announced | kept == set(range(1, 101))  # every telemetry seq: kept or announced


async def test_bdseq_and_command_ids_survive_restart(tmp_path):
    path = tmp_path / "ob.db"
    async with Outbox(path) as ob:
        assert await ob.next_bdseq() == 0
        assert await ob.next_bdseq() == 1
        await ob.record_command("c-1", "done")
    async with Outbox(path) as ob:
        assert await ob.next_bdseq() == 2
        assert await ob.command_status("c-1") == "done"
        assert await ob.command_status("c-2") is None


@pytest.mark.parametrize("n", [3000])
async def test_fetch_pages_in_order(tmp_path, n):
    async with Outbox(tmp_path / "ob.db") as ob:
        for i in range(n):
            ob.put_nowait("t", body(i), created=i, critical=False)
        await ob.flush()
        seen, cursor = [], 0
        while batch := await ob.fetch(cursor, 1000):
            seen += [m.seq for m in batch]
            cursor = batch[-1].seq
        assert seen == list(range(1, n + 1))
