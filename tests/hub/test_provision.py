"""Provisioned gateways against a real Mosquitto: each confined to its own topics."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from deploy.mosquitto import Mosquitto
from hub.db import make_engine, session_scope, upgrade
from hub.provision import mosquitto_hash, provision

ROOT = Path(__file__).resolve().parents[2]


class Client:
    """A paho client that records what it receives and the broker's verdicts."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.arrived = threading.Condition()
        self.connack: list[object] = []
        self.suback: list[object] = []
        connected, subscribed = threading.Event(), threading.Event()
        c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"t-{user}-{os.urandom(3).hex()}",
            protocol=paho.MQTTv5,
        )
        c.username_pw_set(user, password)
        c.on_connect = lambda cl, u, f, rc, p: (self.connack.append(rc), connected.set())
        c.on_subscribe = lambda cl, u, mid, rcs, p: (self.suback.extend(rcs), subscribed.set())
        c.on_message = self._on_message
        self.disconnected = threading.Event()
        c.on_disconnect = lambda *a: self.disconnected.set()
        self.subscribed = subscribed
        c.connect("127.0.0.1", port)
        c.loop_start()
        assert connected.wait(10)
        self.c = c

    def _on_message(self, c, u, msg) -> None:
        with self.arrived:
            self.got.append((msg.topic, bytes(msg.payload)))
            self.arrived.notify_all()

    def subscribe(self, topic: str) -> object:
        self.subscribed.clear()
        self.c.subscribe(topic, qos=1)
        assert self.subscribed.wait(10)
        return self.suback[-1]

    def publish(self, topic: str, payload: bytes) -> object:
        info = self.c.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        return info

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_mosquitto_accepts_our_password_hashes(tmp_path):
    (tmp_path / "passwd").write_text(f"u1:{mosquitto_hash('pa55word-long')}\n")
    b = Mosquitto(tmp_path, extra=f"password_file {tmp_path / 'passwd'}\n").start()
    b.conf.write_text(b.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    b.stop()
    b.start()
    ok = Client(b.port, "u1", "pa55word-long")
    assert not ok.connack[0].is_failure
    ok.close()
    refused = Client(b.port, "u1", "wrong")
    assert refused.connack[0].is_failure  # "bad user name or password"
    refused.close()
    b.stop()


def test_a_gateway_cannot_publish_as_another_or_read_its_commands(tmp_path):
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade(url)
    engine = make_engine(url)
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    with session_scope(engine) as s:
        pw1 = provision(s, "s1", "gw-1", passwd, acl, "hub", "hub-secret-pw")
    with session_scope(engine) as s:
        pw2 = provision(s, "s2", "gw-2", passwd, acl, "hub", "hub-secret-pw")
    b = Mosquitto(tmp_path, extra=f"password_file {passwd}\nacl_file {acl}\n")
    b.conf.write_text(b.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    b.start()
    hub = Client(b.port, "hub", "hub-secret-pw")
    assert not hub.subscribe("wuye/#").is_failure
    gw1, gw2 = Client(b.port, "gw-1", pw1), Client(b.port, "gw-2", pw2)
    # Mosquitto 2.0 grants a subscription the ACL denies, but never delivers on it
    gw1.subscribe("wuye/v1/s2/gw-2/cmd")
    assert not gw2.subscribe("wuye/v1/s2/gw-2/cmd").is_failure
    hub.publish("wuye/v1/s2/gw-2/cmd", b"for gw-2")
    assert gw1.publish("wuye/v1/s1/gw-1/data/em-1", b"mine").rc == 0
    with hub.arrived:
        assert hub.arrived.wait_for(lambda: any(p == b"mine" for _, p in hub.got), 10)
    # gw-1 publishing as gw-2 is refused by the broker (which also drops gw-1's connection)
    gw1.c.publish("wuye/v1/s2/gw-2/data/em-1", b"spoof", qos=1)
    assert gw1.disconnected.wait(10)  # the broker has seen the spoof and refused it
    gw2.publish("wuye/v1/s2/gw-2/data/em-1", b"after")
    with hub.arrived:
        assert hub.arrived.wait_for(lambda: any(p == b"after" for _, p in hub.got), 10)
    with gw2.arrived:
        assert gw2.arrived.wait_for(lambda: gw2.got, 10)
    assert b"spoof" not in [p for _, p in hub.got]
    assert gw2.got == [("wuye/v1/s2/gw-2/cmd", b"for gw-2")]
    # delivered to gw-2 and to the hub at the same time; gw-1, subscribed before, got nothing
    with hub.arrived:
        assert hub.arrived.wait_for(lambda: any(p == b"for gw-2" for _, p in hub.got), 10)
    assert gw1.got == []
    for c in (hub, gw1, gw2):
        c.close()
    b.stop()
    engine.dispose()


def test_provision_cli_writes_files_and_a_private_password(tmp_path):
    env = {
        **os.environ,
        "WUYE_HUB_DATABASE_URL": f"sqlite:///{tmp_path / 'hub.db'}",
        "WUYE_HUB_MQTT_USERNAME": "hub",
        "WUYE_HUB_MQTT_PASSWORD": "hub-secret-pw",
    }
    out = tmp_path / "gw-7.pw"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub",
            "gateways",
            "provision",
            "s1",
            "gw-7",
            "--mosquitto-dir",
            str(tmp_path / "mq"),
            "--password-out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert oct(out.stat().st_mode & 0o777) == "0o600" and len(out.read_text().strip()) >= 24
    assert "topic read wuye/v1/s1/gw-7/cmd" in (tmp_path / "mq" / "acl").read_text()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub",
            "gateways",
            "provision",
            "s2",
            "gw-7",
            "--mosquitto-dir",
            str(tmp_path / "mq"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "already belongs to site s1" in r.stderr


def test_the_written_broker_config_runs_and_holds_a_days_outage(tmp_path):
    """wuye.conf: logins, ACL (the hub's watermark reaches its gateway only), persistence
    and queues sized for 24 h of the provisioned sites."""
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade(url)
    engine = make_engine(url)
    mq = tmp_path / "mq"
    with session_scope(engine) as s:
        pw1 = provision(s, "s1", "gw-1", mq / "passwd", mq / "acl", "hub", "hub-pw", mq / "w.conf")
    with session_scope(engine) as s:
        pw2 = provision(s, "s2", "gw-2", mq / "passwd", mq / "acl", "hub", "hub-pw", mq / "w.conf")
    conf = (mq / "w.conf").read_text()
    day_of_two_sites = 2 * 40 * 24 * 3600
    assert f"max_queued_messages {day_of_two_sites}\n" in conf
    assert "persistence true\n" in conf and "autosave_interval 60\n" in conf
    b = Mosquitto(tmp_path, extra=conf).start()  # later lines override the runner's own
    try:
        hub = Client(b.port, "hub", "hub-pw")
        gw1, gw2 = Client(b.port, "gw-1", pw1), Client(b.port, "gw-2", pw2)
        gw1.subscribe("wuye/v1/s1/gw-1/committed")
        gw2.subscribe("wuye/v1/+/+/committed")  # granted, but the ACL delivers only its own
        hub.publish("wuye/v1/s1/gw-1/committed", b"w1")
        hub.publish("wuye/v1/s2/gw-2/committed", b"w2")
        for c, want in ((gw1, b"w1"), (gw2, b"w2")):
            with c.arrived:
                assert c.arrived.wait_for(lambda c=c: c.got, 10)
            assert [p for _, p in c.got] == [want]
        anonymous = Client(b.port, "nobody", "x")
        assert anonymous.connack[0].is_failure
        for c in (hub, gw1, gw2, anonymous):
            c.close()
    finally:
        b.stop()
        engine.dispose()
