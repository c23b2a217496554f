"""What the hub holds of each gateway's stream: gaps that tell the truth, and the watermark.

A gateway's sequence numbers are either applied (``seen``), missing (a ``missing`` gap:
lost upstream, or not yet arrived) or dropped on purpose by the edge's outbox (a
``dropped_by_edge`` gap, from its ``outbox_dropped`` event). A drop announced after the gap
was seen turns the missing numbers it covers into dropped ones, and the counters follow.

The watermark is the highest seq below which nothing is missing: the hub tells the edge
(``committed``, protocols/README.md) after each commit, on a birth and every few seconds, and
the edge forgets only what lies at or below it. Everything here runs inside the caller's
transaction, with the gateway's row locked.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlmodel import Session, col

from hub.models import Gap, Gateway, utcnow
from protocols.mqtt import MAX_GAPS, Committed, Kind, Topic

MISSING = "missing"
DROPPED = "dropped_by_edge"


def _overlapping(s: Session, gw: Gateway, reason: str, first: int, last: int) -> list[Gap]:
    s.flush()
    return list(
        s.execute(
            select(Gap)
            .where(
                col(Gap.gateway_id) == gw.id,
                col(Gap.stream) == gw.stream,
                col(Gap.reason) == reason,
                col(Gap.first_seq) <= last,
                col(Gap.last_seq) >= first,
            )
            .order_by(col(Gap.first_seq))
        ).scalars()
    )


def _minus(first: int, last: int, holes: Iterable[Gap]) -> list[tuple[int, int]]:
    """[first, last] without the runs of ``holes`` (sorted by first_seq)."""
    out: list[tuple[int, int]] = []
    at = first
    for h in holes:
        if h.first_seq > at:
            out.append((at, min(last, h.first_seq - 1)))
        at = max(at, h.last_seq + 1)
        if at > last:
            break
    if at <= last:
        out.append((at, last))
    return out


def missing(s: Session, gw: Gateway, first: int, last: int) -> None:
    """Seqs ``first..last`` were skipped: missing, unless already announced as dropped."""
    dropped = _overlapping(s, gw, DROPPED, first, last)
    for a, b in _minus(first, last, dropped):
        s.add(Gap(gateway_id=gw.id, stream=gw.stream, first_seq=a, last_seq=b, reason=MISSING))
        gw.gaps += b - a + 1


def arrived(s: Session, gw: Gateway, seqs: list[int]) -> None:
    """Late messages (ascending ``seqs``, each at or below ``max_seq``) arrived: the missing
    gaps they fall in shrink or split. One query however many arrive (a replay fills
    thousands at once)."""
    if not seqs:
        return
    runs = _runs(seqs)
    for gap in _overlapping(s, gw, MISSING, runs[0][0], runs[-1][1]):
        for a, b in runs:
            if b < gap.first_seq or a > gap.last_seq:
                continue
            a, b = max(a, gap.first_seq), min(b, gap.last_seq)
            gw.gaps -= b - a + 1
            piece = _cut(s, gap, a, b)
            if piece is None:
                break
            gap = piece


def _runs(seqs: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for q in seqs:
        if runs and q <= runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], max(q, runs[-1][1]))
        else:
            runs.append((q, q))
    return runs


def _cut(s: Session, gap: Gap, first: int, last: int) -> Gap | None:
    """Take ``first..last`` (inside ``gap``) out of ``gap``; the part above it, if any."""
    left = (gap.first_seq, first - 1) if gap.first_seq < first else None
    right = (last + 1, gap.last_seq) if gap.last_seq > last else None
    if left is None and right is None:
        s.delete(gap)
        return None
    if left is None:
        assert right is not None
        gap.first_seq, gap.last_seq = right
        return gap
    gap.first_seq, gap.last_seq = left
    if right is None:
        return None
    upper = Gap(
        gateway_id=gap.gateway_id,
        stream=gap.stream,
        first_seq=right[0],
        last_seq=right[1],
        detected_at=gap.detected_at,
        reason=gap.reason,
    )
    s.add(upper)
    return upper


def dropped(s: Session, gw: Gateway, runs: Iterable[tuple[int, int]]) -> None:
    """The edge says it dropped these runs: deliberate, never to arrive.

    Missing numbers they cover stop being missing (``gaps`` goes down, ``dropped`` up);
    numbers not yet seen as missing are recorded so that they never become missing.
    """
    for first, last in runs:
        known = _overlapping(s, gw, DROPPED, first, last)
        for a, b in _minus(first, last, known):
            s.add(Gap(gateway_id=gw.id, stream=gw.stream, first_seq=a, last_seq=b, reason=DROPPED))
            gw.dropped += b - a + 1
        for gap in _overlapping(s, gw, MISSING, first, last):
            a, b = max(first, gap.first_seq), min(last, gap.last_seq)
            _cut(s, gap, a, b)
            gw.gaps -= b - a + 1


def committed(s: Session, gw: Gateway, grace: timedelta, now: datetime | None = None) -> Committed:
    """What the hub holds of ``gw``'s current stream, as of this transaction."""
    if gw.gaps == 0:  # nothing missing (the counter follows every gap): no query needed
        ts = int((now or utcnow()).timestamp() * 1000)
        return Committed(stream=gw.stream, seq=gw.max_seq, max=gw.max_seq, ts=ts)
    s.flush()  # gaps of this transaction get their detected_at here: "now" comes after
    now = now or utcnow()
    ts = int(now.timestamp() * 1000)
    first_missing = s.execute(
        select(func.min(Gap.first_seq)).where(
            col(Gap.gateway_id) == gw.id,
            col(Gap.stream) == gw.stream,
            col(Gap.reason) == MISSING,
        )
    ).scalar_one_or_none()
    watermark = gw.max_seq if first_missing is None else first_missing - 1
    old_gaps = s.execute(
        select(col(Gap.first_seq), col(Gap.last_seq))
        .where(
            col(Gap.gateway_id) == gw.id,
            col(Gap.stream) == gw.stream,
            col(Gap.reason) == MISSING,
            col(Gap.detected_at) <= now - grace,
        )
        .order_by(col(Gap.first_seq))
        .limit(MAX_GAPS)
    ).all()
    return Committed(
        stream=gw.stream,
        seq=watermark,
        max=gw.max_seq,
        gaps=tuple((a, b) for a, b in old_gaps),
        ts=ts,
    )


def message(gw: Gateway, c: Committed) -> tuple[str, bytes]:
    """The ``committed`` publish for ``gw`` (topic, payload)."""
    return str(Topic(gw.site_id, gw.id, Kind.COMMITTED)), c.dumps()


def for_online(s: Session, grace: timedelta) -> list[tuple[str, bytes]]:
    """``committed`` for every online gateway with a stream: the periodic reminder that lets
    an edge notice a tail the broker lost (nothing newer arrives to show the gap)."""
    now = utcnow()
    gws = s.execute(
        select(Gateway).where(col(Gateway.online).is_(True), col(Gateway.stream) != "")
    ).scalars()
    return [message(gw, committed(s, gw, grace, now)) for gw in gws]
