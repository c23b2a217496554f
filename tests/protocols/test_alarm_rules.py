"""Alarm rules as data: the shipped rule sets, what is refused at load, overrides."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from protocols.alarms import (
    FaultCode,
    Flags,
    NoData,
    Offline,
    Range,
    RuleSet,
    Schedule,
    Severity,
    Threshold,
    load_rule_set,
    load_rule_sets,
    parse_overrides,
    parse_rule_set,
    resolve_rules,
    worst,
)
from protocols.errors import ConfigError
from protocols.profile import load_profiles

PROFILES = load_profiles()
SHIPPED = load_rule_sets()


def rule(**fields):
    base = {
        "id": "r",
        "type": "t",
        "title": "T",
        "condition": {"kind": "threshold", "point": "voltage", "above": {"major": 250}},
    }
    return {**base, **fields}


def rule_set(*rules, profile="em-1p"):
    return {"schema": "wuye.alarms/1", "profile": profile, "rules": list(rules)}


def overrides(rules, profile="pump-station"):
    return {"schema": "wuye.alarm-overrides/1", "profile": profile, "rules": rules}


# --- shipped rule sets ------------------------------------------------------------------


def test_one_shipped_rule_set_per_profile_each_checked_against_it():
    assert set(SHIPPED) == set(PROFILES)
    for name, rules in SHIPPED.items():
        assert rules.profile == name
        for r in rules.rules:
            assert set(r.points) <= {p.name for p in PROFILES[name].points}, r.id


def test_every_profile_watches_for_offline_and_silence():
    for rules in SHIPPED.values():
        kinds = {r.condition.kind for r in rules.rules}
        assert {"offline", "no_data"} <= kinds
        assert {r.type for r in rules.rules} >= {"device_offline", "no_data"}


def test_pump_station_rules_as_the_issue_asks():
    ps = SHIPPED["pump-station"]
    low = ps.rule("outlet-pressure-low")
    assert isinstance(low.condition, Threshold)
    assert low.condition.point == "outlet_pressure"
    assert low.for_s == 30
    assert low.severities[0] is Severity.MAJOR
    fault = ps.rule("pump-fault").condition
    assert isinstance(fault, Flags)
    assert {f.severity for f in fault.points.values()} == {Severity.CRITICAL}
    assert set(fault.points) == {"pump1_fault", "pump2_fault"}


def test_lift_rules_cover_fault_codes_trapped_and_door():
    lift = SHIPPED["lift"]
    codes = lift.rule("controller-fault").condition
    assert isinstance(codes, FaultCode)
    assert codes.point == "fault_code" and codes.other is not None and 0 in codes.normal
    door = lift.rule("door-open-long")
    assert isinstance(door.condition, FaultCode) and door.condition.point == "door_state"
    assert door.for_s == 120
    trapped = lift.rule("passenger-trapped").condition
    assert isinstance(trapped, Flags) and trapped.severities == (Severity.CRITICAL,)


def test_meter_voltage_range_for_a_minute():
    v = SHIPPED["em-1p"].rule("voltage-out-of-range")
    assert isinstance(v.condition, Range) and v.for_s == 60
    for phase in "abc":
        r = SHIPPED["em-3p"].rule(f"voltage-{phase}-out-of-range")
        assert isinstance(r.condition, Range) and r.condition.point == f"voltage_{phase}"


def test_night_flow_has_a_night_schedule():
    night = SHIPPED["water-meter"].rule("night-flow")
    assert night.schedule is not None
    two_am_shanghai = int(datetime(2026, 3, 1, 18, 30, tzinfo=UTC).timestamp() * 1000)
    noon_shanghai = int(datetime(2026, 3, 1, 4, 0, tzinfo=UTC).timestamp() * 1000)
    end = night.schedule.window_end(two_am_shanghai)
    assert end == int(datetime(2026, 3, 1, 21, 0, tzinfo=UTC).timestamp() * 1000)
    assert night.schedule.window_end(noon_shanghai) is None


def test_severity_order():
    order = ["indeterminate", "warning", "minor", "major", "critical"]
    assert [Severity(s).rank for s in order] == [0, 1, 2, 3, 4]
    assert worst(Severity.MINOR, Severity.CRITICAL, Severity.MAJOR) is Severity.CRITICAL


def test_levels_are_nested_mildest_first():
    t = Threshold(point="p", below={"critical": 0.1, "major": 0.2})
    assert t.limits == ((Severity.MAJOR, 0.2), (Severity.CRITICAL, 0.1))


# --- refused at load --------------------------------------------------------------------

BAD_RULES = [
    (rule(colour="red"), "rules[0].colour", "unknown field"),
    (rule(id="Bad Id"), "rules[0].id", "String should match"),
    (rule(condition={"kind": "magic"}), "rules[0].condition", "does not match any of the expected"),
    (
        rule(condition={"kind": "threshold", "point": "voltage"}),
        "rules[0].condition",
        "exactly one of 'above' and 'below'",
    ),
    (
        rule(
            condition={
                "kind": "threshold",
                "point": "voltage",
                "above": {"major": 250},
                "below": {"major": 190},
            }
        ),
        "rules[0].condition",
        "exactly one of",
    ),
    (
        rule(
            condition={
                "kind": "threshold",
                "point": "voltage",
                "above": {"major": 250, "critical": 240},
            }
        ),
        "rules[0].condition",
        "critical (240) must be further above than major (250)",
    ),
    (
        rule(
            condition={
                "kind": "threshold",
                "point": "voltage",
                "below": {"major": 190, "critical": 195},
            }
        ),
        "rules[0].condition",
        "further below",
    ),
    (
        rule(
            condition={
                "kind": "threshold",
                "point": "voltage",
                "above": {"major": 250},
                "clear": 255,
            }
        ),
        "rules[0].condition",
        "clear (255) must be at or below the lowest limit",
    ),
    (
        rule(condition={"kind": "threshold", "point": "voltage", "above": {"severe": 250}}),
        "rules[0].condition.above.severe",
        "Input should be",
    ),
    (
        rule(condition={"kind": "threshold", "point": "voltage", "above": {"major": float("nan")}}),
        "rules[0].condition.above.major",
        "finite number",
    ),
    (
        rule(condition={"kind": "range", "point": "voltage", "lo": 240, "hi": 200}),
        "rules[0].condition",
        "lo (240) must be below hi (200)",
    ),
    (
        rule(
            condition={
                "kind": "range",
                "point": "voltage",
                "lo": 200,
                "hi": 240,
                "clear": [190, 230],
            }
        ),
        "rules[0].condition",
        "must be a band inside [200, 240]",
    ),
    (
        rule(condition={"kind": "fault_code", "point": "voltage"}),
        "rules[0].condition",
        "needs 'codes', 'other' or both",
    ),
    (
        rule(
            condition={
                "kind": "fault_code",
                "point": "x",
                "codes": {0: {"text": "a", "severity": "major"}},
            }
        ),
        "rules[0].condition",
        "code 0 is both normal and a fault",
    ),
    (
        rule(
            condition={
                "kind": "fault_code",
                "point": "x",
                "codes": {1: {"text": "", "severity": "major"}},
            }
        ),
        "rules[0].condition.codes.1.text",
        "at least 1 character",
    ),
    (
        rule(
            condition={
                "kind": "fault_bits",
                "point": "x",
                "bits": {64: {"text": "a", "severity": "major"}},
            }
        ),
        "rules[0].condition.bits.64",
        "less than or equal to 63",
    ),
    (
        rule(condition={"kind": "flags", "points": {}}),
        "rules[0].condition.points",
        "at least 1 item",
    ),
    (rule(condition={"kind": "no_data"}), "rules[0]", "needs for_s > 0"),
    (rule(condition={"kind": "offline"}, count=3), "rules[0]", "count does not apply"),
    (
        rule(
            condition={"kind": "offline"},
            schedule={"windows": [{"start": "22:00", "end": "06:00"}]},
        ),
        "rules[0]",
        "cannot have a schedule",
    ),
    (rule(for_s=-1), "rules[0].for_s", "greater than or equal to 0"),
    (rule(count=0), "rules[0].count", "greater than or equal to 1"),
    (
        rule(schedule={"windows": [{"start": "22:00:30", "end": "06:00"}]}),
        "rules[0].schedule.windows[0].start",
        "whole minute",
    ),
    (
        rule(
            schedule={"timezone": "Mars/Olympus", "windows": [{"start": "22:00", "end": "06:00"}]}
        ),
        "rules[0].schedule.timezone",
        "unknown time zone",
    ),
    (
        rule(schedule={"windows": [{"days": [], "start": "22:00", "end": "06:00"}]}),
        "rules[0].schedule.windows[0].days",
        "at least one day",
    ),
    (rule(schedule={"windows": []}), "rules[0].schedule.windows", "at least 1 item"),
]


@pytest.mark.parametrize(("bad", "place", "problem"), BAD_RULES)
def test_bad_rules_are_refused_with_place(bad, place, problem):
    with pytest.raises(ConfigError) as err:
        parse_rule_set(rule_set(bad), "bad.yaml")
    assert (err.value.source, err.value.place) == ("bad.yaml", place)
    assert problem in err.value.problem


def test_duplicate_ids_and_types_are_refused():
    with pytest.raises(ConfigError, match="rule id 'r' appears twice"):
        parse_rule_set(rule_set(rule(), rule(type="u")), "x")
    with pytest.raises(ConfigError, match="share alarm type 't'"):
        parse_rule_set(rule_set(rule(), rule(id="s")), "x")


def test_not_a_mapping_and_wrong_schema():
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_rule_set(["x"], "x")
    with pytest.raises(ConfigError) as err:
        parse_rule_set({**rule_set(rule()), "schema": "wuye.alarms/2"}, "x")
    assert err.value.place == "schema"


@pytest.mark.parametrize(
    ("condition", "place", "problem"),
    [
        (
            {"kind": "threshold", "point": "volts", "above": {"major": 1}},
            "rules[0].condition.point",
            "has no point 'volts'",
        ),
        (
            {"kind": "threshold", "point": "valve_open", "above": {"major": 1}},
            "rules[0].condition.point",
            "needs a number, not a bit",
        ),
        (
            {"kind": "range", "point": "battery_low", "lo": 0, "hi": 1},
            "rules[0].condition.point",
            "needs a number",
        ),
        (
            {
                "kind": "fault_code",
                "point": "flow_rate",
                "other": {"text": "x", "severity": "minor"},
            },
            "rules[0].condition.point",
            None,
        ),
        (
            {
                "kind": "fault_code",
                "point": "valve_open",
                "other": {"text": "x", "severity": "minor"},
            },
            "rules[0].condition.point",
            "needs an integer, not bit",
        ),
        (
            {
                "kind": "fault_bits",
                "point": "flow_rate",
                "bits": {16: {"text": "x", "severity": "minor"}},
            },
            "rules[0].condition.bits",
            "bit 16 is past the 16 bits of uint16",
        ),
        (
            {"kind": "flags", "points": {"flow_rate": {"text": "x", "severity": "minor"}}},
            "rules[0].condition.points.flow_rate",
            "bool or bit point, not uint16",
        ),
        (
            {"kind": "flags", "points": {"leak": {"text": "x", "severity": "minor"}}},
            "rules[0].condition.points.leak",
            "has no point 'leak'",
        ),
    ],
)
def test_rules_are_checked_against_their_profile(tmp_path: Path, condition, place, problem):
    path = tmp_path / "water-meter.yaml"
    path.write_text(yaml.safe_dump(rule_set(rule(condition=condition), profile="water-meter")))
    if problem is None:  # a uint16 code point is fine
        load_rule_set(path, PROFILES["water-meter"])
        return
    with pytest.raises(ConfigError) as err:
        load_rule_set(path, PROFILES["water-meter"])
    assert (err.value.source, err.value.place) == (str(path), place)
    assert problem in err.value.problem


def test_file_name_must_match_the_profile_and_the_profile_must_exist(tmp_path: Path):
    path = tmp_path / "lift.yaml"
    path.write_text(yaml.safe_dump(rule_set(rule())))
    with pytest.raises(ConfigError, match="'em-1p' must match the file name"):
        load_rule_set(path)
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "boiler.yaml").write_text(yaml.safe_dump(rule_set(rule(), profile="boiler")))
    with pytest.raises(ConfigError, match="there is no profile 'boiler'"):
        load_rule_sets(extra)


def test_a_site_directory_replaces_a_shipped_rule_set(tmp_path: Path):
    (tmp_path / "em-1p.yaml").write_text(yaml.safe_dump(rule_set(rule())))
    sets = load_rule_sets(tmp_path)
    assert [r.id for r in sets["em-1p"].rules] == ["r"]
    assert sets["lift"] == SHIPPED["lift"]


def test_bad_yaml_names_the_line(tmp_path: Path):
    path = tmp_path / "em-1p.yaml"
    path.write_text("schema: wuye.alarms/1\nrules: [\n")
    with pytest.raises(ConfigError) as err:
        load_rule_set(path)
    assert err.value.place.startswith("line ")


def test_rule_sets_round_trip_through_json():
    for rules in SHIPPED.values():
        again = RuleSet.model_validate(rules.model_dump(mode="json", by_alias=True))
        assert again == rules


# --- overrides --------------------------------------------------------------------------

PS = SHIPPED["pump-station"]
PS_PROFILE = PROFILES["pump-station"]


def test_site_then_device_overrides_merge_by_rule_id():
    site = parse_overrides(
        overrides(
            {
                "outlet-pressure-low": {
                    "condition": {"below": {"major": 0.3}, "clear": 0.32},
                    "for_s": 60,
                },
                "tank-level-high": {"enabled": False},
            }
        ),
        "site sunny-garden",
    )
    device = parse_overrides(
        overrides({"outlet-pressure-low": {"condition": {"below": {"critical": None}}}}),
        "device ps-1",
    )
    merged = resolve_rules(PS, site, device, profile=PS_PROFILE)
    low = merged.rule("outlet-pressure-low")
    assert isinstance(low.condition, Threshold)
    assert low.condition.below == {Severity.MAJOR: 0.3}  # critical removed by the device
    assert low.condition.point == "outlet_pressure"  # untouched fields stay
    assert low.for_s == 60
    assert not merged.rule("tank-level-high").enabled
    assert merged.rule("tank-level-high") not in merged.enabled_rules
    assert [r.id for r in merged.rules] == [r.id for r in PS.rules]
    assert PS.rule("outlet-pressure-low").for_s == 30  # the base is not modified


def test_site_only_and_nothing_at_all():
    assert resolve_rules(PS) is PS
    site = parse_overrides(overrides({"offline": {"condition": {"severity": "critical"}}}), "s")
    merged = resolve_rules(PS, site)
    off = merged.rule("offline").condition
    assert isinstance(off, Offline) and off.severity is Severity.CRITICAL


def test_an_override_adds_a_rule():
    new = {
        "type": "setpoint_changed",
        "title": "Pressure setpoint out of the usual band",
        "condition": {"kind": "range", "point": "pressure_setpoint", "lo": 0.3, "hi": 0.6},
    }
    merged = resolve_rules(PS, parse_overrides(overrides({"setpoint-band": new}), "s"))
    assert merged.rules[-1].id == "setpoint-band"
    assert isinstance(merged.rules[-1].condition, Range)


def test_an_override_may_change_the_kind_of_condition():
    patch = {"condition": {"kind": "range", "point": "outlet_pressure", "lo": 0.3, "hi": 0.7}}
    merged = resolve_rules(PS, parse_overrides(overrides({"outlet-pressure-low": patch}), "s"))
    cond = merged.rule("outlet-pressure-low").condition
    assert isinstance(cond, Range) and (cond.lo, cond.hi) == (0.3, 0.7)


def test_fault_codes_from_yaml_ints_and_json_strings_patch_the_same_code():
    lift = SHIPPED["lift"]
    yaml_patch = {"controller-fault": {"condition": {"codes": {4: {"severity": "critical"}}}}}
    json_patch = {"controller-fault": {"condition": {"codes": {"4": {"severity": "critical"}}}}}
    for patch in (yaml_patch, json_patch):
        merged = resolve_rules(lift, parse_overrides(overrides(patch, "lift"), "s"))
        cond = merged.rule("controller-fault").condition
        assert isinstance(cond, FaultCode)
        assert cond.codes[4].severity is Severity.CRITICAL
        assert cond.codes[4].text == "levelling fault"
        assert len(cond.codes) == len(lift.rule("controller-fault").condition.codes)  # type: ignore[union-attr]


def test_a_schedule_can_be_added_by_override():
    patch = {"door-open-long": {"schedule": {"windows": [{"start": "07:00", "end": "22:00"}]}}}
    merged = resolve_rules(SHIPPED["lift"], parse_overrides(overrides(patch, "lift"), "s"))
    assert isinstance(merged.rule("door-open-long").schedule, Schedule)


@pytest.mark.parametrize(
    ("patches", "source", "place", "problem"),
    [
        (
            {"outlet-pressure-low": {"condition": {"clear": 0.1}}},
            "site",
            "rules.outlet-pressure-low.condition",
            "clear (0.1) must be at or above the highest limit",
        ),
        (
            {"outlet-pressure-low": {"for_s": "soon"}},
            "site",
            "rules.outlet-pressure-low.for_s",
            "valid number",
        ),
        (
            {"outlet-pressure-low": {"id": "other"}},
            "site",
            "rules.outlet-pressure-low.id",
            "cannot change a rule's id",
        ),
        (
            {"brand-new": {"title": "x"}},
            "site",
            "rules.brand-new.type",
            "required field is missing",
        ),
        ({"offline": {"type": "no_data"}}, "site", "", "share alarm type 'no_data'"),
        (
            {"outlet-pressure-low": {"condition": {"point": "inlet_pressure"}}},
            "site",
            "rules.outlet-pressure-low.condition.point",
            "has no point 'inlet_pressure'",
        ),
    ],
)
def test_bad_overrides_name_their_source_rule_and_field(patches, source, place, problem):
    with pytest.raises(ConfigError) as err:
        resolve_rules(PS, parse_overrides(overrides(patches), source), profile=PS_PROFILE)
    assert (err.value.source, err.value.place) == (source, place)
    assert problem in err.value.problem


def test_the_layer_that_breaks_the_rules_is_blamed():
    site = parse_overrides(overrides({"outlet-pressure-low": {"for_s": 45}}), "site sunny")
    device = parse_overrides(overrides({"outlet-pressure-low": {"count": 0}}), "device ps-1")
    with pytest.raises(ConfigError) as err:
        resolve_rules(PS, site, device)
    assert err.value.source == "device ps-1"
    assert err.value.place == "rules.outlet-pressure-low.count"


def test_malformed_override_documents():
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_overrides("x", "s")
    with pytest.raises(ConfigError) as err:
        parse_overrides(overrides({"Bad Id": {}}), "s")
    assert err.value.place.startswith("rules.Bad Id")
    with pytest.raises(ConfigError, match="enabled: false"):
        parse_overrides(overrides({"offline": None}), "s")
    with pytest.raises(ConfigError) as err:
        resolve_rules(PS, parse_overrides(overrides({}, profile="lift"), "s"))
    assert err.value.place == "profile"
    assert "cannot apply to 'pump-station'" in err.value.problem


def test_condition_kinds_of_the_shipped_rules():
    kinds = {r.condition.kind for rs in SHIPPED.values() for r in rs.rules}
    assert kinds == {"threshold", "range", "fault_code", "flags", "no_data", "offline"}
    no_data = SHIPPED["lift"].rule("no-data")
    assert isinstance(no_data.condition, NoData) and no_data.for_ms == 300_000
