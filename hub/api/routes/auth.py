from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordRequestForm

from hub.api.deps import CurrentUser, SessionDep, SettingsDep
from hub.api.schemas import Token, UserPublic
from hub.auth import authenticate, issue_token

router = APIRouter(prefix="/api/v1", tags=["auth"])


@router.post("/auth/token")
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
) -> Token:
    user = authenticate(session, form.username, form.password)
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "wrong user name or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Token(access_token=issue_token(user, settings.secret(), settings.jwt_ttl_s))


@router.get("/me")
def me(user: CurrentUser) -> UserPublic:
    return UserPublic(
        username=user.username, role=user.role, sites=user.sites, devices=user.devices
    )
