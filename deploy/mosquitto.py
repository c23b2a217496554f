"""Run a local Mosquitto with its own generated config on a free port.

Used by `make demo`, the tests and the benchmarks: a real broker, never a stand-in.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class BrokerLimits:
    """The Mosquitto settings that decide when QoS 1 messages are dropped or lost.

    Sized to hold ``outage_h`` hours of ``sites`` sites' traffic queued for a hub that is
    away: each site ``msgs_per_s`` messages of about ``msg_bytes``. Past the queue limits
    the broker drops silently; nothing is lost then (every edge keeps its messages until
    the hub has committed them, and sends again what the hub misses), but the hub catches
    up through the edges' resends instead of the broker's queue. A killed broker loses
    what it queued since its last autosave, recovered the same way.
    """

    sites: int = 1
    msgs_per_s: float = 40.0  # 200 devices polled every 5 s
    msg_bytes: int = 400  # a data message of ~10 values, with MQTT and queue overhead
    outage_h: float = 24.0
    autosave_s: int = 60  # at most a minute of queued messages to resend after a crash

    @property
    def max_queued_messages(self) -> int:
        return int(self.sites * self.msgs_per_s * self.outage_h * 3600)

    @property
    def max_queued_bytes(self) -> int:
        return self.max_queued_messages * self.msg_bytes

    def conf(self, persistence_dir: Path) -> str:
        """Lines for mosquitto.conf."""
        return (
            f"persistence true\npersistence_location {persistence_dir}/\n"
            f"autosave_interval {self.autosave_s}\n"
            f"max_queued_messages {self.max_queued_messages}\n"
            f"max_queued_bytes {self.max_queued_bytes}\n"
            # an offline hub session is kept as long as its own session expiry says (7 d)
            "persistent_client_expiration 14d\n"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Mosquitto:
    """``start()`` returns once the broker accepts connections; ``stop()`` kills it."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        extra: str = "",
        persistent: bool = False,
        limits: BrokerLimits | None = None,
    ) -> None:
        """``limits`` configures persistence and queues as a real site's broker
        (:class:`BrokerLimits`); ``persistent`` alone keeps sessions over a restart."""
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise RuntimeError("mosquitto is not installed: run 'make test' (it installs it)")
        self.exe = exe
        self.port = port or free_port()
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            # started as root, mosquitto would switch to user 'mosquitto' and could not
            # write its persistence file in our directory
            f"user {getpass.getuser()}\n"
            + (
                limits.conf(workdir)
                if limits is not None
                else f"persistence true\npersistence_location {workdir}/\nmax_queued_messages 0\n"
                if persistent
                else "persistence false\nmax_queued_messages 0\n"
            )
            + "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n"
            "log_type information\n" + extra
        )
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10) -> Mosquitto:
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,  # stderr: unbuffered, so lines come at once
        )
        ready = threading.Event()

        def pump(proc: subprocess.Popen[str]) -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                self.log.append(line)
                if "Opening ipv4 listen socket" in line or "running" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=pump, args=(self.proc,), daemon=True).start()
        if not ready.wait(timeout) or self.proc.poll() is not None:
            raise RuntimeError("mosquitto did not start:\n" + "".join(self.log))
        # the log line comes just before accept(); confirm with a real connection
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                ready.wait(0.01)

    def stop(self, graceful: bool = False) -> None:
        """Kill the broker; ``graceful`` lets it save its persistence file first."""
        if self.proc is not None and self.proc.poll() is None:
            if graceful:
                self.proc.terminate()
            else:
                self.proc.kill()
            self.proc.wait()
        self.proc = None
