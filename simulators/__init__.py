"""Modbus protocol peers for every shipped device profile, for tests and demos.

Our own slave implementation (TCP with MBAP, RTU on a pty) so faults can be injected at
the byte level; behaviour models make the registers move believably. See README.md.
"""

from simulators.clock import Clock, ManualClock
from simulators.config import (
    DeviceEntry,
    EndpointConfig,
    RtuSettings,
    SimulatorConfig,
    TcpSettings,
    load_config,
    parse_config,
    quick_config,
)
from simulators.control import ControlError
from simulators.device import DeviceStats, SimDevice
from simulators.faults import Fault, FaultError, FaultKind
from simulators.simulator import ModbusSimulator, SimState

__all__ = [
    "Clock",
    "ControlError",
    "DeviceEntry",
    "DeviceStats",
    "EndpointConfig",
    "Fault",
    "FaultError",
    "FaultKind",
    "ManualClock",
    "ModbusSimulator",
    "RtuSettings",
    "SimDevice",
    "SimState",
    "SimulatorConfig",
    "TcpSettings",
    "load_config",
    "parse_config",
    "quick_config",
]
