"""Rooms and owners in and out of xlsx workbooks (openpyxl; no database here).

Reading validates every row completely and reports every bad cell as a :class:`CellError`
(sheet, row as Excel numbers it, column letter and header, message); what only the database
knows (codes already there, owners already recorded) comes in as :class:`Known` and is
checked by :func:`check`. A file that cannot be read at all, is too big or has too many rows
is refused whole (:class:`ImportRefused`). Headers may be Chinese or English.

Export writes the same columns; phones and ID numbers masked as the API's lists show them.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo

from openpyxl import Workbook, load_workbook
from openpyxl.utils import get_column_letter

from hub.property.generator import CODE_LEN, NUMBER_LEN, PART_LEN, Areas, area
from hub.property.models import Role, State, Use
from hub.property.people import mask_id, mask_phone, normalise_id, normalise_phone

SHANGHAI = ZoneInfo("Asia/Shanghai")
MAX_BYTES = 10 * 1024 * 1024  # the file as uploaded
MAX_UNZIPPED = 200 * 1024 * 1024  # what its parts unpack to (a zip bomb is refused unread)
MAX_ROWS = 50_000  # data rows per sheet
NAME_LEN = 64

ROOM_SHEETS = ("房屋", "rooms", "room", "房间")
OWNER_SHEETS = ("业主", "owners", "owner", "住户")

# field -> accepted headers; the first is the one exports write
ROOM_HEADERS: dict[str, tuple[str, ...]] = {
    "building": ("楼栋", "楼号", "building"),
    "unit": ("单元", "unit"),
    "floor": ("楼层", "floor"),
    "number": ("房号", "number", "room number"),
    "code": ("房屋编号", "编号", "code", "room code"),
    "use": ("用途", "use"),
    "state": ("状态", "state"),
    "built_area": ("建筑面积", "built_area", "built area"),
    "interior_area": ("套内面积", "interior_area", "interior area"),
}
ROOM_REQUIRED = ("code", "use", "built_area", "interior_area")
OWNER_HEADERS: dict[str, tuple[str, ...]] = {
    "code": ("房屋编号", "编号", "code", "room code", "room_code"),
    "name": ("姓名", "name"),
    "phone": ("电话", "手机", "手机号", "联系电话", "phone"),
    "id_number": ("身份证号", "证件号码", "身份证号码", "id_number", "id number"),
    "role": ("身份", "角色", "role"),
    "start": ("入住日期", "迁入日期", "move_in", "move-in date", "start"),
    "until": ("迁出日期", "move_out", "move-out date", "until"),
    "payer": ("缴费人", "是否缴费", "payer"),
}
OWNER_REQUIRED = ("code", "name", "role", "start")

USES = {"住宅": Use.RESIDENCE, "商铺": Use.SHOP, "办公": Use.OFFICE, "车位": Use.PARKING}
STATES = {"空置": State.VACANT, "入住": State.OCCUPIED, "已入住": State.OCCUPIED}
STATES |= {"装修": State.DECORATING, "装修中": State.DECORATING}
ROLES = {"业主": Role.OWNER, "住户": Role.RESIDENT, "租户": Role.TENANT}
YES = {"yes", "y", "true", "1", "是", "√"}
NO = {"no", "n", "false", "0", "否", ""}
USE_LABEL = {v: k for k, v in USES.items()}
STATE_LABEL = {State.VACANT: "空置", State.OCCUPIED: "入住", State.DECORATING: "装修"}
ROLE_LABEL = {v: k for k, v in ROLES.items()}
_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y年%m月%d日", "%Y%m%d")


class ImportRefused(ValueError):
    """The file as a whole cannot be imported: not an xlsx, too big, too many rows."""


class FileTooLarge(ImportRefused):
    pass


@dataclass(frozen=True, slots=True)
class CellError:
    sheet: str
    row: int  # as Excel shows it (the header is row 1)
    column: str  # "C"; "" for a column that is missing
    header: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "sheet": self.sheet,
            "row": self.row,
            "column": self.column,
            "header": self.header,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class RoomIn:
    row: int
    building: str
    unit: str
    floor: int | None
    number: str
    code: str
    use: Use
    state: State
    areas: Areas


@dataclass(frozen=True, slots=True)
class OwnerIn:
    row: int
    code: str
    name: str
    phone: str  # digits
    id_number: str  # normalised; held in memory only, to hash
    role: Role
    start: date
    until: date | None
    payer: bool


T = TypeVar("T")


@dataclass(slots=True)
class Sheet(Generic[T]):
    name: str
    columns: dict[str, tuple[str, str]] = field(default_factory=dict)  # field: (letter, header)
    rows: list[T] = field(default_factory=list)  # the rows without a bad cell
    # (row, code) of every row whose code reads, bad or not: checked against the others
    codes: list[tuple[int, str]] = field(default_factory=list)

    def error(self, row: int, fld: str, message: str) -> CellError:
        letter, header = self.columns.get(fld, ("", fld))
        return CellError(self.name, row, letter, header, message)


@dataclass(slots=True)
class Book:
    rooms: Sheet[RoomIn] | None = None
    owners: Sheet[OwnerIn] | None = None
    errors: list[CellError] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Known:
    """What the database holds for the checks a file cannot make alone."""

    codes: frozenset[str] = frozenset()  # premises codes of the site
    # code -> (start, until) of its owners, and of its tenants marked payer
    owners: Mapping[str, Sequence[tuple[date, date | None]]] = field(default_factory=dict)
    payers: Mapping[str, Sequence[tuple[date, date | None]]] = field(default_factory=dict)


# -- reading -----------------------------------------------------------------------------------
def open_book(data: bytes, max_bytes: int = MAX_BYTES) -> Any:
    """The workbook in ``data`` (read only, cached formula values). ImportRefused if it is
    larger than ``max_bytes``, unpacks to more than MAX_UNZIPPED or is no xlsx at all."""
    if len(data) > max_bytes:
        raise FileTooLarge(f"the file is over {max_bytes // 1024 // 1024} MiB")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            if sum(i.file_size for i in z.infolist()) > MAX_UNZIPPED:
                raise FileTooLarge("the workbook unpacks to more than 200 MiB")
    except zipfile.BadZipFile as exc:
        raise ImportRefused("not an xlsx workbook (an Excel 2007+ .xlsx file is needed)") from exc
    try:
        return load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises whatever its parsers meet in a bad file
        raise ImportRefused(f"not an xlsx workbook ({type(exc).__name__})") from exc


def read_book(data: bytes, *, rooms: bool, owners: bool, max_bytes: int = MAX_BYTES) -> Book:
    """The rooms sheet (named 房屋/rooms, else the first) if ``rooms``, and the owners sheet
    (named 业主/owners; if ``rooms`` is false, else the first). With ``rooms`` an owners sheet
    is read only if there is one by name. ImportRefused for a file that cannot be read."""
    wb = open_book(data, max_bytes)
    try:
        book = Book()
        names = {n.strip().lower(): n for n in wb.sheetnames}
        room_name = next((names[n] for n in ROOM_SHEETS if n in names), None)
        owner_name = next((names[n] for n in OWNER_SHEETS if n in names), None)
        if rooms:
            name = room_name or wb.sheetnames[0]
            book.rooms = _read(wb[name], ROOM_HEADERS, ROOM_REQUIRED, _room, book.errors)
        if owners and (owner_name or not rooms):
            name = owner_name or wb.sheetnames[0]
            book.owners = _read(wb[name], OWNER_HEADERS, OWNER_REQUIRED, _owner, book.errors)
        return book
    finally:
        wb.close()


def _norm(header: str) -> str:
    h = re.sub(r"[(（].*?[)）]", "", header)  # "建筑面积(m²)"
    return re.sub(r"[\s_\-]", "", h).lower()


_Parse = Callable[["Sheet[Any]", int, dict[str, Any], list[CellError]], Any]


def _read(
    ws: Any,
    headers: dict[str, tuple[str, ...]],
    required: tuple[str, ...],
    parse: _Parse,
    errors: list[CellError],
) -> Sheet[Any]:
    ws.reset_dimensions()  # never trust the size a writer recorded
    sheet: Sheet[Any] = Sheet(ws.title)
    lookup = {_norm(h): f for f, hs in headers.items() for h in hs}
    rows = ws.iter_rows(values_only=True)
    head = next(rows, None) or ()
    places: dict[str, int] = {}
    for i, value in enumerate(head):
        text = _text(value)
        f = lookup.get(_norm(text)) if text else None
        if f is None:
            continue  # a column of remarks: not ours
        letter = get_column_letter(i + 1)
        if f in places:
            errors.append(CellError(sheet.name, 1, letter, text, f"a second {f} column"))
            continue
        places[f] = i
        sheet.columns[f] = (letter, text)
    missing = [f for f in required if f not in places]
    for f in missing:
        names = "/".join(headers[f])
        errors.append(CellError(sheet.name, 1, "", headers[f][0], f"column missing: {names}"))
    count = 0
    for number, row in enumerate(rows, start=2):
        values = {f: row[i] if i < len(row) else None for f, i in places.items()}
        if all(_text(v) == "" for v in values.values()):
            if number > 4 * MAX_ROWS:
                break  # formatted but empty rows to the end of the sheet
            continue
        count += 1
        if count > MAX_ROWS:
            raise ImportRefused(f"sheet {sheet.name}: more than {MAX_ROWS} rows")
        if missing:
            continue  # every cell would be wrong for the same reason
        parsed = parse(sheet, number, values, errors)
        if parsed is not None:
            sheet.rows.append(parsed)
    return sheet


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value).strip()


class _Row:
    """One row's cells, parsed field by field; each failure recorded against its cell."""

    def __init__(self, sheet: Sheet[Any], number: int, values: dict[str, Any], errors: list[Any]):
        self.sheet, self.number, self.values, self.errors = sheet, number, values, errors
        self.bad = False

    def fail(self, fld: str, message: str) -> None:
        self.errors.append(self.sheet.error(self.number, fld, message))
        self.bad = True

    def text(self, fld: str, most: int, required: bool = False) -> str:
        t = _text(self.values.get(fld))
        if "\x00" in t:
            self.fail(fld, "contains a NUL character")
        elif required and not t:
            self.fail(fld, "empty")
        elif len(t) > most:
            self.fail(fld, f"longer than {most} characters")
        else:
            return t
        return ""

    def choice(self, fld: str, labels: Mapping[str, Any], enum: Any, default: Any = None) -> Any:
        t = _text(self.values.get(fld))
        if not t and default is not None:
            return default
        found = labels.get(t)
        if found is None:
            try:
                found = enum(t.lower())
            except ValueError:
                known = "/".join([*labels, *(e.value for e in enum)])
                self.fail(fld, f"unknown {fld} {t!r} (one of {known})" if t else "empty")
        return found

    def check(self, fld: str, convert: Callable[[Any], Any]) -> Any:
        try:
            return convert(self.values.get(fld))
        except ValueError as exc:
            self.fail(fld, str(exc))
            return None


def _floor(value: Any) -> int | None:
    t = _text(value)
    if not t:
        return None
    if not re.fullmatch(r"-?\d{1,3}", t):
        raise ValueError(f"a floor is a whole number, not {t!r}")
    return int(t)


def _area(value: Any) -> Decimal:
    if value is None or _text(value) == "":
        raise ValueError("empty")
    # openpyxl gives a number cell as float: its shortest repr is the number typed
    return area(repr(value) if isinstance(value, float) else _text(value), "area")


def _date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return (value.astimezone(SHANGHAI) if value.tzinfo else value).date()
    if isinstance(value, date):
        return value
    t = _text(value)
    if not t:
        return None
    for fmt in _DATE_FORMATS:
        try:
            d = datetime.strptime(t, fmt).date()
        except ValueError:
            continue
        if 1900 <= d.year <= 2200:
            return d
    raise ValueError(f"not a date: {t!r} (e.g. 2024-03-01)")


def _room(sheet: Sheet[Any], number: int, values: dict[str, Any], errors: list[Any]) -> Any:
    r = _Row(sheet, number, values, errors)
    building = r.text("building", PART_LEN)
    unit = r.text("unit", PART_LEN)
    floor = r.check("floor", _floor)
    num = r.text("number", NUMBER_LEN)
    code = r.text("code", CODE_LEN, required=True)
    if code:
        sheet.codes.append((number, code))
    use = r.choice("use", USES, Use)
    state = r.choice("state", STATES, State, default=State.VACANT)
    built = r.check("built_area", _area)
    interior = r.check("interior_area", _area)
    if built is not None and interior is not None and interior > built:
        r.fail("interior_area", f"interior area {interior} is more than built area {built}")
    if r.bad:
        return None
    return RoomIn(number, building, unit, floor, num, code, use, state, Areas(built, interior))


def _owner(sheet: Sheet[Any], number: int, values: dict[str, Any], errors: list[Any]) -> Any:
    r = _Row(sheet, number, values, errors)
    code = r.text("code", CODE_LEN, required=True)
    if code:
        sheet.codes.append((number, code))
    name = r.text("name", NAME_LEN, required=True)
    phone = r.check("phone", lambda v: normalise_phone(_text(v)))
    id_number = r.check("id_number", lambda v: normalise_id(_text(v)))
    role = r.choice("role", ROLES, Role)
    start = r.check("start", _date)
    if _text(values.get("start")) == "":
        r.fail("start", "empty")
    until = r.check("until", _date)
    if start is not None and until is not None and until <= start:
        r.fail("until", f"move-out {until} is not after move-in {start}")
    payer_text = _text(values.get("payer")).lower()
    payer = payer_text in YES
    if not payer and payer_text not in NO:
        r.fail("payer", f"payer is yes or no (是/否), not {payer_text!r}")
    elif payer and role not in (Role.TENANT, None):
        r.fail("payer", "only a tenant is marked payer (an owner pays anyway)")
    if r.bad:
        return None
    return OwnerIn(number, code, name, phone, id_number, role, start, until, payer)


# -- what needs the database ---------------------------------------------------------------------
def check(book: Book, known: Known) -> list[CellError]:
    """Errors that need more than one row or the database: a code twice in the file or
    already there, an owner row for a room nowhere, owner periods (and payer tenants')
    that overlap in the file or with those recorded."""
    errors: list[CellError] = []
    file_codes: set[str] = set()
    if book.rooms is not None:
        first: dict[str, int] = {}
        for row, code in book.rooms.codes:
            if code in known.codes:
                errors.append(book.rooms.error(row, "code", f"{code} already exists"))
            elif code in first:
                errors.append(book.rooms.error(row, "code", f"{code} is also on row {first[code]}"))
            first.setdefault(code, row)
        file_codes = set(first)
    if book.owners is not None:
        sheet = book.owners
        for row, code in sheet.codes:
            if code not in known.codes and code not in file_codes:
                errors.append(sheet.error(row, "code", f"no room {code}"))
        owners = [o for o in sheet.rows if o.role is Role.OWNER]
        errors += _overlaps(sheet, owners, known.owners, "owner")
        payers = [o for o in sheet.rows if o.payer]
        errors += _overlaps(sheet, payers, known.payers, "paying tenant")
    return errors


def _overlaps(
    sheet: Sheet[OwnerIn],
    rows: Iterable[OwnerIn],
    recorded: Mapping[str, Sequence[tuple[date, date | None]]],
    what: str,
) -> list[CellError]:
    errors = []
    by_code: dict[str, list[OwnerIn]] = defaultdict(list)
    for o in rows:
        by_code[o.code].append(o)
    for code, group in by_code.items():
        for i, o in enumerate(group):
            for start, until in recorded.get(code, ()):
                if overlap(o.start, o.until, start, until):
                    msg = f"overlaps the {what} of {code} recorded {_span(start, until)}"
                    errors.append(sheet.error(o.row, "start", msg))
            for p in group[:i]:
                if overlap(o.start, o.until, p.start, p.until):
                    msg = (
                        f"overlaps the {what} of {code} on row {p.row} ({_span(p.start, p.until)})"
                    )
                    errors.append(sheet.error(o.row, "start", msg))
    return errors


def overlap(a0: date, a1: date | None, b0: date, b1: date | None) -> bool:
    """Whether [a0, a1) and [b0, b1) share a day; None is open-ended."""
    return (a1 is None or b0 < a1) and (b1 is None or a0 < b1)


def _span(start: date, until: date | None) -> str:
    return f"from {start}" + (f" until {until}" if until else "")


# -- export ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RoomOut:
    building: str
    unit: str
    floor: int | None
    number: str
    code: str
    use: str
    state: str
    built_area: Decimal
    interior_area: Decimal


@dataclass(frozen=True, slots=True)
class OwnerOut:
    code: str
    name: str
    phone: str  # as stored; masked on the way out
    id_last4: str
    role: str
    start: date
    until: date | None
    payer: bool


def export_book(rooms: Iterable[RoomOut], owners: Iterable[OwnerOut]) -> bytes:
    """A workbook of two sheets, 房屋 and 业主, with the headers the import reads; phones
    as ``138****5678`` and ID numbers as ``****1234``."""
    wb = Workbook(write_only=True)
    ws = wb.create_sheet(ROOM_SHEETS[0])
    ws.append([ROOM_HEADERS[f][0] for f in ROOM_HEADERS])
    for r in rooms:
        use = USE_LABEL.get(Use(r.use), r.use)
        state = STATE_LABEL.get(State(r.state), r.state)
        ws.append(
            [
                r.building,
                r.unit,
                r.floor,
                r.number,
                r.code,
                use,
                state,
                r.built_area,
                r.interior_area,
            ]
        )
    ws = wb.create_sheet(OWNER_SHEETS[0])
    ws.append([OWNER_HEADERS[f][0] for f in OWNER_HEADERS])
    for o in owners:
        role = ROLE_LABEL.get(Role(o.role), o.role)
        ws.append(
            [
                o.code,
                o.name,
                mask_phone(o.phone),
                mask_id(o.id_last4),
                role,
                o.start,
                o.until,
                "是" if o.payer else "否",
            ]
        )
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()
