"""Users, roles and tokens: OAuth2 password flow with JWT bearer tokens.

Roles and what they may see (every endpoint checks the role *and* the site):

| role | scope |
|---|---|
| hq_admin | every site; users, commands, dead letters |
| site_manager | its sites: gateways, devices, values, commands, dead letters |
| engineer | its sites: gateways, devices, values, commands, dead letters |
| finance | its sites: devices and values (readings), nothing that changes equipment |
| cashier | its sites: as finance (takes payments) |
| owner | only the devices listed on the user (its own meters): their values |
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

import jwt
from pwdlib import PasswordHash
from sqlmodel import Session, select

from hub.models import User, utcnow

_hasher = PasswordHash.recommended()  # argon2id
ALGORITHM = "HS256"


class Role(StrEnum):
    HQ_ADMIN = "hq_admin"
    SITE_MANAGER = "site_manager"
    ENGINEER = "engineer"
    FINANCE = "finance"
    CASHIER = "cashier"  # takes payments; reads as finance does
    OWNER = "owner"


STAFF = {Role.HQ_ADMIN, Role.SITE_MANAGER, Role.ENGINEER, Role.FINANCE, Role.CASHIER}
OPERATORS = {Role.HQ_ADMIN, Role.SITE_MANAGER, Role.ENGINEER}  # may command equipment


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, hashed: str) -> bool:
    return _hasher.verify(password, hashed)


def authenticate(session: Session, username: str, password: str) -> User | None:
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None or not user.active:
        _hasher.hash(password)  # same time whether the user exists or not
        return None
    return user if verify_password(password, user.password_hash) else None


def issue_token(user: User, secret: str, ttl_s: int) -> str:
    now = utcnow()
    claims = {
        "sub": user.username,
        "role": user.role,
        "iat": now,
        "exp": now + timedelta(seconds=ttl_s),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def read_token(token: str, secret: str) -> str:
    """The user name in a valid token; jwt.InvalidTokenError otherwise."""
    claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})
    return str(claims["sub"])


def create_user(
    session: Session,
    username: str,
    password: str,
    role: Role,
    sites: list[str] | None = None,
    devices: list[str] | None = None,
) -> User:
    if len(password) < 10:
        raise ValueError("a password needs at least 10 characters")
    user = User(
        username=username,
        password_hash=hash_password(password),
        role=role.value,
        sites=sites or [],
        devices=devices or [],
    )
    session.add(user)
    session.flush()
    return user


def can_see_site(user: User, site: str) -> bool:
    if user.role == Role.HQ_ADMIN:
        return True
    return user.role in STAFF and site in user.sites


def can_see_device(user: User, site: str, gateway: str, device: str) -> bool:
    if user.role == Role.OWNER:
        return f"{gateway}/{device}" in user.devices
    return can_see_site(user, site)
