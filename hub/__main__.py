"""``python -m hub``: the API server (with ingest), ingest alone, migrations, users."""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from sqlmodel import Session

from deploy import logs
from hub.auth import Role, create_user
from hub.billing import cli as billing_cli
from hub.db import make_engine, session_scope, upgrade
from hub.runtime import make_consumer
from hub.settings import load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="wuye hub")
db_app = typer.Typer(no_args_is_help=True, help="database schema")
app.add_typer(db_app, name="db")
users_app = typer.Typer(no_args_is_help=True, help="API users")
app.add_typer(users_app, name="users")
gateways_app = typer.Typer(no_args_is_help=True, help="gateway credentials")
app.add_typer(gateways_app, name="gateways")
property_app = typer.Typer(no_args_is_help=True, help="property registry: rooms and owners")
app.add_typer(property_app, name="property")
app.add_typer(billing_cli.app, name="billing")
log = logging.getLogger("hub")
# exit status when the ingest thread died: the supervisor (systemd, deploy/supervise.py, the
# demo) restarts the process; 70 is EX_SOFTWARE, an internal error
EXIT_INGEST_DIED = 70


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
    consumer.on_failure = lambda exc: stop.set()
    consumer.start()
    if not consumer.connected.wait(30):
        log.error("broker %s not reachable yet; still trying", settings.mqtt_url)
    print("READY", flush=True)
    stop.wait()
    consumer.stop()
    log.info("ingest stopped: %s", consumer.stats)
    if consumer.failed is not None:
        raise typer.Exit(EXIT_INGEST_DIED)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="default: WUYE_HUB_API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default: WUYE_HUB_API_PORT")] = None,
    ingest: Annotated[bool, typer.Option(help="also run ingest in this process")] = True,
    log_level: str = "info",
) -> None:
    """The API (OpenAPI at /docs); by default with ingest in the same process."""
    from hub.api.app import create_app

    logs.setup(log_level)
    settings = load_settings(embedded_ingest=ingest)
    upgrade(settings.database_url)
    # a connection for each of the worker threads that run blocking routes (anyio's 40),
    # so that requests queue for CPU, not for a pooled connection
    engine = make_engine(settings.database_url, pool_size=20, max_overflow=20)
    failed: list[BaseException] = []

    def on_ingest_failure(exc: BaseException) -> None:
        failed.append(exc)
        server.should_exit = True  # uvicorn stops serving and runs the shutdown

    app_ = create_app(settings, engine, on_ingest_failure)
    config = uvicorn.Config(
        app_,
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_config=None,
        access_log=False,
    )
    server = _ReadyServer(config)
    asyncio.run(server.serve())
    if failed:
        log.critical("exiting: ingest died (%r)", failed[0])
        raise typer.Exit(EXIT_INGEST_DIED)


class _ReadyServer(uvicorn.Server):
    """Prints ``READY http://host:port`` once the socket listens (the demo waits on it)."""

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(f"READY http://{self.config.host}:{self.config.port}", flush=True)


def _password(env: str | None) -> str:
    if env:
        value = os.environ.get(env)
        if not value:
            raise typer.BadParameter(f"environment variable {env} is not set")
        return value
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise typer.BadParameter("the passwords differ")
    return first


@users_app.command("add")
def users_add(
    username: str,
    role: Annotated[Role, typer.Option(help="hq_admin, site_manager, engineer, finance, owner")],
    site: Annotated[list[str] | None, typer.Option(help="a site it may see (repeatable)")] = None,
    device: Annotated[
        list[str] | None, typer.Option(help="owners: GATEWAY/DEVICE it owns (repeatable)")
    ] = None,
    password_env: Annotated[
        str | None, typer.Option(help="read the password from this variable, not a prompt")
    ] = None,
) -> None:
    """Create a user; the first one is the HQ admin: `users add admin --role hq_admin`."""
    settings = load_settings()
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with session_scope(engine) as s:
            create_user(s, username, _password(password_env), role, site or [], device or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"user {username} ({role.value}) created")


@gateways_app.command("provision")
def gateways_provision(
    site: str,
    gateway: str,
    mosquitto_dir: Annotated[Path, typer.Option(help="where passwd and acl are written")] = Path(
        "var/mosquitto"
    ),
    password_out: Annotated[
        Path | None, typer.Option(help="write the gateway's password here (mode 600)")
    ] = None,
) -> None:
    """Register a gateway and confine it to its own topics (reload Mosquitto afterwards).

    Writes passwd, acl and wuye.conf (which uses both and sets persistence and queue
    limits): `include_dir` or copy it into the broker's configuration."""
    from hub.provision import provision

    settings = load_settings()
    if not (settings.mqtt_username and settings.mqtt_password):
        raise typer.BadParameter("set WUYE_HUB_MQTT_USERNAME and WUYE_HUB_MQTT_PASSWORD first")
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with session_scope(engine) as s:
            password = provision(
                s,
                site,
                gateway,
                mosquitto_dir / "passwd",
                mosquitto_dir / "acl",
                settings.mqtt_username,
                settings.mqtt_password,
                conf=mosquitto_dir / "wuye.conf",
            )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if password_out is not None:
        password_out.write_text(password + "\n")
        password_out.chmod(0o600)
        typer.echo(f"gateway {gateway} of {site} provisioned; password in {password_out}")
    else:
        typer.echo(
            f"gateway {gateway} of {site} provisioned; its password (shown once): {password}"
        )


def _areas(text: str) -> Any:
    from hub.property.generator import Areas, area

    built, sep, interior = text.partition("/")
    if not sep:
        raise typer.BadParameter(f"an area is BUILT/INTERIOR in m² (120.50/98.30), not {text!r}")
    return Areas(area(built, "built area"), area(interior, "interior area"))


@property_app.command("generate")
def property_generate(
    site: Annotated[str, typer.Option(help="the site the rooms are in")],
    floors: Annotated[int, typer.Option(help="floors of each unit")],
    rooms: Annotated[int, typer.Option(help="rooms per floor")],
    area: Annotated[
        list[str],
        typer.Option(help="BUILT/INTERIOR m²: once for every room, or once per position"),
    ],
    buildings: Annotated[int, typer.Option(help="buildings, numbered 1..n")] = 1,
    units: Annotated[int, typer.Option(help="units in each building, numbered 1..n")] = 1,
    first_floor: int = 1,
    number: Annotated[str, typer.Option(help="room number pattern")] = "{floor:02d}{room:02d}",
    code: Annotated[str, typer.Option(help="code pattern")] = "{building}-{unit}-{number}",
    use: Annotated[str, typer.Option(help="residence, shop, office, parking")] = "residence",
    by: Annotated[str, typer.Option(help="recorded as who registered them")] = "cli",
    dry_run: Annotated[bool, typer.Option(help="show what would be created")] = False,
) -> None:
    """Register the rooms of new buildings: buildings × units × floors × rooms per floor."""
    from hub.property import generator, service
    from hub.property.models import Use

    try:
        plan = generator.RoomPlan(
            buildings=generator.numbered(buildings),
            units=generator.numbered(units, "units"),
            floors=floors,
            rooms_per_floor=rooms,
            areas=tuple(_areas(a) for a in area),
            use=Use(use),
            first_floor=first_floor,
            number=number,
            code=code,
        )
        rows = generator.plan_rooms(plan)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"{len(rows)} rooms: {rows[0].code} ... {rows[-1].code}")
    if dry_run:
        return
    settings = load_settings()
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with Session(engine, expire_on_commit=False) as s:
            service.create_rooms(s, site, rows, by)
    except service.PropertyError as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"registered at {site}")


@property_app.command("import")
def property_import(
    file: Annotated[Path, typer.Argument(help="an xlsx of rooms (房屋), maybe with owners (业主)")],
    site: Annotated[str, typer.Option(help="the site the rooms are in")],
    owners_only: Annotated[
        bool, typer.Option(help="the file holds owners of registered rooms only")
    ] = False,
    by: Annotated[str, typer.Option(help="recorded as who imported them")] = "cli",
) -> None:
    """Import rooms (and owners) from an xlsx, all or nothing; every bad cell is listed."""
    from hub.property import service

    settings = load_settings()
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with Session(engine, expire_on_commit=False) as s:
            result = service.import_book(
                s, site, file.read_bytes(), by, settings.person_key(), rooms=not owners_only
            )
    except service.ImportFailed as exc:
        for e in exc.errors:
            typer.echo(f"{e.sheet}!{e.column}{e.row} {e.header}: {e.message}", err=True)
        typer.echo(f"{len(exc.errors)} bad cells; nothing imported", err=True)
        raise typer.Exit(1) from exc
    except (service.PropertyError, service.ImportRefused) as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"imported {result.rooms} rooms, {result.occupancies} occupancies "
        f"({result.people} new people) at {site}"
    )


if __name__ == "__main__":
    app()
