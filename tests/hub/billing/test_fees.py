"""Fee computation: table cases a cashier can check by hand, and random fees against the
brute-force definition (every day costs its month's rate over its month's days)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.billing.fees import (
    Area,
    AreaBasis,
    FeeError,
    FeeSpec,
    Kind,
    NoPrice,
    Price,
    Rent,
    Rounding,
    once_line,
    periodic_line,
    round_fen,
)
from hub.billing.latefees import Terms, accrue
from hub.billing.periods import Period, Schedule, Timing, cycle_periods, days_in_month
from tests.support.fuzz import fuzz

D = Decimal
AREA = (Area(date(2000, 1, 1), D("89.50"), D("72.30")),)


def property_fee(*prices: Price, cycle: int = 3, **kw) -> FeeSpec:
    return FeeSpec(Kind.AREA, prices, cycle_months=cycle, **kw)


# -- rounding ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("exact", "mode", "step", "fen"),
    [
        (Fraction(44419, 100), Rounding.HALF_UP, 1, 444),  # 444.19 fen
        (Fraction(4441, 10), Rounding.HALF_UP, 1, 444),
        (Fraction(8885, 20), Rounding.HALF_UP, 1, 444),  # 444.25
        (Fraction(889, 2), Rounding.HALF_UP, 1, 445),  # 444.5: half goes up
        (Fraction(889, 2), Rounding.DOWN, 1, 444),
        (Fraction(4441, 10), Rounding.UP, 1, 445),
        (Fraction(44419, 100), Rounding.HALF_UP, 10, 440),  # to the jiao
        (Fraction(445), Rounding.HALF_UP, 10, 450),
        (Fraction(44501, 100), Rounding.DOWN, 10, 440),
        (Fraction(44001, 100), Rounding.UP, 10, 450),
        (Fraction(44000), Rounding.UP, 100, 44000),  # exact: nothing to round
        (Fraction(-889, 2), Rounding.HALF_UP, 1, -445),  # a credit rounds like a charge
        (Fraction(-4441, 10), Rounding.DOWN, 1, -444),
        (Fraction(0), Rounding.UP, 10, 0),
    ],
)
def test_rounding(exact, mode, step, fen):
    assert round_fen(exact, mode, step) == fen


# -- table cases ----------------------------------------------------------------------------
def test_a_quarter_of_property_fee_is_area_times_price_times_three():
    # 89.50 m² × 2.50 元/m²/month × 3 months = 671.25 元
    spec = property_fee(Price(date(2026, 1, 1), D(250)))
    line = periodic_line(spec, Period(date(2026, 1, 1), date(2026, 4, 1)), AREA)
    assert line.amount_fen == 67125
    piece = line.basis()["pieces"]
    assert piece == [
        {
            "from": "2026-01-01",
            "to": "2026-03-31",
            "months": 3,
            "built_area_m2": "89.50",
            "unit_fen_per_m2": "250",
            "monthly_fen": "22375.0000",
            "amount_fen": "67125.0000",
        }
    ]


def test_a_move_in_mid_month_pays_its_days_of_that_month():
    # 15–31 March: 17 of 31 days of 223.75 元, then April and May whole
    spec = property_fee(Price(date(2026, 1, 1), D(250)))
    line = periodic_line(spec, Period(date(2026, 3, 15), date(2026, 6, 1)), AREA)
    exact = Fraction(22375) * 17 / 31 + 2 * 22375
    assert line.exact == exact
    assert line.amount_fen == 57020  # 12270.16… + 44750 fen


def test_a_price_change_inside_a_cycle_splits_the_line():
    # 2.50 until May, 2.80 from 1 May: a Q2 bill is one month at 2.50 and two at 2.80
    spec = property_fee(Price(date(2026, 1, 1), D(250)), Price(date(2026, 5, 1), D(280)))
    line = periodic_line(spec, Period(date(2026, 4, 1), date(2026, 7, 1)), AREA)
    assert line.amount_fen == 22375 + 2 * 25060
    assert [p["months"] for p in line.basis()["pieces"]] == [1, 2]
    # a change on the 16th of a 30-day month: 15 days at each price
    spec = property_fee(Price(date(2026, 1, 1), D(250)), Price(date(2026, 6, 16), D(280)))
    line = periodic_line(spec, Period(date(2026, 6, 1), date(2026, 7, 1)), AREA)
    assert line.exact == Fraction(22375 + 25060, 2)


def test_interior_area_and_a_fixed_amount_per_month():
    spec = property_fee(
        Price(date(2026, 1, 1), D("180"), fixed=D(500)), cycle=1, area_basis=AreaBasis.INTERIOR
    )
    line = periodic_line(spec, Period(date(2026, 2, 1), date(2026, 3, 1)), AREA)
    assert line.amount_fen == 13514  # 72.30 m² × 1.80 元 = 130.14 元, + 5 元
    assert line.basis()["pieces"][0]["interior_area_m2"] == "72.30"


def test_a_fixed_fee_per_cycle_and_rounding_to_the_jiao():
    # 100 元 a year, billed yearly; half a year (181 of 365 days) rounded to the jiao
    spec = FeeSpec(Kind.FIXED, (Price(date(2026, 1, 1), D(10000)),), 12, step=10)
    assert periodic_line(spec, Period(date(2026, 1, 1), date(2027, 1, 1))).amount_fen == 10000
    half = periodic_line(spec, Period(date(2026, 7, 1), date(2027, 1, 1)))
    assert half.exact == 5000 and half.amount_fen == 5000
    odd = periodic_line(spec, Period(date(2026, 3, 10), date(2026, 4, 1)))
    assert odd.exact == Fraction(10000, 12) * 22 / 31
    assert odd.amount_fen == 590  # 591.39… fen to the jiao


def test_escalating_rent_steps_on_the_anniversary():
    # 8,000 元 a month from 2025-07-01, +5 % a year: July 2026 costs 8,400 元
    rent = Rent(date(2025, 7, 1), D(800000), D(5), 12)
    spec = FeeSpec(Kind.RENT, (), 1)
    assert (
        periodic_line(spec, Period(date(2026, 6, 1), date(2026, 7, 1)), rent=rent).amount_fen
        == 800000
    )
    assert (
        periodic_line(spec, Period(date(2026, 7, 1), date(2026, 8, 1)), rent=rent).amount_fen
        == 840000
    )
    assert (
        periodic_line(spec, Period(date(2027, 7, 1), date(2027, 8, 1)), rent=rent).amount_fen
        == 882000
    )


def test_a_deposit_and_a_per_use_fee_are_charged_once():
    deposit = FeeSpec(Kind.ONE_OFF, (Price(date(2026, 1, 1), D(200000)),))
    assert once_line(deposit, date(2026, 3, 2)).amount_fen == 200000
    lift = FeeSpec(Kind.PER_USE, (Price(date(2026, 1, 1), D("1250")),))  # 12.50 元 a use
    assert once_line(lift, date(2026, 3, 2), quantity=3).amount_fen == 3750
    with pytest.raises(FeeError):
        once_line(deposit, date(2026, 3, 2), quantity=2)


def test_no_price_is_an_error_never_a_fee_of_zero():
    spec = property_fee(Price(date(2026, 5, 1), D(250)))
    with pytest.raises(NoPrice, match="no price in effect on 2026-04-01"):
        periodic_line(spec, Period(date(2026, 4, 1), date(2026, 7, 1)), AREA)
    with pytest.raises(NoPrice):
        periodic_line(spec, Period(date(2026, 5, 1), date(2026, 6, 1)), ())  # no area
    with pytest.raises(FeeError, match="needs a price"):
        FeeSpec(Kind.AREA, ())


@pytest.mark.parametrize(
    "bad",
    [
        lambda: Area(date(2026, 1, 1), D(0), D(0)),
        lambda: Area(date(2026, 1, 1), D("-3"), D(1)),
        lambda: Area(date(2026, 1, 1), D(80), D(81)),
        lambda: Price(date(2026, 1, 1), D(-1)),
        lambda: Price(date(2026, 1, 1), D("NaN")),
        lambda: FeeSpec(Kind.AREA, (Price(date(2026, 1, 1), D(1)),), cycle_months=5),
        lambda: FeeSpec(Kind.AREA, (Price(date(2026, 2, 1), D(1)), Price(date(2026, 1, 1), D(1)))),
        lambda: FeeSpec(Kind.FIXED, (Price(date(2026, 1, 1), D(1), fixed=D(3)),)),
        lambda: Rent(date(2026, 1, 1), D(0)),
        lambda: Period(date(2026, 1, 2), date(2026, 1, 2)),
    ],
)
def test_impossible_fees_are_refused_when_made(bad):
    with pytest.raises(ValueError):
        bad()


# -- cycles -----------------------------------------------------------------------------------
def test_cycles_follow_the_calendar_and_a_start_mid_cycle_is_a_short_first_period():
    q = cycle_periods(3, date(2026, 3, 15), date(2027, 1, 1))
    assert [(p.start.isoformat(), p.last.isoformat()) for p in q] == [
        ("2026-03-15", "2026-03-31"),
        ("2026-04-01", "2026-06-30"),
        ("2026-07-01", "2026-09-30"),
        ("2026-10-01", "2026-12-31"),
    ]
    assert [p.start.month for p in cycle_periods(12, date(2025, 1, 1), date(2027, 1, 1))] == [1, 1]
    assert cycle_periods(6, date(2026, 2, 1), date(2026, 12, 1), anchor_month=2)[1].start == date(
        2026, 8, 1
    )


def test_prepaid_and_postpaid_issue_and_due_dates():
    p = Period(date(2026, 4, 1), date(2026, 7, 1))
    pre = Schedule(Timing.PREPAID, advance_days=15, due_days=10)
    assert pre.issued_on(p) == date(2026, 3, 17) and pre.due_on(p) == date(2026, 4, 11)
    post = Schedule(Timing.POSTPAID, due_days=15)
    assert post.issued_on(p) == date(2026, 7, 1) and post.due_on(p) == date(2026, 7, 16)


# -- against the definition -----------------------------------------------------------------
def reference(spec: FeeSpec, period: Period, areas, rent) -> Fraction:
    """Day by day: the rate in effect that day (looked up naively) over its month's days."""
    total = Fraction(0)
    d = period.start
    while d < period.end:
        prices = [p for p in spec.prices if p.effective_from <= d]
        if spec.kind is Kind.AREA:
            older = [a for a in areas if a.effective_from <= d]
            area = (older[-1] if older else areas[0]).of(spec.area_basis)
            rate = Fraction(area) * Fraction(prices[-1].unit) + Fraction(prices[-1].fixed)
        elif spec.kind is Kind.FIXED:
            rate = Fraction(prices[-1].unit) / spec.cycle_months
        else:
            years = 0
            while True:  # whole escalation periods since the start, counted by the calendar
                m = rent.start.month - 1 + (years + 1) * rent.every_months
                y, mo = rent.start.year + m // 12, m % 12 + 1
                anniversary = date(y, mo, min(rent.start.day, days_in_month(date(y, mo, 1))))
                if anniversary > d:
                    break
                years += 1
            rate = Fraction(rent.monthly) * (1 + Fraction(rent.step_pct) / 100) ** years
        total += rate / days_in_month(d)
        d += timedelta(days=1)
    return total


days = st.dates(date(2024, 1, 1), date(2028, 12, 31))
money = st.decimals(0, 100_000, places=2)
areas = st.decimals(D("0.01"), D(2000), places=2)


@st.composite
def fees(draw):
    start = draw(days)
    end = start + timedelta(days=draw(st.integers(1, 800)))
    kind = draw(st.sampled_from([Kind.AREA, Kind.FIXED, Kind.RENT]))
    cycle = draw(st.sampled_from([1, 2, 3, 4, 6, 12]))
    dates = sorted(draw(st.sets(days, min_size=1, max_size=4)))
    dates[0] = min(dates[0], start)  # a price from the period's start on
    prices = tuple(
        Price(d, draw(money), draw(money) if kind is Kind.AREA and draw(st.booleans()) else D(0))
        for d in dates
    )
    spec = FeeSpec(
        kind,
        prices if kind is not Kind.RENT else (),
        cycle,
        draw(st.sampled_from(list(Rounding))),
        draw(st.sampled_from([1, 10, 100])),
        draw(st.sampled_from(list(AreaBasis))),
    )
    history = []
    for d in sorted(draw(st.sets(days, min_size=1, max_size=4))):
        built = draw(areas)
        history.append(Area(d, built, min(built, draw(areas))))
    rent = None
    if kind is Kind.RENT:
        rent = Rent(
            start - timedelta(days=draw(st.integers(0, 900))),
            draw(st.decimals(1, 10**7, places=0)),
            draw(st.decimals(0, 20, places=1)),
            draw(st.integers(1, 24)),
        )
    return spec, Period(start, end), tuple(history), rent


@fuzz(300)
@given(fees())
def test_a_line_is_the_sum_of_its_days_rounded_once(case):
    spec, period, history, rent = case
    line = periodic_line(spec, period, history, rent)
    exact = reference(spec, period, history, rent)
    assert line.exact == exact
    assert line.amount_fen == round_fen(exact, spec.rounding, spec.step)
    assert sum(p.amount for p in line.pieces) == exact
    # the pieces cover the period's days once each, in order
    assert line.pieces[0].start == period.start and line.pieces[-1].end == period.end
    assert all(a.end == b.start for a, b in zip(line.pieces, line.pieces[1:], strict=False))


@fuzz(200)
@given(fees(), st.integers(0, 799))
def test_a_period_cut_in_two_costs_what_it_costs_whole_before_rounding(case, cut):
    spec, period, history, rent = case
    at = period.start + timedelta(days=cut % period.days)
    if at == period.start:
        return
    whole = periodic_line(spec, period, history, rent)
    a = periodic_line(spec, Period(period.start, at), history, rent)
    b = periodic_line(spec, Period(at, period.end), history, rent)
    assert a.exact + b.exact == whole.exact


# -- late fees -------------------------------------------------------------------------------
def test_a_late_fee_is_a_daily_share_of_what_is_owed_after_the_grace_days():
    # 0.05 % a day after 15 days of grace, of 671.25 元 due 16 Jan, half paid on 10 Mar
    t = Terms(Fraction(5, 10000), 15, None)
    moves = [(date(2026, 1, 1), 67125), (date(2026, 3, 10), -33562)]
    a = accrue(t, date(2026, 1, 16), 67125, moves, date(2026, 3, 31))
    assert a.start == date(2026, 2, 1)
    # 1 Feb .. 10 Mar: 38 days of 67125 (the payment on the 10th counts from the 11th),
    # 11 .. 31 Mar: 21 days of 33563
    assert a.exact == Fraction(5, 10000) * (38 * 67125 + 21 * 33563)
    assert a.fen == 1628  # 16.28 元
    capped = accrue(
        Terms(Fraction(5, 10000), 15, Fraction(1, 100)),
        date(2026, 1, 16),
        67125,
        moves,
        date(2026, 3, 31),
    )
    assert capped.fen == 671  # at most 1 % of the bill
    paid_in_grace = [(date(2026, 1, 1), 67125), (date(2026, 1, 30), -67125)]
    assert accrue(t, date(2026, 1, 16), 67125, paid_in_grace, date(2026, 12, 31)).fen == 0
    # a bill issued late accrues from its own booking, not from a due date before it existed
    late = accrue(t, date(2026, 1, 16), 67125, [(date(2026, 7, 20), 67125)], date(2026, 8, 10))
    assert late.start == date(2026, 8, 5) and late.days == 6


@fuzz(200)
@given(
    st.lists(
        st.tuples(st.dates(date(2026, 1, 1), date(2026, 12, 31)), st.integers(-50000, 50000)),
        max_size=8,
    ),
    st.dates(date(2026, 1, 1), date(2026, 12, 31)),
    st.integers(0, 40),
    st.dates(date(2026, 1, 1), date(2027, 6, 30)),
    st.sampled_from([None, Fraction(1, 10), Fraction(1)]),
)
def test_late_fees_agree_with_counting_day_by_day(moves, due, grace, through, cap):
    moves = [(date(2026, 1, 1), 100000), *moves]
    t = Terms(Fraction(3, 10000), grace, cap)
    got = accrue(t, due, 100000, moves, through)
    total = Fraction(0)
    d = max(due, date(2026, 1, 1)) + timedelta(days=grace + 1)
    while d <= through:
        owed = sum(f for on, f in moves if on < d)
        total += t.rate_per_day * max(owed, 0)
        d += timedelta(days=1)
    if cap is not None:
        total = min(total, cap * 100000)
    assert got.exact == total and got.fen == round_fen(total, Rounding.HALF_UP)
