"""What a gateway names is checked against the gateway (issue #9), SQLite and PostgreSQL.

Two gateways at one site, each running its own lot. Every message is published by gateway
A on its own topic, for its own lot where it names one, and names something of gateway B's
(a session, a command, a device): it must leave B's things as they were. A lot set up at
another site than its gateway's is not the gateway's either.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlmodel import Session, select

from hub.apply import Applier, Raw
from hub.db import session_scope
from hub.models import Command, DeadLetter, Device, Gateway, Latest
from hub.parking import service as parking
from hub.parking.models import ParkingRecord, ParkingSession, ParkingSync
from hub.payments.models import PaymentOrder, PaymentStatus
from hub.telemetry import SqlTelemetry
from protocols.parking.messages import Policy

T0 = 1_795_334_400_000  # ms
MIN = 60_000
RULE = {
    "kind": "standard",
    "free_minutes": 15,
    "first": {"minutes": 60, "fen": 500},
    "step": {"minutes": 30, "fen": 200},
}
POLICY = Policy(capacity=100, rule=RULE)
DEVICE = {
    "v": 1,
    "id": "em-1",
    "profile": "em-1p",
    "bus": "b",
    "unit": 1,
    "interval_s": 5.0,
    "points": [{"v": 1, "name": "voltage", "unit": "V", "kind": "measurement", "type": "float32"}],
}


def birth(gw: str, bdseq: int = 0) -> Raw:
    body = {"v": 1, "gw": gw, "site": "s1", "bdseq": bdseq, "stream": gw * 8, "ts": 1}
    return Raw(f"wuye/v1/s1/{gw}/birth", orjson.dumps({**body, "agent": "t", "devices": [DEVICE]}))


def msg(topic: str, gw: str, site: str = "s1", /, **body: Any) -> Raw:
    """``topic`` is the kind level and what follows (``data/em-1``)."""
    return Raw(f"wuye/v1/{site}/{gw}/{topic}", orjson.dumps({"v": 1, "gw": gw, **body}))


def rec(gw: str, seq: int, lot: str, kind: str, session: str, site: str = "s1", **kw: Any) -> Raw:
    body = {"seq": seq, "ts": T0 + seq, "lot": lot, "kind": kind, "session": session, "at": T0}
    return msg("park", gw, site, **body, **kw)


def ask(gw: str, lot: str, session: str, site: str = "s1") -> Raw:
    return msg("ask", gw, site, id="q1", lot=lot, session=session, plate="浙B1", ts=T0)


@pytest.fixture
def applier(engine):
    """gw-a runs lot-a, gw-b runs lot-b (site s1); car 浙B1 is inside lot-b, paid 700 online.

    lot-x is at site s2 but names gw-a, which is at s1 (a lot set up with the wrong site).
    """
    a = Applier(engine, SqlTelemetry(), max_payload=8192)
    a.apply([birth("gw-a"), birth("gw-b")])
    with session_scope(engine) as s:
        parking.create_lot(s, "lot-a", "s1", "gw-a", POLICY)
        parking.create_lot(s, "lot-b", "s1", "gw-b", POLICY)
        parking.create_lot(s, "lot-x", "s2", "gw-a", POLICY)
        s.add(ParkingSession(id="s-x", lot_id="lot-x", plate="浙X1"))
    a.apply([rec("gw-b", 1, "lot-b", "entry", "s-b", plate="浙B1", action="open", gate="in1")])
    with session_scope(engine) as s:
        for session, site in (("s-b", "s1"), ("s-x", "s2")):
            s.add(
                PaymentOrder(
                    id=f"o-{session}",
                    subject_kind=parking.SUBJECT_SESSION,
                    subject_id=session,
                    site_id=site,
                    amount_fen=700,
                    channel="sandbox",
                    status=PaymentStatus.PAID,
                    idempotency_key=session,
                    request_hash="h",
                    paid_at=datetime.fromtimestamp(T0 / 1000, UTC),
                )
            )
    return a


def session_row(engine, session_id: str) -> dict[str, Any]:
    with Session(engine) as s:
        sess = s.get(ParkingSession, session_id)
        assert sess is not None
        return sess.model_dump(exclude={"updated_at"})


def dead_letters(engine) -> list[str]:
    with Session(engine) as s:
        return [d.reason for d in s.exec(select(DeadLetter).order_by(DeadLetter.id))]


def records_of(engine, gw: str) -> list[tuple[str, str]]:
    with Session(engine) as s:
        rows = s.exec(select(ParkingRecord).where(ParkingRecord.gateway_id == gw))
        return [(r.lot_id, r.session_id) for r in rows]


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("entry", {"action": "open", "plate": "浙A9", "gate": "in1"}),
        ("entry", {"action": "refuse", "plate": "浙A9", "reason": "deny list"}),
        ("exit", {"action": "open", "plate": "浙B1", "gate": "out1", "fee_fen": 0}),
        ("exit", {"action": "booth", "plate": "浙B1", "gate": "out1"}),
        ("booth_payment", {"plate": "浙B1", "paid_fen": 700, "operator": "li"}),
        ("correction", {"plate": "浙A9", "corrected_from": "浙B1", "operator": "li"}),
    ],
)
def test_a_record_naming_a_session_of_another_lot_is_a_dead_letter(applier, engine, kind, fields):
    before = session_row(engine, "s-b")
    out = applier.apply(
        [
            rec("gw-a", 1, "lot-a", kind, "s-b", **fields),
            rec("gw-a", 2, "lot-a", "entry", "s-a", plate="浙A1", action="open"),
        ]
    )
    assert out.dead == 1
    assert dead_letters(engine) == ["session 's-b' is in lot 'lot-b', not 'lot-a'"]
    assert session_row(engine, "s-b") == before  # still inside, same plate, nothing paid
    assert records_of(engine, "gw-a") == [("lot-a", "s-a")]  # the good record still arrives
    with Session(engine) as s:
        lot = parking.get_lot(s, "lot-b")
        sess = s.get(ParkingSession, "s-b")
        assert sess is not None
        assert (
            parking.session_quote(s, lot, sess, sess.entry_at + timedelta(hours=2)).paid_fen == 700
        )


def test_an_ask_about_a_session_of_another_lot_is_answered_with_no_payments(
    applier, engine, caplog
):
    with caplog.at_level(logging.WARNING, logger="hub.parking.service"):
        out = applier.apply([ask("gw-a", "lot-a", "s-b"), ask("gw-b", "lot-b", "s-b")])
    (topic_a, answer_a), (topic_b, answer_b) = out.replies
    assert topic_a == "wuye/v1/s1/gw-a/answer"
    assert orjson.loads(answer_a) == {"v": 1, "id": "q1", "session": "s-b", "paid": []}
    assert "session 's-b' is in lot 'lot-b', not 'lot-a'" in caplog.text
    assert topic_b == "wuye/v1/s1/gw-b/answer"
    assert [p["fen"] for p in orjson.loads(answer_b)["paid"]] == [700]  # its own lot's


@pytest.mark.parametrize("site", ["s1", "s2"])
def test_a_lot_at_another_site_than_its_gateway_is_not_the_gateways(applier, engine, site):
    """gw-a is at s1: neither its own topics nor s2's make lot-x (at s2) its lot."""
    out = applier.apply(
        [
            ask("gw-a", "lot-x", "s-x", site),
            msg("synced", "gw-a", site, lot="lot-x", version=1, ts=T0),
            rec("gw-a", 1, "lot-x", "entry", "s-y", site, plate="浙A2", action="open"),
        ]
    )
    assert orjson.loads(out.replies[0][1])["paid"] == []
    with Session(engine) as s:
        assert s.get(ParkingSync, "lot-x").confirmed == 0
        assert s.get(ParkingSession, "s-y") is None
    if site == "s1":
        assert dead_letters(engine) == ["lot 'lot-x' is at site 's2', not 's1'"]
    else:  # refused by ingest before parking sees it
        assert dead_letters(engine) == ["gateway 'gw-a' belongs to site 's1'"]


def test_a_birth_resends_the_state_of_the_gateways_own_lots_only(applier, engine):
    sent = datetime.fromtimestamp(T0 / 1000, UTC)
    with session_scope(engine) as s:
        for st in s.exec(select(ParkingSync)):
            st.sent_at = sent
    applier.apply([birth("gw-a", bdseq=1)])
    with Session(engine) as s:
        sent_at = {st.lot_id: st.sent_at for st in s.exec(select(ParkingSync))}
    assert sent_at == {"lot-a": None, "lot-b": sent, "lot-x": sent}


# -- guards: these held before issue #9's fixes, and must go on holding ---------------------
def test_an_ack_for_a_command_of_another_gateway_changes_nothing(applier, engine):
    with session_scope(engine) as s:
        s.add(
            Command(
                id="c-b",
                gateway_id="gw-b",
                site_id="s1",
                device_id="em-1",
                point="voltage",
                value=1,
                expires_at=datetime.fromtimestamp(T0 / 1000, UTC) + timedelta(minutes=1),
            )
        )
    out = applier.apply(
        [
            msg("ack", "gw-a", seq=1, ts=T0, id="c-b", status="done"),
            msg("ack", "gw-a", seq=2, ts=T0, id="c-none", status="done"),
        ]
    )
    assert out.dead == 2
    with Session(engine) as s:
        cmd = s.get(Command, "c-b")
        assert cmd is not None and (cmd.status, cmd.acked_at) == ("pending", None)
    assert dead_letters(engine) == [
        "command 'c-b' was sent to 'gw-b', not 'gw-a'",
        "ack for unknown command 'c-none'",
    ]


def test_a_death_or_status_on_another_sites_topic_changes_nothing(applier, engine):
    """Only the broker's ACL stood between these and gw-a's state."""
    status = {"ts": T0, "metrics": {"x": 1}, "devices": {}}
    out = applier.apply(
        [
            msg("death", "gw-a", "s2", bdseq=0),
            msg("status", "gw-a", "s2", **status),
        ]
    )
    assert out.dead == 2
    with Session(engine) as s:
        gw = s.get(Gateway, "gw-a")
        assert gw is not None and gw.online and gw.status is None
    assert all("belongs to site 's1', not 's2'" in r for r in dead_letters(engine))


def test_a_device_id_reaches_only_the_sending_gateways_device(applier, engine):
    """Both gateways have an em-1: gw-a's data and events never touch gw-b's."""
    applier.apply(
        [
            msg("data/em-1", "gw-a", seq=1, ts=T0, dev="em-1", values={"voltage": 1.0}),
            msg("event/em-1", "gw-a", seq=2, ts=T0, dev="em-1", event="device_offline"),
            msg("event", "gw-a", seq=3, ts=T0, dev="em-1", event="device_offline"),
        ]
    )
    with Session(engine) as s:
        devices = {d.gateway_id: d for d in s.exec(select(Device))}
        assert (devices["gw-a"].online, devices["gw-b"].online) == (False, None)
        latest = {row.device for row in s.exec(select(Latest))}
        assert latest == {devices["gw-a"].id}


def test_a_booth_record_kept_from_another_lot_never_pays_a_session(applier, engine):
    """Records stored before ingest refused them (another lot's edge naming this session)
    must not count as money paid for it."""
    with session_scope(engine) as s:
        s.add(
            ParkingRecord(
                lot_id="lot-a",
                gateway_id="gw-a",
                seq=99,
                session_id="s-b",
                kind="booth_payment",
                at=datetime.fromtimestamp(T0 / 1000, UTC),
                paid_fen=500,
                operator="li",
            )
        )
    with Session(engine) as s:
        lot = parking.get_lot(s, "lot-b")
        sess = s.get(ParkingSession, "s-b")
        assert sess is not None and sess.entry_at is not None
        quote = parking.session_quote(s, lot, sess, sess.entry_at + timedelta(hours=2))
    assert quote.paid_fen == 700  # its own payment online, not gw-a's 500
