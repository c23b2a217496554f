"""Fee items, their prices and what each premises is billed: the configuration of billing.

Units of work: each function commits what it did or raises having written nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from hub.billing import fees
from hub.billing.errors import BillingError, NotFound
from hub.billing.models import Category, FeeBinding, FeeItem, FeePrice
from hub.billing.periods import CYCLES, Schedule, Timing
from hub.property.models import Premises


@dataclass(frozen=True)
class NewPrice:
    effective_from: date
    unit: Decimal
    fixed: Decimal = Decimal(0)


@dataclass(frozen=True)
class NewItem:
    code: str
    name: str
    category: Category
    kind: fees.Kind
    prices: tuple[NewPrice, ...]
    cycle_months: int = 1
    timing: Timing = Timing.PREPAID
    advance_days: int = 0
    due_days: int = 0
    rounding: fees.Rounding = fees.Rounding.HALF_UP
    step: int = 1
    area_basis: fees.AreaBasis = fees.AreaBasis.BUILT
    refundable: bool = False
    late_fee_per_day: Decimal = Decimal(0)
    late_fee_grace_days: int = 0
    late_fee_cap: Decimal | None = None
    vacant_discount_pct: Decimal = Decimal(0)


def spec_of(item: FeeItem, prices: Sequence[FeePrice]) -> fees.FeeSpec:
    """The pure computation's view of a stored item (FeeError if it cannot compute)."""
    return fees.FeeSpec(
        fees.Kind(item.kind),
        tuple(
            fees.Price(p.effective_from, Decimal(p.unit), Decimal(p.fixed))
            for p in sorted(prices, key=lambda p: p.effective_from)
        ),
        item.cycle_months,
        fees.Rounding(item.rounding),
        item.step,
        fees.AreaBasis(item.area_basis),
    )


def schedule_of(item: FeeItem) -> Schedule:
    return Schedule(Timing(item.timing), item.advance_days, item.due_days)


def _check(new: NewItem) -> None:
    if not new.code.strip() or not new.name.strip():
        raise BillingError("a fee item needs a code and a name")
    if new.kind in fees.PERIODIC and new.cycle_months not in CYCLES:
        raise BillingError(f"a cycle is one of {CYCLES} months, not {new.cycle_months}")
    if not 0 <= new.late_fee_per_day <= Decimal("0.01"):
        raise BillingError("a late fee is 0 to 1 % of the overdue amount a day")
    if new.late_fee_cap is not None and not 0 <= new.late_fee_cap <= 1:
        raise BillingError("a late-fee cap is 0 to 100 % of the overdue amount")
    if not 0 <= new.vacant_discount_pct <= 100:
        raise BillingError("a vacant-room discount is 0 to 100 %")
    if new.kind is fees.Kind.RENT and new.prices:
        raise BillingError("a rent item takes its rent from each contract, not a price")
    try:
        Schedule(new.timing, new.advance_days, new.due_days)
        fees.FeeSpec(
            new.kind,
            tuple(fees.Price(p.effective_from, p.unit, p.fixed) for p in new.prices),
            new.cycle_months,
            new.rounding,
            new.step,
            new.area_basis,
        )
    except ValueError as exc:
        raise BillingError(str(exc)) from exc


def create_item(s: Session, site: str, new: NewItem, actor: str) -> FeeItem:
    """A fee item with its prices, committed. BillingError if it could not compute a fee."""
    _check(new)
    item = FeeItem(
        site_id=site,
        code=new.code.strip(),
        name=new.name.strip(),
        category=new.category.value,
        kind=new.kind.value,
        area_basis=new.area_basis.value,
        cycle_months=new.cycle_months if new.kind in fees.PERIODIC else 1,
        timing=new.timing.value,
        advance_days=new.advance_days,
        due_days=new.due_days,
        rounding=new.rounding.value,
        step=new.step,
        refundable=new.refundable,
        late_fee_per_day=new.late_fee_per_day,
        late_fee_grace_days=new.late_fee_grace_days,
        late_fee_cap=new.late_fee_cap,
        vacant_discount_pct=new.vacant_discount_pct,
        created_by=actor,
    )
    s.add(item)
    try:
        s.flush()
    except IntegrityError as exc:
        s.rollback()
        raise BillingError(f"fee item {new.code!r} exists at {site} already") from exc
    assert item.id is not None
    for p in new.prices:
        s.add(
            FeePrice(
                item_id=item.id,
                effective_from=p.effective_from,
                unit=p.unit,
                fixed=p.fixed,
                created_by=actor,
            )
        )
    s.commit()
    return item


def add_price(s: Session, site: str, item_id: int, price: NewPrice, actor: str) -> FeePrice:
    """A new price from a date on (a cycle across the date is split); committed."""
    item = get_item(s, site, item_id)
    if item.kind == fees.Kind.RENT:
        raise BillingError("a rent item takes its rent from each contract, not a price")
    try:
        fees.Price(price.effective_from, price.unit, price.fixed)
        if price.fixed and item.kind != fees.Kind.AREA:
            raise BillingError("only an area fee adds a fixed amount per month")
    except fees.FeeError as exc:
        raise BillingError(str(exc)) from exc
    row = FeePrice(
        item_id=item_id,
        effective_from=price.effective_from,
        unit=price.unit,
        fixed=price.fixed,
        created_by=actor,
    )
    s.add(row)
    try:
        s.commit()
    except IntegrityError as exc:
        s.rollback()
        raise BillingError(
            f"item {item.code} has a price from {price.effective_from} already"
        ) from exc
    return row


def get_item(s: Session, site: str, item_id: int) -> FeeItem:
    item = s.get(FeeItem, item_id)
    if item is None or item.site_id != site:
        raise NotFound(f"no fee item {item_id}")
    return item


def prices_of(s: Session, item_ids: Sequence[int]) -> dict[int, list[FeePrice]]:
    out: dict[int, list[FeePrice]] = {i: [] for i in item_ids}
    for p in s.exec(select(FeePrice).where(col(FeePrice.item_id).in_(item_ids))).all():
        out[p.item_id].append(p)
    return out


@dataclass(frozen=True)
class Terms:
    """What a premises is billed for an item: from ``start`` (缴费起始日期), until ``until``,
    and a rent contract's terms for a rent item."""

    start: date
    until: date | None = None
    rent_monthly: Decimal | None = None
    rent_step_pct: Decimal = Decimal(0)
    rent_every_months: int = 12


def bind(
    s: Session, site: str, item_id: int, premises_ids: Sequence[int], terms: Terms, actor: str
) -> int:
    """Bill ``item_id`` to each premises from ``terms.start``; committed. Premises bound
    already are left as they are; returns how many were bound now."""
    item = get_item(s, site, item_id)
    if terms.until is not None and terms.until <= terms.start:
        raise BillingError("a binding ends after it starts")
    if item.kind == fees.Kind.RENT:
        if terms.rent_monthly is None:
            raise BillingError("a rent item needs the contract's monthly rent")
        try:
            fees.Rent(terms.start, terms.rent_monthly, terms.rent_step_pct, terms.rent_every_months)
        except fees.FeeError as exc:
            raise BillingError(str(exc)) from exc
    found = set(
        s.exec(
            select(Premises.id).where(col(Premises.id).in_(premises_ids), Premises.site_id == site)
        ).all()
    )
    missing = [p for p in premises_ids if p not in found]
    if missing:
        raise NotFound(f"no premises {missing[:5]} at {site}")
    bound = set(
        s.exec(
            select(FeeBinding.premises_id).where(
                FeeBinding.item_id == item_id, col(FeeBinding.premises_id).in_(premises_ids)
            )
        ).all()
    )
    new = [p for p in dict.fromkeys(premises_ids) if p not in bound]
    for p in new:
        s.add(
            FeeBinding(
                site_id=site,
                premises_id=p,
                item_id=item_id,
                start=terms.start,
                until=terms.until,
                rent_monthly=terms.rent_monthly,
                rent_step_pct=terms.rent_step_pct,
                rent_every_months=terms.rent_every_months,
                created_by=actor,
            )
        )
    s.commit()
    return len(new)
