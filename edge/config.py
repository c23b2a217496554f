"""The edge agent's site configuration: one YAML file per gateway.

Parsed once into frozen models; anything wrong (unknown profile, a device on a bus that
does not exist, two devices on one unit address, a bad broker URL) is refused at start
with the file, the place and what is wrong. Secrets are never in the file: the broker
password comes from an environment variable or a file outside the repo.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from protocols.errors import ConfigError
from protocols.mqtt import ID_PATTERN
from protocols.profile import Profile, load_profiles, read_yaml, validate
from protocols.registers import Read, plan_reads

Ident = Annotated[str, Field(pattern=ID_PATTERN)]
Seconds = Annotated[float, Field(gt=0)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BrokerConfig(_Frozen):
    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password_env: str | None = None  # name of the environment variable holding it
    password_file: Path | None = None
    keepalive: Annotated[int, Field(ge=2, le=600)] = 5
    client_id: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        u = urlsplit(v)
        if u.scheme not in ("mqtt", "tcp") or not u.hostname:
            raise ValueError("broker url must look like mqtt://host:port")
        return v

    @property
    def host(self) -> str:
        host = urlsplit(self.url).hostname
        assert host is not None
        return host

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 1883

    def password(self) -> str | None:
        """The password from its environment variable or file; ConfigError if missing."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError("environment", self.password_env, "variable is not set")
            return value
        if self.password_file:
            try:
                return self.password_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(str(self.password_file), "", exc.strerror or "") from exc
        return None


class OutboxConfig(_Frozen):
    path: Path = Path("var/outbox.db")
    commit_interval: Annotated[float, Field(gt=0, le=60)] = 1.0
    max_mb: Annotated[float, Field(gt=0)] = 256
    window: Annotated[int, Field(ge=1, le=65535)] = 100  # QoS 1 messages in flight
    replay_rate: Annotated[float, Field(gt=0)] = 2000  # messages/s while catching up
    # how long the hub's highest seq may stand still below what the broker took before the
    # tail is sent again, and how soon a gap the hub reports is sent again
    resend_after: Annotated[float, Field(gt=0, le=3600)] = 30.0


class _Bus(_Frozen):
    name: Ident
    max_gap: Annotated[int, Field(ge=0, le=120)] = 8  # registers bridged to merge reads


class TcpBus(_Bus):
    type: Literal["tcp"]
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 502


class RtuBus(_Bus):
    type: Literal["rtu"]
    port: str  # /dev/ttyUSB0, or a pseudo-terminal
    baudrate: Annotated[int, Field(ge=300, le=921600)] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8

    @property
    def char_time(self) -> float:
        return 11 / self.baudrate

    @property
    def frame_gap(self) -> float:
        """t3.5: the silence that ends a frame (fixed 1.75 ms above 19200 baud)."""
        return 3.5 * self.char_time if self.baudrate <= 19200 else 0.00175


Bus = Annotated[TcpBus | RtuBus, Field(discriminator="type")]


class Report(_Frozen):
    """Report by exception: publish a point only when it moved, or stayed silent too long."""

    deadband: Annotated[float, Field(ge=0)] = 0.0
    max_silence: Seconds = 300.0


class DeviceConfig(_Frozen):
    id: Ident
    bus: Ident
    unit: Annotated[int, Field(ge=0, le=247)]
    profile: str
    interval: Seconds = 5.0
    timeout: Annotated[float, Field(gt=0, le=30)] = 0.5
    retries: Annotated[int, Field(ge=0, le=5)] = 1
    backoff_max: Seconds = 60.0  # quarantine ceiling for a device that stopped answering
    report: Report | None = None


class LaneConfig(_Frozen):
    """One barrier gate: its controller's serial line, and what identifies vehicles there."""

    gate: Ident
    direction: Literal["in", "out"]
    port: str  # the gate controller's serial port (RS-485 adapter, or a pseudo-terminal)
    address: Annotated[int, Field(ge=1, le=254)] = 1
    baudrate: Annotated[int, Field(ge=1200, le=115200)] = 9600
    reader: str | None = None  # the IC-card reader's serial port, if the lane has one
    camera: Ident | None = None  # the id of the plate camera watching this lane


class ParkingConfig(_Frozen):
    lot: Ident
    camera_host: str = "0.0.0.0"
    camera_port: Annotated[int, Field(ge=0, le=65535)] = 8088
    min_confidence: Annotated[int, Field(ge=0, le=100)] = 80  # below: ignored, counted
    repeat_s: Annotated[float, Field(ge=0, le=300)] = 10.0  # one vehicle, several reads
    booth_host: str = "127.0.0.1"
    booth_port: Annotated[int, Field(ge=0, le=65535)] | None = None  # the booth's HTTP, if any
    lanes: Annotated[tuple[LaneConfig, ...], Field(min_length=1)]

    @field_validator("lanes")
    @classmethod
    def _distinct(cls, lanes: tuple[LaneConfig, ...]) -> tuple[LaneConfig, ...]:
        for what in ("gate", "port", "camera", "reader"):
            values = [getattr(lane, what) for lane in lanes if getattr(lane, what) is not None]
            if len(values) != len(set(values)):
                raise ValueError(f"two lanes share a {what}")
        return lanes


class SiteConfig(_Frozen):
    site: Ident
    gateway: Ident
    broker: BrokerConfig = BrokerConfig()
    outbox: OutboxConfig = OutboxConfig()
    metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    status_interval: Seconds = 10.0
    buses: tuple[Bus, ...] = ()
    devices: tuple[DeviceConfig, ...] = ()
    parking: ParkingConfig | None = None


class Site:
    """A checked site config with its profiles resolved and read plans computed."""

    def __init__(self, cfg: SiteConfig, profiles: dict[str, Profile], source: str) -> None:
        self.cfg = cfg
        self.source = source
        self.profiles = profiles
        buses = {b.name: b for b in cfg.buses}
        if len(buses) != len(cfg.buses):
            raise ConfigError(source, "buses", "two buses share a name")
        seen: dict[str, int] = {}
        units: set[tuple[str, int]] = set()
        for i, d in enumerate(cfg.devices):
            where = f"devices[{i}]"
            if d.id in seen:
                raise ConfigError(source, f"{where}.id", f"{d.id!r} is also devices[{seen[d.id]}]")
            seen[d.id] = i
            if d.bus not in buses:
                raise ConfigError(source, f"{where}.bus", f"no bus named {d.bus!r}")
            if d.profile not in profiles:
                known = ", ".join(sorted(profiles))
                raise ConfigError(
                    source, f"{where}.profile", f"unknown profile {d.profile!r} (known: {known})"
                )
            if (d.bus, d.unit) in units:
                raise ConfigError(source, f"{where}.unit", f"unit {d.unit} is taken on {d.bus}")
            units.add((d.bus, d.unit))
            if d.unit == 0 and isinstance(buses[d.bus], RtuBus):
                raise ConfigError(source, f"{where}.unit", "unit 0 is broadcast on RTU")
        self.buses = buses

    def profile_of(self, device: DeviceConfig) -> Profile:
        return self.profiles[device.profile]

    def reads_of(self, device: DeviceConfig) -> list[Read]:
        return self._plans[device.id]

    @cached_property
    def _plans(self) -> dict[str, list[Read]]:
        return {
            d.id: plan_reads([p.span for p in self.profile_of(d).points], self.buses[d.bus].max_gap)
            for d in self.cfg.devices
        }


def load_site(path: Path, profile_dirs: tuple[Path, ...] = ()) -> Site:
    """Parse and check a site config; ConfigError names the file and place of a problem."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(str(path), "", "a site config must be a mapping")
    extra_dirs = [Path(d) for d in data.pop("profile_dirs", [])] if "profile_dirs" in data else []
    cfg = validate(SiteConfig, data, str(path), "a site config")
    dirs = (*profile_dirs, *[d if d.is_absolute() else path.parent / d for d in extra_dirs])
    return Site(cfg, load_profiles(*dirs), str(path))
