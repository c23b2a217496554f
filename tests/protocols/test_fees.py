"""Parking fees: hand-computed tables, bad data, and properties against a naive reference."""

import json
from datetime import UTC, datetime, time, timedelta
from math import gcd
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from protocols.errors import ConfigError
from protocols.parking import (
    AmountOff,
    Coupon,
    DayNightRule,
    FeeRule,
    FreeDay,
    HoursOff,
    PercentOff,
    PerEntryRule,
    Period,
    Segment,
    StandardRule,
    Tier2,
    fee,
    parse_coupon,
    parse_rule,
    quote,
)

SH = ZoneInfo("Asia/Shanghai")
ENTRY = datetime(2026, 3, 1, 10, 0, tzinfo=SH)


def at(day: int, h: int, m: int = 0, s: int = 0) -> datetime:
    """A Shanghai time in March 2026 (China has no DST)."""
    return datetime(2026, 3, day, h, m, s, tzinfo=SH)


def span(d: int = 0, h: int = 0, m: int = 0, s: int = 0) -> timedelta:
    return timedelta(days=d, hours=h, minutes=m, seconds=s)


# domain.md: free 15 min; first 60 min 5 元; then 2 元 per 30 min; after 480 min 1 元 per
# 60 min; cap 30 元 per 24 h.
DOMAIN_JSON = {
    "kind": "standard",
    "free_minutes": 15,
    "first": {"minutes": 60, "fen": 500},
    "step": {"minutes": 30, "fen": 200},
    "tier2": {"after_minutes": 480, "step": {"minutes": 60, "fen": 100}},
    "cap_fen": 3000,
}
DOMAIN = parse_rule(DOMAIN_JSON, "domain")
UNCAPPED = parse_rule({k: v for k, v in DOMAIN_JSON.items() if k != "cap_fen"}, "uncapped")
PER_ENTRY = PerEntryRule(free_minutes=15, fen=1000)
PER_DAY = PerEntryRule(free_minutes=15, fen=1000, per_started_day=True)
DAY_NIGHT_JSON = {
    "kind": "day_night",
    "free_minutes": 15,
    "segments": [
        {
            "start": "07:00",
            "end": "19:00",
            "first": {"minutes": 60, "fen": 500},
            "step": {"minutes": 60, "fen": 100},
            "cap_fen": 2000,
        },
        {
            "start": "19:00",
            "end": "07:00",
            "first": {"minutes": 60, "fen": 200},
            "step": {"minutes": 60, "fen": 100},
            "cap_fen": 500,
        },
    ],
    "cap_fen": 2400,
}
DAY_NIGHT = parse_rule(DAY_NIGHT_JSON, "day-night")


@pytest.mark.parametrize(
    ("stay", "fen"),
    [
        (span(), 0),
        (span(m=14), 0),
        (span(m=15), 0),  # exactly the free minutes: free
        (span(m=15, s=1), 500),  # a started minute counts; the whole stay from entry
        (span(m=16), 500),
        (span(m=60), 500),
        (span(m=60, s=1), 700),  # the step 60-90 has started
        (span(m=61), 700),
        (span(m=90), 700),
        (span(m=91), 900),
        (span(m=420), 2900),  # 500 + 12 x 200
        (span(m=421), 3000),  # 500 + 13 x 200 = 3100, capped
        (span(m=480), 3000),
        (span(m=481), 3000),  # tier 2 (3400 uncapped) is above the cap anyway
        (span(d=1), 3000),
        (span(d=1, s=1), 3500),  # a fresh block: first period again, no free minutes
        (span(d=1, m=10), 3500),
        (span(h=25), 3500),  # 3000 + fee(1 h)
        (span(h=26, m=30), 4100),  # 3000 + 500 + 3 x 200
        (span(d=2), 6000),
        (span(d=3), 9000),
        (span(d=3, m=1), 9500),
    ],
)
def test_domain_example_standard(stay, fen):
    assert fee(DOMAIN, ENTRY, ENTRY + stay) == fen


@pytest.mark.parametrize(
    ("stay", "fen"),
    [
        (span(m=420), 2900),
        (span(m=421), 3100),
        (span(m=480), 3300),  # 500 + 14 x 200
        (span(m=481), 3400),  # first tier-2 step
        (span(m=540), 3400),
        (span(m=541), 3500),
        (span(d=1), 4900),  # 3300 + 16 x 100
        (span(h=25), 5000),  # no cap, no 24-h blocks: tier 2 runs on
    ],
)
def test_standard_without_cap_runs_tier2_on(stay, fen):
    assert fee(UNCAPPED, ENTRY, ENTRY + stay) == fen


def test_standard_seconds_fractions_midnight_and_zones():
    # fractions of a second are dropped from both times: 15:00.9 is 15:00
    assert fee(DOMAIN, ENTRY, ENTRY + timedelta(minutes=15, microseconds=900_000)) == 0
    # only the elapsed time counts: midnight is nothing special
    assert fee(DOMAIN, at(1, 23, 30), at(2, 1, 0)) == 700
    # the same instants written in another zone
    assert fee(DOMAIN, at(1, 23, 30).astimezone(UTC), at(2, 1, 0).astimezone(UTC)) == 700


@pytest.mark.parametrize(
    ("rule", "stay", "fen"),
    [
        (PER_ENTRY, span(m=15), 0),
        (PER_ENTRY, span(m=16), 1000),
        (PER_ENTRY, span(d=3), 1000),
        (PER_DAY, span(m=16), 1000),
        (PER_DAY, span(d=1), 1000),
        (PER_DAY, span(d=1, s=1), 2000),  # per started 24 h
        (PER_DAY, span(d=3), 3000),
        (PER_DAY, span(d=3, s=1), 4000),
    ],
)
def test_per_entry(rule, stay, fen):
    assert fee(rule, ENTRY, ENTRY + stay) == fen


@pytest.mark.parametrize(
    ("entry", "exit_", "fen"),
    [
        (at(1, 10), at(1, 10, 15), 0),  # free minutes
        (at(1, 10), at(1, 12, 30), 700),  # day: 500 + 2 x 100
        (at(1, 7), at(1, 19), 1600),  # a whole day segment: 500 + 11 x 100
        # each piece is rounded up on its own: 10 min of day, 10 min of night
        (at(1, 18, 50), at(1, 19, 10), 700),
        (at(1, 18, 59, 30), at(1, 19, 30), 700),  # 30 s of day still start a day period
        (at(1, 20), at(1, 23), 400),  # night: 200 + 2 x 100
        (at(1, 20), at(2, 6), 500),  # 1100, capped per night
        (at(1, 6), at(1, 20), 2000),  # night 200 + day 1600 + night 200
        (at(1, 18), at(2, 8), 1500),  # across midnight: day 500, night 500 (cap), day 500
        # 48 h from 10:00; the day piece 07-19 straddles the 24-h mark without restarting:
        # block 1: day 1300 + night 500 + 07-10 700 = 2500 -> 2400 (cap per 24 h)
        # block 2: 10-19 9 x 100 + night 500 + 07-10 700 = 2100
        (at(1, 10), at(3, 10), 4500),
    ],
)
def test_day_night(entry, exit_, fen):
    assert fee(DAY_NIGHT, entry, exit_) == fen
    assert fee(DAY_NIGHT, entry.astimezone(UTC), exit_.astimezone(UTC)) == fen


def test_day_night_segments_are_cut_in_the_lot_zone():
    utc_lot = parse_rule({**DAY_NIGHT_JSON, "timezone": "UTC"})
    # 10:50-11:10 UTC is 18:50-19:10 in Shanghai: two pieces there, one day piece in UTC
    entry, exit_ = (
        datetime(2026, 3, 1, 10, 50, tzinfo=UTC),
        datetime(2026, 3, 1, 11, 10, tzinfo=UTC),
    )
    assert fee(DAY_NIGHT, entry, exit_) == 700
    assert fee(utc_lot, entry, exit_) == 500


THREE_H = ENTRY + span(h=3)  # 500 + 4 x 200 = 1300 under DOMAIN


@pytest.mark.parametrize(
    ("rule", "exit_", "coupons", "fen"),
    [
        (DOMAIN, THREE_H, [], 1300),
        (DOMAIN, THREE_H, [HoursOff(hours=1)], 900),  # priced as 2 h
        (DOMAIN, ENTRY + span(h=1, m=10), [HoursOff(hours=1)], 0),  # 10 min left: free
        (DOMAIN, THREE_H, [HoursOff(hours=3)], 0),
        (DOMAIN, THREE_H, [AmountOff(fen=500)], 800),
        (DOMAIN, THREE_H, [AmountOff(fen=2000)], 0),  # never negative
        (DOMAIN, THREE_H, [PercentOff(percent=15)], 1105),
        (PER_ENTRY, ENTRY + span(h=1), [PercentOff(percent=10)], 900),
        (PerEntryRule(fen=150), ENTRY + span(h=1), [PercentOff(percent=33)], 101),  # 100.5
        (PerEntryRule(fen=150), ENTRY + span(h=1), [PercentOff(percent=67)], 50),  # 49.5
        (DOMAIN, THREE_H, [PercentOff(percent=100)], 0),
        (DOMAIN, ENTRY + span(h=20), [FreeDay()], 0),
        (DOMAIN, ENTRY + span(h=25), [FreeDay()], 500),  # 3500 - 3000
        (DOMAIN, ENTRY + span(d=3), [FreeDay()], 6000),
        (PER_DAY, ENTRY + span(d=2, h=1), [FreeDay()], 2000),
        (DAY_NIGHT, at(3, 10), [FreeDay()], 2100),  # 4500 - 2400 (the first 24 h)
        # percent first, then amount: 1300 -> 650 -> 350
        (DOMAIN, THREE_H, [AmountOff(fen=300), PercentOff(percent=50)], 350),
        # 26 h 30: 2 h off leaves 24 h 30 (3500); the first 24 h free (500); 10 % (450); -100
        (
            DOMAIN,
            ENTRY + span(h=26, m=30),
            [AmountOff(fen=100), PercentOff(percent=10), FreeDay(), HoursOff(hours=2)],
            350,
        ),
    ],
)
def test_coupons(rule, exit_, coupons, fen):
    q = quote(rule, ENTRY, exit_, coupons=coupons)
    assert (q.total_fen, q.due_fen) == (fen, fen)


def test_coupons_of_one_kind_do_not_stack():
    with pytest.raises(ValueError, match="'amount_off' appears twice"):
        quote(DOMAIN, ENTRY, THREE_H, coupons=[AmountOff(fen=1), AmountOff(fen=2)])


def test_quote_without_payment():
    q = quote(DOMAIN, ENTRY, at(1, 11, 30))
    assert (q.total_fen, q.paid_fen, q.due_fen, q.paid_until) == (700, 0, 700, None)
    assert "nothing paid" in q.reason
    assert quote(DOMAIN, ENTRY, ENTRY).due_fen == 0


@pytest.mark.parametrize(
    ("now", "total", "due"),
    [
        (at(1, 11, 5), 700, 0),
        (at(1, 11, 20), 700, 0),  # the last second of grace
        # past grace, priced again from entry: 85 min still cost 700 (the step paid for
        # runs to 11:30); a new stay from 11:05 would have charged a first period (500)
        (at(1, 11, 25), 700, 0),
        (at(1, 11, 30, 1), 900, 200),  # the step 11:30-12:00 has started
        (at(2, 11), 3500, 2800),
    ],
)
def test_quote_after_paying_at_1105(now, total, due):
    q = quote(DOMAIN, ENTRY, now, payments=[(at(1, 11, 5), 700)])
    assert (q.total_fen, q.paid_fen, q.due_fen) == (total, 700, due)
    assert q.paid_until == at(1, 11, 20)


def test_quote_grace_is_configurable_and_reasons_say_why():
    inside = quote(DOMAIN, ENTRY, at(1, 11, 34), [(at(1, 11, 5), 700)], grace_minutes=30)
    assert inside.due_fen == 0
    assert "grace until 2026-03-01T11:35:00+08:00" in inside.reason
    past = quote(DOMAIN, ENTRY, at(1, 11, 36), [(at(1, 11, 5), 700)], grace_minutes=30)
    assert past.due_fen == 200
    assert "grace ended" in past.reason


def test_partial_payment_opens_no_grace():
    q = quote(DOMAIN, ENTRY, at(1, 11, 10), payments=[(at(1, 11, 5), 300)])
    assert (q.total_fen, q.paid_fen, q.due_fen, q.paid_until) == (700, 300, 400, None)
    q = quote(DOMAIN, ENTRY, at(1, 11, 10), [(at(1, 11, 5), 300), (at(1, 11, 8), 400)])
    assert (q.due_fen, q.paid_until) == (0, at(1, 11, 23))


def test_payment_stamped_after_the_quote_time_counts_as_made_now():
    q = quote(DOMAIN, ENTRY, at(1, 11, 5), payments=[(at(1, 11, 5, 2), 700)])
    assert (q.due_fen, q.paid_until) == (0, at(1, 11, 20))


def test_paying_every_hour_costs_what_paying_once_does():
    paid: list[tuple[datetime, int]] = []
    for hour in range(1, 31):
        now = ENTRY + span(h=hour)
        due = quote(DOMAIN, ENTRY, now, paid).due_fen
        paid.append((now, due))
    assert sum(f for _, f in paid) == fee(DOMAIN, ENTRY, ENTRY + span(h=30)) == 3000 + 2500


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: fee(DOMAIN, ENTRY.replace(tzinfo=None), THREE_H), "entry_at must be timezone"),
        (lambda: fee(DOMAIN, ENTRY, THREE_H.replace(tzinfo=None)), "exit_at must be timezone"),
        (lambda: fee(DOMAIN, THREE_H, ENTRY), "is before entry_at"),
        (lambda: quote(DOMAIN, THREE_H, ENTRY), "is before entry_at"),
        (lambda: quote(DOMAIN, ENTRY, THREE_H, [(at(1, 9), 100)]), "before the entry"),
        (lambda: quote(DOMAIN, ENTRY, THREE_H, [(at(1, 11), -1)]), "non-negative integer"),
        (lambda: quote(DOMAIN, ENTRY, THREE_H, [(at(1, 11), 1.5)]), "non-negative integer"),
        (lambda: quote(DOMAIN, ENTRY, THREE_H, grace_minutes=-1), "grace_minutes"),
        (
            lambda: quote(DOMAIN, ENTRY, THREE_H, [(datetime(2026, 3, 1, 11), 1)]),
            r"payments\[0\].paid_at must be timezone",
        ),
    ],
)
def test_bad_arguments_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def _with(base, **changes):
    return {**base, **changes}


def _segments(*pairs):
    period = {"minutes": 60, "fen": 100}
    return [{"start": s, "end": e, "first": period, "step": period} for s, e in pairs]


@pytest.mark.parametrize(
    ("data", "place", "problem"),
    [
        ([], "", "must be a mapping"),
        (_with(DOMAIN_JSON, kind="hourly"), "kind", "must be standard, per_entry or day_night"),
        ({k: v for k, v in DOMAIN_JSON.items() if k != "kind"}, "kind", "required field"),
        ({k: v for k, v in DOMAIN_JSON.items() if k != "first"}, "first", "required field"),
        (_with(DOMAIN_JSON, colour="red"), "colour", "unknown field"),
        (_with(DOMAIN_JSON, first={"minutes": 60, "fen": -1}), "first.fen", "greater than or"),
        (_with(DOMAIN_JSON, first={"minutes": 60, "fen": 5.0}), "first.fen", "valid integer"),
        (_with(DOMAIN_JSON, first={"minutes": 60, "fen": "500"}), "first.fen", "valid integer"),
        (_with(DOMAIN_JSON, step={"minutes": 0, "fen": 200}), "step.minutes", "greater than"),
        (_with(DOMAIN_JSON, free_minutes=-1), "free_minutes", "greater than"),
        (_with(DOMAIN_JSON, cap_fen=0), "cap_fen", "greater than"),
        (
            _with(DOMAIN_JSON, tier2={"after_minutes": 30, "step": {"minutes": 60, "fen": 1}}),
            "tier2",
            "after_minutes (30) is before the first period ends (60 min)",
        ),
        (
            _with(DOMAIN_JSON, tier2={"after_minutes": 100, "step": {"minutes": 60, "fen": 1}}),
            "tier2",
            "must end a whole step",
        ),
        ({"kind": "per_entry", "fen": -5}, "fen", "greater than"),
        ({"kind": "per_entry", "fen": 5, "per_started_day": "yes"}, "per_started_day", "bool"),
        (
            _with(DAY_NIGHT_JSON, segments=_segments(("07:00", "19:00"), ("20:00", "07:00"))),
            "segments",
            "leave a gap from 19:00 to 20:00",
        ),
        (
            _with(DAY_NIGHT_JSON, segments=_segments(("07:00", "19:30"), ("19:00", "07:00"))),
            "segments",
            "overlap from 19:00 to 19:30",
        ),
        (
            _with(DAY_NIGHT_JSON, segments=_segments(("07:00", "07:00"), ("19:00", "07:00"))),
            "segments[0].end",
            "cannot be empty",
        ),
        (
            _with(DAY_NIGHT_JSON, segments=_segments(("07:00:30", "19:00"), ("19:00", "07:00"))),
            "segments[0].start",
            "whole minute",
        ),
        (_with(DAY_NIGHT_JSON, segments=_segments(("07:00", "19:00"))), "segments", "at least"),
        (_with(DAY_NIGHT_JSON, timezone="Mars/Olympus"), "timezone", "unknown time zone"),
    ],
)
def test_bad_rules_are_refused_naming_the_field(data, place, problem):
    with pytest.raises(ConfigError) as err:
        parse_rule(data, "lot-7.json")
    assert (err.value.source, err.value.place) == ("lot-7.json", place)
    assert problem in err.value.problem


def test_models_refuse_bad_data_directly_too():
    with pytest.raises(ValidationError, match="tier2"):
        StandardRule(
            first=Period(minutes=60, fen=500),
            step=Period(minutes=30, fen=200),
            tier2=Tier2(after_minutes=45, step=Period(minutes=60, fen=100)),
        )
    with pytest.raises(ValidationError):
        DOMAIN.cap_fen = 1  # frozen


@pytest.mark.parametrize(
    ("data", "place"),
    [
        ({"kind": "percent_off", "percent": 0}, "percent"),
        ({"kind": "percent_off", "percent": 101}, "percent"),
        ({"kind": "hours_off", "hours": 0}, "hours"),
        ({"kind": "amount_off", "fen": 0}, "fen"),
        ({"kind": "free_day", "days": 2}, "days"),
        ({"kind": "buy_one_get_one"}, "kind"),
    ],
)
def test_bad_coupons_are_refused(data, place):
    with pytest.raises(ConfigError) as err:
        parse_coupon(data, "coupon")
    assert err.value.place == place


def test_rules_and_coupons_round_trip_through_json():
    assert DAY_NIGHT.model_dump(mode="json") == {**DAY_NIGHT_JSON, "timezone": "Asia/Shanghai"}
    for rule in (DOMAIN, UNCAPPED, PER_ENTRY, PER_DAY, DAY_NIGHT):
        text = json.dumps(rule.model_dump(mode="json"))
        assert parse_rule(json.loads(text)) == rule
        assert TypeAdapter(FeeRule).validate_json(text) == rule
    for coupon in (HoursOff(hours=2), FreeDay(), PercentOff(percent=20), AmountOff(fen=300)):
        text = json.dumps(coupon.model_dump(mode="json"))
        assert parse_coupon(json.loads(text)) == coupon
        assert TypeAdapter(Coupon).validate_json(text) == coupon


# ---------------------------------------------------------------------------------------
# The reference: independent and naive. Walk the stay tick by tick (a minute, or less when
# entry or exit fall inside a minute), charge whenever a step starts, and clamp the charges
# to what the segment occurrence and the 24-h block have left under their caps.


def _charge_at(offset: int, first: Period, step: Period, tier2: Tier2 | None) -> int:
    """What is charged when ``offset`` seconds into a schedule; 0 if no step starts then."""
    f, s = first.minutes * 60, step.minutes * 60
    if offset == 0:
        return first.fen
    if tier2 is not None and offset >= tier2.after_minutes * 60:
        t2 = tier2.step.minutes * 60
        return tier2.step.fen if (offset - tier2.after_minutes * 60) % t2 == 0 else 0
    return step.fen if offset >= f and (offset - f) % s == 0 else 0


def reference_fee(rule: FeeRule, entry: datetime, exit_: datetime) -> int:
    e, x = int(entry.timestamp()), int(exit_.timestamp())
    stay = x - e
    if stay <= rule.free_minutes * 60:
        return 0
    tick = gcd(60, e % 60, stay % 60)
    blocks: dict[int, int] = {}
    total = 0
    day_cap = rule.cap_fen if not isinstance(rule, PerEntryRule) else None
    seg_of_minute: list[Segment] = []
    if isinstance(rule, DayNightRule):
        for minute in range(1440):
            for seg in rule.segments:
                s = seg.start.hour * 60 + seg.start.minute
                if (minute - s) % 1440 < (seg.end.hour * 60 + seg.end.minute - s) % 1440:
                    seg_of_minute.append(seg)
        shift = int(entry.astimezone(ZoneInfo(rule.timezone)).utcoffset().total_seconds())
    current, piece_start, seg_sum = None, 0, 0
    for t in range(e, x, tick):
        block = (t - e) // 86400
        if isinstance(rule, StandardRule):
            offset = (t - e) % 86400 if rule.cap_fen is not None else t - e
            c = _charge_at(offset, rule.first, rule.step, rule.tier2)
        elif isinstance(rule, PerEntryRule):
            new_block = (t - e) % 86400 == 0
            c = rule.fen if t == e or (rule.per_started_day and new_block) else 0
        else:
            seg = seg_of_minute[(t + shift) % 86400 // 60]
            if seg is not current:
                current, piece_start, seg_sum = seg, t, 0
            c = _charge_at(t - piece_start, seg.first, seg.step, None)
            if seg.cap_fen is not None:
                c = min(c, seg.cap_fen - seg_sum)
            seg_sum += c
        if day_cap is not None:
            c = min(c, day_cap - blocks.get(block, 0))
        blocks[block] = blocks.get(block, 0) + c
        total += c
    return total


periods = st.builds(Period, minutes=st.integers(1, 180), fen=st.integers(0, 1000))
caps = st.none() | st.integers(1, 6000)


@st.composite
def standard_rules(draw):
    first, step = draw(periods), draw(periods)
    tier2 = None
    if draw(st.booleans()):
        n = draw(st.integers(0, (1440 - first.minutes) // step.minutes))
        tier2 = Tier2(after_minutes=first.minutes + n * step.minutes, step=draw(periods))
    return StandardRule(
        free_minutes=draw(st.integers(0, 30)),
        first=first,
        step=step,
        tier2=tier2,
        cap_fen=draw(caps),
    )


@st.composite
def day_night_rules(draw):
    n = draw(st.integers(2, 4))
    starts = sorted(draw(st.sets(st.sampled_from(range(0, 1440, 15)), min_size=n, max_size=n)))
    segments = [
        Segment(
            start=time(s // 60, s % 60),
            end=time(e // 60, e % 60),
            first=draw(periods),
            step=draw(periods),
            cap_fen=draw(caps),
        )
        for s, e in zip(starts, starts[1:] + starts[:1], strict=True)
    ]
    return DayNightRule(
        free_minutes=draw(st.integers(0, 30)),
        segments=tuple(draw(st.permutations(segments))),
        cap_fen=draw(caps),
        timezone=draw(st.sampled_from(["Asia/Shanghai", "UTC"])),
    )


per_entry_rules = st.builds(
    PerEntryRule,
    free_minutes=st.integers(0, 30),
    fen=st.integers(0, 2000),
    per_started_day=st.booleans(),
)
rules = st.one_of(standard_rules(), per_entry_rules, day_night_rules())
# on half-minutes, so that entries, exits and segment boundaries fall inside steps
entries = st.integers(0, 365 * 2880).map(lambda n: datetime(2026, 1, 1, tzinfo=SH) + span(s=30 * n))
stays = st.one_of(st.integers(0, 6 * 120), st.integers(0, 5 * 2880)).map(lambda n: span(s=30 * n))
coupon_sets = st.lists(
    st.one_of(
        st.builds(HoursOff, hours=st.integers(1, 30)),
        st.just(FreeDay()),
        st.builds(PercentOff, percent=st.integers(1, 100)),
        st.builds(AmountOff, fen=st.integers(1, 3000)),
    ),
    max_size=4,
    unique_by=lambda c: c.kind,
)


@settings(max_examples=150, deadline=None)
@given(st.one_of(standard_rules(), per_entry_rules), entries, stays)
def test_standard_and_per_entry_match_the_reference(rule, entry, stay):
    assert fee(rule, entry, entry + stay) == reference_fee(rule, entry, entry + stay)


@settings(max_examples=80, deadline=None)
@given(day_night_rules(), entries, stays)
def test_day_night_matches_the_reference(rule, entry, stay):
    assert fee(rule, entry, entry + stay) == reference_fee(rule, entry, entry + stay)


@settings(max_examples=200, deadline=None)
@given(rules, entries, stays, stays)
def test_fee_is_monotonic_free_at_first_and_capped(rule, entry, stay, more):
    assert fee(rule, entry, entry + stay) <= fee(rule, entry, entry + stay + more)
    assert fee(rule, entry, entry + span(m=rule.free_minutes)) == 0
    if not isinstance(rule, PerEntryRule) and rule.cap_fen is not None:
        days = stay // span(d=1)
        assert fee(rule, entry, entry + stay) <= days * rule.cap_fen + rule.cap_fen
    assert TypeAdapter(FeeRule).validate_json(rule.model_dump_json()) == rule


@settings(max_examples=200, deadline=None)
@given(
    rules,
    entries,
    stays,
    st.lists(st.tuples(stays, st.integers(0, 5000)), max_size=3),
    coupon_sets,
    st.integers(0, 30),
    st.integers(0, 30 * 60),
)
def test_quote_never_negative_and_paying_the_due_opens_the_gate(
    rule, entry, stay, payments, coupons, grace, wait
):
    now = entry + stay
    paid = [(entry + min(d, stay), fen) for d, fen in payments]
    q = quote(rule, entry, now, paid, coupons, grace)
    assert q.due_fen >= 0
    assert q.total_fen <= fee(rule, entry, now) or q.paid_until is not None
    paid.append((now, q.due_fen))
    after = quote(rule, entry, now, paid, coupons, grace)
    assert after.due_fen == 0
    assert after.paid_until is not None
    if q.paid_until is None or q.paid_until < now:
        assert after.paid_until == now + span(m=grace)
    later = min(now + span(s=wait), after.paid_until)
    assert quote(rule, entry, later, paid, coupons, grace).due_fen == 0
    # paying more never raises what is due
    more = quote(rule, entry, later + span(s=wait), [*paid, (now, 1)], coupons, grace)
    assert more.due_fen <= quote(rule, entry, later + span(s=wait), paid, coupons, grace).due_fen
