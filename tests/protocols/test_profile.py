import pytest

from protocols.codec import decode_point, encode_point, set_bit
from protocols.errors import ConfigError, DecodeError
from protocols.profile import PointKind, load_profile, load_profiles, parse_profile

GOOD_POINT = {"name": "volume", "table": "holding", "address": 0, "type": "uint32"}


def profile(*points, **extra):
    return {"schema": "wuye.profile/1", "name": "p", "points": list(points), **extra}


def test_every_shipped_profile_loads_with_its_billing_counters():
    profiles = load_profiles()
    assert set(profiles) == {"em-1p", "em-3p", "water-meter", "lift", "pump-station"}
    counters = {
        n: [p.name for p in pr.points if p.kind is PointKind.COUNTER] for n, pr in profiles.items()
    }
    assert counters["em-1p"] == ["energy_import"]
    assert counters["water-meter"] == ["volume"]
    assert profiles["water-meter"].point("volume").unit == "m³"


@pytest.mark.parametrize(
    ("points", "place", "problem"),
    [
        ([{**GOOD_POINT, "type": "uint24"}], "points[0].type", "Input should be"),
        ([{**GOOD_POINT, "address": 70000}], "points[0].address", "less than or equal"),
        ([{**GOOD_POINT, "address": 65535}], "points[0]", "runs past register 65535"),
        (
            [{k: v for k, v in GOOD_POINT.items() if k != "table"}],
            "points[0].table",
            "required field is missing",
        ),
        ([GOOD_POINT, {**GOOD_POINT, "name": "flow", "address": 1}], "", "overlap at holding"),
        ([GOOD_POINT, dict(GOOD_POINT)], "", "appears twice"),
        ([{**GOOD_POINT, "table": "coil"}], "points[0]", "does not fit table coil"),
        ([{**GOOD_POINT, "type": "bit"}], "points[0]", "'bit' is required"),
        ([{**GOOD_POINT, "table": "input", "writable": True}], "points[0]", "read-only"),
        ([{**GOOD_POINT, "colour": "red"}], "points[0].colour", "unknown field"),
    ],
)
def test_bad_profiles_are_refused_with_place(points, place, problem):
    with pytest.raises(ConfigError) as err:
        parse_profile(profile(*points), "bad.yaml")
    assert err.value.source == "bad.yaml"
    assert err.value.place == place
    assert problem in err.value.problem


def test_bits_may_share_a_register():
    p = parse_profile(
        profile(
            {"name": "a", "table": "holding", "address": 3, "type": "bit", "bit": 0},
            {"name": "b", "table": "holding", "address": 3, "type": "bit", "bit": 1},
        ),
        "x",
    )
    assert len(p.points) == 2


def test_file_name_must_match_and_yaml_errors_say_the_line(tmp_path):
    f = tmp_path / "meter.yaml"
    f.write_text(
        "schema: wuye.profile/1\nname: other\npoints: [{name: v, table: holding, "
        "address: 0, type: uint16}]\n"
    )
    with pytest.raises(ConfigError, match="must match the file name"):
        load_profile(f)
    f.write_text("schema: wuye.profile/1\nname: [unclosed\n")
    with pytest.raises(ConfigError, match="line 2"):
        load_profile(f)


def test_codec_round_trips_every_shipped_point():
    for pr in load_profiles().values():
        for p in pr.points:
            value = True if p.type in ("bool", "bit") else (12.5 if "float" in p.type else 42)
            if p.type not in ("bool", "bit", "float32", "float64"):
                value = 42 * p.scale + p.offset
            enc = encode_point(p, value)
            if isinstance(enc, bool):
                table = {p.address: set_bit(0, p.bit, enc) if p.bit is not None else enc}
            else:
                table = {p.address + i: w for i, w in enumerate(enc)}
            assert decode_point(p, table) == pytest.approx(value), (pr.name, p.name)


def test_codec_refuses_values_off_the_scale():
    vol = load_profiles()["water-meter"].point("volume")
    with pytest.raises(DecodeError, match="multiple of the scale"):
        encode_point(vol, 1.0005)
    with pytest.raises(DecodeError, match="was not read"):
        decode_point(vol, {0: 1})
