"""``python -m edge``: run the agent, or check a site config."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from deploy import logs
from edge.agent import Agent
from edge.config import load_site
from protocols.errors import ConfigError

app = typer.Typer(add_completion=False, help="wuye edge agent")
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="site config (YAML)")]


@app.command()
def run(
    config: ConfigOpt,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
    plain_logs: Annotated[bool, typer.Option(help="human-readable logs instead of JSON")] = False,
) -> None:
    """Poll the site's devices and publish to the broker until SIGTERM or Ctrl-C."""
    logs.setup(log_level, json=not plain_logs)
    try:
        site = load_site(config)
    except ConfigError as exc:
        typer.echo(f"config error: {exc}", err=True)
        raise typer.Exit(2) from exc
    asyncio.run(_run(site))


async def _run(site: object) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Agent(site):  # type: ignore[arg-type]
        print("READY", flush=True)
        await stop.wait()


@app.command()
def check(config: ConfigOpt) -> None:
    """Load the config and profiles, print the read plan, exit 2 on any problem."""
    try:
        site = load_site(config)
    except ConfigError as exc:
        typer.echo(f"config error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for d in site.cfg.devices:
        reads = site.reads_of(d)
        plan = ", ".join(f"{r.table}@{r.address}x{r.count}" for r in reads)
        typer.echo(f"{d.id}: {d.profile} unit {d.unit} on {d.bus}, {len(reads)} reads: {plan}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        app()
    sys.exit(0)
