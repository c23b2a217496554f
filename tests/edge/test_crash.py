"""The agent as a user runs it (`python -m edge run`), killed with SIGKILL again and again."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys

from simulators.simulator import ModbusSimulator
from tests.edge.helpers import ROOT, sim_config, sim_site, start_agent, tcp_endpoint
from tests.support.committer import Committer
from tests.support.subscriber import Subscriber


async def test_sigkill_loses_nothing_committed_and_leaves_no_gap(broker, tmp_path):
    cfg = sim_config(tcp_endpoint("plant", "em-1p:1-3", "lift:4", "water-meter:5"))
    async with ModbusSimulator(cfg) as sim:
        path = sim_site(tmp_path, broker.url, sim, interval=0.05)
        sub = Subscriber(broker.port)
        hub = Committer(broker.port)  # the hub's watermark is what frees the outbox
        for _ in range(4):
            agent = await asyncio.to_thread(start_agent, path)
            seen = len(sub.sequenced())
            await asyncio.to_thread(sub.wait_for, lambda m, s=seen: len(sub.sequenced()) > s + 150)
            agent.send_signal(signal.SIGKILL)
            await asyncio.to_thread(agent.wait)
        agent = await asyncio.to_thread(start_agent, path)
        seen = len(sub.sequenced())
        await asyncio.to_thread(sub.wait_for, lambda m: len(sub.sequenced()) > seen + 50)
        agent.send_signal(signal.SIGTERM)  # a clean stop drains the outbox
        assert await asyncio.to_thread(agent.wait, 30) == 0
        hub.close()
    db = sqlite3.connect(tmp_path / "outbox.db")
    last = db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()[0]
    left = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    db.close()
    seqs = [m["seq"] for m in sub.sequenced()]
    assert sorted(set(seqs)) == list(range(1, last + 1)), "a committed message went missing"
    assert left == 0
    # at least once: a kill may resend what was in flight, never more than the window
    assert len(seqs) - len(set(seqs)) <= 4 * 100
    # every restart is a new birth with a new bdseq
    bdseqs = [m.json["bdseq"] for m in sub.of_kind("birth")]
    assert bdseqs == sorted(bdseqs) and len(set(bdseqs)) == 5
    sub.close()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_bad_site_config_is_refused_with_file_and_place(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(
        "site: s\ngateway: g\nbuses: [{name: b, type: tcp, host: h}]\n"
        "devices:\n  - {id: m1, bus: b, unit: 1, profile: em-2p}\n"
    )
    r = run_cli("run", "--config", str(path))
    assert r.returncode == 2
    assert f"{path}: devices[0].profile: unknown profile 'em-2p'" in r.stderr
    path.write_text("site: s\ngateway: g\nbuses: [{name: b, type: serial, port: x}]\n")
    r = run_cli("check", "--config", str(path))
    assert r.returncode == 2 and "buses[0]" in r.stderr
    r = run_cli("check", "--config", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_bad_profile_next_to_the_config_is_refused(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "heat-meter.yaml").write_text(
        "schema: wuye.profile/1\nname: heat-meter\npoints:\n"
        "  - {name: energy, table: input, address: 0, type: uint32}\n"
        "  - {name: power, table: input, address: 1, type: uint16}\n"
    )
    path = tmp_path / "site.yaml"
    path.write_text("site: s\ngateway: g\nprofile_dirs: [profiles]\n")
    r = run_cli("check", "--config", str(path))
    assert r.returncode == 2
    assert "heat-meter.yaml" in r.stderr and "overlap at input register 1" in r.stderr
