"""Electricity and water meters: counters that only rise, driven by a fluctuating demand."""

from __future__ import annotations

import random

from protocols.codec import Value
from simulators.models.base import Load, Model

_JOULES_PER_KWH = 3.6e6


def _household_watts(rng: random.Random) -> float:
    # mostly standby and lights, sometimes a kettle, an air conditioner or a cooker
    return rng.uniform(60, 400) if rng.random() < 0.6 else rng.uniform(400, 3500)


class SinglePhaseMeter(Model):
    """em-1p: a flat on 220 V; energy integrates the simulated power exactly."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.energy_kwh = rng.uniform(300, 20_000)
        self.nominal_v = rng.uniform(216, 226)  # each flat sits somewhere on the feeder
        self.load = Load(rng, _household_watts, mean_hold=120)

    def advance(self, dt: float) -> None:
        self.energy_kwh += self.load.advance(dt) / _JOULES_PER_KWH

    def sample(self) -> dict[str, Value]:
        rng = self.rng
        volts = self.nominal_v + rng.gauss(0, 0.8)
        watts = self.load.value * (1 + rng.gauss(0, 0.004))
        power_factor = 0.93
        return {
            "voltage": volts,
            "current": watts / (volts * power_factor),
            "active_power": watts,
            "frequency": 50 + rng.gauss(0, 0.01),
            "energy_import": self.energy_kwh,
        }


def _building_kw(rng: random.Random) -> float:
    # a pump room, a lift or a shop: a base load with motors starting and stopping
    return rng.uniform(1.5, 6) if rng.random() < 0.5 else rng.uniform(6, 40)


class ThreePhaseMeter(Model):
    """em-3p: 220 V phases, slightly unbalanced; import and export energy counters."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.import_kwh = rng.uniform(1_000, 400_000)
        self.export_kwh = rng.uniform(0, 200)
        self.phase_v = [rng.uniform(217, 228) for _ in range(3)]
        self.share = [rng.uniform(0.28, 0.38) for _ in range(3)]
        self.load = Load(rng, _building_kw, mean_hold=180)
        # a lift regenerates a little while braking: export rises too, slowly
        self.regen = Load(rng, lambda r: 0.0 if r.random() < 0.8 else r.uniform(0.2, 2), 60)
        self.power_factor = rng.uniform(0.85, 0.96)

    def advance(self, dt: float) -> None:
        self.import_kwh += self.load.advance(dt) / 3600
        self.export_kwh += self.regen.advance(dt) / 3600

    def sample(self) -> dict[str, Value]:
        rng = self.rng
        kw = self.load.value * (1 + rng.gauss(0, 0.004))
        total_share = sum(self.share)
        pf = min(1.0, self.power_factor + rng.gauss(0, 0.003))
        out: dict[str, Value] = {}
        for phase, nominal, share in zip("abc", self.phase_v, self.share, strict=True):
            volts = nominal + rng.gauss(0, 0.8)
            out[f"voltage_{phase}"] = volts
            out[f"current_{phase}"] = kw * 1000 * share / total_share / (volts * pf)
        out |= {
            "active_power": kw,
            "power_factor": pf,
            "energy_import": self.import_kwh,
            "energy_export": self.export_kwh,
        }
        return out


def _tap_flow(rng: random.Random) -> float:
    # m³/h: mostly nobody draws water; then a tap, a shower or a washing machine
    return 0.0 if rng.random() < 0.55 else rng.uniform(0.1, 1.8)


class WaterMeter(Model):
    """water-meter: volume integrates the flow; the battery sags over the years."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.volume_m3 = rng.uniform(20, 3_000)
        self.flow = Load(rng, _tap_flow, mean_hold=90)
        self.battery_v = rng.uniform(3.45, 3.65)
        self.valve_open = True

    def advance(self, dt: float) -> None:
        drawn = self.flow.advance(dt) / 3600
        if self.valve_open:
            self.volume_m3 += drawn
        self.battery_v -= dt * 1e-8  # about 0.3 V a year

    def sample(self) -> dict[str, Value]:
        battery = self.battery_v + self.rng.gauss(0, 0.004)
        return {
            "volume": self.volume_m3,
            "flow_rate": self.flow.value if self.valve_open else 0.0,
            "valve_open": self.valve_open,
            "battery_low": battery < 3.3,
            "battery_voltage": battery,
        }
