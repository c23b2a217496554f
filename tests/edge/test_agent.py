"""The agent end to end: real simulators (TCP and RTU on a pty) -> agent -> real Mosquitto."""

from __future__ import annotations

import asyncio
import itertools
import time
import urllib.request

import orjson

from edge.agent import Agent
from edge.config import load_site
from edge.link import LinkState
from protocols.mqtt import Kind, Topic, parse
from protocols.profile import load_profiles
from simulators.clock import ManualClock
from simulators.faults import Fault, FaultKind
from simulators.simulator import ModbusSimulator
from tests.edge.helpers import rtu_endpoint, sim_config, sim_site, site_config, tcp_endpoint
from tests.support.subscriber import Subscriber


def data_of(sub: Subscriber, device: str) -> list[dict]:
    return [m.json for m in sub.of_kind("data") if m.topic.endswith("/" + device)]


async def wait(sub: Subscriber, predicate, timeout: float = 20) -> None:
    await asyncio.to_thread(sub.wait_for, predicate, timeout)


async def test_every_value_of_every_device_arrives_scaled(broker, tmp_path):
    clock = ManualClock(1000.0)  # frozen: what the simulator serves is what we expect
    cfg = sim_config(
        tcp_endpoint("plant", "em-3p:1", "water-meter:2", "lift:3", "pump-station:4"),
        rtu_endpoint("line", "em-1p:1-3", "water-meter:9"),
    )
    async with ModbusSimulator(cfg, clock=clock) as sim:
        path = sim_site(tmp_path, broker.url, sim, interval=0.3)
        sub = Subscriber(broker.port)
        async with Agent(load_site(path)):
            await wait(sub, lambda m: all(data_of(sub, d) for d in sim.devices))
        for dev_id, dev in sim.devices.items():
            got = data_of(sub, dev_id)[0]
            assert got["values"] == dev.values(), dev_id
            assert not got.get("errors")
    births = [m.json for m in sub.of_kind("birth")]
    units = {(d["id"], p["name"]): p["unit"] for d in births[0]["devices"] for p in d["points"]}
    assert units[("em-1p-1", "energy_import")] == "kWh"
    assert units[("water-meter-2", "volume")] == "m³"
    for m in sub.messages:
        parse(m.topic, m.payload)  # everything the agent said follows the contract
    sub.close()


async def test_counters_only_rise_and_every_message_is_in_sequence(broker, tmp_path):
    cfg = sim_config(tcp_endpoint("plant", "em-3p:1-4"))
    async with ModbusSimulator(cfg) as sim:
        path = sim_site(tmp_path, broker.url, sim, interval=0.1)
        sub = Subscriber(broker.port)
        async with Agent(load_site(path)):
            await wait(sub, lambda m: all(len(data_of(sub, d)) >= 10 for d in sim.devices))
    seqs = [m["seq"] for m in sub.sequenced()]
    assert seqs == list(range(1, len(seqs) + 1))
    for d in sim.devices:
        kwh = [x["values"]["energy_import"] for x in data_of(sub, d)]
        assert kwh == sorted(kwh)
    sub.close()


async def test_merged_reads_take_the_computed_minimum_of_transactions(broker, tmp_path):
    clock = ManualClock(0.0)
    cfg = sim_config(tcp_endpoint("plant", "em-1p:1", "em-3p:2", "pump-station:3"))
    async with ModbusSimulator(cfg, clock=clock) as sim:
        path = sim_site(tmp_path, broker.url, sim, interval=0.1, bus={"max_gap": 0})
        site = load_site(path)
        sub = Subscriber(broker.port)
        async with Agent(site) as agent:
            await wait(sub, lambda m: all(len(data_of(sub, d)) >= 5 for d in sim.devices))
            polls = {d: agent.devices[d].polls for d in sim.devices}
            served = {d: sim.device(d).stats.requests for d in sim.devices}
        sub.close()
    # em-1p: holding 256-257, input 0-1, 6-7, 12-13, 70-71 with no gap bridged -> 5 reads;
    # em-3p: holding 256-259 and input 0-14 -> 2; pump station: one per table, discrete
    # 0-1 and 8-10 apart -> 5.
    minimum = {"em-1p-1": 5, "em-3p-2": 2, "pump-station-3": 5}
    for d in sim.devices:
        assert (
            len(site.reads_of(site.cfg.devices[[x.id for x in site.cfg.devices].index(d)]))
            == minimum[d]
        )
        assert served[d] == polls[d] * minimum[d], d


async def test_dead_device_on_a_shared_rtu_line_costs_the_others_little(broker, tmp_path):
    interval, timeout, retries = 0.4, 0.15, 1
    cfg = sim_config(rtu_endpoint("line", "em-1p:1-4"))
    async with ModbusSimulator(cfg) as sim:
        path = sim_site(
            tmp_path,
            broker.url,
            sim,
            interval=interval,
            bus={"max_gap": 80},
            device={"timeout": timeout, "retries": retries, "backoff_max": 4},
        )
        site = load_site(path)
        dead = sim.device("em-1p-4")
        sub = Subscriber(broker.port)
        async with Agent(site) as agent:
            await wait(sub, lambda m: all(data_of(sub, d) for d in sim.devices))
            dead.set_fault(Fault(FaultKind.SILENT))
            t0 = time.monotonic()
            requests0 = dead.stats.requests
            await wait(
                sub,
                lambda m: any(
                    x.json.get("event") == "device_offline" for x in sub.of_kind("event")
                ),
            )
            await wait(sub, lambda m: len(data_of(sub, "em-1p-1")) >= 40, timeout=40)
            elapsed = time.monotonic() - t0
            probes = dead.stats.requests - requests0
            bus = agent.pollers[0].bus
        settle = 256 * 11 / 115200 + 2 * 0.00175
        # the documented bound: (retries+1) x (timeout+settle) once, then one probe per
        # back-off period (2, 4, 4, ... s with backoff_max 4)
        first = (retries + 1) * (timeout + settle)
        for d in ("em-1p-1", "em-1p-2", "em-1p-3"):
            ts = [x["ts"] / 1000 for x in data_of(sub, d)]
            gaps = [b - a for a, b in itertools.pairwise(ts)]
            # 0.25 s of slack for a loaded CI machine's scheduling; without quarantine every
            # cycle would pay `first`, and the count of probes below would be ~elapsed/interval
            assert max(gaps) <= interval + first + 0.25, (d, max(gaps))
        periods = 1 + sum(1 for _ in range(int(elapsed))) // 4 + 2
        assert probes <= (retries + 1) + periods, (probes, elapsed)
        assert bus.failures >= 1
        sub.close()


async def test_line_noise_and_refusals_stay_with_their_device(broker, tmp_path):
    cfg = sim_config(rtu_endpoint("line", "em-1p:1-2", "water-meter:3-5"))
    async with ModbusSimulator(cfg) as sim:
        path = sim_site(
            tmp_path, broker.url, sim, interval=0.2, device={"timeout": 0.15, "retries": 0}
        )
        sim.device("em-1p-1").set_fault(Fault(FaultKind.GARBAGE))
        sim.device("em-1p-2").set_fault(Fault(FaultKind.BAD_CRC))
        sim.device("water-meter-3").set_fault(Fault(FaultKind.EXCEPTION, code=2))
        sub = Subscriber(broker.port)
        async with Agent(load_site(path)):

            def offline():
                return {
                    x.json["dev"]
                    for x in sub.of_kind("event")
                    if x.json["event"] == "device_offline"
                }

            await wait(sub, lambda m: offline() >= {"em-1p-1", "em-1p-2", "water-meter-3"})
            n4 = len(data_of(sub, "water-meter-4"))
            await wait(sub, lambda m: len(data_of(sub, "water-meter-5")) >= n4 + 5)
            # the line recovers when the noise stops
            sim.device("em-1p-1").clear_fault()
            await wait(
                sub,
                lambda m: any(
                    x.json["event"] == "device_online"
                    and x.json["dev"] == "em-1p-1"
                    and x.json["seq"] > 3
                    for x in sub.of_kind("event")
                ),
            )
    errors = [x.json for x in sub.of_kind("event") if x.json["dev"] == "water-meter-3"]
    assert "exception 2" in errors[-1]["detail"]["error"]
    assert data_of(sub, "water-meter-4") and not data_of(sub, "em-1p-2")
    sub.close()


async def test_commands_write_once_and_say_what_happened(broker, tmp_path):
    cfg = sim_config(tcp_endpoint("plant", "pump-station:1"))
    async with ModbusSimulator(cfg) as sim:
        path = site_config(
            tmp_path,
            broker.url,
            [{"name": "plant", "type": "tcp", "host": "127.0.0.1", "port": sim.tcp_port()}],
            [{"id": "ps-1", "bus": "plant", "unit": 1, "profile": "pump-station", "interval": 1}],
        )
        pump = sim.device("pump-station-1")
        sub = Subscriber(broker.port)
        now = int(time.time() * 1000)
        topic = str(Topic("test-site", "gw-1", Kind.CMD))

        def cmd(cid, point, value, expires=now + 60_000):
            return orjson.dumps(
                {
                    "v": 1,
                    "id": cid,
                    "ts": now,
                    "expires": expires,
                    "action": {"op": "write", "dev": "ps-1", "point": point, "value": value},
                }
            )

        async with Agent(load_site(path)) as agent:
            await asyncio.wait_for(agent.link.online.wait(), 10)
            sub.client.publish(topic, cmd("c1", "pressure_setpoint", 0.45), qos=1)
            sub.client.publish(topic, cmd("c2", "pump2_enable", False), qos=1)
            sub.client.publish(topic, cmd("c3", "tank_level", 1.0), qos=1)
            sub.client.publish(topic, cmd("c4", "pressure_setpoint", 0.2, expires=now - 1), qos=1)
            sub.client.publish(topic, b"{nonsense", qos=1)
            sub.client.publish(topic, orjson.dumps({"v": 1, "id": "c5"}), qos=1)
            await wait(sub, lambda m: len(sub.of_kind("ack")) >= 5)
            assert pump.value("pressure_setpoint") == 0.45
            assert pump.value("pump2_enable") is False
            writes = pump.stats.requests
            sub.client.publish(topic, cmd("c1", "pressure_setpoint", 0.45), qos=1)  # redelivery
            await wait(sub, lambda m: len(sub.of_kind("ack")) >= 6)
            assert pump.stats.requests - writes <= 4  # polls only: the write was not redone
            assert agent.bad_commands == 2
    acks = {}
    for m in sub.of_kind("ack"):
        acks.setdefault(m.json["id"], []).append(m.json)
    assert acks["c1"][0]["status"] == "done" and acks["c1"][1]["status"] == "done"
    assert acks["c1"][1]["detail"] == "already handled"
    assert acks["c2"][0]["status"] == "done"
    assert acks["c3"][0]["status"] == "rejected" and "read-only" in acks["c3"][0]["detail"]
    assert acks["c4"][0]["status"] == "expired"
    assert acks["c5"][0]["status"] == "rejected"
    sub.close()


async def test_broker_outage_loses_nothing_and_backlog_is_historical(tmp_path):
    from deploy.mosquitto import Mosquitto

    b = Mosquitto(tmp_path, persistent=True).start()  # keeps the subscriber's session
    cfg = sim_config(tcp_endpoint("plant", "water-meter:1-3"))
    async with ModbusSimulator(cfg) as sim:
        path = sim_site(tmp_path, b.url, sim, interval=0.1, metrics_port=0)
        sub = Subscriber(b.port)
        async with Agent(load_site(path)) as agent:
            await wait(sub, lambda m: len(sub.sequenced()) >= 20)
            b.stop(graceful=True)
            async with agent.link.changed:
                await agent.link.changed.wait_for(lambda: agent.link.state is not LinkState.ONLINE)
            # the agent keeps reading while the broker is away
            before = agent.metrics()["values_read_total"]
            async with agent.outbox.committed:
                await agent.outbox.committed.wait_for(lambda: agent.outbox.depth >= 60)
            assert agent.metrics()["values_read_total"] > before
            assert agent.metrics()["mqtt_online"] == 0
            n_before = len(sub.sequenced())
            b.start()
            await asyncio.wait_for(agent.link.online.wait(), 30)
            last = agent.outbox.last_seq
            await wait(sub, lambda m: any(x["seq"] >= last for x in sub.sequenced()), 30)
            # and live data after the backlog
            await wait(sub, lambda m: any(not x["hist"] for x in sub.sequenced()[n_before:]), 30)
    b.stop()
    got = sub.sequenced()
    seqs = sorted({x["seq"] for x in got})
    assert seqs == list(range(1, seqs[-1] + 1)), "a sequence gap"
    after = got[n_before:]
    hist = [x for x in after if x["hist"]]
    assert hist, "the backlog was not marked historical"
    # the backlog goes first, in order, then live data
    assert all(h["seq"] < min(x["seq"] for x in after if not x["hist"]) for h in hist)
    sub.close()


async def test_metrics_endpoint_speaks_prometheus(broker, tmp_path):
    from deploy.mosquitto import free_port

    port = free_port()
    cfg = sim_config(tcp_endpoint("plant", "lift:1"))
    async with ModbusSimulator(cfg) as sim:
        path = site_config(
            tmp_path,
            broker.url,
            [{"name": "plant", "type": "tcp", "host": "127.0.0.1", "port": sim.tcp_port()}],
            [{"id": "lift-1", "bus": "plant", "unit": 1, "profile": "lift", "interval": 0.1}],
            metrics_port=port,
        )
        sub = Subscriber(broker.port)
        async with Agent(load_site(path)):
            await wait(sub, lambda m: len(data_of(sub, "lift-1")) >= 3)
            text = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            )
    assert 'wuye_edge_device_online{bus="plant",device="lift-1"' in text
    assert "wuye_edge_values_read_total" in text and "wuye_edge_bus_utilisation" in text
    sub.close()


def test_shipped_profiles_are_all_simulated():
    assert set(load_profiles()) <= {"em-1p", "em-3p", "water-meter", "lift", "pump-station"}


async def test_full_outbox_drops_oldest_telemetry_and_says_so(tmp_path):
    from deploy.mosquitto import Mosquitto

    b = Mosquitto(tmp_path, persistent=True).start()
    sub = Subscriber(b.port)  # its session outlives the broker's restart
    b.stop(graceful=True)  # the agent starts into an outage
    cfg = sim_config(tcp_endpoint("plant", "lift:1"))
    async with ModbusSimulator(cfg) as sim:
        path = site_config(
            tmp_path,
            b.url,
            [{"name": "plant", "type": "tcp", "host": "127.0.0.1", "port": sim.tcp_port()}],
            [{"id": "lift-1", "bus": "plant", "unit": 1, "profile": "lift", "interval": 0.01}],
            status_interval=0.5,
            # 20 kB: full within a second or two
            outbox={"path": str(tmp_path / "outbox.db"), "commit_interval": 0.2, "max_mb": 0.02},
        )
        async with Agent(load_site(path)) as agent:
            async with agent.outbox.committed:
                await agent.outbox.committed.wait_for(lambda: agent.outbox.dropped_total > 0)
            assert agent.outbox.bytes <= 0.02 * 1024 * 1024
            b.start()
            await asyncio.wait_for(agent.link.online.wait(), 30)
            await wait(
                sub,
                lambda m: any(
                    x.json.get("event") == "outbox_dropped" for x in sub.of_kind("event")
                ),
            )
            last = agent.outbox.last_seq
            await wait(sub, lambda m: any(x["seq"] >= last for x in sub.sequenced()))
            await wait(sub, lambda m: bool(sub.of_kind("status")))
    b.stop()
    drops = [x.json["detail"] for x in sub.of_kind("event") if x.json["event"] == "outbox_dropped"]
    dropped = {s for d in drops for a, b in d["ranges"] for s in range(a, b + 1)}
    seqs = {x["seq"] for x in sub.sequenced()}
    # every number is either delivered or named in a drop event: no silent gap
    assert seqs | dropped >= set(range(1, max(seqs) + 1))
    assert sum(d["count"] for d in drops) == len(dropped)
    status = sub.of_kind("status")[-1].json
    assert status["devices"] == {"lift-1": "online"}
    assert status["metrics"]["outbox_dropped_total"] >= 1
    sub.close()


async def test_a_fault_bit_that_changes_is_sent_at_once_not_at_the_next_group_commit(
    broker, tmp_path
):
    cfg = sim_config(tcp_endpoint("plant", "pump-station:1"))
    async with ModbusSimulator(cfg) as sim:
        # group commits every 30 s: ordinary telemetry waits for them
        path = sim_site(tmp_path, broker.url, sim, interval=0.2, outbox={"commit_interval": 30})
        sub = Subscriber(broker.port)
        async with Agent(load_site(path)):
            await wait(sub, lambda m: bool(sub.of_kind("birth")))
            sim.device("pump-station-1").force("pump1_fault", True)
            # it arrives within 10 s: it could only arrive after 30 s with the group commit
            await wait(
                sub,
                lambda m: any(
                    d["values"].get("pump1_fault") for d in data_of(sub, "pump-station-1")
                ),
                timeout=10,
            )
    sub.close()
