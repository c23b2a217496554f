"""Alarm rule evaluation throughput with 10,000 devices: values/s through the alarm engine.

Two figures:

- **engine**: the pure engine (protocols/alarms/engine.py) alone, every shipped rule of
  each device's profile evaluated on every sample, states kept in memory as the hub keeps
  them in a batch: values/s and rule evaluations/s;
- **ingest**: the hub's Applier (hub/apply.py) applying the same kind of samples into SQLite
  with its alarm step (rule states read and written per device, alarms raised) against the
  same Applier with no rules: what alarms cost ingest, in values/s.

10,000 devices over 100 gateways, the five shipped profiles in turn, values around their
normal levels with a few outside (so some alarms raise and clear).

    .venv/bin/python -m bench.alarm_rules --runs 3
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.common import median, record
from hub.alarms.service import RuleBook
from hub.apply import Applier, Raw
from hub.db import make_engine, upgrade
from hub.telemetry import SqlTelemetry
from protocols.alarms import engine
from protocols.alarms.engine import RuleState
from protocols.alarms.loading import load_rule_sets
from protocols.profile import load_profiles

DEVICES = 10_000
GATEWAYS = 100
PROFILES = ["em-1p", "em-3p", "water-meter", "lift", "pump-station"]
NORMAL = {  # point -> (typical, spread): values near what the simulators produce
    "voltage": (220.0, 8.0),
    "voltage_a": (220.0, 8.0),
    "voltage_b": (220.0, 8.0),
    "voltage_c": (220.0, 8.0),
    "frequency": (50.0, 0.2),
    "outlet_pressure": (0.45, 0.12),
    "tank_level": (2.0, 0.6),
    "motor_current_1": (15.0, 4.0),
    "motor_current_2": (15.0, 4.0),
}


def sample(rng: random.Random, profile: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for p in profile.points:
        if p.type.value in ("bool", "bit"):
            values[p.name] = rng.random() < 0.01
        elif p.name in NORMAL:
            mu, sd = NORMAL[p.name]
            values[p.name] = round(rng.gauss(mu, sd), 3)
        elif p.name in ("fault_code", "error_code"):
            values[p.name] = 0 if rng.random() > 0.01 else rng.randint(1, 7)
        else:
            values[p.name] = round(abs(rng.gauss(10, 5)), 3)
    return values


def engine_run(seconds: float) -> dict[str, float]:
    profiles = load_profiles()
    rule_sets = load_rule_sets()
    rng = random.Random(1)
    devices = [PROFILES[i % len(PROFILES)] for i in range(DEVICES)]
    states: dict[tuple[int, str], RuleState] = {}
    values = evaluations = changes = 0
    ts = 1_795_334_400_000
    # samples made beforehand (a few rounds' worth, reused): only the engine is timed
    pool = [[sample(rng, profiles[name]) for name in devices] for _ in range(3)]
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        ts += 2000
        round_ = pool[(ts // 2000) % len(pool)]
        for d, name in enumerate(devices):
            vals = round_[d]
            values += len(vals)
            for rule in rule_sets[name].rules:
                key = (d, rule.id)
                st, ch = engine.evaluate(rule, states.get(key, RuleState()), ts, vals)
                states[key] = st
                evaluations += 1
                changes += len(ch)
            if d % 1000 == 0 and time.perf_counter() > deadline:
                break
    secs = time.perf_counter() - start
    return {
        "values_per_s": values / secs,
        "evaluations_per_s": evaluations / secs,
        "changes": changes,
    }


def births(profiles: dict[str, Any]) -> list[Raw]:
    out = []
    per = DEVICES // GATEWAYS
    for g in range(GATEWAYS):
        devs = []
        for i in range(per):
            name = PROFILES[(g * per + i) % len(PROFILES)]
            devs.append(
                {
                    "id": f"d{i:03d}",
                    "profile": name,
                    "bus": "b",
                    "unit": i + 1,
                    "interval_s": 2.0,
                    "points": [
                        {"name": p.name, "unit": p.unit, "kind": p.kind, "type": p.type.value}
                        for p in profiles[name].points
                    ],
                }
            )
        body = {
            "v": 1,
            "gw": f"gw-{g:03d}",
            "site": "s1",
            "bdseq": 0,
            "stream": f"{g:032d}",
            "ts": 1,
            "agent": "bench",
            "devices": devs,
        }
        out.append(Raw(f"wuye/v1/s1/gw-{g:03d}/birth", orjson.dumps(body)))
    return out


def ingest_run(rounds: int, with_rules: bool, workdir: Path) -> dict[str, float]:
    profiles = load_profiles()
    url = f"sqlite:///{workdir / f'alarms-{with_rules}-{time.monotonic_ns()}.db'}"
    upgrade(url)
    eng = make_engine(url)
    book = RuleBook() if with_rules else RuleBook(rule_sets={})
    applier = Applier(eng, SqlTelemetry(), 1 << 20, rulebook=book)
    applier.apply(births(profiles))
    rng = random.Random(2)
    per = DEVICES // GATEWAYS
    seq = dict.fromkeys(range(GATEWAYS), 0)
    ts = 1_795_334_400_000
    batches = []
    for _ in range(rounds):
        ts += 2000
        batch = []
        for i in range(DEVICES):
            g, d = divmod(i, per)
            seq[g] += 1
            vals = sample(rng, profiles[PROFILES[i % len(PROFILES)]])
            body = {
                "v": 1,
                "gw": f"gw-{g:03d}",
                "seq": seq[g],
                "ts": ts,
                "dev": f"d{d:03d}",
                "values": vals,
            }
            batch.append(Raw(f"wuye/v1/s1/gw-{g:03d}/data/d{d:03d}", orjson.dumps(body)))
        batches.append(batch)
    values = 0
    start = time.perf_counter()
    for batch in batches:
        for i in range(0, len(batch), 500):  # ingest's default batch size
            out = applier.apply(batch[i : i + 500])
            values += out.values
    secs = time.perf_counter() - start
    eng.dispose()
    return {"values_per_s": values / secs, "messages_per_s": rounds * DEVICES / secs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3, help="samples of every device, ingest")
    args = ap.parse_args()
    eng_runs = [engine_run(args.seconds) for _ in range(args.runs)]
    print("engine", eng_runs, flush=True)
    with tempfile.TemporaryDirectory() as d:
        with_rules = [ingest_run(args.rounds, True, Path(d)) for _ in range(args.runs)]
        print("ingest with rules", with_rules, flush=True)
        without = [ingest_run(args.rounds, False, Path(d)) for _ in range(args.runs)]
        print("ingest without rules", without, flush=True)
    med = {
        "engine_values_per_s": median([r["values_per_s"] for r in eng_runs]),
        "engine_evaluations_per_s": median([r["evaluations_per_s"] for r in eng_runs]),
        "ingest_values_per_s_with_rules": median([r["values_per_s"] for r in with_rules]),
        "ingest_values_per_s_without_rules": median([r["values_per_s"] for r in without]),
    }
    med["ingest_ratio"] = (
        med["ingest_values_per_s_with_rules"] / med["ingest_values_per_s_without_rules"]
    )
    record(
        "alarm_rules",
        "bench.alarm_rules",
        {
            "devices": DEVICES,
            "engine": eng_runs,
            "ingest_with_rules": with_rules,
            "ingest_without_rules": without,
            **{k: round(v, 3) for k, v in med.items()},
        },
    )


if __name__ == "__main__":
    main()
