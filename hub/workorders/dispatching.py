"""Engineers: their skills and duty (``engineer_duty``), and whose turn it is (round-robin).

An engineer's sites are those of the user (``user.sites``), so moving an engineer to
another site is one change in one place; the skills and the duty flag are kept here,
managed by staff (an engineer may go on and off duty himself).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from hub.auth import Role
from hub.models import User, utcnow
from hub.workorders.lifecycle import Engineer, InvalidAction, pick_engineer
from hub.workorders.models import DispatchTurn, EngineerDuty

SKILL = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


def engineers(s: Session, site: str | None = None) -> list[tuple[User, EngineerDuty | None]]:
    """Active engineers (of ``site``, if given) with their duty rows, by username."""
    users = s.exec(
        select(User)
        .where(User.role == Role.ENGINEER.value, col(User.active))
        .order_by(col(User.username))
    ).all()
    if site is not None:
        users = [u for u in users if site in (u.sites or [])]
    duty = {
        d.username: d
        for d in s.exec(
            select(EngineerDuty).where(col(EngineerDuty.username).in_([u.username for u in users]))
        )
    }
    return [(u, duty.get(u.username)) for u in users]


def roster(s: Session, site: str) -> list[Engineer]:
    """The site's engineers as the lifecycle sees them (no duty row: off duty)."""
    return [
        Engineer(
            u.username,
            frozenset(u.sites or []),
            frozenset(d.skills if d else []),
            on_duty=d.on_duty if d else False,
        )
        for u, d in engineers(s, site)
    ]


def check_assignee(s: Session, site: str, username: str) -> None:
    """InvalidAction unless ``username`` is an active engineer of ``site``."""
    u = s.exec(select(User).where(User.username == username)).first()
    if u is None or not u.active or u.role != Role.ENGINEER or site not in (u.sites or []):
        raise InvalidAction(f"{username} is not an engineer of {site}")


def set_duty(
    s: Session,
    username: str,
    who: str,
    *,
    skills: Iterable[str] | None = None,
    on_duty: bool | None = None,
) -> EngineerDuty:
    """Change an engineer's skills and/or duty and commit. InvalidAction for a bad skill;
    LookupError if ``username`` is not an engineer."""
    u = s.exec(select(User).where(User.username == username)).first()
    if u is None or u.role != Role.ENGINEER:
        raise LookupError(f"no engineer {username}")
    duty = s.get(EngineerDuty, username) or EngineerDuty(username=username)
    if skills is not None:
        wanted = sorted(set(skills))
        bad = [k for k in wanted if not SKILL.match(k)]
        if bad:
            raise InvalidAction(f"a skill is a short lower-case word: {', '.join(bad)}")
        duty.skills = wanted
    if on_duty is not None:
        duty.on_duty = on_duty
    duty.updated_at, duty.updated_by = utcnow(), who
    s.add(duty)
    s.commit()
    return duty


def next_engineer(s: Session, site: str, skill: str) -> str:
    """The next engineer on duty at ``site`` with ``skill`` in turn, recorded as the last
    pick (in the caller's transaction). Raises NoEligibleEngineer.

    The turn row is locked (PostgreSQL), so two orders opened at once go to two engineers.
    """
    ins = (postgresql if s.get_bind().dialect.name == "postgresql" else sqlite).insert
    s.execute(
        ins(DispatchTurn.__table__)  # type: ignore[attr-defined]
        .values(site_id=site, skill=skill, last=None, updated_at=utcnow())
        .on_conflict_do_nothing(index_elements=["site_id", "skill"])
    )
    turn = s.exec(
        select(DispatchTurn)
        .where(DispatchTurn.site_id == site, DispatchTurn.skill == skill)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    name = pick_engineer(roster(s, site), site, skill, turn.last)
    turn.last, turn.updated_at = name, utcnow()
    s.add(turn)
    return name
