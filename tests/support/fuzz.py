"""What the fuzz tests share: one hypothesis profile, byte mutations, and a tally of what
each decoder was fed, printed at the end of a ``pytest`` run (tests/conftest.py)."""

from __future__ import annotations

import itertools
import os
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

# WUYE_FUZZ=N runs N times as many examples, random ones: a longer hunt by hand.
SCALE = int(os.environ.get("WUYE_FUZZ", "0"))


def fuzz(examples: int) -> settings:
    """Settings of a fuzz test: deterministic (no example database), ``examples`` of them,
    which bounds its time. The same selection of tests draws the same examples on every
    run and machine, but Hypothesis also draws literals of the project's modules already
    imported (not the tests'): a test run after others that import more (test_crash.py
    imports simulators/) draws other examples, so a red CI is reproduced by running the
    same selection, not the one test."""
    return settings(
        max_examples=examples * max(1, SCALE),
        derandomize=not SCALE,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class Tally:
    """Per decoder: examples run and what they fed it (frames, bytes, outcomes)."""

    def __init__(self) -> None:
        self._rows: dict[str, Counter[str]] = {}

    def add(self, name: str, **counts: int) -> None:
        row = self._rows.setdefault(name, Counter())
        row.update(counts)

    def __bool__(self) -> bool:
        return bool(self._rows)

    def lines(self) -> list[str]:
        width = max(len(name) for name in self._rows)
        return [
            f"{name:<{width}}  " + ", ".join(f"{n:,} {what}" for what, n in row.items())
            for name, row in sorted(self._rows.items())
        ]


TALLY = Tally()

DELIMITERS = b"\x02\x03\x10"  # STX, ETX, DLE: the bytes a serial framing is made of


Edit = tuple[str, int, int, int]  # what, where, how far (or which bit), which byte
_OPS = ("flip", "set", "drop", "insert", "repeat", "cut", "swap")


def edits(specials: bytes = DELIMITERS) -> SearchStrategy[list[Edit]]:
    """One to three edits of the kinds line noise and broken firmware make: a flipped or
    replaced byte, a byte lost or inserted, a slice repeated (oversize), cut short, two
    bytes swapped. Positions are taken modulo the length, so edits can be drawn before
    the bytes they apply to exist (a reply built for a request not yet sent)."""
    byte = st.one_of(st.sampled_from(specials), st.integers(0, 255))
    edit = st.tuples(st.sampled_from(_OPS), st.integers(0, 1 << 16), st.integers(0, 255), byte)
    return st.lists(edit, min_size=1, max_size=3)


def apply_edits(data: bytes, edits: list[Edit]) -> bytes:
    out = bytearray(data)
    for op, where, far, byte in edits:
        if op == "insert":
            out.insert(where % (len(out) + 1), byte)
            continue
        if not out:
            continue
        at = where % len(out)
        if op == "flip":
            out[at] ^= 1 << far % 8
        elif op == "set":
            out[at] = byte
        elif op == "drop":
            del out[at]
        elif op == "repeat":
            out[at:at] = out[at : at + far % (len(out) - at + 1)] * (1 + byte % 8)
        elif op == "cut":
            del out[at:]
        else:
            other = far % len(out)
            out[at], out[other] = out[other], out[at]
    return bytes(out)


def mutated(data: bytes, specials: bytes = DELIMITERS) -> SearchStrategy[bytes]:
    """``data`` with :func:`edits` applied; may come back unchanged (a swap of equals)."""
    return edits(specials).map(lambda e: apply_edits(data, e))


def chunks(draw: Any, stream: bytes) -> list[bytes]:
    """``stream`` cut at arbitrary points, as reads from a serial port come."""
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=12)))
    edges = [0, *(c for c in cuts if c < len(stream)), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(edges)]
