import asyncio

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


async def test_sequence_is_never_reused_after_acks_and_restart(tmp_path):
    path = tmp_path / "ob.db"
    async with Outbox(path) as ob:
        for i in range(5):
            ob.put_nowait("t", body(i), created=i, critical=False)
        await ob.flush()
        for m in await ob.fetch(0, 10):
            ob.ack(m)
        await ob.flush()
        assert ob.depth == 0 and ob.last_seq == 5
    async with Outbox(path) as ob:
        await ob.put("t", body(9), created=9, critical=True)
        assert [m.seq for m in await ob.fetch(0, 10)] == [6]


async def test_ack_twice_counts_once(tmp_path):
    async with Outbox(tmp_path / "ob.db") as ob:
        await ob.put("t", body(1), created=1, critical=True)
        await ob.put("t", body(2), created=2, critical=True)
        m = (await ob.fetch(0, 1))[0]
        ob.ack(m)
        ob.ack(m)
        assert ob.is_acked(m.seq)
        await ob.flush()
        assert ob.depth == 1 and not ob.is_acked(m.seq)
        assert ob.bytes == len(body(2)) + 1 + ROW_OVERHEAD


async def test_full_outbox_drops_oldest_telemetry_never_critical(tmp_path):
    size = len(body(0)) + 1 + ROW_OVERHEAD
    drops: list[Dropped] = []
    async with Outbox(tmp_path / "ob.db", max_bytes=10 * size, on_drop=drops.append) as ob:
        await ob.put("t", body(0), created=0, critical=True)
        for i in range(1, 15):
            ob.put_nowait("t", body(i), created=i, critical=i == 3)
        await ob.flush()
        kept = [m.seq for m in await ob.fetch(0, 100)]
        # seqs 1 and 4 (critical) stay; 2, 3 and 5..7 (the oldest telemetry) made room, and
        # the drop names exactly those runs: the critical message between them is no gap
        assert kept == [1, 4, *range(8, 16)]
        assert drops == [Dropped(5, 2, 7, ((2, 3), (5, 7)))] and ob.dropped_total == 5
        assert ob.bytes <= ob.max_bytes
        for i in range(20):
            ob.put_nowait("t", body(i), created=i, critical=True)
        await ob.flush()
        # over capacity with critical messages: nothing critical is ever dropped
        assert sum(m.critical for m in await ob.fetch(0, 100)) == 22  # 1, 4 and these 20


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
