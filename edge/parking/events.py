"""The event stream every parking driver hands out: bounded, newest kept, never blocking."""

from __future__ import annotations

import asyncio
import collections
from typing import Generic, TypeVar

T = TypeVar("T")


class EventQueue(Generic[T]):
    """Events in arrival order; ``async for event in queue`` or ``await queue.get()``.

    A driver must never wait for its consumer (the line would back up), so when
    ``maxsize`` events are waiting the oldest is dropped and counted in ``dropped``.
    """

    def __init__(self, maxsize: int = 1000) -> None:
        self.maxsize = maxsize
        self.dropped = 0
        self._items: collections.deque[T] = collections.deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        if len(self._items) >= self.maxsize:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._ready.set()

    async def get(self) -> T:
        """The oldest event, waiting for one if there is none."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def get_nowait(self) -> T:
        """The oldest event; IndexError if there is none."""
        return self._items.popleft()

    def __aiter__(self) -> EventQueue[T]:
        return self

    async def __anext__(self) -> T:
        return await self.get()
