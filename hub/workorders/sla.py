"""The SLA check, run by the dispatcher every few seconds: each missed deadline once.

An order past its accept or finish deadline (``lifecycle.breaches``, ongoing) gets the
breach recorded on its row by a conditional UPDATE (``... WHERE accept_breached_at IS
NULL``), so two hub processes checking at once record it once; with it, an
``sla_breached`` audit entry and a ``workorder.sla_breached`` notification (by default to
the site's managers: the escalation) in the same transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, and_, or_
from sqlmodel import Session, col, select, update

from hub.db import session_scope
from hub.models import utcnow
from hub.notify.service import PRIORITY_SEVERITY, Event, publish
from hub.workorders import service
from hub.workorders.lifecycle import FINAL, Deadline, Priority, breaches
from hub.workorders.models import WorkOrderRecord

W = WorkOrderRecord
_COLUMN = {Deadline.ACCEPT: "accept_breached_at", Deadline.FINISH: "finish_breached_at"}


def check(engine: Engine, config: service.Config, now: datetime | None = None) -> int:
    """Record and tell every ongoing breach not yet recorded; how many were recorded."""
    now = now or utcnow()
    with Session(engine) as s:
        ids = list(
            s.exec(
                select(W.id)
                .where(
                    col(W.state).not_in([st.value for st in FINAL]),
                    or_(
                        and_(
                            col(W.accept_breached_at).is_(None),
                            col(W.accepted_at).is_(None),
                            col(W.accept_due) < now,
                        ),
                        and_(
                            col(W.finish_breached_at).is_(None),
                            col(W.finished_at).is_(None),
                            col(W.finish_due) < now,
                        ),
                    ),
                )
                .order_by(col(W.id))
            )
        )
    recorded = 0
    for order_id in ids:
        if order_id is not None:
            with session_scope(engine) as s:
                recorded += _record(s, config, order_id, now)
    return recorded


def _record(s: Session, config: service.Config, order_id: int, now: datetime) -> int:
    rec = s.get(W, order_id, with_for_update=True, populate_existing=True)
    if rec is None:
        return 0
    n = 0
    for b in breaches(service.as_lifecycle(rec), now, config.sla):
        column = _COLUMN[b.deadline]
        if not b.ongoing or getattr(rec, column) is not None:
            continue
        done: object = s.execute(
            update(W)
            .where(col(W.id) == order_id, getattr(W, column).is_(None))
            .values({column: now})
            .execution_options(synchronize_session=False)
        )
        if getattr(done, "rowcount", 0) != 1:
            continue  # another process recorded it
        minutes = int(b.by.total_seconds() // 60)
        note = (
            f"{b.deadline} deadline {b.due.isoformat()} missed "
            f"({minutes} min late, {rec.priority} priority)"
        )
        service.add_note(
            s,
            rec,
            "sla_breached",
            note,
            now,
            {"deadline": b.deadline.value, "due": b.due.isoformat()},
        )
        publish(
            s,
            Event(
                "workorder.sla_breached",
                f"wo:{order_id}:sla:{b.deadline}:{b.due.isoformat()}",
                rec.site_id,
                PRIORITY_SEVERITY[Priority(rec.priority)],
                {
                    **service.summary(rec),
                    "deadline": b.deadline.value,
                    "due": b.due.isoformat(),
                    "note": note,
                },
                assignee=rec.assignee,
            ),
        )
        n += 1
    return n
