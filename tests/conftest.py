from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deploy.mosquitto import Mosquitto  # noqa: E402


@pytest.fixture
def broker(tmp_path: Path):
    b = Mosquitto(tmp_path).start()
    yield b
    b.stop()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # tests only ever talk to peers on this machine
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """What the fuzz tests fed each decoder (CI reads the normal output, without -s)."""
    from tests.support.fuzz import TALLY

    if not TALLY:
        return
    seconds = sum(
        r.duration
        for r in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
        if "test_fuzz_" in r.nodeid and r.when == "call"
    )
    terminalreporter.section("fuzz: examples and inputs per decoder")
    for line in TALLY.lines():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"fuzz tests took {seconds:.1f} s")
