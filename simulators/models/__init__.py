"""Behaviour models, one per shipped profile; :func:`make_model` picks the right one."""

from __future__ import annotations

import random
from collections.abc import Callable

from protocols.profile import Profile
from simulators.models.base import Load, Model, approach
from simulators.models.generic import GenericModel
from simulators.models.lift import Lift
from simulators.models.meters import SinglePhaseMeter, ThreePhaseMeter, WaterMeter
from simulators.models.pump import PumpStation

__all__ = [
    "MODELS",
    "GenericModel",
    "Lift",
    "Load",
    "Model",
    "PumpStation",
    "SinglePhaseMeter",
    "ThreePhaseMeter",
    "WaterMeter",
    "approach",
    "make_model",
]

MODELS: dict[str, Callable[[random.Random], Model]] = {
    "em-1p": SinglePhaseMeter,
    "em-3p": ThreePhaseMeter,
    "water-meter": WaterMeter,
    "pump-station": PumpStation,
    "lift": Lift,
}


def make_model(profile: Profile, rng: random.Random) -> Model:
    """The model for ``profile``; a :class:`GenericModel` for profiles without one."""
    factory = MODELS.get(profile.name)
    return factory(rng) if factory is not None else GenericModel(profile, rng)
