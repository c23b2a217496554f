"""Fault values: parsing from the command line and from JSON."""

from __future__ import annotations

import pytest

from simulators.faults import Fault, FaultError, FaultKind


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (("silent", None), Fault(FaultKind.SILENT)),
        (("exception", None), Fault(FaultKind.EXCEPTION, code=4)),
        (("exception", "0x0B"), Fault(FaultKind.EXCEPTION, code=11)),
        (("out_of_range", "tank_level"), Fault(FaultKind.OUT_OF_RANGE, point="tank_level")),
        (("out_of_range", None), Fault(FaultKind.OUT_OF_RANGE)),
        (("clear", None), None),
    ],
)
def test_parse(words: tuple[str, str | None], expected: Fault | None) -> None:
    assert Fault.parse(*words) == expected


@pytest.mark.parametrize(
    "words",
    [("melted", None), ("silent", "now"), ("exception", "x"), ("exception", "300"), ("clear", "1")],
)
def test_parse_refuses(words: tuple[str, str | None]) -> None:
    with pytest.raises(FaultError):
        Fault.parse(*words)


def test_json_round_trip() -> None:
    for fault in (Fault(FaultKind.EXCEPTION, code=2), Fault(FaultKind.OUT_OF_RANGE, point="x")):
        assert Fault.from_json(fault.to_json()) == fault
    assert Fault.from_json({"kind": "clear"}) is None


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"kind": "stuck", "code": 3},
        {"kind": "silent", "extra": 1},
        {"kind": "exception", "code": "4"},
    ],
)
def test_json_refuses(data: dict[str, object]) -> None:
    with pytest.raises(FaultError):
        Fault.from_json(data)
