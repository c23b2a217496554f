"""``python -m simulators demo``: a whole simulated community, end to end, on this machine.

Starts a private Mosquitto, the devices of ``simulators/demo.yaml`` (an RS-485 line on a
pseudo-terminal and a Modbus TCP pump room), a parking lot's gates on pseudo-terminals with
cars driving through them (``simulators/parking/traffic.py``), the sandbox payment provider,
the hub (API with ingest, on SQLite), and the edge agent with a site config made for them;
then prints what the agent publishes until Ctrl-C (or ``--duration``). Files go to
``var/demo/``: the configs, the outbox, the hub's database, the demo login (generated at
first run), and each process's log.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from deploy.mosquitto import BrokerLimits, Mosquitto, free_port

ROOT = Path(__file__).resolve().parent.parent
DEMO = Path(__file__).resolve().parent / "demo.yaml"
INTERVALS = {"em-1p": 5.0, "water-meter": 10.0, "lift": 1.0, "pump-station": 2.0, "em-3p": 5.0}


def _ready(proc: subprocess.Popen[str], what: str, timeout: float = 30) -> str:
    """The READY line of a child (the child prints it once it listens)."""
    assert proc.stdout is not None
    result: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("READY"):
                result.append(line[5:].strip())
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    if not result:
        proc.kill()
        raise RuntimeError(f"{what} did not start; see its log")
    return result[0]


def simulator_config(workdir: Path) -> tuple[Path, int]:
    """demo.yaml with ports that are free here; returns the file and the control port."""
    data = yaml.safe_load(DEMO.read_text())
    control = 5030  # the CLI's default, so `python -m simulators fault` finds it
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", control))
    except OSError:
        control = free_port()
    data["control"] = {"host": "127.0.0.1", "port": control}
    for ep in data["endpoints"]:
        if "tcp" in ep:
            ep["tcp"]["port"] = 0
        if "rtu" in ep:
            ep["rtu"]["link"] = str(workdir / f"{ep['name']}.pty")
    path = workdir / "simulator.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, control


LOT = "north-gate"
PASSES = ["浙AP0001", "浙AP0002", "浙AP0003"]
# a demo-sized rule: a minute free, then 2 yuan for the first 2 minutes and 1 a minute on
DEMO_RULE = {
    "kind": "standard",
    "free_minutes": 1,
    "first": {"minutes": 2, "fen": 200},
    "step": {"minutes": 1, "fen": 100},
    "cap_fen": 3000,
}


def demo_lot(database_url: str) -> None:
    """The demo's parking lot at the hub, with three monthly passes, made once."""
    from datetime import UTC, datetime, timedelta

    from hub.db import make_engine, session_scope
    from hub.parking import service as parking
    from hub.parking.models import ParkingLot, ParkingPass
    from protocols.parking.messages import Policy

    engine = make_engine(database_url)
    with session_scope(engine) as s:
        if s.get(ParkingLot, LOT) is None:
            policy = Policy(capacity=30, rule=DEMO_RULE, grace_minutes=2, monthly_fen=30000)
            parking.create_lot(s, LOT, "sunny-garden", "gw-01", policy, "North gate")
            now = datetime.now(UTC)
            for plate in PASSES:
                p = ParkingPass(
                    id=parking.new_id(),
                    lot_id=LOT,
                    plate=plate,
                    start=now - timedelta(days=1),
                    end=now + timedelta(days=365),
                )
                parking.put_pass(s, p)
    engine.dispose()


def parking_config(gates: dict[str, str], camera_port: int, booth_port: int) -> dict[str, Any]:
    return {
        "lot": LOT,
        "camera_host": "127.0.0.1",
        "camera_port": camera_port,
        "booth_port": booth_port,
        "lanes": [
            {"gate": "in1", "direction": "in", "port": gates["in1"], "camera": "cam-in1"},
            {"gate": "out1", "direction": "out", "port": gates["out1"], "camera": "cam-out1"},
        ],
    }


def site_config(
    workdir: Path,
    broker: Mosquitto,
    ready: dict[str, Any],
    metrics: int,
    parking: dict[str, Any] | None = None,
) -> Path:
    buses, devices = [], []
    for ep in ready["endpoints"]:
        if ep["transport"] == "tcp":
            buses.append(
                {"name": ep["name"], "type": "tcp", "host": ep["host"], "port": ep["port"]}
            )
        else:
            buses.append(
                {
                    "name": ep["name"],
                    "type": "rtu",
                    "port": ep["path"],
                    "baudrate": ep.get("baud") or 9600,
                }
            )
        for dev_id, unit in ep["devices"].items():
            devices.append({"id": dev_id, "bus": ep["name"], "unit": unit})
    profiles: dict[str, str] = {}
    for ep in yaml.safe_load(DEMO.read_text())["endpoints"]:
        for entry in ep["devices"]:
            profiles.update(_ids_of(entry, ready, ep["name"]))
    for d in devices:
        d["profile"] = profiles[d["id"]]
        d["interval"] = INTERVALS.get(d["profile"], 5.0)
    cfg = {
        "site": "sunny-garden",
        "gateway": "gw-01",
        "broker": {"url": broker.url},
        "outbox": {"path": str(workdir / "outbox.db")},
        "metrics_port": metrics,
        "status_interval": 10,
        "buses": buses,
        "devices": devices,
    }
    if parking is not None:
        cfg["parking"] = parking
    path = workdir / "site.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return path


def _ids_of(entry: dict[str, Any], ready: dict[str, Any], endpoint: str) -> dict[str, str]:
    """Device id -> profile for one entry of demo.yaml, matched by unit on its endpoint."""
    ep = next(e for e in ready["endpoints"] if e["name"] == endpoint)
    text = str(entry["unit"])
    first, _, last = text.partition("-")
    units = range(int(first), int(last or first) + 1)
    return {dev: entry["profile"] for dev, unit in ep["devices"].items() if unit in units}


def _fmt(topic: str, payload: bytes) -> str | None:
    """One line for a message (None: not worth a line); never fails on what it is sent."""
    try:
        return _line(topic.split("/")[4], orjson.loads(payload))
    except (orjson.JSONDecodeError, IndexError, KeyError, TypeError, ValueError, AttributeError):
        return f"{topic}: {payload[:80]!r}"


def _line(kind: str, msg: Any) -> str | None:
    if kind == "committed":  # the hub's watermark, after every commit: only gaps are news
        return (
            f"COMMITTED hub holds up to #{msg['seq']}, misses {msg['gaps']}"
            if msg["gaps"]
            else None
        )
    if kind == "data":
        vals = " ".join(f"{k}={v}" for k, v in msg["values"].items())
        errs = f"  errors={msg['errors']}" if msg.get("errors") else ""
        hist = " (replayed)" if msg.get("hist") else ""
        return f"#{msg['seq']:<6} {msg['dev']:<9} {vals}{errs}{hist}"
    if kind == "event":
        return f"#{msg['seq']:<6} EVENT {msg['event']} {msg.get('dev') or ''} {msg['detail']}"
    if kind == "birth":
        return f"BIRTH gateway {msg['gw']} (bdseq {msg['bdseq']}, {len(msg['devices'])} devices)"
    if kind == "park":
        what = msg.get("action") or ""
        money = f" paid {msg['paid_fen'] / 100:.2f}" if msg.get("paid_fen") else ""
        fee = f" fee {msg['fee_fen'] / 100:.2f}" if msg.get("fee_fen") else ""
        return (
            f"#{msg['seq']:<6} PARK {msg['kind']} {msg.get('plate') or msg.get('card') or ''} "
            f"{msg.get('gate') or ''} {what}{fee}{money} {msg.get('reason', '')}"
        ).rstrip()
    if kind == "sync":
        return f"SYNC lot {msg['lot']} version {msg['version']} ({len(msg['changes'])} changes)"
    if kind == "synced":
        return f"SYNCED lot {msg['lot']}: the edge holds version {msg['version']}"
    if kind == "status":
        m = msg["metrics"]
        return (
            f"STATUS values read {m['values_read_total']}, outbox {m['outbox_depth']}, "
            f"devices online {m['devices_online']}/"
            f"{m['devices_online'] + m['devices_offline']}"
        )
    return f"{kind.upper()} {msg}"


class Viewer:
    """Prints every message on ``wuye/#``; held back until :meth:`show` (the banner first)."""

    def __init__(self, port: int) -> None:
        self.printed = 0
        self._held: list[str] | None = []
        self._lock = threading.Lock()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id="wuye-demo-viewer")
        self._client.on_message = self._on_message
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe("wuye/#", qos=1)
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()

    def _on_message(self, c: paho.Client, u: Any, m: paho.MQTTMessage) -> None:
        line = _fmt(m.topic, bytes(m.payload))
        if line is None:
            return
        with self._lock:
            if self._held is not None:
                self._held.append(line)
                return
        print(line, flush=True)
        self.printed += 1

    def show(self) -> None:
        with self._lock:
            held, self._held = self._held or [], None
        for line in held:
            print(line, flush=True)
        self.printed += len(held)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@contextlib.contextmanager
def _process(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()


def demo_login(workdir: Path, database_url: str) -> tuple[str, str]:
    """The demo's HQ admin: made at first run with a generated password kept in var/demo."""
    from sqlmodel import col, delete, select

    from hub.auth import Role, create_user
    from hub.db import make_engine, session_scope, upgrade
    from hub.models import User

    upgrade(database_url)
    path = workdir / "demo-login"
    engine = make_engine(database_url)
    with session_scope(engine) as s:
        admin = s.exec(select(User).where(col(User.username) == "admin")).first()
        if admin is None or not path.exists():
            s.execute(delete(User).where(col(User.username) == "admin"))
            password = secrets.token_urlsafe(12)
            create_user(s, "admin", password, Role.HQ_ADMIN)
            path.write_text(password)
            path.chmod(0o600)
    engine.dispose()
    return "admin", path.read_text().strip()


def run_demo(duration: float | None = None, workdir: Path = ROOT / "var" / "demo") -> int:
    workdir.mkdir(parents=True, exist_ok=True)
    lock = (workdir / "demo.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"another demo is running in {workdir}; stop it first", file=sys.stderr)
        return 1
    for f in workdir.glob("outbox.db*"):  # a fresh outbox: the WAL files go with it
        f.unlink()
    # persistence and queues as a real site's broker has them (deploy/mosquitto.py)
    broker = Mosquitto(workdir, limits=BrokerLimits()).start()
    stop = threading.Event()
    # watching from the start: what happens while the rest starts is shown after the banner
    viewer = Viewer(broker.port)
    try:
        sim_cfg, control = simulator_config(workdir)
        with _process(
            ["-m", "simulators", "modbus", "--config", str(sim_cfg)], workdir / "simulator.log"
        ) as sim:
            ready = json.loads(_ready(sim, "the simulator"))
            metrics = free_port()
            database = f"sqlite:///{workdir / 'hub.db'}"
            user, password = demo_login(workdir, database)
            demo_lot(database)
            pay_secret = workdir / "pay-sandbox-secret"
            with contextlib.ExitStack() as stack:
                paychannel = stack.enter_context(
                    _process(
                        [
                            "-m",
                            "simulators.paychannel",
                            "--port",
                            "0",
                            "--secret-file",
                            str(pay_secret),
                        ],
                        workdir / "paychannel.log",
                    )
                )
                sandbox = json.loads(_ready(paychannel, "the payment sandbox"))["url"]
                hub_env = {
                    **os.environ,
                    "WUYE_HUB_DATABASE_URL": database,
                    "WUYE_HUB_MQTT_URL": broker.url,
                    "WUYE_HUB_SECRET_FILE": str(workdir / "hub-secret"),
                    "WUYE_HUB_API_PORT": str(free_port()),
                    "WUYE_HUB_PAY_SANDBOX_URL": sandbox,
                    "WUYE_HUB_PAY_SECRET_FILE": str(pay_secret),
                }
                # under a supervisor, as deploy/ runs it: a hub whose ingest dies exits 70
                # and is started again (its READY comes once more; the first is read here)
                hub = stack.enter_context(
                    _process(
                        ["-m", "deploy.supervise", "--", sys.executable, "-m", "hub", "serve"],
                        workdir / "hub.log",
                        hub_env,
                    )
                )
                # the hub subscribes first, so it sees the agent's stream from seq 1
                api = _ready(hub, "the hub")
                camera_port, booth_port = free_port(), free_port()
                lot = stack.enter_context(
                    _process(
                        [
                            "-m",
                            "simulators",
                            "parking",
                            "--workdir",
                            str(workdir),
                            "--camera",
                            f"http://127.0.0.1:{camera_port}/api/plates",
                            "--booth",
                            f"http://127.0.0.1:{booth_port}",
                            "--hub",
                            api,
                            "--lot",
                            LOT,
                            "--passes",
                            ",".join(PASSES),
                        ],
                        workdir / "parking.log",
                    )
                )
                gates = json.loads(_ready(lot, "the parking lot"))
                site = site_config(
                    workdir, broker, ready, metrics, parking_config(gates, camera_port, booth_port)
                )
                agent = stack.enter_context(
                    _process(
                        ["-m", "edge", "run", "--config", str(site), "--plain-logs"],
                        workdir / "agent.log",
                    )
                )
                _ready(agent, "the edge agent")
                from simulators import fees_scene

                fees = fees_scene.play(api, sandbox, workdir, hub_env, (user, password))
                n_devices = sum(len(e["devices"]) for e in ready["endpoints"])
                line = next(e["path"] for e in ready["endpoints"] if e["transport"] == "rtu")
                fault = f"WUYE_SIM_CONTROL=127.0.0.1:{control} .venv/bin/python -m simulators fault"
                print(
                    f"""
wuye demo: a simulated community on this machine
  broker      {broker.url}   (watch: mosquitto_sub -p {broker.port} -t 'wuye/#' -v)
  simulator   {n_devices} devices; RS-485 line on {line}
  edge agent  config {site}, metrics http://127.0.0.1:{metrics}/metrics
  parking     lot {LOT}: gates on {gates["in1"]} and {gates["out1"]}, booth
              http://127.0.0.1:{booth_port}/booth; cars arrive every few seconds (PARK
              lines); pay for one: curl -s '{api}/api/v1/parking/{LOT}/quote?plate=...'
  hub API     {api}/docs   login: {user} / {password}
  page        {api}/ui/    live alarms and work orders (same login); try a fault below
              e.g. curl -s {api}/api/v1/sites/sunny-garden/devices -H "Authorization: Bearer $(
                curl -s {api}/api/v1/auth/token -d username={user} -d password={password} \\
                | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
{chr(10).join(fees)}
  logs        {workdir}/agent.log, hub.log, simulator.log, parking.log (each car's story)
  try         {fault} em-103 silent
              (and later '... fault em-103 clear'); Ctrl-C ends the demo.
""",
                    flush=True,
                )
                viewer.show()
                signal.signal(signal.SIGINT, lambda *a: stop.set())
                signal.signal(signal.SIGTERM, lambda *a: stop.set())
                deadline = time.monotonic() + duration if duration else None
                while not stop.is_set():
                    if agent.poll() is not None:
                        print("the edge agent stopped; see its log", file=sys.stderr)
                        return 1
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    stop.wait(left if left is not None else 1.0)
                viewer.close()
    finally:
        broker.stop()
    print(f"demo stopped after {viewer.printed} messages", flush=True)
    return 0 if viewer.printed else 1
