"""Report by exception, as a pure rule over a device's samples (no bus needed)."""

from edge.config import DeviceConfig, Report
from edge.poller import BusPoller, Device, Sample
from protocols.profile import load_profiles


def device(report: Report) -> Device:
    cfg = DeviceConfig(id="ps-1", bus="b", unit=1, profile="pump-station", report=report)
    return Device(cfg, load_profiles()["pump-station"], [])


def sample(**values) -> Sample:
    return Sample("ps-1", 0, dict(values), {}, critical=False)


def test_only_moves_past_the_deadband_are_reported():
    d = device(Report(deadband=0.01, max_silence=60))
    out = []
    for t, (p, running) in enumerate([(0.40, True), (0.405, True), (0.42, True), (0.42, False)]):
        s = sample(outlet_pressure=p, pump1_running=running)
        BusPoller._filter(d, s, d.cfg.report, now=float(t))
        out.append(s.values)
    assert out == [
        {"outlet_pressure": 0.40, "pump1_running": True},  # first sight: everything
        {},  # 0.005 is inside the deadband, the state did not change
        {"outlet_pressure": 0.42},  # moved 0.02 from the last *reported* value
        {"pump1_running": False},  # a state change is always reported
    ]


def test_a_quiet_point_is_repeated_after_max_silence():
    d = device(Report(deadband=1.0, max_silence=30))
    first, quiet, due = sample(tank_level=2.0), sample(tank_level=2.0), sample(tank_level=2.0)
    BusPoller._filter(d, first, d.cfg.report, now=0.0)
    BusPoller._filter(d, quiet, d.cfg.report, now=29.0)
    BusPoller._filter(d, due, d.cfg.report, now=30.0)
    assert (first.values, quiet.values, due.values) == (
        {"tank_level": 2.0},
        {},
        {"tank_level": 2.0},
    )
