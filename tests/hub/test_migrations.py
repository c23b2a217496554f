"""Schema migrations carry data forward, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

from sqlalchemy import text

from hub.db import make_engine, upgrade


def test_0002_folds_per_point_latest_values_into_one_row_per_device(empty_db_url):
    url = empty_db_url
    upgrade(url, "0001")
    engine = make_engine(url)
    with engine.begin() as c:
        c.execute(
            text("INSERT INTO site (id, name, created_at) VALUES ('s', 's', :t)"),
            {"t": "2026-11-22 08:00:00+00:00"},
        )
        c.execute(
            text(
                "INSERT INTO gateway (id, site_id, stream, bdseq, online, agent, max_seq,"
                " messages, duplicates, gaps, bad) VALUES ('g','s','',0,false,'',0,0,0,0,0)"
            )
        )
        c.execute(
            text(
                "INSERT INTO device (id, gateway_id, device_id, site_id, profile, points)"
                " VALUES (7, 'g', 'd', 's', 'p', '[]')"
            )
        )
        c.execute(
            text(
                "INSERT INTO latestvalue (device, point, value, ts, seq) VALUES"
                " (7, 'kwh', 12.5, :t, 3), (7, 'v', 220.0, :t, 4)"
            ),
            {"t": "2026-11-22 08:00:00+00:00"},
        )
    upgrade(url)
    with engine.connect() as c:
        (points,) = c.execute(text("SELECT points FROM latest WHERE device = 7")).one()
    points = json.loads(points) if isinstance(points, str) else points
    assert points == {"kwh": [12.5, 1795334400000, 3], "v": [220.0, 1795334400000, 4]}
    engine.dispose()


def test_0003_groups_per_value_telemetry_into_rows_per_message(empty_db_url):
    url = empty_db_url
    upgrade(url, "0002")
    engine = make_engine(url)
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO telemetry (device, point, ts, value) VALUES"
                " (7, 'kwh', :a, 12.5), (7, 'v', :a, 220.0), (7, 'v', :b, 221.0)"
            ),
            {"a": "2026-11-22 08:00:00+00:00", "b": "2026-11-22 08:00:05+00:00"},
        )
    upgrade(url)
    with engine.connect() as c:
        rows = c.execute(text('SELECT "values" FROM telemetry ORDER BY ts')).all()
    got = [json.loads(v) if isinstance(v, str) else v for (v,) in rows]
    assert got == [{"kwh": 12.5, "v": 220.0}, {"v": 221.0}]
    engine.dispose()
