"""Area changes, move-in, move-out and sales as units of work (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from sqlmodel import Session, select

from hub.property import service
from hub.property.generator import Areas, RoomPlan, plan_rooms
from hub.property.models import Occupancy, Premises, PremisesArea, Role
from hub.property.service import Conflict, Invalid, PersonIn
from tests.hub.property.conftest import KEY

D = Decimal


@pytest.fixture
def rooms(sites):
    plan = RoomPlan(("1",), ("1",), 1, 2, (Areas(D("100.00"), D("80.00")),))
    with Session(sites, expire_on_commit=False) as s:
        assert service.create_rooms(s, "s1", plan_rooms(plan), "mgr1") == 2
        return {p.code: p.id for p in s.exec(select(Premises))}


def test_area_changes_keep_their_history(sites, rooms):
    pid = rooms["1-1-0101"]
    future = service.today() + timedelta(days=30)
    with Session(sites, expire_on_commit=False) as s:
        first = service.change_area(
            s, pid, date(2024, 7, 1), D("102.50"), D("81.00"), "remeasured", "mgr1"
        )
        assert [a.effective_from for a in first.history] == [date(2000, 1, 1), date(2024, 7, 1)]
        second = service.change_area(s, pid, future, D("110"), D("90"), "extension", "mgr1")
    assert second.new.effective_from == future and second.new.built_area == D("110.00")
    assert [(a.built_area, a.reason) for a in second.history] == [
        (D("100.00"), "registered"),
        (D("102.50"), "remeasured"),
        (D("110.00"), "extension"),
    ]
    with Session(sites, expire_on_commit=False) as s:
        p = s.get(Premises, pid)
        assert (p.built_area, p.interior_area) == (D("110.00"), D("90.00"))  # the newest
        history = service.area_history(s, pid)
        assert service.area_on(history, date(2024, 6, 30)).built_area == D("100.00")
        assert service.area_on(history, date(2024, 7, 1)).built_area == D("102.50")
        assert service.area_on(history, service.today()).built_area == D("102.50")
        # refusals leave everything as it was
        for built, interior, day, exc, words in [
            ("0", "1", date(2025, 1, 1), Invalid, "more than 0"),
            ("90", "95", date(2025, 1, 1), Invalid, "interior area 95.00 is more than built"),
            ("90", "80", date(2024, 7, 1), Conflict, "from 2024-07-01 is recorded already"),
            ("90", "80", date(1999, 1, 1), Invalid, "from 2000-01-01 on"),
        ]:
            with pytest.raises(exc, match=words):
                service.change_area(s, pid, day, D(built), D(interior), "", "mgr1")
        assert len(service.area_history(s, pid)) == 3
        assert s.get(Premises, pid).built_area == D("110.00")


def test_a_sale_ends_one_owner_and_starts_the_next_on_the_same_day(sites, rooms):
    pid = rooms["1-1-0101"]
    with Session(sites, expire_on_commit=False) as s:
        service.move_in(
            s,
            pid,
            PersonIn("张三", "13812345678", username="zhang"),
            Role.OWNER,
            date(2020, 1, 1),
            "mgr1",
            KEY,
        )
        tenant = service.move_in(
            s,
            pid,
            PersonIn("李四"),
            Role.TENANT,
            date(2023, 1, 1),
            "mgr1",
            KEY,
            until=date(2024, 1, 1),
            payer=True,
        )
        assert service.payer_on(s, pid, date(2023, 6, 1)).person.name == "李四"
        assert service.payer_on(s, pid, date(2024, 1, 1)).person.name == "张三"
        assert service.payer_on(s, pid, date(2019, 12, 31)) is None
        done = service.sale(
            s, pid, date(2025, 3, 1), PersonIn("王五", username="wang"), "mgr1", KEY
        )
        assert (done.ended.until, done.new.start, done.new.until) == (
            date(2025, 3, 1),
            date(2025, 3, 1),
            None,
        )
        assert service.payer_on(s, pid, date(2025, 2, 28)).person.name == "张三"
        assert service.payer_on(s, pid, date(2025, 3, 1)).person.name == "王五"
        assert [p.code for p in service.premises_of_user(s, "wang", date(2025, 3, 1))] == [
            "1-1-0101"
        ]
        assert service.premises_of_user(s, "zhang", date(2025, 3, 1)) == []
        assert [p.code for p in service.premises_of_user(s, "zhang", date(2025, 2, 28))] == [
            "1-1-0101"
        ]
        # a second sale from the same day, or one before it, would make owners overlap
        with pytest.raises(Conflict, match="on or after the sale"):
            service.sale(s, pid, date(2025, 1, 1), PersonIn("赵六"), "mgr1", KEY)
        with pytest.raises(Conflict, match="nobody owns 1-1-0102"):
            service.sale(s, rooms["1-1-0102"], date(2025, 1, 1), PersonIn("赵六"), "mgr1", KEY)
        # owners may not overlap; residents may; paying tenants may not
        with pytest.raises(Conflict, match="overlaps the owner recorded from 2025-03-01"):
            service.move_in(s, pid, PersonIn("赵六"), Role.OWNER, date(2026, 1, 1), "mgr1", KEY)
        with pytest.raises(Conflict, match="overlaps the paying tenant"):
            service.move_in(
                s, pid, PersonIn("钱七"), Role.TENANT, date(2023, 12, 1), "mgr1", KEY, payer=True
            )
        with pytest.raises(Invalid, match="only a tenant"):
            service.move_in(
                s, pid, PersonIn("钱七"), Role.RESIDENT, date(2023, 12, 1), "mgr1", KEY, payer=True
            )
        with pytest.raises(Invalid, match="not a phone"):
            service.move_in(
                s, pid, PersonIn("钱七", "123"), Role.RESIDENT, date(2023, 12, 1), "mgr1", KEY
            )
        service.move_in(s, pid, PersonIn("钱七"), Role.RESIDENT, date(2023, 12, 1), "mgr1", KEY)
        with pytest.raises(Conflict, match="ended already on 2024-01-01"):
            service.move_out(s, tenant.id, date(2024, 6, 1))
    with Session(sites, expire_on_commit=False) as s:
        owners = s.exec(
            select(Occupancy).where(Occupancy.role == "owner").order_by(Occupancy.start)
        ).all()
        assert [(o.start, o.until) for o in owners] == [
            (date(2020, 1, 1), date(2025, 3, 1)),
            (date(2025, 3, 1), None),
        ]


def test_move_out(sites, rooms):
    pid = rooms["1-1-0102"]
    with Session(sites, expire_on_commit=False) as s:
        occ = service.move_in(
            s, pid, PersonIn("李四", username="li"), Role.TENANT, date(2024, 1, 1), "mgr1", KEY
        )
        with pytest.raises(Invalid, match="not after move-in"):
            service.move_out(s, occ.id, date(2024, 1, 1))
        assert service.move_out(s, occ.id, date(2024, 6, 1)).until == date(2024, 6, 1)
        assert service.premises_of_user(s, "li", date(2024, 6, 1)) == []
        assert len(service.premises_of_user(s, "li", date(2024, 5, 31))) == 1


def test_generated_codes_already_there_are_refused_whole(sites, rooms):
    plan = RoomPlan(("1",), ("1",), 2, 2, (Areas(D("100.00"), D("80.00")),))
    with (
        Session(sites, expire_on_commit=False) as s,
        pytest.raises(Conflict, match="already registered: 1-1-0101, 1-1-0102"),
    ):
        service.create_rooms(s, "s1", plan_rooms(plan), "mgr1")
    with Session(sites, expire_on_commit=False) as s:
        assert len(s.exec(select(Premises)).all()) == 2
        assert len(s.exec(select(PremisesArea)).all()) == 2
