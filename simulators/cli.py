"""Command line: run simulators, and poke a running one through its control endpoint.

    python -m simulators modbus --config sim.yaml
    python -m simulators modbus --tcp 127.0.0.1:5020 --device em-1p:1-100 --device lift:101
    python -m simulators modbus --rtu /tmp/wuye-rtu0 --baud 9600 --device water-meter:1-20
    python -m simulators fault em-1p-7 silent
    python -m simulators fault em-1p-7 exception 2
    python -m simulators fault pump-station-1 out_of_range outlet_pressure
    python -m simulators fault em-1p-7 clear
    python -m simulators show em-1p-7
    python -m simulators parking --workdir var/lot --camera http://127.0.0.1:8088/api/plates \\
        --booth http://127.0.0.1:8089 --hub http://127.0.0.1:8000 --lot north
    python -m simulators demo            # broker + these devices + the edge agent

Once listening, ``modbus`` prints one line ``READY {json}`` on stdout (see
:meth:`ModbusSimulator.info`) and runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from protocols.errors import WuyeError
from simulators.config import (
    DEFAULT_CONTROL,
    ControlSettings,
    SimulatorConfig,
    load_config,
    parse_address,
    quick_config,
)
from simulators.control import call
from simulators.faults import Fault
from simulators.simulator import ModbusSimulator

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n")[0])
CONTROL_ENV = "WUYE_SIM_CONTROL"

ControlOption = Annotated[
    str,
    typer.Option(envvar=CONTROL_ENV, help="HOST:PORT of the simulator's control endpoint."),
]


@app.command()
def modbus(
    config: Annotated[Path | None, typer.Option(help="Simulator config (YAML).")] = None,
    tcp: Annotated[str | None, typer.Option(help="Serve on HOST:PORT.")] = None,
    rtu: Annotated[Path | None, typer.Option(help="Serve on a pty linked at this path.")] = None,
    baud: Annotated[int | None, typer.Option(help="RTU: emulate this line's wire time.")] = None,
    device: Annotated[
        list[str] | None, typer.Option(help="PROFILE:UNITS, e.g. em-1p:1-100 (repeatable).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the device models.")] = 0,
    control: Annotated[
        str | None,
        typer.Option(
            help=f"Control endpoint HOST:PORT, 'off' for none [default {DEFAULT_CONTROL}]"
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run Modbus slaves for the devices of a config file or of the quick form."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if config is not None:
            if tcp or rtu or device or baud:
                raise typer.BadParameter("--config excludes --tcp, --rtu, --baud and --device")
            sim_config = load_config(config)
            source = str(config)
        else:
            sim_config = quick_config(devices=device or [], tcp=tcp, rtu=rtu, baud=baud, seed=seed)
            source = "command line"
        sim_config = _with_control(sim_config, control)
        asyncio.run(_serve(sim_config, source))
    except WuyeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except OSError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


def _with_control(config: SimulatorConfig, option: str | None) -> SimulatorConfig:
    """Config with the control endpoint the option asks for (the file's, if no option)."""
    if option == "off":
        return config.model_copy(update={"control": None})
    if option is None and config.control is not None:
        return config
    host, port = parse_address(option or DEFAULT_CONTROL, "--control")
    return config.model_copy(update={"control": ControlSettings(host=host, port=port)})


async def _serve(config: SimulatorConfig, source: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with ModbusSimulator(config, source=source) as sim:
        # one flushed line that harnesses wait on instead of sleeping
        print("READY " + json.dumps(sim.info(), separators=(",", ":")), flush=True)
        await stop.wait()


@app.command()
def demo(
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: Ctrl-C).")
    ] = None,
) -> None:
    """A simulated community end to end: broker, these devices, the edge agent."""
    from simulators.community import run_demo

    raise typer.Exit(run_demo(duration))


@app.command()
def parking(
    workdir: Annotated[Path, typer.Option(help="Where the gates' pty links are made.")],
    camera: Annotated[str, typer.Option(help="The agent's camera URL (.../api/plates).")],
    booth: Annotated[str, typer.Option(help="The agent's booth interface (http://host:port).")],
    hub: Annotated[str, typer.Option(help="The hub's API (http://host:port).")],
    lot: Annotated[str, typer.Option(help="The lot's id at the hub.")],
    passes: Annotated[str, typer.Option(help="Plates with a pass, comma-separated.")] = "",
    every: Annotated[float, typer.Option(help="Seconds between arrivals (mean).")] = 6.0,
    stay: Annotated[str, typer.Option(help="MIN,MAX seconds a car stays.")] = "20,180",
) -> None:
    """A lot's gates on ptys and cars through them in real time (prints READY {gates})."""
    from simulators.parking.traffic import Endpoints, serve

    lo, hi = (float(x) for x in stay.split(","))
    ends = Endpoints(camera=camera, booth=booth, hub=hub, lot=lot)
    plates = [x for x in passes.split(",") if x]
    try:
        asyncio.run(_until_signalled(serve(workdir, ends, plates, every, (lo, hi))))
    except WuyeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


async def _until_signalled(work: Any) -> None:
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


@app.command()
def fault(
    device: Annotated[str, typer.Argument(help="Device id, e.g. em-1p-7.")],
    kind: Annotated[
        str,
        typer.Argument(help="silent, exception, garbage, bad_crc, stuck, out_of_range or clear."),
    ],
    arg: Annotated[
        str | None, typer.Argument(help="exception: the code (default 4); out_of_range: a point.")
    ] = None,
    control: ControlOption = DEFAULT_CONTROL,
) -> None:
    """Switch a device of a running simulator into a fault, or clear it."""
    try:
        body = Fault.parse(kind, arg)
        payload = body.to_json() if body is not None else {"kind": "clear"}
        result = call(control, "POST", f"/devices/{device}/fault", payload)
    except WuyeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps(result))


@app.command()
def show(
    device: Annotated[str | None, typer.Argument(help="Device id; all devices if omitted.")] = None,
    control: ControlOption = DEFAULT_CONTROL,
) -> None:
    """Print a device's values, fault and counts (or every device's summary) as JSON."""
    path = f"/devices/{device}" if device else "/devices"
    try:
        result = call(control, "GET", path)
    except WuyeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps(result, indent=2 if os.isatty(1) else None))
