"""Telemetry as line protocol into a real VictoriaMetrics; spilled to disk while it is down."""

from __future__ import annotations

import orjson
import pytest

from deploy.victoria import Victoria
from hub.apply import Applier, Raw
from hub.telemetry import InfluxTelemetry, line_protocol
from tests.hub.test_apply import T0, birth


def data(seq, **values):
    body = {
        "v": 1,
        "gw": "gw-1",
        "seq": seq,
        "ts": T0 + seq * 1000,
        "dev": "em-1",
        "values": values,
    }
    return Raw("wuye/v1/s1/gw-1/data/em-1", orjson.dumps(body))


def series(vm: Victoria) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for s in vm.export():
        m = s["metric"]
        assert (m["site"], m["gateway"], m["device"]) == ("s1", "gw-1", "em-1")
        out[m["__name__"]] = dict(zip(s["timestamps"], s["values"], strict=True))
    return out


@pytest.fixture
def vm(tmp_path):
    v = Victoria(tmp_path / "vm").start()
    yield v
    v.stop()


def test_values_read_back_match_what_was_sent(vm, tmp_path, engine):
    sink = InfluxTelemetry(vm.url, "", "wuye", "wuye", tmp_path / "spill")
    applier = Applier(engine, sink, 4096)
    applier.apply([birth(), *[data(i, voltage=220 + i / 10, kwh=100 + i) for i in range(1, 51)]])
    applier.apply([data(7, voltage=999.0, kwh=0)])  # a redelivery: no effect
    got = series(vm)
    assert got["wuye_voltage"] == {T0 + i * 1000: 220 + i / 10 for i in range(1, 51)}
    assert got["wuye_kwh"] == {T0 + i * 1000: float(100 + i) for i in range(1, 51)}
    sink.close()


def test_outage_spills_to_disk_and_delivers_when_back(vm, tmp_path, engine):
    sink = InfluxTelemetry(vm.url, "", "wuye", "wuye", tmp_path / "spill", retry_every=0)
    applier = Applier(engine, sink, 4096)
    applier.apply([birth(), *[data(i, voltage=float(i)) for i in range(1, 11)]])
    vm.stop()
    for i in range(11, 41):  # committed and acknowledged while the server is down
        applier.apply([data(i, voltage=float(i))])
    assert sink.pending() >= 1 and sink.spilled > 0
    assert sink.deliver_spill() == 0  # still down: nothing lost, nothing sent
    vm.start()
    applier.apply([data(41, voltage=41.0)])  # queues behind the spill, order kept
    assert sink.deliver_spill() >= 1
    assert sink.pending() == 0
    assert series(vm)["wuye_voltage"] == {T0 + i * 1000: float(i) for i in range(1, 42)}
    sink.close()


def test_line_protocol_groups_a_message_into_one_line():
    from hub.apply import Sample

    lines = line_protocol(
        [
            Sample("s1", "gw-1", "em-1", 1, 5, {"voltage": 220.5, "kwh": 12.0}),
        ]
    )
    assert lines == ["wuye,site=s1,gateway=gw-1,device=em-1 voltage=220.5,kwh=12.0 5"]


def test_history_is_read_back_from_the_time_series_server(vm, tmp_path, engine):
    from datetime import timedelta

    from sqlmodel import Session, select

    from hub.apply import ms_to_dt
    from hub.history import history
    from hub.models import Device
    from hub.settings import load_settings

    sink = InfluxTelemetry(vm.url, "", "wuye", "wuye", tmp_path / "spill")
    Applier(engine, sink, 4096).apply(
        [birth(), *[data(i, voltage=200.0 + i) for i in range(1, 21)]]
    )
    vm.export()  # flushes VictoriaMetrics' buffers so the query sees every sample
    settings = load_settings(influx_url=vm.url, secret_file=tmp_path / "s")
    with Session(engine) as s:
        dev = s.exec(select(Device)).one()
        start = ms_to_dt(T0)
        got = history(s, settings, dev, "voltage", start, start + timedelta(seconds=30), 10)
    # seq i is at T0 + i s: [0,10) holds 1..9, [10,20) holds 10..19, [20,30) holds 20
    assert [(p.count, p.min, p.max) for p in got] == [
        (9, 201.0, 209.0),
        (10, 210.0, 219.0),
        (1, 220.0, 220.0),
    ]
    sink.close()
