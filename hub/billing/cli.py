"""``python -m hub billing …``: bill runs and closing months from the command line."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from hub.billing.errors import BillingError
from hub.billing.models import BillRun
from hub.billing.periods import Month
from hub.billing.runs import BATCH, run_bills
from hub.db import make_engine, upgrade
from hub.settings import load_settings

app = typer.Typer(no_args_is_help=True, help="fee billing")


@app.command("run")
def run(
    site: Annotated[str, typer.Option(help="the project (site id)")],
    month: Annotated[str, typer.Option(help="the accounting month, YYYY-MM")],
    by: Annotated[str, typer.Option(help="who runs it (recorded on every line)")] = "cli",
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="premises a transaction")] = BATCH,
) -> None:
    """Bill every line due by the end of MONTH; again, or after a crash, adds nothing twice."""
    try:
        m = Month.parse(month)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    settings = load_settings()
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    tty = sys.stdout.isatty()

    def progress(r: BillRun) -> None:
        if tty:
            width = 40
            filled = width * r.premises_done // max(1, r.premises_total)
            bar = "#" * filled + "-" * (width - filled)
            end = "\n" if r.premises_done >= r.premises_total else ""
            print(
                f"\r[{bar}] {r.premises_done}/{r.premises_total} premises, {r.lines} lines",
                end=end,
                flush=True,
            )
        else:  # one line a committed batch (what a log, or a test, reads)
            print(
                f"committed {r.premises_done}/{r.premises_total} premises, {r.lines} lines",
                flush=True,
            )

    try:
        r = run_bills(engine, site, m, by, batch=batch, progress=progress)
    except BillingError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        engine.dispose()
    typer.echo(
        f"bill run {r.id} of {site} {m}: {r.lines} lines, {r.total_fen / 100:.2f} yuan,"
        f" {r.deducted_fen / 100:.2f} from prepaid balances, {len(r.problems)} problems"
    )
    for p in r.problems[:20]:
        typer.echo(f"  {p['premises']} {p['item']}: {p['error']}", err=True)
