"""Faults a simulated device can be switched into at run time. Pure values, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from protocols.errors import WuyeError

CLEAR = "clear"


class FaultError(WuyeError, ValueError):
    """A fault request that is malformed or cannot apply to the device."""


class FaultKind(StrEnum):
    SILENT = "silent"  # no reply at all: the master times out
    EXCEPTION = "exception"  # every request answered with exception ``code``
    GARBAGE = "garbage"  # random bytes instead of a frame
    BAD_CRC = "bad_crc"  # RTU: the right frame with a wrong CRC; TCP: like garbage
    STUCK = "stuck"  # the registers freeze; the device keeps answering
    OUT_OF_RANGE = "out_of_range"  # ``point`` (or the first measurement) reads absurdly


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault; ``code`` only for EXCEPTION, ``point`` only for OUT_OF_RANGE."""

    kind: FaultKind
    code: int | None = None
    point: str | None = None

    def __post_init__(self) -> None:
        if self.kind is FaultKind.EXCEPTION:
            if self.code is None:
                object.__setattr__(self, "code", 4)  # server device failure
            elif not 1 <= self.code <= 0x7F:
                raise FaultError(f"exception code {self.code} is not 1..127")
        elif self.code is not None:
            raise FaultError(f"a {self.kind} fault takes no exception code")
        if self.point is not None and self.kind is not FaultKind.OUT_OF_RANGE:
            raise FaultError(f"a {self.kind} fault takes no point")

    @classmethod
    def parse(cls, kind: str, arg: str | None = None) -> Fault | None:
        """Fault from command-line words (``exception 2``, ``out_of_range tank_level``).

        Returns None for ``clear``; raises FaultError for an unknown kind or a bad argument.
        """
        if kind == CLEAR:
            if arg is not None:
                raise FaultError("clear takes no argument")
            return None
        try:
            fault_kind = FaultKind(kind)
        except ValueError as exc:
            kinds = ", ".join([*FaultKind, CLEAR])
            raise FaultError(f"unknown fault {kind!r}; one of {kinds}") from exc
        if fault_kind is FaultKind.EXCEPTION and arg is not None:
            try:
                return cls(fault_kind, code=int(arg, 0))
            except ValueError as exc:
                raise FaultError(f"exception code {arg!r} is not a number") from exc
        if fault_kind is FaultKind.OUT_OF_RANGE:
            return cls(fault_kind, point=arg)
        if arg is not None:
            raise FaultError(f"a {kind} fault takes no argument")
        return cls(fault_kind)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault | None:
        """Fault from ``{"kind": ..., "code"?: int, "point"?: str}``; None for clear."""
        kind = data.get("kind")
        if not isinstance(kind, str):
            raise FaultError("'kind' must be a string")
        if kind == CLEAR:
            return None
        unknown = set(data) - {"kind", "code", "point"}
        if unknown:
            raise FaultError(f"unknown fields {sorted(unknown)}")
        code, point = data.get("code"), data.get("point")
        if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
            raise FaultError("'code' must be an integer")
        if point is not None and not isinstance(point, str):
            raise FaultError("'point' must be a string")
        try:
            return cls(FaultKind(kind), code=code, point=point)
        except ValueError as exc:
            if isinstance(exc, FaultError):
                raise
            raise FaultError(f"unknown fault {kind!r}") from exc

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": str(self.kind)}
        if self.code is not None:
            out["code"] = self.code
        if self.point is not None:
            out["point"] = self.point
        return out
