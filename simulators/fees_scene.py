"""The demo's fee scene, played through the hub's API as its users would: a manager sets up
a project's rooms and fee items, finance runs the bills, a cashier takes a payment at the
desk and prints its receipt, and an owner pays his bills online at the payment sandbox.

Run once per demo start; a second start finds everything done and repeats nothing (the same
Idempotency-Keys, the same receipt).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import date
from pathlib import Path
from typing import Any

SITE = "sunny-garden"
USERS = (
    ("manager-zhao", "site_manager"),
    ("finance-qian", "finance"),
    ("cashier-sun", "cashier"),
    ("owner-li", "owner"),
)
FEE = {
    "code": "PROP",
    "name": "物业费",
    "category": "property",
    "kind": "area",
    "cycle_months": 3,
    "timing": "prepaid",
    "advance_days": 15,
    "due_days": 15,
    "late_fee_per_day": "0.0005",
    "late_fee_grace_days": 15,
    "late_fee_cap": "0.1",
    "vacant_discount_pct": "50",
    "prices": [{"effective_from": "2026-01-01", "unit_fen": "250"}],
}
RUBBISH = {
    "code": "GARB",
    "name": "垃圾清运费",
    "category": "other",
    "kind": "fixed",
    "cycle_months": 1,
    "timing": "postpaid",
    "due_days": 10,
    "prices": [{"effective_from": "2026-01-01", "unit_fen": "1500"}],
}


class Api:
    def __init__(self, base: str):
        self.base = base
        self.tokens: dict[str, str] = {}

    def login(self, user: str, password: str) -> None:
        body = urllib.parse.urlencode({"username": user, "password": password}).encode()
        self.tokens[user] = self._send("POST", "/api/v1/auth/token", None, body, {}, True)[
            "access_token"
        ]

    def call(self, user: str, method: str, path: str, body: Any = None, **headers: str) -> Any:
        data = None if body is None else json.dumps(body).encode()
        return self._send(method, path, self.tokens[user], data, headers)

    def raw(self, user: str, path: str) -> bytes:
        req = urllib.request.Request(
            self.base + path, headers={"Authorization": f"Bearer {self.tokens[user]}"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return bytes(r.read())

    def _send(
        self,
        method: str,
        path: str,
        token: str | None,
        data: bytes | None,
        headers: dict[str, str],
        form: bool = False,
    ) -> Any:
        h = {"Content-Type": "application/x-www-form-urlencoded" if form else "application/json"}
        if token:
            h["Authorization"] = f"Bearer {token}"
        h.update({k.replace("_", "-"): v for k, v in headers.items()})
        req = urllib.request.Request(self.base + path, data=data, headers=h, method=method)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: {exc.code} {exc.read()[:300]!r}") from exc


def accounts(workdir: Path, hub_env: dict[str, str]) -> dict[str, str]:
    """The scene's users (a site manager, finance, a cashier, an owner), made at first run
    with ``python -m hub users add`` (the CLI an operator uses) and passwords generated into
    var/demo/fee-logins."""
    path = workdir / "fee-logins"
    logins: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    for name, role in USERS:
        if name in logins:
            continue
        password = secrets.token_urlsafe(12)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "hub",
                "users",
                "add",
                name,
                "--role",
                role,
                "--site",
                SITE,
                "--password-env",
                "WUYE_DEMO_PASSWORD",
            ],
            env={**hub_env, "WUYE_DEMO_PASSWORD": password},
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"hub users add {name}: {done.stderr[-500:]}")
        logins[name] = password
        path.write_text(json.dumps(logins))
        path.chmod(0o600)
    return logins


def wait_for_site(api: Api, admin: str, timeout: float = 60) -> None:
    """Until the hub knows the site: its gateway's birth registers it (ingest)."""
    deadline, tick = time.monotonic() + timeout, threading.Event()
    while not any(s["id"] == SITE for s in api.call(admin, "GET", "/api/v1/sites")):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the hub never heard of {SITE} (no birth from its gateway?)")
        tick.wait(0.2)


def play(
    api_url: str, sandbox_url: str, workdir: Path, hub_env: dict[str, str], admin: tuple[str, str]
) -> list[str]:
    """The scene; what a user would have seen, as lines for the demo's banner."""
    api = Api(api_url)
    api.login(*admin)
    wait_for_site(api, admin[0])
    logins = accounts(workdir, hub_env)
    for user, password in logins.items():
        api.login(user, password)
    mgr, fin, cash, owner = "manager-zhao", "finance-qian", "cashier-sun", "owner-li"
    rooms = api.call(mgr, "GET", f"/api/v1/sites/{SITE}/premises?limit=500")["items"]
    if not rooms:
        plan = {
            "buildings": 2,
            "units": 2,
            "floors": 6,
            "rooms_per_floor": 4,
            "areas": [
                {"built": "89.50", "interior": "72.30"},
                {"built": "120.35", "interior": "98.00"},
                {"built": "120.35", "interior": "98.00"},
                {"built": "89.50", "interior": "72.30"},
            ],
            "state": "occupied",
        }
        api.call(mgr, "POST", f"/api/v1/sites/{SITE}/premises/generate", plan)
        rooms = api.call(mgr, "GET", f"/api/v1/sites/{SITE}/premises?limit=500")["items"]
    ids = [r["id"] for r in rooms]
    items = {i["code"]: i for i in api.call(mgr, "GET", f"/api/v1/sites/{SITE}/fee-items")}
    for fee in (FEE, RUBBISH):
        if fee["code"] not in items:
            items[fee["code"]] = api.call(mgr, "POST", f"/api/v1/sites/{SITE}/fee-items", fee)
        api.call(
            mgr,
            "POST",
            f"/api/v1/sites/{SITE}/fee-items/{items[fee['code']]['id']}/bindings",
            {"premises": ids, "start": "2026-01-01"},
        )
    home = ids[0]
    if not api.call(owner, "GET", "/api/v1/me/premises"):
        api.call(
            mgr,
            "POST",
            f"/api/v1/premises/{home}/occupancies",
            {
                "person": {"name": "李四", "phone": "13800138000", "username": owner},
                "role": "owner",
                "start": "2025-06-01",
            },
        )
    month = f"{date.today():%Y-%m}"
    run = api.call(fin, "POST", f"/api/v1/sites/{SITE}/bill-runs?wait=true", {"month": month})
    desk_room = ids[1]
    statement = api.call(cash, "GET", f"/api/v1/premises/{desk_room}/statement")
    if statement["outstanding_fen"] > 0 or not statement["payments"]:
        paid = api.call(
            cash,
            "POST",
            f"/api/v1/sites/{SITE}/payments",
            {
                "premises_id": desk_room,
                "method": "cash",
                "amount_fen": statement["outstanding_fen"] or 10000,
                "payer_name": "王五",
                "to_prepaid": "",
            },
            Idempotency_Key=f"demo-desk-{desk_room}-{statement['outstanding_fen']}",
        )
    else:  # paid at an earlier start of the demo
        paid = statement["payments"][0]
    receipt = workdir / f"receipt-{paid['receipt_no']}.pdf"
    receipt.write_bytes(api.raw(cash, f"/api/v1/payments/{paid['id']}/receipt.pdf"))
    mine = api.call(owner, "GET", "/api/v1/me/statements")[0]
    open_bills = [b["id"] for b in mine["bills"] if b["open_fen"] > 0][:2]
    online = "nothing owed"
    if open_bills:
        order = api.call(
            owner,
            "POST",
            "/api/v1/me/bills/pay",
            {"premises_id": home, "bill_ids": open_bills, "channel": "sandbox"},
            Idempotency_Key=f"demo-online-{'-'.join(map(str, open_bills))}",
        )
        req = urllib.request.Request(
            f"{sandbox_url}/orders/{order['order_id']}/pay",
            data=json.dumps({"payer": owner}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            urllib.request.urlopen(req, timeout=30).close()
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # 409: paid at an earlier start of the demo
                raise
        online = f"order {order['order_id'][:8]}… {order['amount_fen'] / 100:.2f} 元 at the sandbox"
    return [
        f"fees        {len(ids)} rooms of {SITE}; bill run {run['id']} for {month}:"
        f" {run['lines']} new lines, {run['total_fen'] / 100:.2f} 元",
        f"            desk: receipt {paid['receipt_no']} {paid['amount_fen'] / 100:.2f} 元 by"
        f" {cash} ({receipt}); online: {owner} paid {online}",
        "            logins in " + str(workdir / "fee-logins"),
    ]
