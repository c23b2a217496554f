"""Gateway credentials, and the Mosquitto password file and ACL that confine each gateway.

A gateway logs in with its id as user name; the ACL lets it write only under its own
``wuye/v1/{site}/{gateway}/`` and read only its own ``cmd``, ``sync`` and ``answer``
topics, so it can neither publish as another gateway nor read another's commands or
parking state. The hub's own user reads everything and writes those three. Files are
rewritten whole (atomically) from the database. Reload Mosquitto afterwards (SIGHUP).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from sqlmodel import Session, col, select

from deploy.mosquitto import BrokerLimits
from hub.models import Gateway, Site
from protocols.mqtt import ROOT, Kind, check_id

ITERATIONS = 101  # mosquitto_passwd's default for its $7$ (PBKDF2-SHA512) format


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """A password-file hash in Mosquitto 2's ``$7$`` format."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return f"$7${ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


# what the hub publishes to a gateway (and only the hub): commands, parking state and
# answers, and the watermark of what it has committed
HUB_WRITES = (Kind.CMD, Kind.SYNC, Kind.ANSWER, Kind.COMMITTED)


def acl_for(site: str, gateway: str) -> list[str]:
    base = f"{ROOT}/{site}/{gateway}"
    writes = [Kind.BIRTH, Kind.DEATH, Kind.ACK, Kind.STATUS, Kind.PARK, Kind.SYNCED, Kind.ASK]
    return [
        f"user {gateway}",
        *(f"topic write {base}/{k}" for k in writes),
        f"topic write {base}/{Kind.DATA}/+",
        f"topic write {base}/{Kind.EVENT}",
        f"topic write {base}/{Kind.EVENT}/+",
        *(f"topic read {base}/{k}" for k in HUB_WRITES),
    ]


def _read_passwd(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        user, sep, digest = line.partition(":")
        if sep:
            out[user] = digest
    return out


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    os.replace(tmp, path)


def provision(
    session: Session,
    site: str,
    gateway: str,
    passwd: Path,
    acl: Path,
    hub_user: str,
    hub_password: str,
    conf: Path | None = None,
) -> str:
    """Register the gateway, give it a new password (returned once), rewrite both files.

    With ``conf``, also writes a Mosquitto config that uses them and sets the broker's
    persistence and queue limits for this many sites (deploy/mosquitto.py BrokerLimits):
    include it from mosquitto.conf."""
    check_id(site, "site")
    check_id(gateway, "gateway")
    if session.get(Site, site) is None:
        session.add(Site(id=site, name=site))
        session.flush()
    gw = session.get(Gateway, gateway)
    if gw is None:
        session.add(Gateway(id=gateway, site_id=site, max_seq=0))
    elif gw.site_id != site:
        raise ValueError(f"gateway {gateway} already belongs to site {gw.site_id}")
    session.flush()
    password = secrets.token_urlsafe(24)
    users = _read_passwd(passwd)
    users[gateway] = mosquitto_hash(password)
    users[hub_user] = mosquitto_hash(hub_password)
    _write_atomically(passwd, "".join(f"{u}:{h}\n" for u, h in sorted(users.items())))
    lines = [
        "# written by `python -m hub gateways provision`; edits are overwritten",
        f"user {hub_user}",
        f"topic read {ROOT}/#",
        *(f"topic write {ROOT}/+/+/{k}" for k in HUB_WRITES),
        "topic readwrite wuye-hub/#",  # the hub's own: live alarm changes between processes
        "",
    ]
    for g in session.exec(select(Gateway).order_by(col(Gateway.id))).all():
        if g.id in users:
            lines += [*acl_for(g.site_id, g.id), ""]
    _write_atomically(acl, "\n".join(lines))
    if conf is not None:
        sites = len(session.exec(select(Site.id)).all())
        limits = BrokerLimits(sites=max(1, sites))
        _write_atomically(
            conf,
            "# written by `python -m hub gateways provision`; edits are overwritten\n"
            f"allow_anonymous false\npassword_file {passwd.resolve()}\n"
            f"acl_file {acl.resolve()}\n"
            f"# queues hold {limits.outage_h:g} h of {limits.sites} site(s) for a hub away\n"
            + limits.conf(conf.resolve().parent),
        )
    return password
