"""Parking reports: revenue per day and channel, occupancy over time, unpaid exits.

Days are cut in Asia/Shanghai (a collection day is a local day). Money is integer fen.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from hub.parking.models import ParkingLot, ParkingRecord, ParkingSession, SessionStatus
from hub.parking.service import SHANGHAI, SUBJECT_PASS, SUBJECT_SESSION
from hub.payments.models import PaymentOrder, PaymentStatus
from protocols.parking.messages import RecordKind


def _day(at: datetime) -> str:
    return at.astimezone(SHANGHAI).date().isoformat()


def revenue(s: Session, lot: ParkingLot, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Per local day: online (temporary parking, monthly passes) and booth, in fen."""
    days: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    online = s.exec(
        select(PaymentOrder, ParkingSession)
        .join(ParkingSession, col(ParkingSession.id) == col(PaymentOrder.subject_id))
        .where(
            PaymentOrder.subject_kind == SUBJECT_SESSION,
            PaymentOrder.status == PaymentStatus.PAID,
            ParkingSession.lot_id == lot.id,
            col(PaymentOrder.paid_at) >= start,
            col(PaymentOrder.paid_at) < end,
        )
    ).all()
    for order, _ in online:
        assert order.paid_at is not None
        days[_day(order.paid_at)]["online_fen"] += order.amount_fen
        days[_day(order.paid_at)]["online_count"] += 1
    passes = s.exec(
        select(PaymentOrder).where(
            PaymentOrder.subject_kind == SUBJECT_PASS,
            PaymentOrder.status == PaymentStatus.PAID,
            col(PaymentOrder.subject_id).startswith(f"{lot.id}:"),
            col(PaymentOrder.paid_at) >= start,
            col(PaymentOrder.paid_at) < end,
        )
    ).all()
    for order in passes:
        assert order.paid_at is not None
        days[_day(order.paid_at)]["passes_fen"] += order.amount_fen
    booth = s.exec(
        select(ParkingRecord).where(
            ParkingRecord.lot_id == lot.id,
            ParkingRecord.kind == RecordKind.BOOTH_PAYMENT,
            col(ParkingRecord.at) >= start,
            col(ParkingRecord.at) < end,
        )
    ).all()
    for r in booth:
        days[_day(r.at)]["booth_fen"] += r.paid_fen
        days[_day(r.at)]["booth_count"] += 1
    rows = []
    for day in sorted(days):
        d = days[day]
        total = d["online_fen"] + d["passes_fen"] + d["booth_fen"]
        rows.append(
            {
                "day": day,
                "online_fen": d["online_fen"],
                "online_count": d["online_count"],
                "booth_fen": d["booth_fen"],
                "booth_count": d["booth_count"],
                "passes_fen": d["passes_fen"],
                "total_fen": total,
            }
        )
    return rows


def occupancy(
    s: Session, lot: ParkingLot, start: datetime, end: datetime, step_s: int
) -> list[dict[str, Any]]:
    """Cars inside at each step from ``start`` (sessions whose exit was never seen excluded)."""
    stays = s.exec(
        select(ParkingSession.entry_at, ParkingSession.exit_at, ParkingSession.lease).where(
            ParkingSession.lot_id == lot.id,
            ParkingSession.status != SessionStatus.NO_EXIT,
            col(ParkingSession.entry_at).is_not(None),
            col(ParkingSession.entry_at) < end,
        )
    ).all()
    rows = []
    t = start
    while t < end:
        inside = [
            lease for a, b, lease in stays if a is not None and a <= t and (b is None or b > t)
        ]
        rows.append(
            {
                "at": t.isoformat(),
                "inside": len(inside),
                "temporary": sum(1 for lease in inside if lease == "temporary"),
            }
        )
        t += timedelta(seconds=step_s)
    return rows


def unpaid(s: Session, lot: ParkingLot, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Exits that left owing (offline policy) and sessions paid beyond their fee (refunds)."""
    rows = []
    for x in s.exec(
        select(ParkingSession)
        .where(
            ParkingSession.lot_id == lot.id,
            ParkingSession.status == SessionStatus.EXITED,
            col(ParkingSession.exit_at) >= start,
            col(ParkingSession.exit_at) < end,
        )
        .order_by(col(ParkingSession.exit_at))
    ):
        paid = x.paid_online_fen + x.paid_booth_fen
        owed = max(x.unpaid_fen, x.fee_fen - paid) if x.fee_fen else x.unpaid_fen
        over = paid - x.fee_fen if x.fee_fen and paid > x.fee_fen else 0
        if owed <= 0 and over <= 0:
            continue
        rows.append(
            {
                "session": x.id,
                "plate": x.plate,
                "entry_at": x.entry_at.isoformat() if x.entry_at else "",
                "exit_at": x.exit_at.isoformat() if x.exit_at else "",
                "fee_fen": x.fee_fen,
                "paid_fen": paid,
                "unpaid_fen": max(0, owed),
                "overpaid_fen": over,
            }
        )
    return rows
