"""The hub's API fuzzed from its own OpenAPI (schemathesis), SQLite and PostgreSQL.

Two sites with everything the API shows (tests/hub/two_sites.py) and a real token for
every role. Each operation gets requests generated from its schema (valid ones, and
invalid ones), and valid ones naming the real objects of either site in the path (and the
site in the query); each request is sent as every role. No answer may be a 5xx, and no
answer to a user of the first site may carry anything of the second (its markers) that
the request did not name itself; a request naming an object of the second site in its
path is refused unless the route is public by design.

Bounded (a few examples per operation, no shrinking) and deterministic (derandomized);
the counts go to pytest's terminal summary.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.hub.two_sites import Hub, SiteData, two_sites

EXAMPLES = 6  # per operation, generation mode and set of known ids
PUBLIC = {  # routes that answer anyone who holds the id, by design
    "GET /api/v1/parking/{lot_id}/quote",
    "POST /api/v1/parking/{lot_id}/pay",
    "GET /api/v1/payments/{order_id}",
    "POST /api/v1/payments/notify/{channel}",
}
# who the fuzz speaks as: every role, the staff and the owner of the first site
ROLES = ("hq", "mgr-sunny", "eng-sunny", "fin-sunny", "owner-sunny")


@dataclass
class Tally:
    operations: int = 0
    examples: int = 0
    requests: int = 0
    seconds: float = 0.0
    failures: dict[tuple[str, str, int], str] = field(default_factory=dict)  # first of each


class Summary:
    """A plugin registered by the test: the counts in pytest's terminal summary."""

    def __init__(self) -> None:
        self.tallies: dict[str, Tally] = {}

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for db, t in self.tallies.items():
            terminalreporter.write_line(
                f"API fuzz ({db}): {t.operations} operations, {t.examples} examples, "
                f"{t.requests} requests in {t.seconds:.1f} s"
            )


def _summary(config: pytest.Config) -> Summary:
    plugin = config.pluginmanager.get_plugin("wuye-api-fuzz")
    if plugin is None:
        plugin = Summary()
        config.pluginmanager.register(plugin, "wuye-api-fuzz")
    assert isinstance(plugin, Summary)
    return plugin


def _path_values(path: str, ids: dict[str, Any]) -> dict[str, Any]:
    """The known objects for the path's parameters (``order_id`` is a work order's or a
    payment's, by the route)."""
    out: dict[str, Any] = {}
    for name in ("site", "gateway", "device", "alarm_id", "command_id", "name", "lot_id"):
        if "{" + name + "}" in path:
            out[name] = ids[name]
    if "{order_id}" in path:
        out["order_id"] = ids["pay_id"] if path.startswith("/api/v1/payments") else ids["wo_id"]
    if "{pass_id}" in path:
        out["pass_id"] = ids["pass_id"]
    if "{sub_id}" in path:
        out["sub_id"] = ids["sub_id"]
    if "{username}" in path:
        out["username"] = ids["username"]
    return out


def _send(client: TestClient, case: Any, auth: dict[str, str]) -> Any:
    kw = case.as_transport_kwargs(base_url="http://testserver")
    headers = {**kw.get("headers", {}), **auth}
    body: dict[str, Any] = {}
    if "json" in kw:
        body["json"] = kw["json"]
    if "files" in kw:
        body["files"] = kw["files"]
        if isinstance(kw.get("data"), dict):
            body["data"] = kw["data"]
    elif "data" in kw:
        data = kw["data"]
        if isinstance(data, dict) and all(isinstance(v, str | int | float) for v in data.values()):
            body["data"] = data  # a form
        elif isinstance(data, bytes | str):
            body["content"] = data
        else:
            body["content"] = json.dumps(data, default=str)  # a form that is no form
    return client.request(kw["method"], kw["url"], params=kw.get("params"), headers=headers, **body)


def _explore(strategy: Any, check: Any) -> None:
    """Run ``check`` on a few cases of ``strategy``, the same ones every run."""

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        check(case)

    with contextlib.suppress(Unsatisfiable):  # nothing to make invalid: the valid ones ran
        run()


@dataclass(frozen=True)
class Variant:
    mode: GenerationMode
    path: dict[str, Any] = field(default_factory=dict)  # known objects in the path
    query: dict[str, Any] = field(default_factory=dict)
    others: bool = False  # names the other site's objects: refused unless public


def _variants(op: Any, sunny: SiteData, lotus: SiteData) -> list[Variant]:
    out = [Variant(GenerationMode.POSITIVE), Variant(GenerationMode.NEGATIVE)]
    in_query = {p.name for p in op.query}
    for data in (sunny, lotus):
        path = _path_values(op.path, data.ids)
        query = {"site": data.site} if "site" in in_query else {}
        if path or query:
            out.append(Variant(GenerationMode.POSITIVE, path, query, bool(path) and data is lotus))
    return out


@pytest.fixture
def hub(engine, db_url, tmp_path) -> Iterator[Hub]:
    with two_sites(engine, db_url, tmp_path) as h:
        yield h


def test_no_input_gives_a_5xx_or_the_other_sites_data(hub: Hub, db_url, request) -> None:
    started = time.monotonic()
    auth = {who: hub.auth(who) for who in ROLES}
    schema = schemathesis.openapi.from_dict(hub.client.app.openapi())
    tally = _summary(request.config).tallies.setdefault(db_url.split(":", 1)[0], Tally())

    def check(label: str, case: Any, others: bool) -> None:
        tally.examples += 1
        for who in ROLES:
            r = _send(hub.client, case, auth[who])
            tally.requests += 1
            sent = f"{unquote(str(r.request.url))} {case.body!r}"
            what = f"{who}: {r.status_code} {r.text[:200]!r} <- {sent[:300]}"
            if r.status_code >= 500:
                tally.failures.setdefault(("5xx", label, r.status_code), what)
            elif who != "hq":
                seen = sorted(m for m in hub.lotus.markers if m in r.text and m not in sent)
                if seen:
                    tally.failures.setdefault((f"shows {seen}", label, r.status_code), what)
                elif others and r.is_success and label not in PUBLIC:
                    tally.failures.setdefault(("acts on the other site's", label, 0), what)

    for result in schema.get_all_operations():
        op = result.ok()
        label = f"{op.method.upper()} {op.path}"
        tally.operations += 1
        for v in _variants(op, hub.sunny, hub.lotus):
            strategy = op.as_strategy(
                generation_mode=v.mode, path_parameters=v.path or None, query=v.query or None
            )
            _explore(strategy, lambda case, label=label, v=v: check(label, case, v.others))
    tally.seconds = time.monotonic() - started
    assert not tally.failures, "\n".join(
        f"{kind} {label} {code} as {what}" for (kind, label, code), what in tally.failures.items()
    )
