"""Shared dependencies of the routes, as ``Annotated`` aliases."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated, Any

import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordBearer
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
