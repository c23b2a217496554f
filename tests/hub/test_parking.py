"""Parking at the hub: records into sessions, the sync log, answers (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlmodel import Session, select

from hub.apply import Applier, Raw
from hub.db import session_scope
from hub.models import DeadLetter
from hub.parking import service as parking
from hub.parking.models import ParkingPass, ParkingRecord, ParkingSession, ParkingSync
from hub.telemetry import SqlTelemetry
from protocols.parking.messages import Ask, Policy, Synced

T0 = 1_795_334_400_000  # ms
MIN = 60_000
RULE = {
    "kind": "standard",
    "free_minutes": 15,
    "first": {"minutes": 60, "fen": 500},
    "step": {"minutes": 30, "fen": 200},
    "cap_fen": 3000,
}
POLICY = Policy(capacity=100, rule=RULE, monthly_fen=30000)


@pytest.fixture
def applier(engine):
    a = Applier(engine, SqlTelemetry(), max_payload=8192)
    a.apply([birth()])
    with session_scope(engine) as s:
        parking.create_lot(s, "lot1", "s1", "gw-1", POLICY, "North gate")
    return a


def birth(gw: str = "gw-1") -> Raw:
    body = {"v": 1, "gw": gw, "site": "s1", "bdseq": 0, "stream": "b" * 32, "ts": 1}
    return Raw(f"wuye/v1/s1/{gw}/birth", orjson.dumps({**body, "agent": "t", "devices": []}))


def rec(seq: int, kind: str, session: str, at_min: float, gw: str = "gw-1", **kw: object) -> Raw:
    body = {
        "v": 1,
        "gw": gw,
        "seq": seq,
        "ts": T0 + seq,
        "lot": "lot1",
        "kind": kind,
        "session": session,
        "at": T0 + int(at_min * MIN),
        **kw,
    }
    return Raw(f"wuye/v1/s1/{gw}/park", orjson.dumps(body))


def sessions(engine) -> dict[str, ParkingSession]:
    with Session(engine) as s:
        return {x.id: x for x in s.exec(select(ParkingSession))}


def at(minutes: float) -> datetime:
    return datetime.fromtimestamp((T0 + minutes * MIN) / 1000, UTC)


def test_records_fold_into_sessions_whatever_their_order(applier, engine):
    entry = rec(1, "entry", "s-a", 0, plate="浙A12345", action="open", gate="in1")
    pay = rec(2, "booth_payment", "s-a", 70, plate="浙A12345", paid_fen=700, operator="li")
    exit_ = rec(
        3,
        "exit",
        "s-a",
        71,
        plate="浙A12345",
        action="open",
        gate="out1",
        fee_fen=700,
        paid_fen=700,
    )
    # exit first, then the entry, then everything again (redelivery)
    applier.apply([exit_, pay])
    applier.apply([entry, exit_, pay, entry])
    x = sessions(engine)["s-a"]
    assert (x.status, x.entry_at, x.exit_at) == ("exited", at(0), at(71))
    assert (x.fee_fen, x.paid_booth_fen, x.no_entry) == (700, 700, False)
    with Session(engine) as s:
        assert len(s.exec(select(ParkingRecord)).all()) == 3


def test_reentry_closes_the_old_session_and_exit_without_entry_is_marked(applier, engine):
    applier.apply(
        [
            rec(1, "entry", "s-1", 0, plate="浙A00001", action="open"),
            rec(2, "entry", "s-2", 30, plate="浙A00001", action="open"),  # exit never seen
            rec(3, "exit", "s-3", 40, plate="浙A00002", action="open"),  # entry never seen
            rec(4, "entry", "s-4", 41, plate="浙A00003", action="refuse", reason="deny list"),
            rec(5, "correction", "s-2", 45, plate="浙A00009", corrected_from="浙A00001"),
        ]
    )
    x = sessions(engine)
    assert x["s-1"].status == "no_exit" and x["s-2"].status == "inside"
    assert x["s-2"].plate == "浙A00009" and x["s-2"].corrected_from == "浙A00001"
    assert x["s-3"].no_entry and x["s-3"].status == "exited"
    assert "s-4" not in x  # a refusal is a record, not a stay


def test_records_for_a_lot_of_another_gateway_are_dead_letters(applier, engine):
    applier.apply([birth("gw-2")])
    out = applier.apply([rec(1, "entry", "s-x", 0, gw="gw-2", plate="浙A1", action="open")])
    assert out.dead == 1
    with Session(engine) as s:
        reasons = [d.reason for d in s.exec(select(DeadLetter))]
    assert any("run by 'gw-1'" in r for r in reasons)
    assert "s-x" not in sessions(engine)


def test_changes_are_versioned_and_an_edge_far_behind_gets_a_snapshot(applier, engine):
    with session_scope(engine) as s:
        lot = parking.get_lot(s, "lot1")
        assert lot.version == 1  # the policy
        p = ParkingPass(id="p1", lot_id="lot1", plate="浙A1", start=at(0), end=at(60 * 24 * 30))
        parking.put_pass(s, p)
        parking.delete_pass(s, "lot1", "p1")
    with session_scope(engine) as s:
        lot = parking.get_lot(s, "lot1")
        assert lot.version == 3
        delta = parking.changes_since(s, lot, 1)
        assert (delta.base, delta.version) == (1, 3)
        assert [(c.kind, c.key, c.value is None) for c in delta.changes] == [
            ("pass", "p1", False),
            ("pass", "p1", True),
        ]
        full = parking.changes_since(s, lot, 0)
        assert full.base is None and [c.kind for c in full.changes] == ["policy"]
    synced = Synced(gw="gw-1", lot="lot1", version=3, ts=T0)
    applier.apply([Raw("wuye/v1/s1/gw-1/synced", synced.model_dump_json().encode())])
    with Session(engine) as s:
        assert s.get(ParkingSync, "lot1").confirmed == 3


def test_monthly_pass_extension_starts_from_the_later_of_its_end_and_now(engine, applier):
    now = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)
    with session_scope(engine) as s:
        p = parking.extend_pass(s, "lot1", "浙A1", 1, "owner1", now)
        assert p.end == datetime(2026, 2, 28, 10, 0, tzinfo=UTC)  # the month's last day
        p = parking.extend_pass(s, "lot1", "浙A1", 2, "owner1", now + timedelta(days=3))
        assert p.end == datetime(2026, 4, 28, 10, 0, tzinfo=UTC)  # from its end, not now
        later = parking.extend_pass(
            s, "lot1", "浙A1", 1, "owner1", datetime(2026, 6, 1, tzinfo=UTC)
        )
        assert later.end == datetime(2026, 7, 1, tzinfo=UTC)  # lapsed: from now
        assert len(s.exec(select(ParkingPass)).all()) == 1


def test_an_ask_is_answered_from_paid_orders_of_that_lot_only(applier, engine):
    ask = Ask(gw="gw-1", id="q1", lot="lot1", session="s-a", plate="浙A1", ts=T0)
    out = applier.apply([Raw("wuye/v1/s1/gw-1/ask", ask.model_dump_json().encode())])
    assert [t for t, _ in out.replies] == ["wuye/v1/s1/gw-1/answer"]
    assert orjson.loads(out.replies[0][1]) == {"v": 1, "id": "q1", "session": "s-a", "paid": []}
