"""Run a local VictoriaMetrics (Debian's ``victoria-metrics``): a real v2 write endpoint.

Used by the tests and the benchmarks for the InfluxDB line-protocol path. Deduplication of
identical samples is on, so a batch written twice (after a hub crash) counts once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from deploy.mosquitto import free_port


class Victoria:
    def __init__(self, datadir: Path, port: int | None = None) -> None:
        exe = shutil.which("victoria-metrics")
        if exe is None:
            raise RuntimeError(
                "victoria-metrics is not installed: run 'make test' (it installs it)"
            )
        self.exe = exe
        self.datadir = datadir
        self.port = port or free_port()
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> Victoria:
        self.proc = subprocess.Popen(
            [
                self.exe,
                f"-httpListenAddr=127.0.0.1:{self.port}",
                f"-storageDataPath={self.datadir}",
                "-dedup.minScrapeInterval=1ms",
                "-loggerLevel=INFO",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = threading.Event()
        log: list[str] = []

        def pump(proc: subprocess.Popen[str]) -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                log.append(line)
                if "started VictoriaMetrics" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=pump, args=(self.proc,), daemon=True).start()
        if not ready.wait(timeout) or self.proc.poll() is not None:
            raise RuntimeError("victoria-metrics did not start:\n" + "".join(log[-20:]))
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.proc = None

    def export(self, match: str = '{__name__=~"wuye_.*"}') -> list[dict[str, Any]]:
        """Every stored series matching ``match`` (flushed first so recent writes show)."""
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).read()
        body = urllib.parse.urlencode({"match[]": match}).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/export", body, timeout=30) as r:
            return [json.loads(line) for line in r.read().decode().splitlines() if line]
