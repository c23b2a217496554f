"""Baseline harness: ThingsBoard IoT Gateway's Modbus connector, measured like our edge agent.

The benchmark figure is CPU seconds per 10,000 values polled and published. This module builds
the baseline side: a private venv with ``thingsboard-gateway`` 3.8.5, a gateway config that
polls given Modbus TCP devices and publishes to a given MQTT broker, and a run that answers the
gateway's startup RPC, counts what it publishes, and measures its process tree with psutil.

Smoke run (Mosquitto + a pymodbus server + 10 devices x 10 values at 1 Hz, 20 s per mode)::

    cd /work/main && .venv/bin/python -m bench.tbgw.harness smoke

Needs ``mosquitto`` on PATH (Debian package ``mosquitto``) and network access to PyPI the first
time (for the venv). The gateway's update check (an HTTP POST to its vendor) is disabled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO / ".bench" / "tbgw-venv"
DEFAULT_WORKDIR = REPO / ".bench" / "tbgw-run"
TBGW_VERSION = "3.8.5"
PYMODBUS_VERSION = "3.9.2"  # the connector force-reinstalls pymodbus unless it is exactly this
REQUIREMENTS = (
    f"pymodbus=={PYMODBUS_VERSION}",
    "pyserial",
    "pyserial-asyncio",
    f"thingsboard-gateway=={TBGW_VERSION}",
)

Table = Literal["holding", "input"]
Mode = Literal["default", "ranges"]
# (key, table, address, type, count): count is the number of 16-bit registers of the value.
Register = tuple[str, Table, int, str, int]
# (device name, host, port, unit id, registers)
Device = tuple[str, str, int, int, Sequence[Register]]

FUNCTION_CODE: dict[str, int] = {"holding": 3, "input": 4}
MAX_REGISTERS_PER_REQUEST = 125  # Modbus limit for function codes 3 and 4
SESSION_LIMITS = {
    "rateLimits": {},
    "gatewayRateLimits": {},
    "maxInflightMessages": 100,
    "maxPayloadSize": 65536,
}
RPC_REQUEST = "v1/devices/me/rpc/request/"
RPC_RESPONSE = "v1/devices/me/rpc/response/"
TELEMETRY = "v1/gateway/telemetry"

# Start the gateway exactly like `python -m thingsboard_gateway.tb_gateway`, minus the update
# check (TBUpdater POSTs to the vendor's update service at start and hourly).
_LAUNCHER = (
    "from thingsboard_gateway.tb_utility import tb_updater\n"
    "tb_updater.TBUpdater.check_for_new_version = lambda self: None\n"
    "from thingsboard_gateway.tb_gateway import main\n"
    "main()\n"
)


# --------------------------------------------------------------------------- venv


def venv_python(venv_dir: Path = DEFAULT_VENV) -> Path:
    """Path of the venv's interpreter (it may not exist yet)."""
    return Path(venv_dir) / "bin" / "python"


_CHECK_VERSIONS = (
    "import importlib.metadata as m, sys\n"
    f"ok = m.version('thingsboard-gateway') == {TBGW_VERSION!r} "
    f"and m.version('pymodbus') == {PYMODBUS_VERSION!r}\n"
    "import serial, serial_asyncio\n"
    "sys.exit(0 if ok else 1)\n"
)
# Importing the connector is what would trigger its pip self-install ("Modbus library not found -
# installing..."); the check fails if it prints that or if pymodbus changed afterwards.
_CHECK_IMPORT = (
    "import thingsboard_gateway.connectors.modbus.modbus_connector\n"
    "import thingsboard_gateway.gateway.tb_gateway_service\n"
    "import importlib.metadata as m\n"
    "print('pymodbus', m.version('pymodbus'))\n"
)


def ensure_venv(venv_dir: Path = DEFAULT_VENV, python: str = "python3") -> Path:
    """Create (idempotently) the gateway's own venv and return its interpreter.

    Installs ``REQUIREMENTS`` up front with pip unless the venv already has them at the pinned
    versions. Always verifies that the Modbus connector imports without installing anything
    (raises RuntimeError otherwise).
    """
    venv_dir = Path(venv_dir)
    py = venv_python(venv_dir)
    ready = (
        py.exists()
        and subprocess.run([str(py), "-c", _CHECK_VERSIONS], capture_output=True).returncode == 0
    )
    if not ready:
        if not py.exists():
            venv_dir.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([python, "-m", "venv", str(venv_dir)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True)
    out = subprocess.run(
        [str(py), "-c", _CHECK_IMPORT], capture_output=True, text=True, cwd=tempfile.gettempdir()
    )
    text = out.stdout + out.stderr
    if (
        out.returncode != 0
        or "installing" in text.lower()
        or f"pymodbus {PYMODBUS_VERSION}" not in out.stdout
    ):
        raise RuntimeError(f"thingsboard-gateway venv at {venv_dir} is not usable:\n{text}")
    return py


def bundled_config_dir(venv_dir: Path = DEFAULT_VENV) -> Path:
    """The ``thingsboard_gateway/config/`` directory shipped inside the venv."""
    out = subprocess.run(
        [
            str(venv_python(venv_dir)),
            "-c",
            "import thingsboard_gateway, os; print(os.path.dirname(thingsboard_gateway.__file__))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tempfile.gettempdir(),
    )
    return Path(out.stdout.strip()) / "config"


# --------------------------------------------------------------------------- config


def modbus_datapoints(registers: Sequence[Register], mode: Mode) -> list[dict[str, Any]]:
    """The connector's ``timeseries`` entries for one device.

    'default': one entry, hence one Modbus request, per value, keyed by the value's name.
    'ranges': one wide-range entry (``"address": "START-END"``) per run of values that are
    contiguous, in the same table and of the same type and size; the connector reads a range
    with one request per 125 registers and names each value ``<table>_<start>_<address>``
    where start is the range's first register (its key template must contain ``${address}``;
    a range cannot carry per-value names or mixed types). The tag must differ between ranges:
    the connector files responses by tag, so two ranges of one table with the same tag get
    each other's registers.
    """
    if mode == "default":
        return [
            {
                "tag": key,
                "type": typ,
                "functionCode": FUNCTION_CODE[table],
                "objectsCount": count,
                "address": address,
            }
            for key, table, address, typ, count in registers
        ]
    if mode != "ranges":
        raise ValueError(f"unknown mode {mode!r}")
    runs: list[list[Register]] = []
    for reg in sorted(registers, key=lambda r: (r[1], r[2])):
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and (last[1], last[3], last[4]) == (reg[1], reg[3], reg[4])
            and last[2] + last[4] == reg[2]
        ):
            runs[-1].append(reg)
        else:
            runs.append([reg])
    points = []
    for run in runs:
        _, table, start, typ, count = run[0]
        end = run[-1][2] + count - 1
        points.append(
            {
                "tag": f"{table}_{start}_${{address}}",
                "type": typ,
                "functionCode": FUNCTION_CODE[table],
                "objectsCount": count,
                "address": f"{start}-{end}",
                "maxRegistersPerRequest": MAX_REGISTERS_PER_REQUEST,
            }
        )
    return points


def write_config(
    config_dir: Path,
    broker_host: str,
    broker_port: int,
    devices: Sequence[Device],
    mode: Mode,
    *,
    poll_period_ms: int = 1000,
    venv_dir: Path = DEFAULT_VENV,
) -> Path:
    """Write a fresh gateway config directory and return it.

    Starts from a copy of the bundled ``thingsboard_gateway/config/`` (replacing ``config_dir``
    if it holds an earlier gateway config), empties its persisted device list, and sets: plain
    MQTT to broker_host:broker_port with an access token (an anonymous Mosquitto accepts it as
    a user name), remoteConfiguration,
    remoteShell, statistics and grpc off, memory storage, and a single Modbus connector
    (``modbus.json``) polling ``devices`` every poll_period_ms with the request pattern of
    ``mode`` (see modbus_datapoints). Everything else keeps the shipped defaults.
    """
    config_dir = Path(config_dir)
    if config_dir.exists():
        if any(config_dir.iterdir()) and not (config_dir / "tb_gateway.json").exists():
            raise FileExistsError(f"{config_dir} exists and is not a gateway config directory")
        shutil.rmtree(config_dir)
    shutil.copytree(bundled_config_dir(venv_dir), config_dir)

    main_path = config_dir / "tb_gateway.json"
    main = json.loads(main_path.read_text())
    tb = main["thingsboard"]
    tb.update(
        host=broker_host,
        port=broker_port,
        remoteConfiguration=False,
        remoteShell=False,
        security={"type": "accessToken", "accessToken": "tbgw-bench"},
    )
    tb["statistics"]["enable"] = False
    main["storage"] = {"type": "memory", "read_records_count": 100, "max_records_count": 100000}
    main["grpc"]["enabled"] = False
    main["connectors"] = [{"type": "modbus", "name": "Modbus", "configuration": "modbus.json"}]
    main_path.write_text(json.dumps(main, indent=2))
    # The wheel ships a stale "Demo Device" bound to a connector named "Modbus"; start empty.
    (config_dir / "connected_devices.json").write_text("{}")

    slaves = [
        {
            "host": host,
            "port": port,
            "type": "tcp",
            "method": "socket",
            "unitId": unit_id,
            "deviceName": name,
            "deviceType": "default",
            "timeout": 35,
            "byteOrder": "BIG",
            "wordOrder": "BIG",
            "retries": 3,
            "retryOnEmpty": True,
            "retryOnInvalid": True,
            "pollPeriod": poll_period_ms,
            "connectAttemptTimeMs": 5000,
            "connectAttemptCount": 5,
            "waitAfterFailedAttemptsMs": 300000,
            "attributes": [],
            "timeseries": modbus_datapoints(registers, mode),
            "attributeUpdates": [],
            "rpc": [],
        }
        for name, host, port, unit_id, registers in devices
    ]
    (config_dir / "modbus.json").write_text(json.dumps({"master": {"slaves": slaves}}, indent=2))
    return config_dir


# --------------------------------------------------------------------------- run


class _Broker:
    """MQTT side of a run: answers getSessionLimits and counts gateway telemetry."""

    def __init__(self, host: str, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.lock = threading.Lock()
        self.messages = 0
        self.values = 0
        self.session_limits_answered = 0
        self.first_telemetry = threading.Event()
        self.subscribed = threading.Event()
        self.sample: dict[str, Any] | None = None
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"tbgw-bench-{os.getpid()}"
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=60)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            self.close()
            raise RuntimeError(f"cannot subscribe on MQTT broker {host}:{port}")

    def _on_connect(self, client: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        client.subscribe([(RPC_REQUEST + "+", 1), (TELEMETRY, 1)])

    def _on_message(self, client: Any, _u: Any, msg: Any) -> None:
        if msg.topic == TELEMETRY:
            payload = json.loads(msg.payload)
            n = 0
            for entries in payload.values():
                for entry in entries if isinstance(entries, list) else [entries]:
                    n += len(entry["values"]) if "values" in entry else len(entry) - ("ts" in entry)
            with self.lock:
                self.messages += 1
                self.values += n
                if self.sample is None:
                    self.sample = payload
            self.first_telemetry.set()
        elif msg.topic.startswith(RPC_REQUEST):
            with contextlib.suppress(ValueError, AttributeError):
                if json.loads(msg.payload).get("method") == "getSessionLimits":
                    request_id = msg.topic[len(RPC_REQUEST) :]
                    client.publish(RPC_RESPONSE + request_id, json.dumps(SESSION_LIMITS), qos=1)
                    with self.lock:
                        self.session_limits_answered += 1

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return self.messages, self.values

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _tree(pid: int) -> list[Any]:
    import psutil

    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _tree_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the process tree, reaped children included."""
    import psutil

    user = system = 0.0
    for proc in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            t = proc.cpu_times()
            user += t.user + t.children_user
            system += t.system + t.children_system
    return user, system


def _tree_rss(pid: int) -> int:
    import psutil

    total = 0
    for proc in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total


def _stop(proc: subprocess.Popen[bytes]) -> str:
    """Stop the gateway: SIGINT (its own clean shutdown), then SIGTERM, then SIGKILL."""
    for sig, wait_s, label in (
        (signal.SIGINT, 15.0, "sigint"),
        (signal.SIGTERM, 5.0, "sigterm"),
        (signal.SIGKILL, 5.0, "sigkill"),
    ):
        if proc.poll() is not None:
            return "exited"
        proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait_s)
            return label
    return "unkillable"


@dataclass
class RunningGateway:
    """A started gateway (see :func:`gateway`): its process, its MQTT peer and its logs."""

    proc: subprocess.Popen[bytes]
    broker: _Broker
    logs: Path
    startup_s: float  # start to first telemetry
    stopped_by: str = ""  # set when the gateway has been stopped

    def cpu(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the gateway's process tree so far."""
        return _tree_cpu(self.proc.pid)

    def rss(self) -> int:
        """Resident bytes of the gateway's process tree now."""
        return _tree_rss(self.proc.pid)

    def counts(self) -> tuple[int, int]:
        """(messages, values) seen on the telemetry topic so far."""
        return self.broker.counts()

    def check_alive(self) -> None:
        """RuntimeError if the gateway has exited."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {self.proc.returncode}; see {self.logs}")


@contextlib.contextmanager
def gateway(
    config_dir: Path,
    broker_host: str,
    broker_port: int,
    *,
    venv_dir: Path = DEFAULT_VENV,
    logs_dir: Path | None = None,
    startup_timeout_s: float = 60.0,
) -> Iterator[RunningGateway]:
    """Start the gateway on ``config_dir``; yield it once its first telemetry arrived.

    Connects an MQTT client to the broker first (it answers ``getSessionLimits`` and counts
    messages and values on ``v1/gateway/telemetry``), then starts the gateway with
    TB_GW_CONFIG_DIR and TB_GW_LOGS_PATH (logs and its stdout go to logs_dir, default
    ``<config_dir>/../logs-<name>``). The gateway is stopped on leaving the block whatever
    happens (``stopped_by`` says how). Raises RuntimeError if no telemetry arrives within
    startup_timeout_s or the gateway exits first.
    """
    config_dir = Path(config_dir).resolve()
    logs = Path(logs_dir) if logs_dir else config_dir.parent / f"logs-{config_dir.name}"
    logs.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "TB_GW_CONFIG_DIR": str(config_dir),
        "TB_GW_LOGS_PATH": str(logs),
        "PYTHONUNBUFFERED": "1",
    }
    broker = _Broker(broker_host, broker_port)
    started = time.monotonic()
    try:
        with open(logs / "stdout.log", "wb") as out:
            proc = subprocess.Popen(
                [str(venv_python(venv_dir)), "-c", _LAUNCHER],
                cwd=logs,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
    except BaseException:
        broker.close()
        raise
    gw = RunningGateway(proc, broker, logs, 0.0)
    try:
        while not broker.first_telemetry.wait(0.2):
            gw.check_alive()
            if time.monotonic() - started > startup_timeout_s:
                raise RuntimeError(f"no telemetry within {startup_timeout_s} s; see {logs}")
        gw.startup_s = time.monotonic() - started
        yield gw
    finally:
        gw.stopped_by = _stop(proc)
        broker.close()


def run_gateway(
    config_dir: Path,
    broker_host: str,
    broker_port: int,
    duration_s: float,
    *,
    venv_dir: Path = DEFAULT_VENV,
    logs_dir: Path | None = None,
    warmup_s: float = 2.0,
    startup_timeout_s: float = 60.0,
) -> dict[str, Any]:
    """Run the gateway on ``config_dir`` (see :func:`gateway`) and measure it for duration_s.

    The window opens warmup_s after the first telemetry and lasts duration_s; the figures
    cover only that window. The gateway is stopped afterwards whatever happens. Raises
    RuntimeError if no telemetry arrives within startup_timeout_s or the gateway exits early.

    Returns: duration_s, cpu_s (user+system of the process tree), cpu_user_s, cpu_system_s,
    cpu_core_percent, messages, values, values_per_s, values_total (whole run, start to stop),
    cpu_s_per_10k_values, rss_mb_end,
    rss_mb_max, startup_s (start to first telemetry), session_limits_answered, stopped_by,
    returncode, sample (first telemetry payload seen).
    """
    with gateway(
        config_dir,
        broker_host,
        broker_port,
        venv_dir=venv_dir,
        logs_dir=logs_dir,
        startup_timeout_s=startup_timeout_s,
    ) as gw:
        time.sleep(warmup_s)
        user0, sys0 = gw.cpu()
        msgs0, vals0 = gw.counts()
        t0 = time.monotonic()
        rss_max = 0
        while (left := t0 + duration_s - time.monotonic()) > 0:
            rss_max = max(rss_max, gw.rss())
            time.sleep(min(0.5, left))
        user1, sys1 = gw.cpu()
        msgs1, vals1 = gw.counts()
        elapsed = time.monotonic() - t0
        rss_end = gw.rss()
        if gw.proc.poll() is not None:
            raise RuntimeError(f"gateway exited during the run; see {gw.logs}")
    values_total = gw.counts()[1]

    cpu = (user1 - user0) + (sys1 - sys0)
    values = vals1 - vals0
    return {
        "duration_s": round(elapsed, 3),
        "cpu_s": round(cpu, 3),
        "cpu_user_s": round(user1 - user0, 3),
        "cpu_system_s": round(sys1 - sys0, 3),
        "cpu_core_percent": round(100 * cpu / elapsed, 2),
        "messages": msgs1 - msgs0,
        "values": values,
        "values_per_s": round(values / elapsed, 2),
        "values_total": values_total,
        "cpu_s_per_10k_values": round(cpu / values * 10_000, 3) if values else None,
        "rss_mb_end": round(rss_end / 2**20, 1),
        "rss_mb_max": round(max(rss_max, rss_end) / 2**20, 1),
        "startup_s": round(gw.startup_s, 2),
        "session_limits_answered": gw.broker.session_limits_answered,
        "stopped_by": gw.stopped_by,
        "returncode": gw.proc.returncode,
        "sample": gw.broker.sample,
    }


# --------------------------------------------------------------------------- smoke test

# 10 values per device: 8 float readings in holding registers 0-15, 2 energy counters in input
# registers 0-3 (so 'ranges' reads 2 ranges, 'default' makes 10 requests per poll).
SMOKE_REGISTERS: list[Register] = [
    *[(f"hr_f{i}", "holding", 2 * i, "32float", 2) for i in range(8)],
    *[(f"ir_u{i}", "input", 2 * i, "32uint", 2) for i in range(2)],
]
_STRUCT = {
    "16int": ">h",
    "16uint": ">H",
    "32int": ">i",
    "32uint": ">I",
    "32float": ">f",
    "64int": ">q",
    "64uint": ">Q",
    "64float": ">d",
}


def register_words(registers: Sequence[Register], unit_id: int) -> dict[Table, list[int]]:
    """Register contents (big-endian words from address 0) that serve ``registers`` for a unit."""
    words: dict[Table, list[int]] = {"holding": [], "input": []}
    for i, (_key, table, address, typ, count) in enumerate(registers):
        fmt = _STRUCT[typ]
        value = 100.0 * unit_id + i + 0.5 if "f" in fmt else 1000 * unit_id + i
        raw = struct.pack(fmt, value)
        cells = words[table]
        cells.extend([0] * max(0, address + count - len(cells)))
        cells[address : address + count] = list(struct.unpack(f">{count}H", raw))
    return words


def serve_modbus(
    host: str,
    port: int,
    unit_ids: Sequence[int],
    registers: Sequence[Register] = SMOKE_REGISTERS,
    count_file: Path | None = None,
) -> None:
    """Serve ``registers`` for each unit id on Modbus TCP host:port until killed (pymodbus).

    If count_file is given, the number of requests served so far is written to it every 0.2 s.
    """
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    def block(cells: list[int]) -> list[SimData]:
        return [SimData(address=0, values=[*cells, 0], datatype=DataType.REGISTERS)]

    devices = []
    for unit in unit_ids:
        words = register_words(registers, unit)
        bits = [SimData(address=0, values=[False] * 16, datatype=DataType.BITS)]
        devices.append(
            SimDevice(id=unit, simdata=(bits, bits, block(words["holding"]), block(words["input"])))
        )
    requests = 0

    def trace(sending: bool, pdu: Any) -> Any:
        nonlocal requests
        requests += not sending
        return pdu

    async def report() -> None:
        while count_file is not None:
            tmp = count_file.with_suffix(".tmp")
            tmp.write_text(str(requests))
            tmp.replace(count_file)
            await asyncio.sleep(0.2)

    async def serve() -> None:
        task = asyncio.create_task(report())
        await ModbusTcpServer(devices, address=(host, port), trace_pdu=trace).serve_forever()
        task.cancel()

    asyncio.run(serve())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not listening on {port}")


@dataclass
class _Services:
    mqtt_port: int
    modbus_port: int
    count_file: Path

    def modbus_requests(self) -> int:
        """Requests the Modbus server has served so far (as of its last report, <= 0.2 s ago)."""
        return int(self.count_file.read_text() or 0) if self.count_file.exists() else 0


@contextlib.contextmanager
def smoke_services(workdir: Path, units: Sequence[int]) -> Iterator[_Services]:
    """Run a throwaway Mosquitto and the pymodbus server on free ports for the block's life."""
    mqtt_port, modbus_port = free_port(), free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n"
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        mosq = subprocess.Popen([mosquitto, "-c", str(conf)])
        procs.append(mosq)
        _wait_port(mqtt_port, mosq, "mosquitto")
        with open(workdir / "modbus-server.log", "wb") as log:
            modbus = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "modbus-server",
                    "--port",
                    str(modbus_port),
                    "--units",
                    ",".join(map(str, units)),
                    "--count-file",
                    str(workdir / "modbus-requests"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        procs.append(modbus)
        _wait_port(modbus_port, modbus, "modbus server")
        yield _Services(mqtt_port, modbus_port, workdir / "modbus-requests")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def smoke(
    devices_n: int = 10,
    duration_s: float = 20.0,
    poll_period_ms: int = 1000,
    venv_dir: Path = DEFAULT_VENV,
    workdir: Path = DEFAULT_WORKDIR,
) -> dict[str, Any]:
    """Ensure the venv, start Mosquitto + a Modbus server, run both modes; return the figures."""
    t = time.monotonic()
    ensure_venv(venv_dir)
    ensure_s = time.monotonic() - t
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    units = list(range(1, devices_n + 1))
    result: dict[str, Any] = {
        "tbgw": TBGW_VERSION,
        "ensure_venv_s": round(ensure_s, 1),
        "devices": devices_n,
        "values_per_device": len(SMOKE_REGISTERS),
        "poll_period_ms": poll_period_ms,
        "expected_values_per_s": devices_n * len(SMOKE_REGISTERS) * 1000 / poll_period_ms,
        "cpu_count": os.cpu_count(),
        "runs": {},
    }
    with smoke_services(workdir, units) as svc:
        devices: list[Device] = [
            (f"meter-{u:02d}", "127.0.0.1", svc.modbus_port, u, SMOKE_REGISTERS) for u in units
        ]
        for mode in ("default", "ranges"):
            cfg = write_config(
                workdir / f"config-{mode}",
                "127.0.0.1",
                svc.mqtt_port,
                devices,
                mode,
                poll_period_ms=poll_period_ms,
                venv_dir=venv_dir,
            )
            requests0 = svc.modbus_requests()
            run = run_gateway(cfg, "127.0.0.1", svc.mqtt_port, duration_s, venv_dir=venv_dir)
            time.sleep(0.5)  # let the server's counter catch up
            requests = svc.modbus_requests() - requests0
            run["modbus_requests_per_value"] = round(requests / max(1, run["values_total"]), 3)
            result["runs"][mode] = run
    return result


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: ``smoke`` (default) prints the smoke figures as JSON; ``modbus-server`` serves."""
    ap = argparse.ArgumentParser(prog="bench.tbgw.harness", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")
    sm = sub.add_parser("smoke", help="run both modes against local Mosquitto + Modbus server")
    sm.add_argument("--devices", type=int, default=10)
    sm.add_argument("--duration", type=float, default=20.0)
    sm.add_argument("--period-ms", type=int, default=1000)
    sm.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    sm.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    sm.add_argument("--full", action="store_true", help="keep the sample payloads")
    ms = sub.add_parser("modbus-server", help="serve the smoke registers")
    ms.add_argument("--host", default="127.0.0.1")
    ms.add_argument("--port", type=int, required=True)
    ms.add_argument("--units", default="1")
    ms.add_argument("--count-file", type=Path)
    ve = sub.add_parser("venv", help="only ensure the venv and print its python")
    ve.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    args = ap.parse_args(argv)

    if args.cmd == "modbus-server":
        serve_modbus(
            args.host,
            args.port,
            [int(u) for u in args.units.split(",")],
            count_file=args.count_file,
        )
    elif args.cmd == "venv":
        print(ensure_venv(args.venv))
    else:
        if args.cmd is None:
            args = ap.parse_args(["smoke"])
        out = smoke(args.devices, args.duration, args.period_ms, args.venv, args.workdir)
        if not args.full:
            for run in out["runs"].values():
                sample = run.pop("sample") or {}
                name = next(iter(sample), None)
                run["sample_device"] = {name: sample[name][0]} if name else None
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
