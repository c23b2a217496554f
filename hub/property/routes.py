"""The property registry over HTTP: buildings and premises of a site, one premises with its
areas and occupants, generating and importing rooms, export, area changes, move-in,
move-out and sale.

Who: staff of the site read (HQ every site); hq_admin and site_manager write (403 for the
others); an owner reads the premises he is recorded on (``/me/premises``, and each of
them). A premises of another site, or not the owner's, is 404. Phones and ID numbers are
masked, except the phone on the single-premises view for hq_admin and site_manager.
Refusals: Invalid -> 422, Conflict -> 409, bad rows of an import -> 422 with every cell.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, HTTPException, Query, Response, UploadFile, status
from pydantic import BaseModel, Field

from hub.api.deps import (
    CurrentUser,
    SessionDep,
    SettingsDep,
    StaffUser,
    attachment,
    forbid_unless,
    not_found,
)
from hub.api.deps import row_id as _row_id
from hub.auth import Role as UserRole
from hub.auth import can_see_site
from hub.models import User
from hub.property import generator, service, xlsx
from hub.property.models import Building, Premises, PremisesArea, PremisesKind, Role, State, Use
from hub.property.people import mask_id, mask_phone

router = APIRouter(prefix="/api/v1", tags=["property"])
WRITERS = {UserRole.HQ_ADMIN, UserRole.SITE_MANAGER}  # also the ones who see full phones
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _premises_id(premises_id: int) -> int:
    return _row_id(premises_id, "premises")


def _occupancy_id(occupancy_id: int) -> int:
    return _row_id(occupancy_id, "occupancy")


PremisesId = Annotated[int, Depends(_premises_id)]
OccupancyId = Annotated[int, Depends(_occupancy_id)]
Text64 = Annotated[str, Field(max_length=64)]


# -- public models -----------------------------------------------------------------------------
class BuildingPublic(BaseModel):
    id: int
    code: str
    name: str
    floors: int


class PremisesPublic(BaseModel):
    id: int
    site_id: str
    kind: str
    code: str
    building_id: int | None
    unit: str
    floor: int | None
    number: str
    use: str
    state: str
    built_area: Decimal  # the newest record (a future change shows ahead of its date)
    interior_area: Decimal


class PremisesPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[PremisesPublic]


class AreaPublic(BaseModel):
    effective_from: date
    built_area: Decimal
    interior_area: Decimal
    reason: str
    recorded_by: str
    recorded_at: datetime


class OccupantPublic(BaseModel):
    id: int  # the occupancy (for a move-out)
    person_id: int
    name: str
    phone: str  # masked, but on the single view for hq_admin and site_manager
    id_number: str  # only ever "****1234"
    role: str
    start: date
    until: date | None
    payer: bool


class PremisesDetail(PremisesPublic):
    area_today: AreaPublic | None
    areas: list[AreaPublic]
    occupants: list[OccupantPublic]


class AreaIn(BaseModel):
    built: Decimal
    interior: Decimal


class GenerateBody(BaseModel):
    buildings: int | list[Annotated[str, Field(max_length=16)]]  # a count (1..n) or codes
    units: int | list[Annotated[str, Field(max_length=16)]] = 1
    floors: int
    rooms_per_floor: int
    first_floor: Annotated[int, Field(ge=-9, le=300)] = 1
    areas: Annotated[list[AreaIn], Field(min_length=1, max_length=100)]
    use: Use = Use.RESIDENCE
    state: State = State.VACANT
    number: Annotated[str, Field(max_length=64)] = "{floor:02d}{room:02d}"
    code: Annotated[str, Field(max_length=64)] = "{building}-{unit}-{number}"


class Created(BaseModel):
    created: int


class Imported(BaseModel):
    rooms: int
    occupancies: int
    people: int


class AreaChangeBody(BaseModel):
    effective_from: date
    built_area: Decimal
    interior_area: Decimal
    reason: Annotated[str, Field(max_length=200)] = ""


class AreaChanged(BaseModel):
    new: AreaPublic
    history: list[AreaPublic]


class PersonBody(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    phone: Annotated[str, Field(max_length=32)] = ""
    id_number: Annotated[str, Field(max_length=32)] = ""  # only its last 4 and a hash are kept
    username: Text64 | None = None  # the owner account that then sees this premises


class MoveInBody(BaseModel):
    person: PersonBody
    role: Role
    start: date
    until: date | None = None
    payer: bool = False  # tenants only


class MoveOutBody(BaseModel):
    until: date  # the first day no longer there


class SaleBody(BaseModel):
    day: date  # the seller owns it until this day, the buyer from it
    buyer: PersonBody


class SalePublic(BaseModel):
    ended: OccupantPublic
    new: OccupantPublic


# -- helpers -----------------------------------------------------------------------------------
def _refusal(exc: service.PropertyError) -> HTTPException:
    if isinstance(exc, service.ImportFailed):
        detail: Any = {"message": str(exc), "errors": [e.as_dict() for e in exc.errors]}
        return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)
    if isinstance(exc, service.NotFound):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))
    if isinstance(exc, service.Conflict):
        return HTTPException(status.HTTP_409_CONFLICT, str(exc))
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))


def _may_write(user: User, site: str) -> None:
    forbid_unless(can_see_site(user, site), f"site {site}")
    forbid_unless(user.role in WRITERS, f"a {user.role} reads the property registry only")


def _visible(session: SessionDep, user: User, premises_id: int) -> Premises:
    """The premises if ``user`` may read it: staff of its site, or an owner recorded on it;
    else 404 in the words of one that does not exist."""
    p = session.get(Premises, premises_id)
    if p is not None:
        if user.role == UserRole.OWNER:
            mine = service.premises_of_user(session, user.username)
            if any(m.id == p.id for m in mine):
                return p
        elif can_see_site(user, p.site_id):
            return p
    raise not_found(f"premises {premises_id}")


def _writable(session: SessionDep, user: User, premises_id: int) -> Premises:
    p = _visible(session, user, premises_id)
    _may_write(user, p.site_id)
    return p


def _public(p: Premises) -> PremisesPublic:
    assert p.id is not None
    return PremisesPublic(
        id=p.id,
        site_id=p.site_id,
        kind=p.kind,
        code=p.code,
        building_id=p.building_id,
        unit=p.unit,
        floor=p.floor,
        number=p.number,
        use=p.use,
        state=p.state,
        built_area=p.built_area,
        interior_area=p.interior_area,
    )


def _area(a: PremisesArea) -> AreaPublic:
    return AreaPublic.model_validate(a, from_attributes=True)


def _occupant(o: Any, person: Any, full_phone: bool = False) -> OccupantPublic:
    return OccupantPublic(
        id=o.id,
        person_id=person.id,
        name=person.name,
        phone=person.phone if full_phone else mask_phone(person.phone),
        id_number=mask_id(person.id_last4),
        role=o.role,
        start=o.start,
        until=o.until,
        payer=o.payer,
    )


def _person(body: PersonBody) -> service.PersonIn:
    return service.PersonIn(body.name, body.phone, body.id_number, body.username)


def _codes(value: int | list[str], what: str) -> tuple[str, ...]:
    return generator.numbered(value, what) if isinstance(value, int) else tuple(value)


# -- reading -----------------------------------------------------------------------------------
@router.get("/sites/{site}/buildings")
def list_buildings(site: str, user: StaffUser, session: SessionDep) -> list[BuildingPublic]:
    forbid_unless(can_see_site(user, site), f"site {site}")
    return [_building(b) for b in service.buildings(session, site)]


def _building(b: Building) -> BuildingPublic:
    assert b.id is not None
    return BuildingPublic(id=b.id, code=b.code, name=b.name, floors=b.floors)


@router.get("/sites/{site}/premises")
def list_premises(
    site: str,
    user: StaffUser,
    session: SessionDep,
    building: Annotated[str | None, Query(max_length=16)] = None,
    unit: Annotated[str | None, Query(max_length=16)] = None,
    kind: PremisesKind | None = None,
    state: State | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> PremisesPage:
    """The site's premises by code, filtered by building code, unit, kind and state."""
    forbid_unless(can_see_site(user, site), f"site {site}")
    total, rows = service.premises_page(
        session,
        site,
        building=building,
        unit=unit,
        kind=kind,
        state=state,
        limit=limit,
        offset=offset,
    )
    return PremisesPage(total=total, limit=limit, offset=offset, items=[_public(p) for p in rows])


@router.get("/me/premises")
def my_premises(user: CurrentUser, session: SessionDep) -> list[PremisesPublic]:
    """The premises the caller is recorded on today (an owner, resident or tenant)."""
    return [_public(p) for p in service.premises_of_user(session, user.username)]


@router.get("/premises/{premises_id}")
def premises_detail(
    premises_id: PremisesId, user: CurrentUser, session: SessionDep
) -> PremisesDetail:
    p = _visible(session, user, premises_id)
    history = service.area_history(session, premises_id)
    today = service.area_on(history, service.today())
    full = user.role in WRITERS
    return PremisesDetail(
        **_public(p).model_dump(),
        area_today=_area(today) if today is not None else None,
        areas=[_area(a) for a in history],
        occupants=[_occupant(o, q, full) for o, q in service.occupants(session, premises_id)],
    )


@router.get("/sites/{site}/property/export", response_class=Response)
def export(site: str, user: StaffUser, session: SessionDep) -> Response:
    """An xlsx of the site's rooms (房屋) and occupants (业主); phones and ID numbers masked."""
    forbid_unless(can_see_site(user, site), f"site {site}")
    name = re.sub(r"[^A-Za-z0-9_-]", "_", site)
    return Response(
        service.export(session, site),
        media_type=XLSX,
        headers=attachment(f"{name}-property.xlsx"),
    )


# -- writing -----------------------------------------------------------------------------------
@router.post("/sites/{site}/premises/generate", status_code=status.HTTP_201_CREATED)
def generate(site: str, body: GenerateBody, user: StaffUser, session: SessionDep) -> Created:
    """Rooms of new buildings: buildings × units × floors × rooms per floor."""
    _may_write(user, site)
    try:
        plan = generator.RoomPlan(
            buildings=_codes(body.buildings, "buildings"),
            units=_codes(body.units, "units"),
            floors=body.floors,
            rooms_per_floor=body.rooms_per_floor,
            areas=tuple(generator.Areas(a.built, a.interior) for a in body.areas),
            use=body.use,
            state=body.state,
            first_floor=body.first_floor,
            number=body.number,
            code=body.code,
        )
        rows = generator.plan_rooms(plan)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    try:
        return Created(created=service.create_rooms(session, site, rows, user.username))
    except service.PropertyError as exc:
        raise _refusal(exc) from exc


def _upload(file: UploadFile) -> bytes:
    data = file.file.read(xlsx.MAX_BYTES + 1)  # never more than the limit into memory
    if len(data) > xlsx.MAX_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "the file is over 10 MiB")
    return data


def _import(
    site: str, file: UploadFile, user: User, session: SessionDep, settings: SettingsDep, rooms: bool
) -> Imported:
    _may_write(user, site)
    try:
        r = service.import_book(
            session, site, _upload(file), user.username, settings.person_key(), rooms=rooms
        )
    except xlsx.FileTooLarge as exc:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(exc)) from exc
    except xlsx.ImportRefused as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    except service.PropertyError as exc:
        raise _refusal(exc) from exc
    return Imported(rooms=r.rooms, occupancies=r.occupancies, people=r.people)


@router.post("/sites/{site}/property/import/rooms")
def import_rooms(
    site: str,
    file: Annotated[UploadFile, File(description="xlsx: a 房屋/rooms sheet, maybe 业主/owners")],
    user: StaffUser,
    session: SessionDep,
    settings: SettingsDep,
) -> Imported:
    """Rooms (and, if the workbook has an owners sheet, their occupants), all or nothing."""
    return _import(site, file, user, session, settings, rooms=True)


@router.post("/sites/{site}/property/import/owners")
def import_owners(
    site: str,
    file: Annotated[UploadFile, File(description="xlsx: an 业主/owners sheet")],
    user: StaffUser,
    session: SessionDep,
    settings: SettingsDep,
) -> Imported:
    """Owners, residents and tenants of rooms already registered, all or nothing."""
    return _import(site, file, user, session, settings, rooms=False)


@router.post("/premises/{premises_id}/areas", status_code=status.HTTP_201_CREATED)
def change_area(
    premises_id: PremisesId, body: AreaChangeBody, user: StaffUser, session: SessionDep
) -> AreaChanged:
    """A new area from a date (a future date too); bills it touches are adjusted by billing."""
    _writable(session, user, premises_id)
    try:
        change = service.change_area(
            session,
            premises_id,
            body.effective_from,
            body.built_area,
            body.interior_area,
            body.reason,
            user.username,
        )
    except service.PropertyError as exc:
        raise _refusal(exc) from exc
    return AreaChanged(new=_area(change.new), history=[_area(a) for a in change.history])


@router.post("/premises/{premises_id}/occupancies", status_code=status.HTTP_201_CREATED)
def move_in(
    premises_id: PremisesId,
    body: MoveInBody,
    user: StaffUser,
    session: SessionDep,
    settings: SettingsDep,
) -> OccupantPublic:
    """A move-in: an owner (never overlapping another), a resident or a tenant."""
    _writable(session, user, premises_id)
    try:
        occ = service.move_in(
            session,
            premises_id,
            _person(body.person),
            body.role,
            body.start,
            user.username,
            settings.person_key(),
            until=body.until,
            payer=body.payer,
        )
    except service.PropertyError as exc:
        raise _refusal(exc) from exc
    return _occupant_of(session, occ)


def _occupant_of(session: SessionDep, occ: Any) -> OccupantPublic:
    pairs = service.occupants(session, occ.premises_id)
    return next(_occupant(o, p) for o, p in pairs if o.id == occ.id)


@router.post("/occupancies/{occupancy_id}/move-out")
def move_out(
    occupancy_id: OccupancyId, body: MoveOutBody, user: StaffUser, session: SessionDep
) -> OccupantPublic:
    try:
        occ = service.get_occupancy(session, occupancy_id)
    except service.NotFound as exc:
        raise not_found(f"occupancy {occupancy_id}") from exc
    try:
        _writable(session, user, occ.premises_id)
    except HTTPException as exc:
        if exc.status_code == status.HTTP_404_NOT_FOUND:
            raise not_found(f"occupancy {occupancy_id}") from exc
        raise
    try:
        occ = service.move_out(session, occupancy_id, body.until)
    except service.PropertyError as exc:
        raise _refusal(exc) from exc
    return _occupant_of(session, occ)


@router.post("/premises/{premises_id}/sale", status_code=status.HTTP_201_CREATED)
def sale(
    premises_id: PremisesId,
    body: SaleBody,
    user: StaffUser,
    session: SessionDep,
    settings: SettingsDep,
) -> SalePublic:
    """The owner on ``day`` sells to the buyer: one ends and the other starts that day."""
    _writable(session, user, premises_id)
    try:
        done = service.sale(
            session,
            premises_id,
            body.day,
            _person(body.buyer),
            user.username,
            settings.person_key(),
        )
    except service.PropertyError as exc:
        raise _refusal(exc) from exc
    return SalePublic(ended=_occupant_of(session, done.ended), new=_occupant_of(session, done.new))
