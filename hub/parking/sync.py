"""Send each lot's state to its edge until the edge confirms it holds that version.

Runs in the command dispatcher's loop (same MQTT client). A lot whose edge is behind gets
the changes since the version it confirmed (or a snapshot), again every ``RESEND_S``
until confirmed; a birth or a ``synced`` that shows the edge behind makes it go at once.
A sync that keeps failing is never dropped: it is retried and logged as lagging.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Engine
from sqlmodel import col, select

from hub.db import session_scope
from hub.parking.models import ParkingLot, ParkingSync
from hub.parking.service import changes_since, utcnow
from protocols.mqtt import Kind, Topic

log = logging.getLogger(__name__)
RESEND = timedelta(seconds=10)
WARN_AFTER = 6  # attempts (a minute) without a confirmation: say so


def tick(engine: Engine, publish: Callable[[str, bytes], None]) -> int:
    """Send what is due; returns how many syncs went out."""
    now = utcnow()
    sent = 0
    with session_scope(engine) as s:
        rows = s.exec(
            select(ParkingLot, ParkingSync)
            .join(ParkingSync, col(ParkingSync.lot_id) == col(ParkingLot.id))
            .where(col(ParkingSync.confirmed) < col(ParkingLot.version))
        ).all()
        for lot, st in rows:
            if st.sent_at is not None and now - st.sent_at < RESEND and st.sent == lot.version:
                continue
            msg = changes_since(s, lot, st.confirmed)
            publish(
                str(Topic(lot.site_id, lot.gateway_id, Kind.SYNC)),
                msg.model_dump_json(exclude_none=False).encode(),
            )
            st.sent, st.sent_at, st.attempts = lot.version, now, st.attempts + 1
            sent += 1
            if st.attempts == WARN_AFTER or (st.attempts > WARN_AFTER and st.attempts % 60 == 0):
                log.warning(
                    "lot %s: gateway %s has not confirmed version %d after %d sends (holds %d)",
                    lot.id,
                    lot.gateway_id,
                    lot.version,
                    st.attempts,
                    st.confirmed,
                )
    return sent
