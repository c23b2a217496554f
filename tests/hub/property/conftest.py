from __future__ import annotations

import io

import pytest
from openpyxl import Workbook

from hub.db import session_scope
from hub.models import Site

KEY = b"test person key"


def resident_id(first17: str) -> str:
    """A resident ID number with its right check digit (GB 11643)."""
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(c) * w for c, w in zip(first17, weights, strict=True))
    return first17 + "10X98765432"[total % 11]


def workbook(**sheets: list[list[object]]) -> bytes:
    """An xlsx with the given sheets (name -> rows, the first the header)."""
    wb = Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(row)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


@pytest.fixture
def sites(engine):
    with session_scope(engine) as s:
        s.add(Site(id="s1", name="Sunny Garden"))
        s.add(Site(id="s2", name="Other Place"))
    return engine
