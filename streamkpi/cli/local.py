"""The local stack and traffic tools: `streamkpi local up|down|status`, `generate` and `demo`.

They are the `local` extra (package devstack, with moto and hypercorn): the worker and its image run
without it, so every command here first says what is missing instead of failing on an import.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

import orjson
import typer

from streamkpi.cli.common import fail, load_settings, parse_time_ms

LOCAL_EXTRA_MODULES = ("devstack", "moto", "hypercorn")

local_app = typer.Typer(help="The embedded local stack: moto (AWS stand-in) and redis-server.", no_args_is_help=True)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # an import hook may refuse the name outright
        return False


def _require_local_extra() -> None:
    missing = [module for module in LOCAL_EXTRA_MODULES if not _installed(module)]
    if missing:
        fail(
            f"missing {', '.join(missing)}: the local stack and traffic tools need the `local` extra; install it "
            "with `pip install 'streamkpi[local]'` (or run `make setup`)."
        )


@local_app.command("up")
def local_up() -> None:
    """Start moto and redis-server on 127.0.0.1, create the resources, write the env file."""
    _require_local_extra()
    from devstack import local_stack
    from devstack.errors import LocalStackError

    settings = load_settings()
    try:
        env = local_stack.up(settings)
    except LocalStackError as exc:
        fail(str(exc))
    typer.echo(f"local stack up; settings written to {settings.env_file}")
    for key, value in env.items():
        if "SECRET" not in key:
            typer.echo(f"  {key}={value}")


@local_app.command("down")
def local_down() -> None:
    """Stop exactly the processes `local up` started (by pid)."""
    _require_local_extra()
    from devstack import local_stack

    stopped = local_stack.down(load_settings())
    typer.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@local_app.command("status")
def local_status() -> None:
    """Say what runs."""
    _require_local_extra()
    from devstack import local_stack

    rows = local_stack.status(load_settings())
    for row in rows:
        state = "running" if row.alive else "stopped"
        typer.echo(f"{row.name:<8} {state:<8} pid={row.pid or '-':<8} {row.address}")
    if not any(r.alive for r in rows):
        raise typer.Exit(1)


def generate(
    rate: Annotated[float, typer.Option(help="Events per second.", min=0.1)] = 200.0,
    duration: Annotated[float, typer.Option(help="Seconds to send for.", min=0.1)] = 10.0,
    invalid_fraction: Annotated[float, typer.Option(help="Fraction of invalid events (0-1).", min=0, max=1)] = 0.02,
    seed: Annotated[int | None, typer.Option(help="Seed for a reproducible stream of events.")] = None,
    truth: Annotated[Path | None, typer.Option(help="Write expected per-type per-minute counts here.")] = None,
    late_fraction: Annotated[
        float, typer.Option(help="Fraction of valid events stamped 1-120 minutes before they are sent.", min=0, max=1)
    ] = 0.0,
    events_out: Annotated[
        Path | None,
        typer.Option(help="Write every valid event as sent, with its identity, here (NDJSON) for checkers."),
    ] = None,
    start: Annotated[str | None, typer.Option(help="Event time of the first event (ISO); default now.")] = None,
    stream: Annotated[str | None, typer.Option(help="Stream to send to; default STREAMKPI_STREAM.")] = None,
) -> None:
    """Send realistic browser/business events (with a chosen fraction of invalid ones) to the stream."""
    _require_local_extra()
    import time

    from devstack.producer import GenerateError, run_generate
    from streamkpi.app import Services

    settings = load_settings()
    start_ms = parse_time_ms(start, "--start") if start else None
    try:
        stats = run_generate(
            Services(settings).client("kinesis"),
            stream or settings.stream,
            rate=rate,
            duration=duration,
            invalid_fraction=invalid_fraction,
            seed=seed,
            truth_path=truth,
            late_fraction=late_fraction,
            events_path=events_out,
            start_ms=start_ms,
            now_ms=lambda: int(time.time() * 1000),
        )
    except GenerateError as exc:
        fail(str(exc), 1)
    typer.echo(orjson.dumps(stats.as_dict()).decode())


def demo(
    rate: Annotated[float, typer.Option(help="Events per second of demo traffic.", min=0.1)] = 50.0,
    invalid_fraction: Annotated[float, typer.Option(help="Fraction of invalid events.", min=0, max=1)] = 0.02,
) -> None:
    """Local stack + steady traffic + the worker, until Ctrl-C (which stops everything it started)."""
    _require_local_extra()
    from devstack.demo import run_demo
    from devstack.errors import LocalStackError

    settings = load_settings()
    try:
        code = run_demo(settings, rate, invalid_fraction, typer.echo)
    except LocalStackError as exc:
        fail(str(exc))
    raise typer.Exit(code)
