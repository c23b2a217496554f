"""Two sites with everything the hub's API shows, for the tests that the API holds
against any input (tests/hub/test_api_fuzz.py, test_api_input.py, test_api_scope.py).

Sunny Garden is the callers' site; Lotus Court is the other one: its identifiers, names,
people and plate all contain ``lotus`` (or 莲花苑, 沪B), which Sunny Garden's never do, so
an answer that carries any of them (``SiteData.markers``) shows the other site's data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from hub.alarms.models import Alarm, AlarmEvent
from hub.api.app import create_app
from hub.auth import Role, issue_token
from hub.db import session_scope
from hub.models import Command, DeadLetter, Device, Gateway, Site, User, utcnow
from hub.notify import service as notify
from hub.notify.models import Subscription
from hub.parking import service as parking
from hub.parking.models import ParkingPass, ParkingSession
from hub.payments import create_order
from hub.workorders import attachments, dispatching, service
from protocols.alarms.model import Severity
from protocols.parking.messages import Policy
from tests.hub.test_workorders import PNG, add_users, settings_for

RULE = {
    "kind": "standard",
    "free_minutes": 15,
    "first": {"minutes": 60, "fen": 500},
    "step": {"minutes": 30, "fen": 200},
    "cap_fen": 3000,
}
POINTS = [
    {"name": "outlet_pressure", "unit": "MPa", "kind": "measurement", "type": "uint16"},
    {
        "name": "pressure_setpoint",
        "unit": "MPa",
        "kind": "measurement",
        "type": "uint16",
        "writable": True,
    },
]


@dataclass
class SiteData:
    """One site's objects, by the names the API's path parameters give them."""

    site: str
    ids: dict[str, Any] = field(default_factory=dict)
    markers: set[str] = field(default_factory=set)  # strings only this site's data holds


def build_site(engine, settings, site: str, tag: str, name: str) -> SiteData:
    gw, dev = f"gw-{tag}", f"ps-{tag}"
    owner, mgr, eng = f"owner-{tag}", f"mgr-{tag}", f"eng-{tag}"
    add_users(
        engine,
        (mgr, Role.SITE_MANAGER, [site]),
        (eng, Role.ENGINEER, [site]),
        (f"fin-{tag}", Role.FINANCE, [site]),
    )
    plate = "沪B55555" if tag == "lotus" else "沪A11111"
    now = utcnow()
    with session_scope(engine) as s:
        s.add(Site(id=site, name=name))
        s.flush()
        s.add(Gateway(id=gw, site_id=site, online=True, last_seen=now, agent="t", bdseq=0))
        s.flush()
        device = Device(gateway_id=gw, device_id=dev, site_id=site, profile="pump-station")
        device.points = POINTS
        s.add(device)
        s.add(
            User(
                username=owner,
                password_hash="-",
                role=Role.OWNER,
                sites=[site],
                devices=[f"{gw}/{dev}"],
            )
        )
        s.flush()
        alarm = Alarm(
            device=device.id or 0,
            site_id=site,
            gateway_id=gw,
            device_id=dev,
            alarm_type="low_pressure",
            rule="low_pressure",
            severity="major",
            message=f"pressure low at {name}",
            started_at=now,
            last_seen_at=now,
        )
        s.add(alarm)
        s.flush()
        s.add(AlarmEvent(alarm_id=alarm.id or 0, at=now, kind="raised", severity="major"))
        command = Command(
            id=f"cmd-{tag}",
            gateway_id=gw,
            site_id=site,
            device_id=dev,
            point="pressure_setpoint",
            value=0.4,
            created_by=mgr,
            expires_at=now + timedelta(hours=1),
        )
        s.add(command)
        topic = f"wuye/v1/{site}/{gw}/data/{dev}"
        s.add(
            DeadLetter(topic=topic, gateway_id=gw, reason="not JSON", payload=b"{" + tag.encode())
        )
        lot = parking.create_lot(
            s, f"lot-{tag}", site, gw, Policy(capacity=10, rule=RULE, monthly_fen=25000), name
        )
        pas = ParkingPass(
            id=f"pass-{tag}",
            lot_id=lot.id,
            plate=plate,
            lease="monthly",
            start=now,
            end=now + timedelta(days=30),
            owner=owner,
        )
        parking.put_pass(s, pas)
        sub = Subscription(role="engineer", site_id=site, event="workorder.unassigned")
        notify.add_subscription(s, sub, "hq")
        notify.publish(
            s,
            notify.Event("alarm.raised", f"alarm:{alarm.id}", site, Severity.CRITICAL, {"n": 1}),
        )
        s.add(
            ParkingSession(
                id=f"sess-{tag}",
                lot_id=lot.id,
                plate=plate,
                entry_at=now - timedelta(minutes=90),
                entry_gate="in1",
            )
        )
    with Session(engine, expire_on_commit=False) as s:
        order = create_order(
            s,
            subject_kind=parking.SUBJECT_SESSION,
            subject_id=f"sess-{tag}",
            site_id=site,
            amount_fen=700,
            idempotency_key=f"key-{tag}-0001",
            channel="sandbox",
            payer=plate,
        )
        dispatching.set_duty(s, eng, "hq", skills=["plumbing"], on_duty=True)
        config = service.Config.from_settings(settings)
        users = {u.username: u for u in s.exec(select(User))}
        new = service.NewOrder(site=site, source=service.Source.OWNER, title="", filed_by="")
        repair = service.file_order(
            s, config, users[owner], _with(new, title=f"tap leaks at {name}", skill="plumbing")
        )
        staff = service.file_order(s, config, users[mgr], _with(new, title=f"lamp {tag}"))
        assert repair.id is not None and staff.id is not None
        photo = attachments.attach(
            s,
            settings.attachments_dir,
            repair.id,
            [attachments.Upload(f"{tag}.png", PNG + tag.encode())],
            owner,
            "owner",
            utcnow(),
            max_bytes=settings.attachment_max_bytes,
            max_files=settings.attachment_max_files,
        )
    ids = {
        "site": site,
        "gateway": gw,
        "device": dev,
        "alarm_id": alarm.id,
        "command_id": command.id,
        "wo_id": repair.id,
        "name": photo.attachments[0]["name"],
        "lot_id": lot.id,
        "pass_id": pas.id,
        "pay_id": order.id,
        "sub_id": sub.id,
        "username": eng,
    }
    markers = {site, name, gw, dev, owner, mgr, eng, f"fin-{tag}", lot.id, plate, order.id}
    return SiteData(site, ids, markers)


def _with(new: service.NewOrder, **kw: Any) -> service.NewOrder:
    return dataclasses.replace(new, **kw)


@dataclass
class Hub:
    client: TestClient
    sunny: SiteData
    lotus: SiteData

    def auth(self, username: str) -> dict[str, str]:
        """A bearer token of ``username``, as the login route issues it."""
        with Session(self.client.app.state.engine) as s:
            u = s.exec(select(User).where(User.username == username)).one()
        token = issue_token(u, self.client.app.state.secret, 3600)
        return {"Authorization": f"Bearer {token}"}


@contextmanager
def two_sites(engine, db_url: str, tmp_path: Path) -> Iterator[Hub]:
    """The hub's app (in process, its lifespan run) over the two sites, HQ admin ``hq``."""
    settings = settings_for(db_url, tmp_path)
    add_users(engine, ("hq", Role.HQ_ADMIN, []))
    sunny = build_site(engine, settings, "sunny-garden", "sunny", "阳光花园 Sunny Garden")
    lotus = build_site(engine, settings, "lotus-court", "lotus", "莲花苑 Lotus Court")
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as client:
        yield Hub(client, sunny, lotus)
