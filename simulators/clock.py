"""Time for simulated devices.

Models never read the wall clock: they are given a clock (a callable returning seconds)
so that tests decide when time passes and by how much.
"""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], float]


class ManualClock:
    """A clock that moves only when told to; a drop-in for ``time.monotonic``."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move ``seconds`` forward and return the new time; ValueError if negative."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._now += seconds
        return self._now
