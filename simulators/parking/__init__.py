"""Parking devices for tests and demos: a barrier-gate controller and an IC-card reader on
pseudo-terminals, and a plate camera that pushes recognitions over HTTP.

Wire formats: protocols/parking/ and protocols/PARKING-DEVICES.md.
"""

from simulators.parking.barrier import BarrierModel
from simulators.parking.camera import PlateCamera, PushResult, misread
from simulators.parking.gate import GateSimStats, GateSimulator, LineFault
from simulators.parking.reader import CardReaderSimulator

__all__ = [
    "BarrierModel",
    "CardReaderSimulator",
    "GateSimStats",
    "GateSimulator",
    "LineFault",
    "PlateCamera",
    "PushResult",
    "misread",
]
