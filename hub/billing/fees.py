"""What a fee item charges: pure and exact (no I/O, no floating point).

Every periodic fee is a *monthly rate* spread evenly over the days of each month: a day of a
month of ``n`` days costs ``rate / n``. A whole month therefore costs exactly its rate, and a
part of a month its share of the days. A period is cut wherever the rate can change (a month
boundary, a price's effective date, an area change, a rent step) into pieces of one rate,
summed as exact fractions of a fen, and rounded **once**, by the item's rule, for the line.

The brute-force reference is the definition itself: the sum over the period's days of the
day's rate over its month's days (tests/hub/billing/test_fees.py checks the two agree).

A price or an area missing for a day is an error (:class:`NoPrice`), never a fee of 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from itertools import pairwise
from typing import Any

from hub.billing.periods import CYCLES, Period, add_months, days_in_month, month_start


class FeeError(ValueError):
    """A fee item, price or payer object that cannot be computed with; says why."""


class NoPrice(FeeError):
    """No price (or no area) is in effect on a day the line covers."""


class Kind(StrEnum):
    AREA = "area"  # area × unit price per m² per month (+ fixed per month)
    FIXED = "fixed"  # a fixed amount per cycle
    RENT = "rent"  # the binding's monthly rent, escalating by a percentage every N months
    ONE_OFF = "one_off"  # once, on the binding's start (deposits, decoration deposit)
    PER_USE = "per_use"  # quantity × unit price, once per use recorded


PERIODIC = frozenset({Kind.AREA, Kind.FIXED, Kind.RENT})


class Rounding(StrEnum):
    HALF_UP = "half_up"  # 四舍五入
    UP = "up"  # 进位 (away from zero)
    DOWN = "down"  # 舍去 (toward zero)


STEPS = {1: "fen", 10: "jiao", 100: "yuan"}


class AreaBasis(StrEnum):
    BUILT = "built"  # 建筑面积
    INTERIOR = "interior"  # 套内面积


def round_fen(x: Fraction, mode: Rounding, step: int = 1) -> int:
    """``x`` fen rounded to a multiple of ``step`` fen; symmetric about zero (a credit of
    −12.5 fen rounds half-up to −13, as a charge of 12.5 rounds to 13)."""
    if step not in STEPS:
        raise FeeError(f"rounding step is 1, 10 or 100 fen, not {step}")
    sign = -1 if x < 0 else 1
    q = abs(x) / step
    whole, rest = divmod(q.numerator, q.denominator)
    if rest and (mode is Rounding.UP or (mode is Rounding.HALF_UP and 2 * rest >= q.denominator)):
        whole += 1
    return sign * whole * step


def _plain(d: Decimal) -> str:
    """A stored price as written: 250, 2.5, not 250.0000."""
    return format(d.normalize(), "f") if d else "0"


def _decimal(x: Fraction, places: int = 4) -> str:
    """An exact fraction shown to ``places`` decimals (for people: the line keeps the fraction)."""
    scaled = round(x * 10**places)
    return str(Decimal(scaled).scaleb(-places))


@dataclass(frozen=True)
class Price:
    """A price in effect from a date on (until the next price of the item).

    ``unit`` is fen: per m² per month (area), per cycle (fixed), per use (per_use), or the
    amount (one_off); ``fixed`` is fen per month added to an area fee.
    """

    effective_from: date
    unit: Decimal
    fixed: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        for name, v in (("unit price", self.unit), ("fixed amount", self.fixed)):
            if not isinstance(v, Decimal) or not v.is_finite() or v < 0:
                raise FeeError(f"{name} must be a finite amount of fen ≥ 0, not {v!r}")


@dataclass(frozen=True)
class Area:
    """A payer object's areas from a date on (m², exact decimals, both > 0)."""

    effective_from: date
    built: Decimal
    interior: Decimal

    def __post_init__(self) -> None:
        for name, v in (("built-up area", self.built), ("interior area", self.interior)):
            if not isinstance(v, Decimal) or not v.is_finite() or v <= 0:
                raise FeeError(f"{name} must be more than 0 m², not {v}")
        if self.interior > self.built:
            raise FeeError(f"interior area {self.interior} exceeds built-up area {self.built}")

    def of(self, basis: AreaBasis) -> Decimal:
        return self.built if basis is AreaBasis.BUILT else self.interior


@dataclass(frozen=True)
class Rent:
    """A rent contract on one payer object: ``monthly`` fen from ``start``, raised by
    ``step_pct`` percent every ``every_months`` months (compounding; 0 for a flat rent)."""

    start: date
    monthly: Decimal
    step_pct: Decimal = Decimal(0)
    every_months: int = 12

    def __post_init__(self) -> None:
        if not self.monthly.is_finite() or self.monthly <= 0:
            raise FeeError(f"monthly rent must be more than 0 fen, not {self.monthly}")
        if not self.step_pct.is_finite() or not 0 <= self.step_pct <= 100:
            raise FeeError(f"rent step 0 to 100 %, not {self.step_pct}")
        if not 1 <= self.every_months <= 120:
            raise FeeError(f"rent steps every 1 to 120 months, not {self.every_months}")

    def steps_before(self, d: date) -> int:
        """How many raises have happened by day ``d``."""
        k = 0
        while add_months(self.start, (k + 1) * self.every_months) <= d:
            k += 1
        return k

    def step_dates(self, until: date) -> list[date]:
        out, k = [], 1
        while (s := add_months(self.start, k * self.every_months)) < until:
            out.append(s)
            k += 1
        return out

    def monthly_at(self, d: date) -> Fraction:
        factor = (1 + Fraction(self.step_pct) / 100) ** self.steps_before(d)
        return Fraction(self.monthly) * factor


@dataclass(frozen=True)
class FeeSpec:
    """A fee item as computation needs it; refused at construction if it cannot compute."""

    kind: Kind
    prices: tuple[Price, ...] = ()
    cycle_months: int = 1
    rounding: Rounding = Rounding.HALF_UP
    step: int = 1
    area_basis: AreaBasis = AreaBasis.BUILT

    def __post_init__(self) -> None:
        if self.kind is not Kind.RENT and not self.prices:
            raise FeeError(f"a {self.kind} fee needs a price with an effective date")
        dates = [p.effective_from for p in self.prices]
        if dates != sorted(set(dates)):
            raise FeeError("prices must have distinct effective dates, in order")
        if self.kind in PERIODIC and self.cycle_months not in CYCLES:
            raise FeeError(f"a cycle is one of {CYCLES} months, not {self.cycle_months}")
        if self.step not in STEPS:
            raise FeeError(f"rounding step is 1, 10 or 100 fen, not {self.step}")
        if self.kind is not Kind.AREA and any(p.fixed for p in self.prices):
            raise FeeError("only an area fee adds a fixed amount per month")

    def price_at(self, d: date) -> Price:
        found = None
        for p in self.prices:
            if p.effective_from <= d:
                found = p
        if found is None:
            raise NoPrice(
                f"no price in effect on {d} (the first is from {self.prices[0].effective_from})"
            )
        return found


def area_at(areas: Sequence[Area], d: date) -> Area:
    """The area in effect on ``d``: the newest record from on or before it. The first record
    is the area as registered, so it also holds for days before its date."""
    if not areas:
        raise NoPrice("the payer object has no area")
    found = areas[0]
    for a in areas:
        if a.effective_from <= d:
            found = a
    return found


@dataclass(frozen=True)
class Piece:
    """Days of one month at one rate: ``amount = monthly × days / days_in_month``.

    ``months`` > 0 marks a run of that many whole months at one rate (as shown on a bill);
    ``days_in_month`` 0 marks a charge that is not spread over days (one-off, per use).
    """

    start: date
    end: date  # first day after
    days: int
    days_in_month: int
    monthly: Fraction
    amount: Fraction
    facts: tuple[tuple[str, str], ...] = ()  # area, unit price, fixed, rent: as shown
    months: int = 0

    @property
    def whole_month(self) -> bool:
        return self.months > 0 or self.days == self.days_in_month


@dataclass(frozen=True)
class Line:
    """A computed bill line: the amount in fen and how it was reached."""

    amount_fen: int
    exact: Fraction
    pieces: tuple[Piece, ...]
    rounding: Rounding
    step: int
    quantity: int = 1

    def basis(self) -> dict[str, Any]:
        """The computation as JSON for the bill line: every piece, the exact sum, the rounding."""
        return {
            "pieces": [_piece_json(p) for p in merged(self.pieces)],
            "exact_fen": _decimal(self.exact),
            "rounding": f"{self.rounding} to the {STEPS[self.step]}",
            "amount_fen": self.amount_fen,
            **({"quantity": self.quantity} if self.quantity != 1 else {}),
        }


def _piece_json(p: Piece) -> dict[str, Any]:
    out: dict[str, Any] = {
        "from": p.start.isoformat(),
        "to": (p.end - timedelta(days=1)).isoformat(),
    }
    if p.months:
        out["months"] = p.months
    elif p.days_in_month:
        out["days"], out["days_in_month"] = p.days, p.days_in_month
    out.update(dict(p.facts))
    if p.days_in_month or p.months:
        out["monthly_fen"] = _decimal(p.monthly)
    out["amount_fen"] = _decimal(p.amount)
    return out


def merged(pieces: Iterable[Piece]) -> list[Piece]:
    """Consecutive whole months at the same rate as one piece of ``months`` months."""
    out: list[Piece] = []
    for p in pieces:
        if p.days_in_month and p.whole_month and not p.months:
            p = Piece(p.start, p.end, p.days, p.days_in_month, p.monthly, p.amount, p.facts, 1)
        prev = out[-1] if out else None
        if (
            prev is not None
            and p.months
            and prev.months
            and (prev.monthly, prev.facts, prev.end) == (p.monthly, p.facts, p.start)
        ):
            out[-1] = Piece(
                prev.start,
                p.end,
                prev.days + p.days,
                p.days_in_month,
                p.monthly,
                prev.amount + p.amount,
                p.facts,
                prev.months + p.months,
            )
        else:
            out.append(p)
    return out


def _cuts(spec: FeeSpec, period: Period, areas: Sequence[Area], rent: Rent | None) -> list[date]:
    """Every day in the period on which the rate may change, with its start and end."""
    cuts = {period.start, period.end}
    m = add_months(month_start(period.start), 1)
    while m < period.end:
        cuts.add(m)
        m = add_months(m, 1)
    changes = [p.effective_from for p in spec.prices]
    if spec.kind is Kind.AREA:
        changes += [a.effective_from for a in areas]
    if rent is not None:
        changes += rent.step_dates(period.end)
    cuts.update(c for c in changes if period.start < c < period.end)
    return sorted(cuts)


def monthly_rate(
    spec: FeeSpec, d: date, areas: Sequence[Area] = (), rent: Rent | None = None
) -> tuple[Fraction, tuple[tuple[str, str], ...]]:
    """The monthly rate of a periodic fee on day ``d`` (fen), and the facts it comes from."""
    if spec.kind is Kind.AREA:
        price, area = spec.price_at(d), area_at(areas, d).of(spec.area_basis)
        shown = [(f"{spec.area_basis}_area_m2", str(area)), ("unit_fen_per_m2", _plain(price.unit))]
        if price.fixed:
            shown.append(("fixed_fen", _plain(price.fixed)))
        return Fraction(area) * Fraction(price.unit) + Fraction(price.fixed), tuple(shown)
    if spec.kind is Kind.FIXED:
        price = spec.price_at(d)
        facts = (("per_cycle_fen", _plain(price.unit)), ("cycle_months", str(spec.cycle_months)))
        return Fraction(price.unit) / spec.cycle_months, facts
    if spec.kind is Kind.RENT:
        if rent is None:
            raise NoPrice("a rent fee needs the binding's rent")
        if d < rent.start:
            raise NoPrice(f"the rent starts on {rent.start}, after {d}")
        steps = rent.steps_before(d)
        raised = (
            ("rent_fen", _plain(rent.monthly)),
            ("raises", str(steps)),
            ("raise_pct", _plain(rent.step_pct)),
        )
        return rent.monthly_at(d), raised
    raise FeeError(f"a {spec.kind} fee has no monthly rate")


def periodic_line(
    spec: FeeSpec, period: Period, areas: Sequence[Area] = (), rent: Rent | None = None
) -> Line:
    """The bill line of a periodic fee for ``period``. Raises NoPrice or FeeError."""
    if spec.kind not in PERIODIC:
        raise FeeError(f"a {spec.kind} fee is not billed by period")
    cuts = _cuts(spec, period, areas, rent)
    pieces = []
    for start, end in pairwise(cuts):
        rate, facts = monthly_rate(spec, start, areas, rent)
        days, dim = (end - start).days, days_in_month(start)
        pieces.append(Piece(start, end, days, dim, rate, rate * days / dim, facts))
    exact = sum((p.amount for p in pieces), Fraction(0))
    return Line(
        round_fen(exact, spec.rounding, spec.step), exact, tuple(pieces), spec.rounding, spec.step
    )


def once_line(spec: FeeSpec, on: date, quantity: int = 1) -> Line:
    """The line of a one-off or per-use fee charged on ``on``."""
    if spec.kind not in (Kind.ONE_OFF, Kind.PER_USE):
        raise FeeError(f"a {spec.kind} fee is billed by period")
    if not 1 <= quantity <= 1_000_000 or (spec.kind is Kind.ONE_OFF and quantity != 1):
        raise FeeError(f"quantity 1 (one-off) or 1 to 1,000,000 (per use), not {quantity}")
    price = spec.price_at(on)
    exact = Fraction(price.unit) * quantity
    facts = (("unit_fen", _plain(price.unit)),)
    piece = Piece(on, on + timedelta(days=1), 1, 0, Fraction(price.unit), exact, facts)
    return Line(
        round_fen(exact, spec.rounding, spec.step),
        exact,
        (piece,),
        spec.rounding,
        spec.step,
        quantity,
    )
