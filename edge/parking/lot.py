"""A lot's state at the edge and the decisions made from it alone (no I/O here).

The state is what the hub syncs (passes, allow/deny lists, the policy and fee rule,
payments taken online) plus what the edge itself records (open sessions, booth
payments). Decisions are pure functions of that state, a vehicle and a time, so the gate
decides in microseconds with or without the hub; the service (edge/parking/service.py)
makes each decision durable, then moves the gate.

Edge cases, decided here and documented in protocols/PARKING.md:
- a car recorded inside enters again: its old session is closed as "exit not seen" by
  the hub when the new entry arrives; the new entry is decided as any other;
- exit with no entry: a pass or allow-listed plate opens; a temporary car goes to the booth
  (no entry time, no fee to compute);
- a pass that expires during the stay: the time after the pass's end is charged by the
  fee rule, as a temporary stay that started when the pass ended.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError

from protocols.errors import ConfigError
from protocols.parking import FeeRule, parse_rule, quote
from protocols.parking.messages import (
    Action,
    Change,
    ChangeKind,
    Lease,
    ListEntry,
    ListKind,
    OfflineExit,
    Paid,
    Pass,
    Policy,
    Sync,
)


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(slots=True)
class OpenSession:
    session: str
    plate: str | None
    card: str | None
    entry_at: int  # ms
    lease: Lease
    pass_id: str | None = None
    booth_paid: list[tuple[int, int]] = field(default_factory=list)  # (at ms, fen)


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str
    session: str
    lease: Lease = Lease.TEMPORARY
    entry_at: int | None = None
    fee_fen: int = 0
    paid_fen: int = 0
    due_fen: int = 0
    unpaid_fen: int = 0
    closes: str | None = None  # entry: the session this car left open (exit not seen)


class SyncGap(Exception):
    """Changes based on a version this edge does not hold: a full snapshot is needed."""


@dataclass(slots=True)
class LotState:
    lot: str
    version: int = 0
    passes: dict[str, Pass] = field(default_factory=dict)
    lists: dict[str, ListEntry] = field(default_factory=dict)
    paid: dict[str, Paid] = field(default_factory=dict)
    policy: Policy | None = None
    rule: FeeRule | None = None
    sessions: dict[str, OpenSession] = field(default_factory=dict)

    # -- sync ----------------------------------------------------------------------------------
    def apply(self, sync: Sync) -> None:
        """Apply a snapshot or a change set; raises SyncGap if it does not follow ours.

        Validates everything before changing anything, so a bad change set leaves the
        state as it was (and is not confirmed).
        """
        if sync.lot != self.lot:
            raise ValueError(f"sync for lot {sync.lot!r}, this is {self.lot!r}")
        if sync.base is not None and sync.base != self.version:
            if sync.version <= self.version:
                return  # an old change set again: we are past it
            if sync.base > self.version:
                raise SyncGap(f"changes from version {sync.base}, we hold {self.version}")
            # from an older base (our last confirmation was still on its way to the hub):
            # it repeats changes we hold, in order, then goes on; each change puts or
            # deletes one key, so applying all of it ends where the new ones alone would
        parsed = [_parse(c) for c in sync.changes]
        if sync.base is None:
            self.passes, self.lists, self.paid = {}, {}, {}
            self.policy = self.rule = None
        for change, value in parsed:
            self._put(change, value)
        self.version = sync.version

    def _put(self, change: Change, value: object) -> None:
        table: dict[str, object] | None = {
            ChangeKind.PASS: self.passes,
            ChangeKind.LIST: self.lists,
            ChangeKind.PAID: self.paid,
        }.get(change.kind)  # type: ignore[assignment]
        if table is None:  # policy
            assert isinstance(value, Policy) or value is None
            self.policy = value
            self.rule = parse_rule(value.rule, "lot policy") if value is not None else None
        elif value is None:
            table.pop(change.key, None)
        else:
            table[change.key] = value

    # -- look-ups ------------------------------------------------------------------------------
    def pass_for(self, plate: str | None, card: str | None, at: int) -> Pass | None:
        best: Pass | None = None
        for p in self.passes.values():
            if (plate and p.plate == plate) or (card and p.card == card):
                if p.start <= at < p.end:
                    return p
                best = best or p
        return best  # an expired or future pass: the caller checks its dates

    def listed(self, plate: str | None, at: int) -> ListKind | None:
        if not plate:
            return None
        kinds = {
            e.kind
            for e in self.lists.values()
            if e.plate == plate and e.start <= at and (e.end is None or at < e.end)
        }
        return ListKind.DENY if ListKind.DENY in kinds else next(iter(kinds), None)

    def inside(self, plate: str | None, card: str | None) -> OpenSession | None:
        for s in self.sessions.values():
            if (plate and s.plate == plate) or (card and s.card == card):
                return s
        return None

    def temporary_inside(self) -> int:
        return sum(1 for s in self.sessions.values() if s.lease is Lease.TEMPORARY)

    def payments(self, session: OpenSession) -> list[tuple[int, int]]:
        online = [(p.at, p.fen) for p in self.paid.values() if p.session == session.session]
        return online + session.booth_paid

    # -- decisions -----------------------------------------------------------------------------
    def decide_entry(self, plate: str | None, card: str | None, at: int) -> Verdict:
        new = uuid.uuid4().hex
        old = self.inside(plate, card)
        closes = old.session if old is not None else None
        if self.policy is None:
            return Verdict(Action.BOOTH, "no lot policy synced yet", new, closes=closes)
        if self.listed(plate, at) is ListKind.DENY:
            return Verdict(Action.REFUSE, "deny list", new, closes=None)
        if self.listed(plate, at) is ListKind.ALLOW:
            return Verdict(Action.OPEN, "allow list", new, Lease.FREE, at, closes=closes)
        p = self.pass_for(plate, card, at)
        if p is not None and p.start <= at < p.end:
            return Verdict(Action.OPEN, f"pass {p.id}", new, p.lease, at, closes=closes)
        if not self.policy.accept_temporary:
            return Verdict(Action.REFUSE, "no temporary cars in this lot", new)
        if not plate:
            return Verdict(Action.BOOTH, "card without a valid pass", new)
        # the car seen inside is leaving that space to come in again: it does not count
        inside = self.temporary_inside() - (1 if old and old.lease is Lease.TEMPORARY else 0)
        if inside >= self.policy.capacity:
            action = Action.REFUSE if self.policy.when_full == "refuse" else Action.BOOTH
            return Verdict(action, f"lot full ({inside}/{self.policy.capacity})", new)
        return Verdict(Action.OPEN, "temporary", new, Lease.TEMPORARY, at, closes=closes)

    def decide_exit(
        self, plate: str | None, card: str | None, at: int, *, hub_reachable: bool
    ) -> Verdict:
        s = self.inside(plate, card)
        listed = self.listed(plate, at)
        p = self.pass_for(plate, card, at)
        pass_ok = p is not None and p.start <= at < p.end
        if s is None:
            new = uuid.uuid4().hex
            if listed is ListKind.ALLOW or pass_ok:
                lease = p.lease if pass_ok and p is not None else Lease.FREE
                return Verdict(Action.OPEN, "no entry record; pass or allow list", new, lease)
            return Verdict(Action.BOOTH, "no entry record", new)
        if listed is ListKind.ALLOW or pass_ok:
            lease = p.lease if pass_ok and p is not None else Lease.FREE
            return Verdict(Action.OPEN, "pass or allow list", s.session, lease, s.entry_at)
        if self.policy is None or self.rule is None:
            return Verdict(Action.BOOTH, "no fee rule synced yet", s.session, s.lease, s.entry_at)
        start, why = s.entry_at, "temporary"
        if s.lease is not Lease.TEMPORARY and p is not None and p.end < at:
            # a pass that ran out during the stay: the rest is a temporary stay
            start, why = max(s.entry_at, p.end), f"pass {p.id} ended during the stay"
        q = quote(
            self.rule,
            ms_to_dt(start),
            ms_to_dt(at),
            [(ms_to_dt(max(t, start)), fen) for t, fen in self.payments(s)],
            grace_minutes=self.policy.grace_minutes,
        )
        sid, entry, lease = s.session, s.entry_at, s.lease
        if q.due_fen == 0:
            return Verdict(
                Action.OPEN, f"{why}: {q.reason}", sid, lease, entry, q.total_fen, q.paid_fen
            )
        if not hub_reachable and self.policy.offline_exit is OfflineExit.OPEN_UNPAID:
            return Verdict(
                Action.OPEN,
                f"{why}: hub unreachable, let out unpaid by the lot's policy",
                sid,
                lease,
                entry,
                q.total_fen,
                q.paid_fen,
                q.due_fen,
                unpaid_fen=q.due_fen,
            )
        return Verdict(
            Action.BOOTH,
            f"{why}: {q.reason}",
            sid,
            lease,
            entry,
            q.total_fen,
            q.paid_fen,
            q.due_fen,
        )


def _parse(change: Change) -> tuple[Change, object]:
    if change.value is None:
        return change, None
    model: type[Pass | ListEntry | Paid | Policy] = {  # type: ignore[assignment]
        ChangeKind.PASS: Pass,
        ChangeKind.LIST: ListEntry,
        ChangeKind.PAID: Paid,
        ChangeKind.POLICY: Policy,
    }[change.kind]
    try:
        value = model.model_validate(change.value)
        if isinstance(value, Policy):
            parse_rule(value.rule, "lot policy")  # refuse a bad rule before anything changes
    except (ValidationError, ConfigError) as exc:
        raise ValueError(f"{change.kind} {change.key}: {exc}") from exc
    return change, value
