"""What every behaviour model offers, and the random processes they share.

A model is the physics of one device kind: it advances its state by a time step and
reports engineering values keyed by point name. It never sees registers or the clock;
the device owns both and calls :meth:`Model.advance` lazily, when it is read.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable

from protocols.codec import Value


class Model(ABC):
    """Behaviour of one simulated device."""

    # Longest step :meth:`advance` is called with; event-driven models take any step.
    max_step: float = math.inf

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    @abstractmethod
    def advance(self, dt: float) -> None:
        """Move the state ``dt`` (> 0, at most ``max_step``) seconds forward."""

    @abstractmethod
    def sample(self) -> dict[str, Value]:
        """Values a reading taken now would show, measurement noise included."""

    def write(self, name: str, value: Value) -> None:
        """A master wrote the writable point ``name``; models without such points ignore it."""
        return None

    def force(self, name: str, value: Value | None) -> None:
        """A test pinned point ``name`` to ``value`` (None: released).

        The device already shows the pinned value; a model reacts where the physics
        should follow (a pump whose fault bit is forced stops). Default: no reaction.
        """
        return None


class Load:
    """A demand that holds a level for a random while, then jumps to a new one.

    Household power and water draw look like this: appliances and taps switch on and off.
    Holding times are exponential with mean ``mean_hold`` seconds.
    """

    def __init__(
        self, rng: random.Random, level: Callable[[random.Random], float], mean_hold: float
    ) -> None:
        self._rng = rng
        self._level = level
        self._mean_hold = mean_hold
        self.value = level(rng)
        self._left = rng.expovariate(1 / mean_hold)

    def advance(self, dt: float) -> float:
        """Move ``dt`` seconds forward; returns the integral of the level over them."""
        total = 0.0
        while dt > 0:
            step = min(dt, self._left)
            total += self.value * step
            dt -= step
            self._left -= step
            if self._left <= 0:
                self.value = self._level(self._rng)
                self._left = self._rng.expovariate(1 / self._mean_hold)
        return total


def approach(value: float, target: float, dt: float, tau: float) -> float:
    """First-order lag: ``value`` after ``dt`` seconds of heading to ``target``.

    Exact for a constant target, so it stays stable for any step.
    """
    return target + (value - target) * math.exp(-dt / tau)
