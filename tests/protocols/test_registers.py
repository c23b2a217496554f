from itertools import combinations, pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import DecodeError
from protocols.registers import (
    DataType,
    Order,
    Read,
    Span,
    Table,
    apply_scale,
    decode,
    encode,
    plan_reads,
)

B, L = Order.BIG, Order.LITTLE


@pytest.mark.parametrize(
    ("regs", "dtype", "word", "byte", "expected"),
    [
        ([0xFFFF], DataType.INT16, B, B, -1),
        ([0xFFFF], DataType.UINT16, B, B, 65535),
        # 0x00010002: high word first ("ABCD")
        ([0x0001, 0x0002], DataType.UINT32, B, B, 0x00010002),
        # low word first ("CDAB"): same registers, other meaning
        ([0x0001, 0x0002], DataType.UINT32, L, B, 0x00020001),
        # bytes swapped in each word ("BADC"): 0x0100 0x0200 -> 0x00010002
        ([0x0100, 0x0200], DataType.UINT32, B, L, 0x00010002),
        ([0xFFFF, 0xFFFE], DataType.INT32, B, B, -2),
        # 230.5 as IEEE 754 single: 0x43668000
        ([0x4366, 0x8000], DataType.FLOAT32, B, B, 230.5),
        ([0x8000, 0x4366], DataType.FLOAT32, L, B, 230.5),
        ([0, 0, 0, 1], DataType.UINT64, B, B, 1),
        ([1, 0, 0, 0], DataType.UINT64, L, B, 1),
        # 1.5 as double: 0x3FF8000000000000
        ([0x3FF8, 0, 0, 0], DataType.FLOAT64, B, B, 1.5),
    ],
)
def test_decode_table(regs, dtype, word, byte, expected):
    assert decode(regs, dtype, word, byte) == expected


def test_bits_of_a_register():
    assert decode([0b1010], DataType.BIT, bit=1) is True
    assert decode([0b1010], DataType.BIT, bit=2) is False


@pytest.mark.parametrize(
    ("regs", "dtype", "why"),
    [
        ([1], DataType.UINT32, "needs 2 registers"),
        ([0x7FC0, 0], DataType.FLOAT32, "nan"),  # a meter reporting NaN must not reach a bill
        ([0x7F80, 0], DataType.FLOAT32, "inf"),
        ([70000], DataType.UINT16, "16-bit"),
    ],
)
def test_decode_refuses(regs, dtype, why):
    with pytest.raises(DecodeError, match=why):
        decode(regs, dtype)


def test_encode_refuses_what_does_not_fit():
    with pytest.raises(DecodeError, match="does not fit"):
        encode(70000, DataType.UINT16)
    with pytest.raises(DecodeError, match="not an integer"):
        encode(1.5, DataType.INT32)


INTS = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}


@given(
    st.data(),
    st.sampled_from(list(INTS)),
    st.sampled_from(list(Order)),
    st.sampled_from(list(Order)),
)
def test_integer_round_trip(data, dtype, word, byte):
    lo, hi = INTS[dtype]
    value = data.draw(st.integers(lo, hi))
    regs = encode(value, dtype, word, byte)
    assert len(regs) == dtype.width
    assert decode(regs, dtype, word, byte) == value


@given(st.floats(allow_nan=False, allow_infinity=False, width=32), st.sampled_from(list(Order)))
def test_float32_round_trip_to_the_same_single(value, word):
    got = decode(encode(value, DataType.FLOAT32, word), DataType.FLOAT32, word)
    assert encode(got, DataType.FLOAT32, word) == encode(value, DataType.FLOAT32, word)
    assert len(repr(got)) <= len(repr(value))


def test_float32_is_published_without_float64_noise():
    # 226.80975341796875 is the exact float32; 226.80975 is the same float32, shorter
    assert decode(encode(226.80975341796875, DataType.FLOAT32), DataType.FLOAT32) == 226.80975
    assert decode([0x4366, 0x8000], DataType.FLOAT32) == 230.5


@pytest.mark.parametrize(
    ("raw", "scale", "offset", "decimals", "expected"),
    [
        (123456, 0.01, 0, 2, 1234.56),  # not 1234.5600000000001
        (7, 0.1, 0, 1, 0.7),
        (5, 10, 0, 0, 50),
        (5, 1, 0, 0, 5),
        (1000, 0.001, -1, 3, 0.0),
    ],
)
def test_apply_scale_is_exact(raw, scale, offset, decimals, expected):
    got = apply_scale(raw, scale, offset, decimals)
    assert got == expected and repr(got) == repr(expected)


def test_plan_merges_adjacent_and_bridges_small_gaps():
    spans = [Span(Table.HOLDING, a, 2) for a in (0, 2, 4)] + [Span(Table.HOLDING, 10, 1)]
    assert plan_reads(spans) == [Read(Table.HOLDING, 0, 6), Read(Table.HOLDING, 10, 1)]
    assert plan_reads(spans, max_gap=4) == [Read(Table.HOLDING, 0, 11)]


def test_plan_never_exceeds_the_protocol_limit():
    spans = [Span(Table.INPUT, a, 2) for a in range(0, 300, 2)]
    reads = plan_reads(spans)
    assert [r.count for r in reads] == [124, 124, 52]
    assert all(r.count <= 125 for r in reads)


def test_plan_keeps_tables_apart_and_shares_overlaps():
    spans = [
        Span(Table.COIL, 0, 1),
        Span(Table.DISCRETE, 0, 1),
        Span(Table.HOLDING, 3, 1),
        Span(Table.HOLDING, 3, 1),
    ]
    assert len(plan_reads(spans)) == 3


def _covers(reads: list[Read], spans: list[Span]) -> bool:
    return all(
        any(
            r.table is s.table and r.address <= s.address and s.address + s.count <= r.end
            for r in reads
        )
        for s in spans
    )


def _brute_minimum(spans: list[Span], max_gap: int, limit: int) -> int:
    """Fewest reads by trying every partition into contiguous runs (small inputs only)."""
    ordered = sorted(spans, key=lambda s: s.address)
    n = len(ordered)
    for k in range(1, n + 1):
        for cuts in combinations(range(1, n), k - 1):
            bounds = (0, *cuts, n)
            ok = True
            for a, b in pairwise(bounds):
                run = ordered[a:b]
                end = run[0].address
                for s in run:
                    if s.address - end > max_gap:
                        ok = False
                    end = max(end, s.address + s.count)
                if end - run[0].address > limit:
                    ok = False
            if ok:
                return k
    return n


@given(
    st.lists(st.tuples(st.integers(0, 60), st.sampled_from([1, 2, 4])), min_size=1, max_size=7),
    st.integers(0, 6),
    st.integers(4, 20),
)
def test_plan_is_minimal_and_covers(points, max_gap, limit):
    spans = [Span(Table.HOLDING, a, w) for a, w in points]
    reads = plan_reads(spans, max_gap=max_gap, max_count=limit)
    assert _covers(reads, spans)
    assert all(r.count <= limit for r in reads)
    assert len(reads) == _brute_minimum(spans, max_gap, limit)
