"""What the fuzz tests share: one hypothesis profile, byte mutations, and a tally of what
each decoder was fed, printed at the end of a ``pytest`` run (tests/conftest.py)."""

from __future__ import annotations

import itertools
import os
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# WUYE_FUZZ=N runs N times as many examples, random ones: a longer hunt by hand.
SCALE = int(os.environ.get("WUYE_FUZZ", "0"))


def fuzz(examples: int) -> settings:
    """Settings of a fuzz test: deterministic (the same examples on every run and machine,
    no example database: a red CI is reproduced by running the same test), ``examples``
    of them, which bounds its time."""
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


@st.composite
def mutated(draw: Any, data: bytes, specials: bytes = DELIMITERS) -> bytes:
    """``data`` with one to three edits of the kinds line noise and broken firmware make:
    a flipped or replaced byte, a byte lost or inserted, a slice repeated (oversize), cut
    short, or two bytes swapped. May come back unchanged (a flip of nothing)."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(("flip", "set", "drop", "insert", "repeat", "cut", "swap")))
        at = draw(st.integers(0, max(0, len(out) - 1)))
        if op == "insert":
            byte = draw(st.one_of(st.sampled_from(specials), st.integers(0, 255)))
            out.insert(draw(st.integers(0, len(out))), byte)
        elif not out:
            continue
        elif op == "flip":
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            out[at] = draw(st.one_of(st.sampled_from(specials), st.integers(0, 255)))
        elif op == "drop":
            del out[at]
        elif op == "repeat":
            end = draw(st.integers(at, len(out)))
            out[at:at] = out[at:end] * draw(st.integers(1, 8))
        elif op == "cut":
            del out[at:]
        else:
            other = draw(st.integers(0, len(out) - 1))
            out[at], out[other] = out[other], out[at]
    return bytes(out)


def chunks(draw: Any, stream: bytes) -> list[bytes]:
    """``stream`` cut at arbitrary points, as reads from a serial port come."""
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=12)))
    edges = [0, *(c for c in cuts if c < len(stream)), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(edges)]
