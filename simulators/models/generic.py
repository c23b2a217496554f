"""Fallback for profiles without a dedicated model: plausible, boring values."""

from __future__ import annotations

import random

from protocols.codec import Value
from protocols.profile import PointKind, Profile
from protocols.registers import DataType
from simulators.models.base import Model


class GenericModel(Model):
    """Counters rise by one scale step a minute, measurements sit at 100 steps, statuses at 0."""

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        super().__init__(rng)
        self.profile = profile
        self.elapsed = 0.0

    def advance(self, dt: float) -> None:
        self.elapsed += dt

    def sample(self) -> dict[str, Value]:
        out: dict[str, Value] = {}
        for p in self.profile.points:
            if p.type in (DataType.BOOL, DataType.BIT):
                out[p.name] = False
            elif p.kind is PointKind.COUNTER:
                out[p.name] = p.offset + p.scale * int(self.elapsed // 60)
            elif p.kind is PointKind.MEASUREMENT:
                out[p.name] = p.offset + p.scale * 100
            else:
                out[p.name] = p.offset
        return out
