"""Booster pump station (二次供水): two pumps lift water from a break tank to the building.

Running pumps hold the outlet pressure at the setpoint and draw the tank down by what the
building consumes; with no pump running the outlet falls back to the mains pressure. A
float valve refills the tank from the mains between two levels. Below a minimum level the
controller stops the pumps (dry-run protection) and raises ``low_water``.
"""

from __future__ import annotations

import random

from protocols.codec import Value
from simulators.models.base import Load, Model, approach

MAINS_MPA = 0.15  # what the city main gives without boosting
MAX_HEAD_MPA = 1.0  # the pumps cannot push beyond this whatever the setpoint
TANK_AREA_M2 = 4.0
TANK_HEIGHT_M = 3.5
REFILL_M3H = 30.0
REFILL_BELOW_M, REFILL_UNTIL_M = 2.0, 3.0
LOW_WATER_BELOW_M, LOW_WATER_CLEAR_M = 0.3, 0.6
RATED_AMPS = 18.0
PUMP_FLOW_M3H = 25.0  # one pump's duty flow


def _building_m3h(rng: random.Random) -> float:
    return rng.uniform(4, 24)


class PumpStation(Model):
    """pump-station: state in SI-ish units (MPa, m, m³/h)."""

    max_step = 0.5

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.enable = [True, False]
        self.fault = [False, False]
        self.setpoint = 0.45
        self.pressure = self.setpoint
        self.level = rng.uniform(2.4, 3.2)
        self.refilling = False
        self.low_water = False
        self.demand = Load(rng, _building_m3h, mean_hold=60)

    def running(self) -> list[bool]:
        """Which pumps turn: enabled, healthy, and with water to pump."""
        return [
            e and not f and not self.low_water for e, f in zip(self.enable, self.fault, strict=True)
        ]

    def advance(self, dt: float) -> None:
        served = self.demand.advance(dt) / 3600  # m³ the building wants over dt
        pumps = sum(self.running())
        if pumps:
            # a pump adds head to the mains; it can neither subtract nor exceed its curve
            target = min(max(self.setpoint, MAINS_MPA), MAX_HEAD_MPA)
            tau = 4.0 / pumps
            drawn = served
        else:
            # the bypass feeds the building from the mains; the tank is left alone
            target, tau, drawn = MAINS_MPA, 15.0, 0.0
        self.pressure = approach(self.pressure, target, dt, tau)
        if self.level < REFILL_BELOW_M:
            self.refilling = True
        elif self.level >= REFILL_UNTIL_M:
            self.refilling = False
        inflow = REFILL_M3H * dt / 3600 if self.refilling else 0.0
        self.level += (inflow - drawn) / TANK_AREA_M2
        self.level = min(max(self.level, 0.0), TANK_HEIGHT_M)
        if self.level < LOW_WATER_BELOW_M:
            self.low_water = True
        elif self.level > LOW_WATER_CLEAR_M:
            self.low_water = False

    def sample(self) -> dict[str, Value]:
        rng = self.rng
        running = self.running()
        share = self.demand.value / max(1, sum(running)) / PUMP_FLOW_M3H
        amps = [
            RATED_AMPS * (0.55 + 0.45 * min(share, 1.2)) + rng.gauss(0, 0.15) if on else 0.0
            for on in running
        ]
        return {
            "outlet_pressure": max(0.0, self.pressure + rng.gauss(0, 0.002)),
            "tank_level": max(0.0, self.level + rng.gauss(0, 0.002)),
            "motor_current_1": max(0.0, amps[0]),
            "motor_current_2": max(0.0, amps[1]),
            "pump1_running": running[0],
            "pump2_running": running[1],
            "pump1_fault": self.fault[0],
            "pump2_fault": self.fault[1],
            "low_water": self.low_water,
            "pump1_enable": self.enable[0],
            "pump2_enable": self.enable[1],
            "pressure_setpoint": self.setpoint,
        }

    def write(self, name: str, value: Value) -> None:
        if name == "pump1_enable":
            self.enable[0] = bool(value)
        elif name == "pump2_enable":
            self.enable[1] = bool(value)
        elif name == "pressure_setpoint":
            self.setpoint = float(value)

    def force(self, name: str, value: Value | None) -> None:
        # a tripped motor protection stops the pump, not only the bit
        if name in ("pump1_fault", "pump2_fault"):
            self.fault[int(name[4]) - 1] = bool(value)
