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
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Mosquitto:
    """``start()`` returns once the broker accepts connections; ``stop()`` kills it."""

    def __init__(
        self, workdir: Path, port: int | None = None, extra: str = "", persistent: bool = False
    ) -> None:
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
                f"persistence true\npersistence_location {workdir}/\n"
                if persistent
                else "persistence false\n"
            )
            + "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n"
            "log_type information\nmax_queued_messages 0\n" + extra
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
