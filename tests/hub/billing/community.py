"""A small project to bill: rooms written straight to the registry tables, fee items through
the billing service (what a site manager sets up)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlmodel import Session

from hub.billing import fees
from hub.billing.items import NewItem, NewPrice, Terms, bind, create_item
from hub.billing.models import Category
from hub.billing.periods import Timing
from hub.models import Site
from hub.property.models import FIRST_DAY, Building, Premises, PremisesArea

SITE = "sunny"


def rooms(engine, n: int, site: str = SITE, area: str = "89.50") -> list[int]:
    """``n`` occupied rooms of one building, all of ``area`` m² (built; interior 80 %)."""
    with Session(engine) as s:
        if s.get(Site, site) is None:
            s.add(Site(id=site, name=site))
            s.flush()
        b = Building(site_id=site, code="1", name="1栋", floors=max(1, n // 4))
        s.add(b)
        s.flush()
        ids = []
        built = Decimal(area)
        for i in range(n):
            floor, number = i // 4 + 1, f"{i // 4 + 1:02d}{i % 4 + 1:02d}"
            p = Premises(
                site_id=site,
                kind="room",
                code=f"1-1-{number}",
                building_id=b.id,
                unit="1",
                floor=floor,
                number=number,
                use="residence",
                state="occupied",
                built_area=built,
                interior_area=(built * Decimal("0.8")).quantize(Decimal("0.01")),
            )
            s.add(p)
            s.flush()
            assert p.id is not None
            s.add(
                PremisesArea(
                    premises_id=p.id,
                    effective_from=FIRST_DAY,
                    built_area=p.built_area,
                    interior_area=p.interior_area,
                    recorded_by="test",
                )
            )
            ids.append(p.id)
        s.commit()
    return ids


def property_fee(
    engine,
    premises: list[int],
    *,
    start=date(2026, 1, 1),
    cycle=3,
    site=SITE,
    prices=((date(2026, 1, 1), "250"),),
    code="PROP",
    **kw,
) -> int:
    """物业费: built-up area × price per m² per month, prepaid, billed 15 days ahead."""
    with Session(engine, expire_on_commit=False) as s:
        item = create_item(
            s,
            site,
            NewItem(
                code=code,
                name="物业费",
                category=Category.PROPERTY,
                kind=fees.Kind.AREA,
                prices=tuple(NewPrice(d, Decimal(p)) for d, p in prices),
                cycle_months=cycle,
                timing=Timing.PREPAID,
                advance_days=15,
                due_days=15,
                **kw,
            ),
            "manager",
        )
        assert item.id is not None
        bind(s, site, item.id, premises, Terms(start), "manager")
        return item.id


def fixed_fee(
    engine,
    premises: list[int],
    amount: int,
    *,
    cycle=1,
    start=date(2026, 1, 1),
    site=SITE,
    code="GARB",
    category=Category.OTHER,
    timing=Timing.POSTPAID,
) -> int:
    with Session(engine, expire_on_commit=False) as s:
        item = create_item(
            s,
            site,
            NewItem(
                code=code,
                name="垃圾清运费",
                category=category,
                kind=fees.Kind.FIXED,
                prices=(NewPrice(date(2026, 1, 1), Decimal(amount)),),
                cycle_months=cycle,
                timing=timing,
                due_days=10,
            ),
            "manager",
        )
        assert item.id is not None
        bind(s, site, item.id, premises, Terms(start), "manager")
        return item.id
