"""Device profiles: what a kind of device offers, as data.

A profile is a YAML file (``protocols/profiles/*.yaml``) listing points: where each lives
(register table and address), how it is encoded (type, byte and word order), what it means
(scale, offset, unit) and what it is for (a billing-grade counter, a measurement, a status).
It is parsed once into frozen models; impossible combinations are refused here with the
file and the place, so nothing downstream ever sees a raw dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from protocols.errors import ConfigError
from protocols.registers import DataType, Order, Span, Table, scale_decimals

PROFILE_SCHEMA = "wuye.profile/1"
PROFILES_DIR = Path(__file__).parent / "profiles"
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]


class PointKind(StrEnum):
    COUNTER = "counter"  # billing-grade cumulative reading: never dropped, synced at once
    MEASUREMENT = "measurement"  # instantaneous value: voltage, pressure, level
    STATUS = "status"  # state or fault: door open, running, fault code, alarm bit


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class Point(_Frozen):
    name: Name
    table: Table
    address: Annotated[int, Field(ge=0, le=65535)]
    type: DataType
    bit: Annotated[int, Field(ge=0, le=15)] | None = None
    byte_order: Order = Order.BIG
    word_order: Order = Order.BIG
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    kind: PointKind = PointKind.MEASUREMENT
    writable: bool = False
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Point:
        if self.table.is_bits != (self.type is DataType.BOOL):
            raise ValueError(
                f"type {self.type} does not fit table {self.table}: coil and discrete "
                "tables hold bool points, register tables hold numbers and bits"
            )
        if (self.type is DataType.BIT) != (self.bit is not None):
            raise ValueError("'bit' is required for type bit and allowed only there")
        if self.address + self.type.width - 1 > 65535:
            raise ValueError(f"{self.type} at {self.address} runs past register 65535")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.type in (DataType.BOOL, DataType.BIT) and (self.scale != 1 or self.offset):
            raise ValueError("bool and bit points cannot be scaled")
        if self.writable and self.table in (Table.INPUT, Table.DISCRETE):
            raise ValueError(f"the {self.table} table is read-only")
        if self.kind is PointKind.COUNTER and self.type in (DataType.BOOL, DataType.BIT):
            raise ValueError("a counter must be numeric")
        return self

    @property
    def span(self) -> Span:
        return Span(self.table, self.address, self.type.width)

    @cached_property
    def decimals(self) -> int:
        return max(scale_decimals(self.scale), scale_decimals(self.offset))


class Profile(_Frozen):
    schema_: Literal["wuye.profile/1"] = Field(alias="schema")
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
    description: str = ""
    points: tuple[Point, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _no_clashes(self) -> Profile:
        seen: set[str] = set()
        for p in self.points:
            if p.name in seen:
                raise ValueError(f"point name {p.name!r} appears twice")
            seen.add(p.name)
        taken: dict[tuple[Table, int], Point] = {}
        for p in self.points:
            for addr in range(p.address, p.address + p.type.width):
                other = taken.get((p.table, addr))
                if other is None:
                    taken[(p.table, addr)] = p
                elif not _distinct_bits(p, other):
                    raise ValueError(
                        f"points {other.name!r} and {p.name!r} overlap at {p.table} register {addr}"
                    )
        return self

    def point(self, name: str) -> Point:
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(name)


def _distinct_bits(a: Point, b: Point) -> bool:
    """Two bit points may share a register (alarm words), as long as the bits differ."""
    return a.type is DataType.BIT and b.type is DataType.BIT and a.bit != b.bit


def _place(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def validation_error(source: str, exc: ValidationError) -> ConfigError:
    """The first problem of a pydantic error, as a ConfigError naming file and place."""
    err = exc.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        msg = "required field is missing"
    elif err["type"] == "extra_forbidden":
        msg = "unknown field"
    return ConfigError(source, _place(err["loc"]), msg)


def read_yaml(path: Path) -> Any:
    """YAML document of ``path``; ConfigError if it is unreadable or not YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        place = f"line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(str(path), place, f"not valid YAML: {exc}") from exc


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any, source: str, what: str) -> M:
    """``data`` (parsed YAML) as ``model``; ConfigError naming ``source`` and the place."""
    if not isinstance(data, Mapping):
        raise ConfigError(source, "", f"{what} must be a mapping")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(source, exc) from exc


def parse_profile(data: Any, source: str) -> Profile:
    return validate(Profile, data, source, "a profile")


def load_profile(path: Path) -> Profile:
    profile = parse_profile(read_yaml(path), str(path))
    if profile.name != path.stem:
        raise ConfigError(str(path), "name", f"{profile.name!r} must match the file name")
    return profile


def load_profiles(*dirs: Path) -> dict[str, Profile]:
    """Every ``*.yaml`` profile of the shipped directory and of ``dirs``; later ones win."""
    found: dict[str, Profile] = {}
    for d in (PROFILES_DIR, *dirs):
        for path in sorted(d.glob("*.yaml")):
            found[path.stem] = load_profile(path)
    return found
