"""Simulator configs: the YAML form, the quick form, and refusals naming the place."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.errors import ConfigError
from protocols.profile import Profile
from simulators import ModbusSimulator
from simulators.config import expand, load_config, parse_config, quick_config

EXAMPLE = """
schema: wuye.simulator/1
seed: 3
control: {host: 127.0.0.1, port: 0}
endpoints:
  - name: pump-room
    tcp: {host: 127.0.0.1, port: 0}
    devices:
      - {profile: pump-station, unit: 1, id: ps-1}
      - {profile: em-3p, unit: "2-3", id: "pump-meter-{unit}"}
  - name: rs485-1
    rtu: {link: /tmp/wuye-example, baud: 9600}
    devices:
      - {profile: em-1p, unit: 1-100}
      - {profile: lift, unit: 120}
"""


def test_a_config_file_expands_runs_of_units(tmp_path: Path, profiles: dict[str, Profile]) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text(EXAMPLE)
    config = load_config(path)
    specs = expand(config, profiles, str(path))
    assert len(specs) == 104
    assert [s.id for s in specs[:4]] == ["ps-1", "pump-meter-2", "pump-meter-3", "em-1p-1"]
    assert specs[-1].id == "lift-120"
    assert specs[-1].endpoint == "rs485-1"
    assert config.endpoints[1].rtu is not None and config.endpoints[1].rtu.baud == 9600


@pytest.mark.parametrize(
    ("edit", "place", "problem"),
    [
        (("unit: 120", "unit: 100"), "endpoints[1].devices[1].unit", "used twice"),
        (("profile: lift", "profile: elevator"), "endpoints[1].devices[1].profile", "unknown"),
        (('id: "pump-meter-{unit}"', "id: pm"), "endpoints[0].devices[1]", "must contain {unit}"),
        (("unit: 120", "unit: 300"), "endpoints[1].devices[1]", "1..247"),
        (("rtu: {", "tcp: {port: 1}\n    rtu: {"), "endpoints[1]", "exactly one"),
        (("name: rs485-1", "name: pump-room"), "endpoints", "appears twice"),
        (("id: ps-1", "id: Ps-1"), "endpoints[0].devices[0].id", "must match"),
    ],
)
def test_mistakes_are_refused_with_the_place(
    tmp_path: Path,
    profiles: dict[str, Profile],
    edit: tuple[str, str],
    place: str,
    problem: str,
) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text(EXAMPLE.replace(*edit))
    with pytest.raises(ConfigError) as caught:
        expand(load_config(path), profiles, str(path))
    assert caught.value.source == str(path)
    assert caught.value.place == place
    assert problem in caught.value.problem


def test_the_quick_form(profiles: dict[str, Profile]) -> None:
    config = quick_config(
        tcp="127.0.0.1:5020", devices=["em-1p:1-100", "water-meter:101-150"], control="127.0.0.1:0"
    )
    specs = expand(config, profiles, "command line")
    assert len(specs) == 150
    assert specs[100].id == "water-meter-101"
    assert config.control is not None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"devices": ["em-1p:1"]},
        {"devices": ["em-1p:1"], "tcp": "127.0.0.1:1", "rtu": "/tmp/x"},
        {"devices": ["em-1p"], "tcp": "127.0.0.1:1"},
        {"devices": ["em-1p:1"], "tcp": "localhost"},
        {"devices": ["em-1p:1"], "tcp": "127.0.0.1:1", "baud": 9600},
    ],
)
def test_the_quick_form_refuses(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        quick_config(**kwargs)  # type: ignore[arg-type]


def test_the_demo_config_loads(profiles: dict[str, Profile]) -> None:
    path = Path(__file__).resolve().parents[2] / "simulators" / "demo.yaml"
    specs = expand(load_config(path), profiles, str(path))
    assert [s.id for s in specs[:2]] == ["em-101", "em-102"]
    assert {s.id for s in specs} >= {"em-110", "wm-111", "lift-1", "ps-1", "em-pump"}


@pytest.mark.parametrize(
    ("template", "problem"), [("x-{floor}", "not ['floor']"), ("x-{unit:q}", "id template")]
)
def test_bad_id_templates(template: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "endpoints": [
                    {
                        "name": "a",
                        "tcp": {},
                        "devices": [{"profile": "lift", "unit": 1, "id": template}],
                    }
                ]
            },
            "test",
        )
    assert problem in caught.value.problem


def test_extra_profiles_come_from_a_directory_beside_the_file(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[2] / "protocols" / "profiles" / "lift.yaml"
    (tmp_path / "extra").mkdir()
    custom = shipped.read_text().replace("name: lift", "name: freight-lift")
    (tmp_path / "extra" / "freight-lift.yaml").write_text(custom)
    path = tmp_path / "sim.yaml"
    path.write_text(
        "profiles_dir: extra\n"
        "endpoints: [{name: a, tcp: {port: 0}, devices: [{profile: freight-lift, unit: 1}]}]\n"
    )
    config = load_config(path)
    assert config.profiles_dir == tmp_path / "extra"
    sim = ModbusSimulator(config)  # a profile without a model gets the generic one
    assert sim.device("freight-lift-1").value("trips") == 100
