"""Passenger lift: waits, is called to a floor, travels floor by floor, opens and closes.

Event-driven: ``advance`` walks through as many phases as the step spans, so a lift left
unread for an hour catches up exactly. Floors skip 0 (floor 1 is the ground floor and
basements are -1, -2), as in Chinese buildings.
"""

from __future__ import annotations

import random
from enum import IntEnum

from protocols.codec import Value
from simulators.models.base import Model

START_S = 1.5  # accelerating out of a floor
HOP_S = 2.0  # one floor at rated speed
OPENING_S, CLOSING_S = 2.0, 3.0


class Direction(IntEnum):
    STOPPED = 0
    UP = 1
    DOWN = 2


class Door(IntEnum):
    CLOSED = 0
    OPENING = 1
    OPEN = 2
    CLOSING = 3


class Lift(Model):
    """lift: one car; ``trips`` counts arrivals after a journey."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        basements = rng.choice((0, 1, 2))
        top = rng.randint(6, 32)
        self.floors = [f for f in range(-basements, top + 1) if f != 0]
        self.index = self.floors.index(1)
        self.target = self.index
        self.direction = Direction.STOPPED
        self.door = Door.CLOSED
        self.trips = rng.randint(10_000, 900_000)
        self._left = self._idle_time()

    @property
    def floor(self) -> int:
        return self.floors[self.index]

    def _idle_time(self) -> float:
        return self.rng.expovariate(1 / 20)

    def advance(self, dt: float) -> None:
        while dt > 0:
            step = min(dt, self._left)
            dt -= step
            self._left -= step
            if self._left <= 0:
                self._next_phase()

    def _next_phase(self) -> None:
        if self.direction is not Direction.STOPPED:
            self.index += 1 if self.direction is Direction.UP else -1
            if self.index == self.target:
                self.direction = Direction.STOPPED
                self.trips += 1
                self.door, self._left = Door.OPENING, OPENING_S
            else:
                self._left = HOP_S
        elif self.door is Door.OPENING:
            self.door, self._left = Door.OPEN, self.rng.uniform(4, 9)
        elif self.door is Door.OPEN:
            self.door, self._left = Door.CLOSING, CLOSING_S
        elif self.door is Door.CLOSING:
            self.door, self._left = Door.CLOSED, self._idle_time()
        else:  # idle with doors closed: a call comes in from another floor
            self.target = self.rng.choice([i for i in range(len(self.floors)) if i != self.index])
            self.direction = Direction.UP if self.target > self.index else Direction.DOWN
            self._left = START_S + HOP_S

    def sample(self) -> dict[str, Value]:
        return {
            "floor": self.floor,
            "direction": int(self.direction),
            "door_state": int(self.door),
            "running": self.direction is not Direction.STOPPED,
            "in_service": True,
            "fault_code": 0,
            "emergency_stop": False,
            "door_lock_fault": False,
            "overspeed": False,
            "trapped": False,
            "trips": self.trips,
        }
