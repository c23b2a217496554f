"""Report endpoints' shared tail: pick the report, answer JSON or a CSV file."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import HTTPException, Response, status

Rows = list[dict[str, Any]]


def report_response(
    makers: Mapping[str, Callable[[], Rows]], report: str, format: str, filename: str
) -> Rows | Response:
    """Rows of ``report`` as JSON, or as ``filename`` (CSV, a header row first); 404 if the
    report does not exist."""
    if report not in makers:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no report {report!r}")
    rows = makers[report]()
    if format == "json":
        return rows
    out = io.StringIO()
    if rows:
        w = csv.DictWriter(out, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
