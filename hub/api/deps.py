"""Shared dependencies of the routes, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlmodel import Session, select

from hub.auth import OPERATORS, STAFF, Role, read_token
from hub.models import User
from hub.settings import HubSettings

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token")


def get_settings(request: Request) -> HubSettings:
    settings: HubSettings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session


SettingsDep = Annotated[HubSettings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]


def current_user(
    session: SessionDep, settings: SettingsDep, token: Annotated[str, Depends(oauth2)]
) -> User:
    unauthorised = HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "invalid or expired token",
        headers={"WWW-Authenticate": "Bearer"},
    )
    try:
        username = read_token(token, settings.secret())
    except jwt.InvalidTokenError as exc:
        raise unauthorised from exc
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None or not user.active:
        raise unauthorised
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def _require(roles: set[Role]):  # type: ignore[no-untyped-def]
    def check(user: CurrentUser) -> User:
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
