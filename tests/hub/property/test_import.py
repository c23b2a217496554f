"""Importing rooms and owners from real xlsx files, and exporting them (SQLite and
PostgreSQL): a good file lands whole, a file with bad rows names every bad cell and writes
nothing, a file that is no workbook is refused, exports mask personal data."""

from __future__ import annotations

import io
import zipfile
from datetime import date
from decimal import Decimal

import pytest
from openpyxl import load_workbook
from sqlmodel import Session, col, func, select

from hub.property import service, xlsx
from hub.property.generator import Areas, RoomRow
from hub.property.models import Occupancy, Person, Premises, PremisesArea, PremisesKind, State, Use
from hub.property.service import ImportFailed, ImportRefused, PersonIn
from tests.hub.property.conftest import KEY, resident_id, workbook

ROOM_HEAD = ["楼栋", "单元", "楼层", "房号", "房屋编号", "用途", "状态", "建筑面积(m²)", "套内面积"]
OWNER_HEAD = [
    "code",
    "name",
    "phone",
    "ID number",
    "role",
    "move-in date",
    "move-out date",
    "payer",
]
ID1 = resident_id("11010519491231002")
ID2 = resident_id("31010419800101123")


def count(engine, model) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(model)).one()


def room(code: str, built="100.00", interior="80.00") -> RoomRow:
    return RoomRow(
        "9",
        "1",
        1,
        1,
        code[-4:],
        code,
        PremisesKind.ROOM,
        Use.RESIDENCE,
        State.VACANT,
        Areas(built, interior),
    )


def test_a_good_file_of_rooms_and_owners_lands_whole(sites):
    data = workbook(
        房屋=[
            ROOM_HEAD,
            ["1", "1", 3, "0301", "1-1-0301", "住宅", "入住", 120.5, 98.3],
            [],  # a blank row is skipped
            ["1", "1", 3, "0302", "1-1-0302", "residence", "vacant", "89", "72.00"],
            ["", "", -1, "017", "P-B1-017", "车位", "", 12.5, 12.5],
        ],
        owners=[
            OWNER_HEAD,
            ["1-1-0301", "张三", "138 1234 5678", ID1, "业主", "2024-01-01", None, ""],
            ["1-1-0301", "李四", "13900001111", "", "租户", date(2024, 3, 1), "2025-03-01", "是"],
            ["1-1-0302", "张三", "13812345678", ID1.lower(), "owner", "2024/02/01", "", "no"],
        ],
    )
    with Session(sites, expire_on_commit=False) as s:
        result = service.import_book(s, "s1", data, "mgr1", KEY, rooms=True)
    assert result == service.ImportResult(rooms=3, occupancies=3, people=2)  # 张三 once
    with Session(sites, expire_on_commit=False) as s:
        rooms = {p.code: p for p in s.exec(select(Premises))}
        r = rooms["1-1-0301"]
        assert (r.floor, r.number, r.use, r.state) == (3, "0301", "residence", "occupied")
        assert (r.built_area, r.interior_area) == (Decimal("120.50"), Decimal("98.30"))
        space = rooms["P-B1-017"]
        assert (space.kind, space.building_id, space.floor, space.state) == (
            "space",
            None,
            -1,
            "vacant",
        )
        (first,) = s.exec(select(PremisesArea).where(PremisesArea.premises_id == r.id)).all()
        assert (first.effective_from, first.built_area, first.recorded_by) == (
            date(2000, 1, 1),
            Decimal("120.50"),
            "mgr1",
        )
        people = {p.name: p for p in s.exec(select(Person))}
        zhang = people["张三"]
        assert (zhang.phone, zhang.id_last4) == ("13812345678", ID1[-4:])
        assert zhang.id_hash and ID1 not in zhang.id_hash
        tenant = s.exec(select(Occupancy).where(Occupancy.role == "tenant")).one()
        assert (tenant.payer, tenant.start, tenant.until) == (
            True,
            date(2024, 3, 1),
            date(2025, 3, 1),
        )
        assert service.payer_on(s, r.id, date(2024, 6, 1)).person.name == "李四"
        assert service.payer_on(s, r.id, date(2025, 6, 1)).person.name == "张三"
    # a later owners file: the same ID number is the same person, without the number kept
    again = workbook(
        业主=[OWNER_HEAD, ["P-B1-017", "Zhang San", "", ID1, "owner", "2024-05-01", "", ""]]
    )
    with Session(sites, expire_on_commit=False) as s:
        assert service.import_book(s, "s1", again, "mgr1", KEY, rooms=False).people == 0


def test_every_bad_cell_of_both_sheets_is_named_and_nothing_is_imported(sites):
    with Session(sites, expire_on_commit=False) as s:
        service.create_rooms(s, "s1", [room("9-1-0001")], "mgr1")
    data = workbook(
        房屋=[
            ROOM_HEAD,
            ["1", "1", 3, "0301", "1-1-0301", "住宅", "空置", 120.5, 98.3],  # good
            ["1", "1", 3, "0302", "1-1-0302", "住宅", "空置", -5, 10],
            ["1", "1", 3, "0303", "1-1-0303", "住宅", "空置", 80, 80.01],
            ["1", "1", 3, "0304", "1-1-0304", "宿舍", "空置", 80, 70],
            ["1", "1", 3, "0301", "1-1-0301", "住宅", "空置", 80, 70],
            ["9", "1", 1, "0001", "9-1-0001", "住宅", "空置", 0, 70],
        ],
        业主=[
            OWNER_HEAD,
            ["1-1-0301", "张三", "13812345678", ID1, "业主", "2024-01-01", "", ""],  # good
            ["8-8-8888", "王五", "13812345679", "", "业主", "2024-01-01", "", ""],
            ["1-1-0301", "赵六", "13812345670", "", "住户", "2024-13-45", "", ""],
            ["1-1-0301", "钱七", "12345", "", "租户", "2024-02-01", "", "maybe"],
            ["1-1-0301", "孙八", "", ID2, "owner", "2024-06-01", "", ""],
        ],
    )
    with Session(sites, expire_on_commit=False) as s, pytest.raises(ImportFailed) as info:
        service.import_book(s, "s1", data, "mgr1", KEY, rooms=True)
    got = [(e.sheet, e.row, e.column, e.header) for e in info.value.errors]
    assert got == [
        ("房屋", 3, "H", "建筑面积(m²)"),
        ("房屋", 4, "I", "套内面积"),
        ("房屋", 5, "F", "用途"),
        ("房屋", 6, "E", "房屋编号"),
        ("房屋", 7, "E", "房屋编号"),
        ("房屋", 7, "H", "建筑面积(m²)"),
        ("业主", 3, "A", "code"),
        ("业主", 4, "F", "move-in date"),
        ("业主", 5, "C", "phone"),
        ("业主", 5, "H", "payer"),
        ("业主", 6, "F", "move-in date"),
    ]
    words = {(e.sheet, e.row, e.column): e.message for e in info.value.errors}
    assert words[("房屋", 3, "H")] == "area must be more than 0, not -5"
    assert words[("房屋", 4, "I")] == "interior area 80.01 is more than built area 80.00"
    assert words[("房屋", 5, "F")].startswith("unknown use '宿舍'")
    assert words[("房屋", 6, "E")] == "1-1-0301 is also on row 2"
    assert words[("房屋", 7, "E")] == "9-1-0001 already exists"
    assert words[("业主", 3, "A")] == "no room 8-8-8888"
    assert words[("业主", 4, "F")] == "not a date: '2024-13-45' (e.g. 2024-03-01)"
    assert "not a phone number" in words[("业主", 5, "C")]
    assert words[("业主", 6, "F")] == "overlaps the owner of 1-1-0301 on row 2 (from 2024-01-01)"
    # nothing of the good rows either
    assert (count(sites, Premises), count(sites, Person), count(sites, Occupancy)) == (1, 0, 0)


def test_an_owner_overlapping_one_already_recorded(sites):
    with Session(sites, expire_on_commit=False) as s:
        service.create_rooms(s, "s1", [room("9-1-0001"), room("9-1-0002")], "mgr1")
        pid = s.exec(select(Premises.id).where(Premises.code == "9-1-0001")).one()
        service.move_in(
            s,
            pid,
            PersonIn("张三", "13812345678"),
            service.Role.OWNER,
            date(2020, 1, 1),
            "mgr1",
            KEY,
            until=date(2023, 7, 1),
        )
    data = workbook(
        owners=[
            OWNER_HEAD,
            ["9-1-0001", "李四", "", "", "resident", "2021-01-01", "", ""],  # residents may
            ["9-1-0002", "王五", "", "", "owner", "2021-01-01", "", ""],  # another room
            ["9-1-0001", "赵六", "", "", "owner", "2023-06-30", "", ""],  # one day too early
        ]
    )
    with Session(sites, expire_on_commit=False) as s, pytest.raises(ImportFailed) as info:
        service.import_book(s, "s1", data, "mgr1", KEY, rooms=False)
    (e,) = info.value.errors
    assert (e.sheet, e.row, e.column, e.header) == ("owners", 4, "F", "move-in date")
    assert e.message == "overlaps the owner of 9-1-0001 recorded from 2020-01-01 until 2023-07-01"
    assert count(sites, Occupancy) == 1
    fixed = workbook(
        owners=[OWNER_HEAD, ["9-1-0001", "赵六", "", "", "owner", "2023-07-01", "", ""]]
    )
    with Session(sites, expire_on_commit=False) as s:
        assert service.import_book(s, "s1", fixed, "mgr1", KEY, rooms=False).occupancies == 1


def test_missing_columns_and_files_that_are_no_workbook(sites, monkeypatch):
    data = workbook(rooms=[["房屋编号", "用途", "备注"], ["1-1", "住宅", "x"]])
    with Session(sites, expire_on_commit=False) as s, pytest.raises(ImportFailed) as info:
        service.import_book(s, "s1", data, "mgr1", KEY, rooms=True)
    assert [(e.row, e.column, e.header) for e in info.value.errors] == [
        (1, "", "建筑面积"),
        (1, "", "套内面积"),
    ]
    assert info.value.errors[0].message == "column missing: 建筑面积/built_area/built area"
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("hello.txt", "not a workbook")
    for bad in (b"name,area\n1-1,80\n", zipped.getvalue(), b""):
        with (
            Session(sites, expire_on_commit=False) as s,
            pytest.raises(ImportRefused, match="not an xlsx workbook"),
        ):
            service.import_book(s, "s1", bad, "mgr1", KEY, rooms=True)
    with (
        Session(sites, expire_on_commit=False) as s,
        pytest.raises(xlsx.FileTooLarge, match="over"),
    ):
        service.import_book(s, "s1", data, "mgr1", KEY, rooms=True, max_bytes=1000)
    monkeypatch.setattr(xlsx, "MAX_ROWS", 3)
    many = workbook(
        rooms=[ROOM_HEAD]
        + [["1", "1", 1, f"{i}", f"1-1-{i}", "住宅", "", 80, 70] for i in range(4)]
    )
    with (
        Session(sites, expire_on_commit=False) as s,
        pytest.raises(ImportRefused, match="more than 3 rows"),
    ):
        service.import_book(s, "s1", many, "mgr1", KEY, rooms=True)
    assert count(sites, Premises) == 0


def test_the_export_reads_back_with_personal_data_masked(sites):
    with Session(sites, expire_on_commit=False) as s:
        service.create_rooms(s, "s1", [room("9-1-0001", "120.50", "98.30")], "mgr1")
        pid = s.exec(select(Premises.id)).one()
        service.move_in(
            s,
            pid,
            PersonIn("张三", "13812345678", ID1),
            service.Role.OWNER,
            date(2024, 1, 1),
            "mgr1",
            KEY,
        )
        data = service.export(s, "s1")
        other = service.export(s, "s2")
    wb = load_workbook(io.BytesIO(data))
    rooms = list(wb["房屋"].iter_rows(values_only=True))
    assert rooms[0] == tuple(xlsx.ROOM_HEADERS[f][0] for f in xlsx.ROOM_HEADERS)
    assert rooms[1] == ("9", "1", 1, "0001", "9-1-0001", "住宅", "空置", 120.5, 98.3)
    owners = list(wb["业主"].iter_rows(values_only=True))
    assert owners[1][:5] == ("9-1-0001", "张三", "138****5678", f"****{ID1[-4:]}", "业主")
    cells = [str(v) for ws in wb for row in ws.iter_rows(values_only=True) for v in row]
    assert not any("13812345678" in c or ID1[:8] in c for c in cells)
    # the export is importable as a template (another site's is empty)
    assert len(list(load_workbook(io.BytesIO(other))["房屋"].iter_rows())) == 1
    with Session(sites, expire_on_commit=False) as s:
        assert (
            s.exec(
                select(func.count()).select_from(Premises).where(col(Premises.site_id) == "s2")
            ).one()
            == 0
        )
