"""The engineers' page in a real browser (Debian's chromium, headless, driven by Playwright)
against a running hub: alarms arrive live (no reload, no polling), and are acknowledged.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import orjson
import paho.mqtt.client as paho
import pytest
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import Page, expect, sync_playwright

from hub.api.app import create_app
from hub.auth import Role, create_user
from hub.db import make_engine, session_scope, upgrade
from hub.settings import load_settings

PW = "correct horse battery"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BIRTH = {
    "v": 1,
    "gw": "gw-1",
    "site": "s1",
    "bdseq": 0,
    "stream": "e" * 32,
    "agent": "t",
    "devices": [
        {
            "id": "ps-1",
            "profile": "pump-station",
            "bus": "b",
            "unit": 1,
            "interval_s": 2.0,
            "points": [
                {"name": "outlet_pressure", "unit": "MPa", "kind": "measurement", "type": "uint16"}
            ],
        }
    ],
}


@contextmanager
def serving(app, port: int = 0) -> Iterator[str]:
    """The app served by uvicorn in a thread, as in production; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="hub-api")
    thread.start()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        # queued on the listening socket until uvicorn has run the app's startup: once this
        # is answered, everything the lifespan builds (ingest, the dispatcher) exists
        httpx.get(f"{base}/health", timeout=60).raise_for_status()
        yield base
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


class Gateway:
    """Publishes as gw-1 would: a birth, then pump-station samples with their own times."""

    def __init__(self, port: int) -> None:
        self.seq = 0
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="gw-1")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        ts = int(time.time() * 1000)
        self.publish("birth", {**BIRTH, "ts": ts}, retain=True)

    def publish(self, kind: str, body: dict, retain: bool = False) -> None:
        topic = f"wuye/v1/s1/gw-1/{kind}"
        self.client.publish(topic, orjson.dumps(body), qos=1, retain=retain).wait_for_publish(10)

    def pressure(self, ago_s: float, value: float) -> None:
        self.seq += 1
        ts = int(time.time() * 1000 - ago_s * 1000)
        body = {
            "v": 1,
            "gw": "gw-1",
            "seq": self.seq,
            "ts": ts,
            "dev": "ps-1",
            "values": {"outlet_pressure": value},
        }
        self.client.publish(
            "wuye/v1/s1/gw-1/data/ps-1", orjson.dumps(body), qos=1
        ).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def hub(broker, tmp_path):
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade(url)
    engine = make_engine(url)
    settings = load_settings(
        database_url=url, mqtt_url=broker.url, secret_file=tmp_path / "secret", ingest_linger_ms=10
    )
    with session_scope(engine) as s:
        create_user(s, "eng1", PW, Role.ENGINEER, ["s1"])
    with serving(create_app(settings, engine)) as base:
        yield base
    engine.dispose()


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser.new_page()
        browser.close()


def test_an_alarm_appears_live_is_acknowledged_and_clears_on_the_page(hub, broker, page):
    gw = Gateway(broker.port)
    try:
        page.goto(hub)  # "/" leads to the page
        page.fill("input[name=username]", "eng1")
        page.fill("input[name=password]", PW)
        page.click("button[type=submit]")
        expect(page.get_by_test_id("live")).to_have_text("live")
        expect(page.get_by_test_id("alarm-count")).to_have_text("0")

        # outlet pressure under 0.25 MPa for over 30 s (by the device's own clock)
        gw.pressure(40, 0.2)
        gw.pressure(0, 0.2)
        row = page.locator("#alarms tbody tr")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("ps-1")
        expect(row).to_contain_text("Outlet pressure low")
        expect(row.locator(".sev")).to_have_text("major")
        expect(page.get_by_test_id("devices")).to_contain_text("ps-1")

        row.get_by_role("button", name="acknowledge").click()
        expect(row).to_contain_text("acknowledged by eng1")

        gw.pressure(-1, 0.45)  # back to normal
        expect(row).to_have_count(0)
        expect(page.get_by_test_id("cleared")).to_contain_text("ps-1")
        expect(page.get_by_test_id("alarm-count")).to_have_text("0")
    finally:
        gw.close()


def test_a_wrong_password_is_said_and_nothing_is_shown(hub, page):
    page.goto(hub + "/ui/")
    page.fill("input[name=username]", "eng1")
    page.fill("input[name=password]", "not it")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("wrong user or password")
    expect(page.locator("#board")).to_be_hidden()
