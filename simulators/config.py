"""Simulator configuration: endpoints (TCP ports, RTU ptys) and the devices behind each.

Parsed once into frozen models; mistakes are refused with the file and the place. The
same models come from the command line's quick form (:func:`quick_config`).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocols.errors import ConfigError
from protocols.mqtt import ID_PATTERN
from protocols.profile import Profile, read_yaml, validate

CONFIG_SCHEMA: Literal["wuye.simulator/1"] = "wuye.simulator/1"
DEFAULT_CONTROL = "127.0.0.1:5030"
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
Port = Annotated[int, Field(ge=0, le=65535)]  # 0 asks the OS for a free port
_UNITS = re.compile(r"^(\d+)(?:-(\d+))?$")
_ID = re.compile(ID_PATTERN)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TcpSettings(_Frozen):
    host: str = "127.0.0.1"
    port: Port = 5020
    latency_ms: Annotated[float, Field(ge=0, le=60_000)] = 0.0  # replies are immediate by default


class RtuSettings(_Frozen):
    link: Path | None = None  # a symlink to the pty, for clients that want a stable path
    baud: Annotated[int, Field(ge=300, le=921_600)] | None = None  # None: no wire-time delay
    turnaround_ms: Annotated[float, Field(ge=0, le=10_000)] = 10.0


class DeviceEntry(_Frozen):
    """One device, or a run of them: ``unit: 7`` or ``unit: "1-100"``.

    ``id`` is a template that may use ``{unit}`` (with a format spec: ``em-1{unit:02d}``)
    and ``{profile}``; it must use ``{unit}`` for a run. The default is ``{profile}-{unit}``.
    """

    profile: str
    unit: int | str
    id: str = "{profile}-{unit}"

    def units(self) -> range:
        """Unit ids of the entry; ValueError if malformed or outside 1..247."""
        text = str(self.unit)
        match = _UNITS.match(text)
        if not match:
            raise ValueError(f"unit {text!r} is not N or N-M")
        first = int(match[1])
        last = int(match[2]) if match[2] else first
        if not 1 <= first <= last <= 247:
            raise ValueError(f"units {text!r} must lie in 1..247, first <= last")
        return range(first, last + 1)

    @model_validator(mode="after")
    def _check(self) -> DeviceEntry:
        units = self.units()
        fields = {name for _, name, _, _ in string.Formatter().parse(self.id) if name is not None}
        if not fields <= {"unit", "profile"}:
            raise ValueError(f"an id may use {{unit}} and {{profile}}, not {sorted(fields)}")
        if len(units) > 1 and "unit" not in fields:
            raise ValueError("an id for a run of units must contain {unit}")
        try:
            self.id.format(unit=units[0], profile=self.profile)
        except (ValueError, IndexError) as exc:
            raise ValueError(f"id template {self.id!r}: {exc}") from exc
        return self


class EndpointConfig(_Frozen):
    name: Name
    tcp: TcpSettings | None = None
    rtu: RtuSettings | None = None
    devices: tuple[DeviceEntry, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_transport(self) -> EndpointConfig:
        if (self.tcp is None) == (self.rtu is None):
            raise ValueError("give exactly one of 'tcp' and 'rtu'")
        return self


class ControlSettings(_Frozen):
    host: str = "127.0.0.1"
    port: Port = 5030


class SimulatorConfig(_Frozen):
    schema_: Literal["wuye.simulator/1"] = Field(default=CONFIG_SCHEMA, alias="schema")
    seed: int = 0  # same seed, same devices: initial counters, loads, noise
    control: ControlSettings | None = None  # None: no control endpoint
    profiles_dir: Path | None = None  # extra profiles beside the shipped ones
    endpoints: tuple[EndpointConfig, ...] = Field(min_length=1)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @field_validator("endpoints")
    @classmethod
    def _unique_names(cls, endpoints: tuple[EndpointConfig, ...]) -> tuple[EndpointConfig, ...]:
        names = [e.name for e in endpoints]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"endpoint name {name!r} appears twice")
        return endpoints


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One device after expanding runs: what to build and where to attach it."""

    id: str
    profile: str
    unit: int
    endpoint: str


def expand(
    config: SimulatorConfig, profiles: Mapping[str, Profile], source: str
) -> list[DeviceSpec]:
    """Every device of ``config``; ConfigError (naming ``source`` and the place) for an
    unknown profile, a unit used twice on one endpoint, or an id used twice or malformed.
    """
    specs: list[DeviceSpec] = []
    seen: dict[str, str] = {}
    for i, endpoint in enumerate(config.endpoints):
        units: set[int] = set()
        for j, entry in enumerate(endpoint.devices):
            place = f"endpoints[{i}].devices[{j}]"
            if entry.profile not in profiles:
                known = ", ".join(sorted(profiles))
                raise ConfigError(source, f"{place}.profile", f"unknown profile; one of {known}")
            for unit in entry.units():
                if unit in units:
                    raise ConfigError(source, f"{place}.unit", f"unit {unit} is used twice")
                units.add(unit)
                device_id = entry.id.format(unit=unit, profile=entry.profile)
                if not _ID.match(device_id):
                    raise ConfigError(
                        source, f"{place}.id", f"{device_id!r} must match {ID_PATTERN}"
                    )
                if device_id in seen:
                    raise ConfigError(
                        source, f"{place}.id", f"{device_id!r} is also at {seen[device_id]}"
                    )
                seen[device_id] = place
                specs.append(DeviceSpec(device_id, entry.profile, unit, endpoint.name))
    return specs


def parse_config(data: Any, source: str) -> SimulatorConfig:
    """A validated config from parsed YAML/JSON; ConfigError naming ``source`` and the place."""
    return validate(SimulatorConfig, data, source, "a simulator config")


def load_config(path: Path) -> SimulatorConfig:
    """The config in YAML file ``path``; ConfigError if unreadable or invalid.

    A relative ``profiles_dir`` is taken relative to the file, not to the working directory.
    """
    config = parse_config(read_yaml(path), str(path))
    if config.profiles_dir is not None and not config.profiles_dir.is_absolute():
        config = config.model_copy(update={"profiles_dir": path.parent / config.profiles_dir})
    return config


def parse_address(text: str, what: str) -> tuple[str, int]:
    """``host:port`` split; ConfigError if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError("command line", what, f"{text!r} is not HOST:PORT")
    return host, int(port)


def quick_config(
    *,
    devices: Sequence[str],
    tcp: str | None = None,
    rtu: str | Path | bool | None = None,
    baud: int | None = None,
    seed: int = 0,
    control: str | None = None,
) -> SimulatorConfig:
    """A one-endpoint config from the command line's short form.

    ``devices`` are ``PROFILE:UNITS`` words (``em-1p:1-100``, ``lift:7``); ``tcp`` is
    ``HOST:PORT``; ``rtu`` is the symlink path for the pty, or True for a pty without
    one. ``control`` is ``HOST:PORT`` of the control endpoint (None: none). Exactly one
    of ``tcp`` and ``rtu``; ConfigError otherwise or for a malformed word.
    """
    if (tcp is None) == (rtu is None or rtu is False):
        raise ConfigError("command line", "", "give exactly one of --tcp and --rtu (or --config)")
    if tcp is not None and baud is not None:
        raise ConfigError("command line", "--baud", "a baud rate is for --rtu only")
    entries = []
    for word in devices:
        profile, sep, units = word.partition(":")
        if not sep:
            raise ConfigError("command line", "--device", f"{word!r} is not PROFILE:UNITS")
        entries.append({"profile": profile, "unit": units})
    endpoint: dict[str, Any] = {"devices": entries}
    if tcp is not None:
        host, port = parse_address(tcp, "--tcp")
        endpoint |= {"name": "tcp0", "tcp": {"host": host, "port": port}}
    else:
        link = None if rtu is True else str(rtu)
        endpoint |= {"name": "rtu0", "rtu": {"link": link, "baud": baud}}
    data: dict[str, Any] = {"seed": seed, "endpoints": [endpoint]}
    if control is not None:
        host, port = parse_address(control, "--control")
        data["control"] = {"host": host, "port": port}
    return parse_config(data, "command line")
