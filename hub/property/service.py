"""The property registry's units of work and queries.

Every function that writes owns its transaction: it commits what it did, or rolls back
and raises, leaving nothing behind (an import with one bad cell writes nothing). Refusals:
:class:`NotFound`, :class:`Invalid` (a value no premises can have), :class:`Conflict` (it
contradicts what is recorded: a code taken, owners overlapping, a second area change on
one date), :class:`ImportFailed` (with every bad cell). Days are local (Asia/Shanghai).

Owners' periods on a premises never overlap, nor do those of tenants marked payer; residents
and other tenants may come and go as they like. Bills are not touched here: whoever bills
adjusts them from what :func:`change_area` returns.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, or_, select

from hub.models import Site, utcnow
from hub.property import xlsx
from hub.property.generator import Areas, RoomRow
from hub.property.models import (
    FIRST_DAY,
    Building,
    Occupancy,
    Person,
    Premises,
    PremisesArea,
    PremisesKind,
    Role,
    State,
    Use,
)
from hub.property.people import id_hash, normalise_id, normalise_phone
from hub.property.xlsx import SHANGHAI, CellError, ImportRefused, overlap


class PropertyError(Exception):
    pass


class NotFound(PropertyError, LookupError):
    pass


class Invalid(PropertyError, ValueError):
    pass


class Conflict(PropertyError):
    pass


class ImportFailed(PropertyError):
    """Rows that cannot be imported; nothing was written."""

    def __init__(self, errors: Sequence[CellError]):
        super().__init__(f"{len(errors)} bad cells; nothing imported")
        self.errors = list(errors)


__all__ = [
    "Conflict",
    "ImportFailed",
    "ImportRefused",
    "Invalid",
    "NotFound",
    "PropertyError",
]


def today() -> date:
    return datetime.now(SHANGHAI).date()


@contextmanager
def _work(s: Session) -> Iterator[None]:
    """One unit of work: committed, or rolled back on any error. A unique constraint that
    fires is a Conflict: someone recorded the same thing meanwhile."""
    try:
        yield
        s.commit()
    except IntegrityError as exc:
        s.rollback()
        raise Conflict("changed meanwhile (a code or date recorded twice); try again") from exc
    except BaseException:
        s.rollback()
        raise


@dataclass(frozen=True, slots=True)
class PersonIn:
    name: str
    phone: str = ""
    id_number: str = ""  # hashed and cut to its last 4; never stored
    username: str | None = None  # the owner account that sees this person's premises


# -- creating premises -------------------------------------------------------------------------
def _site(s: Session, site: str) -> None:
    if s.get(Site, site) is None:
        raise NotFound(f"no site {site}")


def _insert_rooms(
    s: Session, site: str, rooms: Sequence[RoomRow | xlsx.RoomIn], by: str
) -> dict[str, int]:
    """Insert the rooms (and the buildings they name) with their first area; code -> id.
    Conflict if a code exists already."""
    codes = [r.code for r in rooms]
    taken = set(s.exec(select(Premises.code).where(Premises.site_id == site)).all())
    if clash := [c for c in codes if c in taken]:
        more = f" and {len(clash) - 5} more" if len(clash) > 5 else ""
        raise Conflict(f"already registered: {', '.join(clash[:5])}{more}")
    buildings = {b.code: b for b in s.exec(select(Building).where(Building.site_id == site))}
    for r in rooms:
        if not r.building:
            continue
        b = buildings.get(r.building)
        if b is None:
            b = buildings[r.building] = Building(site_id=site, code=r.building, name="")
            s.add(b)
        if r.floor is not None and r.floor > b.floors:
            b.floors = r.floor
    s.flush()
    now = utcnow()
    s.execute(
        insert(Premises),
        [
            {
                "site_id": site,
                "kind": (PremisesKind.SPACE if r.use is Use.PARKING else PremisesKind.ROOM).value,
                "code": r.code,
                "building_id": buildings[r.building].id if r.building else None,
                "unit": r.unit,
                "floor": r.floor,
                "number": r.number,
                "use": r.use.value,
                "state": r.state.value,
                "built_area": r.areas.built,
                "interior_area": r.areas.interior,
                "created_at": now,
            }
            for r in rooms
        ],
    )
    ids = _code_ids(s, site)
    s.execute(
        insert(PremisesArea),
        [
            {
                "premises_id": ids[r.code],
                "effective_from": FIRST_DAY,
                "built_area": r.areas.built,
                "interior_area": r.areas.interior,
                "reason": "registered",
                "recorded_by": by,
                "recorded_at": now,
            }
            for r in rooms
        ],
    )
    return {c: ids[c] for c in codes}


def _code_ids(s: Session, site: str) -> dict[str, int]:
    rows = s.exec(select(Premises.code, Premises.id).where(Premises.site_id == site))
    return {code: pid for code, pid in rows if pid is not None}


def create_rooms(s: Session, site: str, rooms: Sequence[RoomRow], by: str) -> int:
    """Register the generator's rooms (and their buildings) and commit; how many. NotFound
    for an unknown site, Conflict if a code is taken (nothing is created then)."""
    with _work(s):
        _site(s, site)
        _insert_rooms(s, site, rooms, by)
    return len(rooms)


# -- import ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ImportResult:
    rooms: int
    occupancies: int
    people: int  # new people; the others were recognised by ID number or name and phone


def import_book(
    s: Session,
    site: str,
    data: bytes,
    by: str,
    key: bytes,
    *,
    rooms: bool,
    owners: bool = True,
    max_bytes: int = xlsx.MAX_BYTES,
) -> ImportResult:
    """Import an xlsx of rooms (``rooms``: its rooms sheet, and an owners sheet if it has
    one by name) or of owners only, in one transaction. ImportRefused for a file that cannot
    be read or is too big; ImportFailed with every bad cell, and nothing written."""
    book = xlsx.read_book(data, rooms=rooms, owners=owners, max_bytes=max_bytes)
    with _work(s):
        _site(s, site)
        errors = book.errors + xlsx.check(book, _known(s, site))
        if errors:
            order = [sh.name for sh in (book.rooms, book.owners) if sh is not None]
            errors.sort(key=lambda e: (order.index(e.sheet), e.row, len(e.column), e.column))
            raise ImportFailed(errors)
        ids: dict[str, int] = {}
        if book.rooms is not None and book.rooms.rows:
            ids = _insert_rooms(s, site, book.rooms.rows, by)
        occupancies = people = 0
        if book.owners is not None and book.owners.rows:
            ids |= _code_ids(s, site)
            before = _count_people(s, site)
            for o in book.owners.rows:
                pin = PersonIn(o.name, o.phone, o.id_number)
                person = _person(s, site, pin, key)
                s.add(_occupancy(ids[o.code], person, o.role, o.start, o.until, o.payer, by))
                s.flush()
                occupancies += 1
            people = _count_people(s, site) - before
        n = len(book.rooms.rows) if book.rooms is not None else 0
    return ImportResult(n, occupancies, people)


def _count_people(s: Session, site: str) -> int:
    return s.exec(select(func.count()).select_from(Person).where(Person.site_id == site)).one()


def _known(s: Session, site: str) -> xlsx.Known:
    codes = frozenset(s.exec(select(Premises.code).where(Premises.site_id == site)).all())
    owners: dict[str, list[tuple[date, date | None]]] = defaultdict(list)
    payers: dict[str, list[tuple[date, date | None]]] = defaultdict(list)
    rows = s.exec(
        select(Premises.code, Occupancy)
        .join(Premises, col(Premises.id) == col(Occupancy.premises_id))
        .where(Premises.site_id == site)
        .where(or_(Occupancy.role == Role.OWNER.value, col(Occupancy.payer)))
    )
    for code, o in rows:
        (owners if o.role == Role.OWNER else payers)[code].append((o.start, o.until))
    return xlsx.Known(codes, owners, payers)


# -- people and occupancy ----------------------------------------------------------------------
def _person(s: Session, site: str, p: PersonIn, key: bytes) -> Person:
    """The person of the site with this ID number (by its keyed hash), else with this name
    and phone, else a new one. A phone or username given replaces the recorded one."""
    try:
        number = normalise_id(p.id_number)
        phone = normalise_phone(p.phone)
    except ValueError as exc:
        raise Invalid(str(exc)) from exc
    name = p.name.strip()
    if not name:
        raise Invalid("a person needs a name")
    digest = id_hash(key, number) if number else ""
    q = select(Person).where(Person.site_id == site)
    found = None
    if digest:
        found = s.exec(q.where(Person.id_hash == digest)).first()
    elif phone:
        found = s.exec(q.where(Person.name == name, Person.phone == phone)).first()
    if found is None:
        found = Person(site_id=site, name=name, id_last4=number[-4:], id_hash=digest)
    if phone:
        found.phone = phone
    if p.username:
        found.username = p.username
    s.add(found)
    s.flush()
    return found


def _occupancy(
    premises_id: int,
    person: Person,
    role: Role,
    start: date,
    until: date | None,
    payer: bool,
    by: str,
) -> Occupancy:
    assert person.id is not None
    return Occupancy(
        premises_id=premises_id,
        person_id=person.id,
        role=role.value,
        start=start,
        until=until,
        payer=payer,
        recorded_by=by,
    )


def _locked(s: Session, premises_id: int) -> Premises:
    # FOR UPDATE (PostgreSQL): changes of one premises' owners or areas queue behind it
    p = s.exec(select(Premises).where(Premises.id == premises_id).with_for_update()).first()
    if p is None:
        raise NotFound(f"no premises {premises_id}")
    return p


def _refuse_overlap(
    s: Session,
    premises_id: int,
    role: Role,
    payer: bool,
    start: date,
    until: date | None,
) -> None:
    q: Any
    if role is Role.OWNER:
        what, q = "owner", Occupancy.role == Role.OWNER.value
    elif payer:
        what, q = "paying tenant", col(Occupancy.payer)
    else:
        return
    for o in s.exec(select(Occupancy).where(Occupancy.premises_id == premises_id, q)):
        if overlap(start, until, o.start, o.until):
            span = f"from {o.start}" + (f" until {o.until}" if o.until else "")
            raise Conflict(f"overlaps the {what} recorded {span}")


def move_in(
    s: Session,
    premises_id: int,
    person: PersonIn,
    role: Role,
    start: date,
    by: str,
    key: bytes,
    *,
    until: date | None = None,
    payer: bool = False,
) -> Occupancy:
    """Record a person's tie to a premises from ``start`` (until ``until``) and commit.
    Invalid for dates out of order or a payer who is not a tenant; Conflict if an owner's
    (or a paying tenant's) period overlaps one recorded."""
    with _work(s):
        p = _locked(s, premises_id)
        if until is not None and until <= start:
            raise Invalid(f"move-out {until} is not after move-in {start}")
        if payer and role is not Role.TENANT:
            raise Invalid("only a tenant is marked payer (an owner pays anyway)")
        _refuse_overlap(s, premises_id, role, payer, start, until)
        occ = _occupancy(
            premises_id, _person(s, p.site_id, person, key), role, start, until, payer, by
        )
        s.add(occ)
    return occ


def move_out(s: Session, occupancy_id: int, until: date) -> Occupancy:
    """End an occupancy on ``until`` (the first day it no longer holds) and commit.
    NotFound, Invalid if not after its start, Conflict if it has ended already."""
    with _work(s):
        occ = s.exec(
            select(Occupancy).where(Occupancy.id == occupancy_id).with_for_update()
        ).first()
        if occ is None:
            raise NotFound(f"no occupancy {occupancy_id}")
        _locked(s, occ.premises_id)
        if occ.until is not None:
            raise Conflict(f"ended already on {occ.until}")
        if until <= occ.start:
            raise Invalid(f"move-out {until} is not after move-in {occ.start}")
        occ.until = until
        s.add(occ)
    return occ


def get_occupancy(s: Session, occupancy_id: int) -> Occupancy:
    occ = s.get(Occupancy, occupancy_id)
    if occ is None:
        raise NotFound(f"no occupancy {occupancy_id}")
    return occ


@dataclass(frozen=True, slots=True)
class Sale:
    ended: Occupancy  # the seller's ownership, now until the day of the sale
    new: Occupancy  # the buyer's, from that day


def sale(s: Session, premises_id: int, day: date, buyer: PersonIn, by: str, key: bytes) -> Sale:
    """The owner on ``day`` sells: their ownership ends on ``day`` and the buyer's starts
    then, in one transaction. Conflict if nobody owns it that day (record the owner with a
    move-in) or an ownership is recorded from that day or later."""
    with _work(s):
        p = _locked(s, premises_id)
        owners = list(
            s.exec(
                select(Occupancy).where(
                    Occupancy.premises_id == premises_id, Occupancy.role == Role.OWNER.value
                )
            )
        )
        if later := [o for o in owners if o.start >= day]:
            raise Conflict(f"an owner is recorded from {later[0].start}, on or after the sale")
        current = [o for o in owners if o.until is None or o.until > day]
        if not current:
            raise Conflict(f"nobody owns {p.code} on {day}; record the owner with a move-in")
        (seller,) = current  # owners never overlap
        seller.until = day
        s.add(seller)
        new = _occupancy(
            premises_id, _person(s, p.site_id, buyer, key), Role.OWNER, day, None, False, by
        )
        s.add(new)
    return Sale(seller, new)


# -- areas -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AreaChange:
    """What billing needs to adjust bills: the new record and the whole history, oldest
    first (the area in effect on a day is the newest record from on or before it)."""

    premises_id: int
    new: PremisesArea
    history: tuple[PremisesArea, ...]


AreaHook = Callable[[Session, AreaChange], None]
_area_hooks: list[AreaHook] = []


def on_area_change(hook: AreaHook) -> Callable[[], None]:
    """Call ``hook(session, change)`` inside the transaction that records an area change
    (fee billing adjusts the bills it touches there): if it raises, nothing is recorded.
    Returns the function that removes it."""
    _area_hooks.append(hook)
    return lambda: _area_hooks.remove(hook)


def change_area(
    s: Session,
    premises_id: int,
    effective_from: date,
    built: Decimal,
    interior: Decimal,
    reason: str,
    by: str,
    now: datetime | None = None,
) -> AreaChange:
    """A new area from ``effective_from`` (a future date is allowed), and commit; the
    premises' area columns then hold the newest record. Invalid for an area ≤ 0, interior
    over built or a date before 2000; Conflict for a second change on one date."""
    try:
        areas = Areas(built, interior)
    except ValueError as exc:
        raise Invalid(str(exc)) from exc
    if effective_from < FIRST_DAY:
        raise Invalid(f"an area change is dated from {FIRST_DAY} on")
    with _work(s):
        p = _locked(s, premises_id)
        history = area_history(s, premises_id)
        if any(a.effective_from == effective_from for a in history):
            raise Conflict(f"an area from {effective_from} is recorded already")
        new = PremisesArea(
            premises_id=premises_id,
            effective_from=effective_from,
            built_area=areas.built,
            interior_area=areas.interior,
            reason=reason,
            recorded_by=by,
            recorded_at=now or datetime.now(UTC),
        )
        s.add(new)
        history = sorted([*history, new], key=lambda a: a.effective_from)
        p.built_area, p.interior_area = history[-1].built_area, history[-1].interior_area
        s.add(p)
        s.flush()
        change = AreaChange(premises_id, new, tuple(history))
        for hook in list(_area_hooks):
            hook(s, change)
    return change


def area_history(s: Session, premises_id: int) -> list[PremisesArea]:
    q = select(PremisesArea).where(PremisesArea.premises_id == premises_id)
    return list(s.exec(q.order_by(col(PremisesArea.effective_from))))


def area_on(history: Sequence[PremisesArea], day: date) -> PremisesArea | None:
    """The record in effect on ``day``: the newest from on or before it (the first, the
    area as registered, also holds before its date)."""
    found = history[0] if history else None
    for a in history:
        if a.effective_from <= day:
            found = a
    return found


# -- queries -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Payer:
    person: Person
    occupancy: Occupancy


def payer_on(s: Session, premises_id: int, day: date) -> Payer | None:
    """Who pays the fees of ``day``: a tenant marked payer whose dates hold it, else the
    owner of that day; None if nobody owns it then."""
    q = (
        select(Occupancy, Person)
        .join(Person, col(Person.id) == col(Occupancy.person_id))
        .where(Occupancy.premises_id == premises_id, col(Occupancy.start) <= day)
        .where(or_(col(Occupancy.until).is_(None), col(Occupancy.until) > day))
    )
    rows = list(s.exec(q))
    for role in (Role.TENANT, Role.OWNER):
        for occ, person in rows:
            if occ.role == role and (occ.payer or role is Role.OWNER):
                return Payer(person, occ)
    return None


def premises_of_user(s: Session, username: str, day: date | None = None) -> list[Premises]:
    """Premises with an occupancy holding on ``day`` (today) whose person is ``username``."""
    day = day or today()
    q = (
        select(Premises)
        .join(Occupancy, col(Occupancy.premises_id) == col(Premises.id))
        .join(Person, col(Person.id) == col(Occupancy.person_id))
        .where(Person.username == username, col(Occupancy.start) <= day)
        .where(or_(col(Occupancy.until).is_(None), col(Occupancy.until) > day))
        .distinct()
        .order_by(col(Premises.site_id), col(Premises.code))
    )
    return list(s.exec(q))


def get_premises(s: Session, premises_id: int) -> Premises:
    p = s.get(Premises, premises_id)
    if p is None:
        raise NotFound(f"no premises {premises_id}")
    return p


def buildings(s: Session, site: str) -> list[Building]:
    return list(
        s.exec(select(Building).where(Building.site_id == site).order_by(col(Building.code)))
    )


def premises_page(
    s: Session,
    site: str,
    *,
    building: str | None = None,
    unit: str | None = None,
    kind: PremisesKind | None = None,
    state: State | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[int, list[Premises]]:
    """(how many match, the page of them by code)."""
    q: Any = select(Premises).where(Premises.site_id == site)
    if building is not None:
        q = q.join(Building, col(Building.id) == col(Premises.building_id)).where(
            Building.code == building
        )
    if unit is not None:
        q = q.where(Premises.unit == unit)
    if kind is not None:
        q = q.where(Premises.kind == kind.value)
    if state is not None:
        q = q.where(Premises.state == state.value)
    total = s.exec(select(func.count()).select_from(q.subquery())).one()
    rows = s.exec(q.order_by(col(Premises.code)).limit(limit).offset(offset)).all()
    return total, list(rows)


def occupants(s: Session, premises_id: int) -> list[tuple[Occupancy, Person]]:
    q = (
        select(Occupancy, Person)
        .join(Person, col(Person.id) == col(Occupancy.person_id))
        .where(Occupancy.premises_id == premises_id)
        .order_by(col(Occupancy.start), col(Occupancy.id))
    )
    return [(o, p) for o, p in s.exec(q)]


def export(s: Session, site: str) -> bytes:
    """The site's rooms and everyone's occupancies as an xlsx (personal data masked)."""
    codes = {b.id: b.code for b in buildings(s, site)}
    rooms = s.exec(select(Premises).where(Premises.site_id == site).order_by(col(Premises.code)))
    room_rows: Iterable[xlsx.RoomOut] = [
        xlsx.RoomOut(
            codes.get(p.building_id, "") if p.building_id else "",
            p.unit,
            p.floor,
            p.number,
            p.code,
            p.use,
            p.state,
            p.built_area,
            p.interior_area,
        )
        for p in rooms
    ]
    q = (
        select(Premises.code, Occupancy, Person)
        .join(Occupancy, col(Occupancy.premises_id) == col(Premises.id))
        .join(Person, col(Person.id) == col(Occupancy.person_id))
        .where(Premises.site_id == site)
        .order_by(col(Premises.code), col(Occupancy.start), col(Occupancy.id))
    )
    owner_rows = [
        xlsx.OwnerOut(code, p.name, p.phone, p.id_last4, o.role, o.start, o.until, o.payer)
        for code, o, p in s.exec(q)
    ]
    return xlsx.export_book(room_rows, owner_rows)
