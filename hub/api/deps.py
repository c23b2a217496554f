"""Shared dependencies of the routes, as ``Annotated`` aliases."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordBearer
from pydantic import AfterValidator
from sqlmodel import Session, select

from hub.auth import OPERATORS, STAFF, Role, read_token
from hub.models import User
from hub.settings import HubSettings

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token")


async def get_settings(request: Request) -> HubSettings:
    settings: HubSettings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session


SettingsDep = Annotated[HubSettings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]


USER_CACHE_S = 10.0  # a disabled user or changed role takes effect within this


async def current_user(request: Request, token: Annotated[str, Depends(oauth2)]) -> User:
    """The token's user. Looked up in the database at most every USER_CACHE_S per token."""
    return await user_of_token(request, token)


async def user_of_token(request: Request, token: str) -> User:
    """The user a bearer token stands for; 401 if it is invalid, expired or disabled."""
    unauthorised = HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "invalid or expired token",
        headers={"WWW-Authenticate": "Bearer"},
    )
    state = request.app.state
    try:
        username = read_token(token, state.secret)
    except jwt.InvalidTokenError as exc:
        raise unauthorised from exc
    cache: dict[str, tuple[float, User | None]] = state.user_cache
    hit = cache.get(token)
    now = time.monotonic()
    if hit is None or now - hit[0] > USER_CACHE_S:
        user = await run_in_threadpool(_load_user, state.engine, username)
        if len(cache) > 10_000:
            cache.clear()
        hit = cache[token] = (now, user)
    if hit[1] is None or not hit[1].active:
        raise unauthorised
    return hit[1]


def _load_user(engine: Any, username: str) -> User | None:
    with Session(engine, expire_on_commit=False) as session:
        user = session.exec(select(User).where(User.username == username)).first()
        if user is not None:
            session.expunge(user)  # a detached snapshot, safe to share between requests
        return user


CurrentUser = Annotated[User, Depends(current_user)]


def _require(roles: set[Role]):  # type: ignore[no-untyped-def]
    async def check(user: CurrentUser) -> User:
        if Role(user.role) not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"a {user.role} may not do this")
        return user

    return check


StaffUser = Annotated[User, Depends(_require(STAFF))]
OperatorUser = Annotated[User, Depends(_require(OPERATORS))]
AdminUser = Annotated[User, Depends(_require({Role.HQ_ADMIN}))]


def forbid_unless(allowed: bool, what: str) -> None:
    if not allowed:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"not allowed: {what}")


def not_found(what: str) -> HTTPException:
    """The answer for an object that does not exist, and for one of another site or owner:
    the same words, so that a refusal does not tell what exists elsewhere."""
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no {what}")


BIGINT_MAX = 2**63 - 1  # PostgreSQL BIGINT; SQLite's INTEGER is as wide
INTEGER_MAX = 2**31 - 1  # PostgreSQL INTEGER


def row_id(value: int, what: str, most: int = BIGINT_MAX) -> int:
    """``value`` as the id of a row of a column holding up to ``most``; 404 for an id no
    row can have (zero, negative, wider than the column), as for one that does not exist."""
    if not 1 <= value <= most:
        raise not_found(f"{what} {value}")
    return value


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the edge counts milliseconds from here


def _instant(t: datetime) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError("a time needs a timezone (e.g. 2026-11-22T08:00:00+08:00)")
    try:
        utc = t.astimezone(UTC)
    except OverflowError as exc:  # 9999-12-31T23:00-05:00 is past the last date
        raise ValueError("a time between 1970 and 9999") from exc
    if utc < EPOCH:
        raise ValueError("a time between 1970 and 9999")
    return t


# a time as the hub takes it: with a zone, in UTC from 1970 (the edge's milliseconds) to 9999
Instant = Annotated[datetime, AfterValidator(_instant)]


def attachment(filename: str, inline: bool = False) -> dict[str, str]:
    """A Content-Disposition header for a file named after user input (a site id, a
    cashier): an ASCII fallback name and the exact one as RFC 6266 ``filename*`` (UTF-8),
    so that no character of it can break the header."""
    from urllib.parse import quote

    fallback = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in filename)
    kind = "inline" if inline else "attachment"
    exact = quote(filename, safe="")
    return {"Content-Disposition": f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{exact}"}
