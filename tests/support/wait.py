"""Waiting on the hub: database state is checked after each batch its ingest commits."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def until_applied(
    consumer: Any, predicate: Callable[[], bool], timeout: float = 30, what: str = "condition"
) -> None:
    """Until ``predicate`` holds, re-checked each time ``consumer`` (hub.ingest.Consumer)
    commits a batch, with a deadline. Edge state the hub confirms (a sync applied) is seen
    the same way: the edge's ``synced`` is such a batch."""
    deadline = time.monotonic() + timeout
    while not predicate():
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{what} not reached in {timeout} s")
        with consumer.applied:  # a batch committed between the check and here: next round
            consumer.applied.wait(min(left, 1.0))
