"""A pump's pressure fault, end to end, as the engineer sees it (issue #5's acceptance).

Simulated pump station (Modbus TCP) -> edge agent -> Mosquitto -> hub (ingest, alarms, work
orders, API, page) -> Debian's chromium: the fault raises an alarm within the rule's
duration, the alarm opens a work order assigned to the plumber on duty, the engineer starts
and finishes it on the page, the pressure comes back and the alarm clears, everywhere.
"""

from __future__ import annotations

import httpx
from playwright.async_api import async_playwright, expect

from edge.agent import Agent
from edge.config import load_site
from hub.alarms.models import AlarmOverride
from hub.api.app import create_app
from hub.auth import Role, create_user
from hub.db import make_engine, session_scope, upgrade
from hub.settings import load_settings
from simulators.simulator import ModbusSimulator
from tests.edge.helpers import sim_config, site_config, tcp_endpoint
from tests.hub.test_page import CHROMIUM, serving

PW = "correct horse battery"


async def login(http: httpx.AsyncClient, user: str) -> dict[str, str]:
    r = await http.post("/api/v1/auth/token", data={"username": user, "password": PW})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def test_pressure_fault_to_alarm_to_work_order_and_back(broker, tmp_path):
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade(url)
    engine = make_engine(url)
    settings = load_settings(
        database_url=url,
        mqtt_url=broker.url,
        secret_file=tmp_path / "secret",
        ingest_linger_ms=10,
        attachments_dir=tmp_path / "attachments",
    )
    with session_scope(engine) as s:
        create_user(s, "plumber", PW, Role.ENGINEER, ["test-site"])
        create_user(s, "boss", PW, Role.SITE_MANAGER, ["test-site"])
        # this pump's low-pressure rule holds for 2 s instead of 30 (a device override)
        s.add(
            AlarmOverride(
                scope="device",
                target="gw-1/ps-1",
                profile="pump-station",
                rules={"outlet-pressure-low": {"for_s": 2}},
            )
        )
    async with ModbusSimulator(sim_config(tcp_endpoint("plant", "pump-station:1"))) as sim:
        config = site_config(
            tmp_path,
            broker.url,
            [{"name": "plant", "type": "tcp", "host": "127.0.0.1", "port": sim.tcp_port()}],
            [{"id": "ps-1", "bus": "plant", "unit": 1, "profile": "pump-station", "interval": 0.5}],
        )
        pump = sim.device("pump-station-1")
        with serving(create_app(settings, engine)) as base:
            http = httpx.AsyncClient(base_url=base)
            boss = await login(http, "boss")
            duty = {"skills": ["plumbing"], "on_duty": True}
            r = await http.put("/api/v1/engineers/plumber", json=duty, headers=boss)
            assert r.status_code == 200, r.text
            async with Agent(load_site(config)), async_playwright() as p:
                browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = await browser.new_page()
                await page.goto(base)
                await page.fill("input[name=username]", "plumber")
                await page.fill("input[name=password]", PW)
                await page.click("button[type=submit]")
                await expect(page.get_by_test_id("live")).to_have_text("live")
                await expect(page.get_by_test_id("devices")).to_contain_text("ps-1")

                pump.force("outlet_pressure", 0.15)  # below critical (0.18)
                alarm_row = page.locator("#alarms tbody tr", has_text="Outlet pressure low")
                await expect(alarm_row).to_have_count(1, timeout=15_000)
                await expect(alarm_row.locator(".sev")).to_have_text("critical")

                r = await http.get("/api/v1/alarms", params={"active": True}, headers=boss)
                alarms = r.json()
                assert [a["alarm_type"] for a in alarms] == ["outlet_pressure_low"]
                order_id = alarms[0]["work_order_id"]
                assert order_id is not None
                order = (await http.get(f"/api/v1/workorders/{order_id}", headers=boss)).json()
                assert (order["assignee"], order["state"], order["priority"]) == (
                    "plumber",
                    "accepted",
                    "urgent",
                )

                card = page.locator(f"[data-workorder='{order_id}']")
                await expect(card).to_be_visible()
                await card.get_by_role("button", name="start").click()
                in_progress = page.locator("[data-state=in_progress] [data-workorder]")
                await expect(in_progress).to_have_count(1)
                await in_progress.get_by_role("button", name="finish").click()
                finished = page.locator("[data-state=finished] [data-workorder]")
                await expect(finished).to_have_count(1)

                pump.force("outlet_pressure", None)  # the pump is fixed: normal pressure again
                await expect(alarm_row).to_have_count(0, timeout=15_000)
                await expect(page.get_by_test_id("cleared")).to_contain_text("ps-1")

                final = (await http.get(f"/api/v1/workorders/{order_id}", headers=boss)).json()
                alarm = (await http.get(f"/api/v1/alarms/{alarms[0]['id']}", headers=boss)).json()
                await browser.close()
            await http.aclose()
    kinds = [e["kind"] for e in alarm["events"]]
    assert alarm["active"] is False and kinds[0] == "raised" and kinds[-1] == "cleared"
    assert final["state"] == "finished"
    actions = [a["action"] for a in final["audit"]]
    assert actions[:1] == ["create"] and "start" in actions and "finish" in actions
    assert "alarm_cleared" in actions
    engine.dispose()
