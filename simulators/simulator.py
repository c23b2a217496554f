"""ModbusSimulator: every endpoint and device of a config, started in the current loop.

async with ModbusSimulator(quick_config(tcp="127.0.0.1:0", devices=["em-3p:1"])) as sim:
    port = sim.tcp_port()
    sim.device("em-3p-1").set_fault(Fault(FaultKind.SILENT))
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from enum import StrEnum
from types import TracebackType
from typing import Any, Self, TypeVar

from protocols.profile import Profile, load_profiles
from simulators.clock import Clock
from simulators.config import SimulatorConfig, expand
from simulators.control import ControlServer
from simulators.device import SimDevice
from simulators.models import make_model
from simulators.rtu_link import RtuEndpoint
from simulators.tcp import TcpEndpoint

_E = TypeVar("_E", TcpEndpoint, RtuEndpoint)


class SimState(StrEnum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class ModbusSimulator:
    """Modbus slaves for every device of ``config``, behind TCP ports and RTU ptys.

    Devices are built at construction (so tests may inspect them before starting);
    endpoints listen only inside ``async with``. ``clock`` drives every model (default
    ``time.monotonic``; pass a :class:`~simulators.clock.ManualClock` to control time).
    Raises ConfigError for an unknown profile or a clash of units or ids.
    """

    def __init__(
        self,
        config: SimulatorConfig,
        *,
        clock: Clock = time.monotonic,
        profiles: Mapping[str, Profile] | None = None,
        source: str = "config",
    ) -> None:
        self.config = config
        self.state = SimState.NEW
        if profiles is None:
            extra = (config.profiles_dir,) if config.profiles_dir is not None else ()
            profiles = load_profiles(*extra)
        self._devices: dict[str, SimDevice] = {}
        by_endpoint: dict[str, dict[int, SimDevice]] = {e.name: {} for e in config.endpoints}
        for spec in expand(config, profiles, source):
            profile = profiles[spec.profile]
            rng = random.Random(f"{config.seed}/{spec.id}")
            model = make_model(profile, rng)
            device = SimDevice(spec.id, spec.unit, profile, model, clock, rng, spec.endpoint)
            self._devices[spec.id] = device
            by_endpoint[spec.endpoint][spec.unit] = device
        self._endpoints: dict[str, TcpEndpoint | RtuEndpoint] = {}
        for e in config.endpoints:
            units = by_endpoint[e.name]
            if e.tcp is not None:
                latency = e.tcp.latency_ms / 1000
                tcp = TcpEndpoint(e.name, units, e.tcp.host, e.tcp.port, latency, config.seed)
                self._endpoints[e.name] = tcp
            elif e.rtu is not None:
                turnaround = e.rtu.turnaround_ms / 1000
                rtu = RtuEndpoint(e.name, units, e.rtu.link, e.rtu.baud, turnaround)
                self._endpoints[e.name] = rtu
        self._control: ControlServer | None = None
        if config.control is not None:
            c = config.control
            self._control = ControlServer(self._devices, self.info, c.host, c.port)
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Self:
        """Start every endpoint; on any failure, close what already started and re-raise."""
        if self.state is not SimState.NEW:
            raise RuntimeError(f"a simulator starts once; this one is {self.state}")
        async with AsyncExitStack() as stack:
            for endpoint in self._endpoints.values():
                await endpoint.start()
                stack.push_async_callback(endpoint.close)
            if self._control is not None:
                await self._control.start()
                stack.push_async_callback(self._control.close)
            self._stack = stack.pop_all()
        self.state = SimState.RUNNING
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop listening, close ptys and remove their links; idempotent."""
        await self._stack.aclose()
        self.state = SimState.STOPPED

    @property
    def devices(self) -> Mapping[str, SimDevice]:
        return self._devices

    def device(self, device_id: str) -> SimDevice:
        """The device called ``device_id``; KeyError if there is none."""
        return self._devices[device_id]

    def tcp_port(self, endpoint: str | None = None) -> int:
        """Bound port of TCP endpoint ``endpoint`` (default: the only one); KeyError if none."""
        return self._pick(TcpEndpoint, endpoint).port

    def rtu_path(self, endpoint: str | None = None) -> str:
        """The pty (``/dev/pts/N``) of RTU endpoint ``endpoint`` (default: the only one)."""
        return self._pick(RtuEndpoint, endpoint).path

    def endpoint(self, name: str) -> TcpEndpoint | RtuEndpoint:
        """The endpoint called ``name`` (for its stats); KeyError if none."""
        return self._endpoints[name]

    def _pick(self, kind: type[_E], name: str | None) -> _E:
        found = {n: e for n, e in self._endpoints.items() if isinstance(e, kind)}
        if name is not None:
            return found[name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} {kind.__name__}s: name the one you want")
        return next(iter(found.values()))

    @property
    def control_address(self) -> str | None:
        """``host:port`` of the control endpoint, or None without one."""
        if self._control is None:
            return None
        return f"{self._control.host}:{self._control.port}"

    def info(self) -> dict[str, Any]:
        """The READY document: where everything listens and which unit each device has."""
        endpoints = [self.endpoint(e.name).info() for e in self.config.endpoints]
        return {"pid": os.getpid(), "control": self.control_address, "endpoints": endpoints}
