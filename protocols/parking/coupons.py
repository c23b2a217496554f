"""Parking coupons (优惠券): data, and the fee of a stay after them.

At most one coupon of each kind applies to a stay, in this order:

1. ``hours_off``: the first ``hours`` of the stay are cut off before pricing, as if the car
   had entered that much later (the free minutes then apply to what is left).
2. ``free_day``: the first 24 h of the (remaining) stay cost nothing; later time costs what
   it costs without the coupon: fee(stay) - fee(its first 24 h).
3. ``percent_off``: fee x (100 - percent) / 100, rounded half-up to the fen.
4. ``amount_off``: minus ``fen``, never below 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from protocols.errors import ConfigError
from protocols.parking.fees import DAY, fee_seconds
from protocols.parking.fees_rules import FeeRule
from protocols.profile import validate


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HoursOff(_Frozen):
    kind: Literal["hours_off"] = "hours_off"
    hours: Annotated[int, Field(strict=True, ge=1, le=24 * 366)]


class FreeDay(_Frozen):
    kind: Literal["free_day"] = "free_day"


class PercentOff(_Frozen):
    kind: Literal["percent_off"] = "percent_off"
    percent: Annotated[int, Field(strict=True, ge=1, le=100)]


class AmountOff(_Frozen):
    kind: Literal["amount_off"] = "amount_off"
    fen: Annotated[int, Field(strict=True, ge=1)]


Coupon = Annotated[HoursOff | FreeDay | PercentOff | AmountOff, Field(discriminator="kind")]


def parse_coupon(data: Any, source: str = "coupon") -> Coupon:
    """``data`` (a JSON object) as a coupon; ConfigError naming ``source`` and the field."""
    if not isinstance(data, Mapping):
        raise ConfigError(source, "", "a coupon must be a mapping")
    if "kind" not in data:
        raise ConfigError(source, "kind", "required field is missing")
    match data["kind"]:
        case "hours_off":
            return validate(HoursOff, data, source, "a coupon")
        case "free_day":
            return validate(FreeDay, data, source, "a coupon")
        case "percent_off":
            return validate(PercentOff, data, source, "a coupon")
        case "amount_off":
            return validate(AmountOff, data, source, "a coupon")
        case other:
            raise ConfigError(
                source,
                "kind",
                f"must be hours_off, free_day, percent_off or amount_off, not {other!r}",
            )


def one_per_kind(coupons: Iterable[Coupon]) -> tuple[Coupon, ...]:
    """``coupons`` as a tuple; ValueError if a kind appears twice (they do not stack)."""
    found = tuple(coupons)
    kinds = [c.kind for c in found]
    for kind in kinds:
        if kinds.count(kind) > 1:
            raise ValueError(f"at most one coupon of each kind applies; {kind!r} appears twice")
    return found


def fee_after_coupons(rule: FeeRule, start: int, end: int, coupons: tuple[Coupon, ...]) -> int:
    """Fee in fen from ``start`` to ``end`` (epoch seconds) after ``coupons`` (checked)."""
    for c in coupons:
        if isinstance(c, HoursOff):
            start = min(end, start + c.hours * 3600)
    total = fee_seconds(rule, start, end)
    if any(isinstance(c, FreeDay) for c in coupons):
        total -= fee_seconds(rule, start, min(end, start + DAY))
    for c in coupons:
        if isinstance(c, PercentOff):
            total = (total * (100 - c.percent) + 50) // 100
    for c in coupons:
        if isinstance(c, AmountOff):
            total = max(0, total - c.fen)
    return total
