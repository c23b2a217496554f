"""``python -m hub``: ingest, database migrations (and, next, the API and provisioning)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated

import typer

from edge import logs
from hub.db import upgrade
from hub.runtime import make_consumer
from hub.settings import load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="wuye hub")
db_app = typer.Typer(no_args_is_help=True, help="database schema")
app.add_typer(db_app, name="db")
log = logging.getLogger("hub")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database at WUYE_HUB_DATABASE_URL to the latest schema."""
    settings = load_settings()
    upgrade(settings.database_url)
    typer.echo(f"database at {settings.database_url} is up to date")


@app.command()
def ingest(
    instance: Annotated[
        str, typer.Option(help="stable id: its MQTT session survives restarts")
    ] = "1",
    log_level: str = "info",
) -> None:
    """Consume the edges' messages (shared subscription) until SIGTERM."""
    logs.setup(log_level)
    settings = load_settings()
    upgrade(settings.database_url)
    consumer = make_consumer(settings, instance=instance)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *a: stop.set())
    consumer.start()
    if not consumer.connected.wait(30):
        log.error("broker %s not reachable yet; still trying", settings.mqtt_url)
    print("READY", flush=True)
    stop.wait()
    consumer.stop()
    log.info("ingest stopped: %s", consumer.stats)


if __name__ == "__main__":
    app()
