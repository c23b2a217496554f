"""The bus owner (edge/bus.py) against a Modbus TCP peer whose replies are scripted: what
the fuzz in test_fuzz_modbus.py found, one case each."""

from __future__ import annotations

import asyncio
from collections import deque

import pytest

from edge.bus import NoReply
from protocols.registers import Read, Table
from tests.edge.test_fuzz_modbus import SLOW, Peer, Reply, _bus, memory

HOLDING = Read(Table.HOLDING, 0, 1)


async def _first_refused_then_taken(reply: Reply, read: Read = HOLDING) -> None:
    async with Peer(good=set(), script=deque([reply])).running() as peer:
        bus = _bus(peer)
        try:
            with pytest.raises(NoReply):
                await bus.read(1, read, SLOW)  # refused at once, not waited out
            fc = {Table.COIL: 1, Table.HOLDING: 3}[read.table]
            want = {read.address + i: memory(fc, read.address + i) for i in range(read.count)}
            if read.table.is_bits:
                want = {a: bool(v) for a, v in want.items()}
            assert await bus.read(1, read, SLOW) == want  # the next proper reply is taken
            assert bus.failures == 1
        finally:
            await bus.close()


async def test_a_reply_with_transaction_id_0_answers_no_request() -> None:
    """pymodbus takes transaction id 0 as an answer to any request, though it never sends
    it: a gateway's late or confused reply would pass for the current one."""
    await _first_refused_then_taken(Reply("transaction 0", values=(5,)))


async def test_a_reply_of_another_function_is_refused() -> None:
    """Input registers in answer to a read of holding registers: pymodbus took them."""
    await _first_refused_then_taken(Reply("other function", values=(5,), other=2))


async def test_a_coil_reply_whose_byte_count_lies_is_refused() -> None:
    """pymodbus ignores the byte count of a bit reply: one data byte announced as two,
    or two bytes for 3 coils (those of a read of 9 to 16), were taken."""
    coils = Read(Table.COIL, 0, 3)
    await _first_refused_then_taken(Reply("byte count", values=(1,), other=128 + 8), coils)
    await _first_refused_then_taken(Reply("mutated", values=(1,), edits=(("set", 8, 0, 2),)), coils)


async def test_a_cancel_that_lands_as_the_reply_arrives_is_not_lost() -> None:
    """pymodbus awaits the reply with asyncio.wait_for, which before Python 3.12 returns
    the reply instead of raising when the cancel and the reply come together: a poller on
    a busy bus could not be stopped."""
    async with Peer(good={1}).running() as peer:
        bus = _bus(peer)
        in_hand = asyncio.Event()

        async def reply_in_hand() -> object:
            reply = asyncio.get_running_loop().create_future()
            reply.set_result(None)
            in_hand.set()
            return await asyncio.wait_for(reply, SLOW)  # where pymodbus waits

        task = asyncio.create_task(bus.transact(reply_in_hand, SLOW))
        await in_hand.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await bus.close()
