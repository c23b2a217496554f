"""Parking: pure code shared by the edge (at the gate) and the hub.

Re-exported here: temporary-parking fees (``fees*``, ``coupons``). Rules and coupons are
frozen models that round-trip through JSON; :func:`fee` prices a stay and :func:`quote`
says what is due given payments, coupons and the grace after paying
(docs/PARKING-FEES.md).
"""

from protocols.parking.coupons import (
    AmountOff,
    Coupon,
    FreeDay,
    HoursOff,
    PercentOff,
    parse_coupon,
)
from protocols.parking.fees import fee
from protocols.parking.fees_quote import Payment, Quote, quote
from protocols.parking.fees_rules import (
    DayNightRule,
    FeeRule,
    PerEntryRule,
    Period,
    Segment,
    StandardRule,
    Tier2,
    parse_rule,
)

__all__ = [
    "AmountOff",
    "Coupon",
    "DayNightRule",
    "FeeRule",
    "FreeDay",
    "HoursOff",
    "Payment",
    "PerEntryRule",
    "PercentOff",
    "Period",
    "Quote",
    "Segment",
    "StandardRule",
    "Tier2",
    "fee",
    "parse_coupon",
    "parse_rule",
    "quote",
]
