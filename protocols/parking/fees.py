"""The fee of a stay under a rule: pure, integer fen, times passed in.

The edge (at the gate, offline) and the hub (quotes, payments) both price with this
module, so they always agree. Choices shared by every kind (docs/PARKING-FEES.md):

- Times must be timezone-aware; they are taken to the whole second (fractions dropped).
- A started minute counts as a whole minute, and a started step as a whole step: a step
  is charged at the instant it starts.
- A stay of at most ``free_minutes`` (15:00 exactly included) costs 0; one second more and
  the whole stay is charged from entry. The free minutes are granted once per stay.
- The 24-h blocks of a cap run from entry (elapsed time, not calendar days).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from protocols.parking.fees_rules import (
    DayNightRule,
    FeeRule,
    PerEntryRule,
    Period,
    Segment,
    StandardRule,
    Tier2,
)

DAY = 86_400  # seconds in a 24-h block
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)


def epoch_seconds(at: datetime, name: str) -> int:
    """Whole seconds since the Unix epoch; ValueError for a naive datetime."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {at.isoformat()}")
    return (at - _EPOCH) // _SECOND


def fee(rule: FeeRule, entry_at: datetime, exit_at: datetime) -> int:
    """Fee in fen of a stay from ``entry_at`` to ``exit_at`` (no payments, no coupons).

    Raises ValueError for naive datetimes or an exit before the entry.
    """
    start, end = epoch_seconds(entry_at, "entry_at"), epoch_seconds(exit_at, "exit_at")
    if end < start:
        raise ValueError(f"exit_at {exit_at.isoformat()} is before entry_at {entry_at.isoformat()}")
    return fee_seconds(rule, start, end)


def fee_seconds(rule: FeeRule, start: int, end: int) -> int:
    """:func:`fee` on epoch seconds, ``start <= end``."""
    stay = end - start
    if stay <= rule.free_minutes * 60:
        return 0
    if isinstance(rule, StandardRule):
        return _standard(rule, stay)
    if isinstance(rule, PerEntryRule):
        return rule.fen * (-(-stay // DAY) if rule.per_started_day else 1)
    return _day_night(rule, start, end)


def _started(span: int, step: int) -> int:
    """Steps of ``step`` seconds starting in the first ``span`` seconds."""
    return -(-span // step) if span > 0 else 0


def _schedule(first: Period, step: Period, tier2: Tier2 | None, seconds: int) -> int:
    """Charges of the steps that start within ``seconds`` of the schedule's start."""
    if seconds <= 0:
        return 0
    first_end = first.minutes * 60
    tier2_at = tier2.after_minutes * 60 if tier2 is not None else seconds
    total = first.fen + step.fen * _started(min(seconds, tier2_at) - first_end, step.minutes * 60)
    if tier2 is not None:
        total += tier2.step.fen * _started(seconds - tier2_at, tier2.step.minutes * 60)
    return total


def _standard(rule: StandardRule, stay: int) -> int:
    if rule.cap_fen is None:
        return _schedule(rule.first, rule.step, rule.tier2, stay)
    days, rest = divmod(stay, DAY)
    day_fee = min(rule.cap_fen, _schedule(rule.first, rule.step, rule.tier2, DAY))
    return days * day_fee + min(rule.cap_fen, _schedule(rule.first, rule.step, rule.tier2, rest))


def _segment_charges(seg: Segment, seconds: int) -> int:
    """What an occurrence of ``seg`` has charged ``seconds`` after the piece started."""
    raw = _schedule(seg.first, seg.step, None, seconds)
    return raw if seg.cap_fen is None else min(raw, seg.cap_fen)


def _pieces(rule: DayNightRule, start: int, end: int) -> list[tuple[int, int, Segment]]:
    """The stay cut at the segment boundaries (local wall-clock times) it crosses."""
    day = datetime.fromtimestamp(start, rule.tz).date() - timedelta(days=1)
    last = datetime.fromtimestamp(end, rule.tz).date()
    cuts: list[tuple[int, Segment]] = []
    while day <= last:
        for seg in rule.by_start:
            local = datetime.combine(day, seg.start, tzinfo=rule.tz)
            cuts.append((epoch_seconds(local, "boundary"), seg))
        day += timedelta(days=1)
    cuts.sort(key=lambda c: c[0])
    pieces: list[tuple[int, int, Segment]] = []
    piece_start, current = start, cuts[0][1]
    for at, seg in cuts:
        if at <= start:
            current = seg
        elif at < end:
            pieces.append((piece_start, at, current))
            piece_start, current = at, seg
    pieces.append((piece_start, end, current))
    return pieces


def _day_night(rule: DayNightRule, start: int, end: int) -> int:
    # A charge belongs to the 24-h block in which its step starts; the overall cap then
    # applies to each block's sum of (segment-capped) charges.
    blocks = [0] * (-(-(end - start) // DAY))
    for p_start, p_end, seg in _pieces(rule, start, end):
        t = p_start
        while t < p_end:
            k = (t - start) // DAY
            upto = min(p_end, start + (k + 1) * DAY)
            blocks[k] += _segment_charges(seg, upto - p_start) - _segment_charges(seg, t - p_start)
            t = upto
    cap = rule.cap_fen
    return sum(blocks if cap is None else (min(b, cap) for b in blocks))
