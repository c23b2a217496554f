"""What a car owes now: the fee so far, after coupons, less what was paid, with grace.

A payment that settles the stay (everything paid covers the fee at the payment time)
opens a grace window: until ``paid_at + grace`` the fee stays what it was at that payment
and nothing is due. The latest settling payment counts; a payment that leaves something
unpaid opens no grace. Past the window the stay is priced again *from entry* to now and
everything paid is subtracted. Compared with starting a new stay at the payment time,
this charges the time since the payment at its marginal price (the step already paid for
runs out first, no second first period) and keeps the 24-h cap honest: a car that pays
every hour never pays more than a car that pays once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from protocols.parking.coupons import Coupon, fee_after_coupons, one_per_kind
from protocols.parking.fees import epoch_seconds
from protocols.parking.fees_rules import FeeRule

Payment = tuple[datetime, int]


@dataclass(frozen=True, slots=True)
class Quote:
    """``due_fen`` = max(0, ``total_fen`` - ``paid_fen``); ``reason`` says how."""

    total_fen: int  # fee for the stay so far after coupons (frozen at the payment in grace)
    paid_fen: int  # everything paid for this stay
    due_fen: int  # what the car must pay now to leave
    paid_until: datetime | None  # end of the grace of the latest settling payment, or None
    reason: str


def quote(
    rule: FeeRule,
    entry_at: datetime,
    at: datetime,
    payments: Iterable[Payment] = (),
    coupons: Iterable[Coupon] = (),
    grace_minutes: int = 15,
) -> Quote:
    """What the stay from ``entry_at`` owes at ``at``, given ``payments`` and ``coupons``.

    A payment stamped after ``at`` (the channel's clock is ahead of the gate's) counts as
    made at ``at``. Raises ValueError for naive datetimes, ``at`` or a payment before the
    entry, a negative amount or grace, or two coupons of one kind.
    """
    start, now = epoch_seconds(entry_at, "entry_at"), epoch_seconds(at, "at")
    if now < start:
        raise ValueError(f"at {at.isoformat()} is before entry_at {entry_at.isoformat()}")
    if grace_minutes < 0:
        raise ValueError(f"grace_minutes must not be negative, got {grace_minutes}")
    checked = one_per_kind(coupons)
    paid, times = 0, []
    for i, (paid_at, fen) in enumerate(payments):
        t = epoch_seconds(paid_at, f"payments[{i}].paid_at")
        if t < start:
            raise ValueError(f"payments[{i}] at {paid_at.isoformat()} is before the entry")
        if isinstance(fen, bool) or not isinstance(fen, int) or fen < 0:
            raise ValueError(f"payments[{i}] must be a non-negative integer fen, got {fen!r}")
        paid += fen
        times.append(min(t, now))

    total = fee_after_coupons(rule, start, now, checked)
    stay = f"{total} fen for {_span(now - start)} from entry"
    if not times:
        return Quote(total, 0, total, None, f"{stay}; nothing paid")
    # The latest payment after which everything paid covered the fee opens the grace; a
    # payment that left something unpaid opens none (paying more never raises the due).
    for t in sorted(set(times), reverse=True):
        settled = fee_after_coupons(rule, start, t, checked)
        if settled <= paid:
            break
    else:
        reason = f"{stay}; {paid} fen paid never covered the fee, so no grace"
        return Quote(total, paid, max(0, total - paid), None, reason)
    until = t + grace_minutes * 60
    paid_until = datetime.fromtimestamp(until, at.tzinfo)
    if now <= until:
        reason = (
            f"{paid} fen paid covers the {settled} fen due at "
            f"{datetime.fromtimestamp(t, at.tzinfo).isoformat()}; "
            f"grace until {paid_until.isoformat()}"
        )
        return Quote(settled, paid, 0, paid_until, reason)
    reason = f"grace ended {paid_until.isoformat()}; {stay}, less {paid} fen paid"
    return Quote(total, paid, max(0, total - paid), paid_until, reason)


def _span(seconds: int) -> str:
    minutes, s = divmod(seconds, 60)
    h, m = divmod(minutes, 60)
    return f"{h} h {m:02d} min" + (f" {s:02d} s" if s else "")
