"""`streamkpi`: one CLI for every job. Every error says what was wrong and what to do."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import orjson
import typer

from streamkpi.settings import Settings, SettingsError, settings_table_markdown

app = typer.Typer(
    name="streamkpi",
    help="Streaming analytics worker for Amazon Kinesis: exactly-once KPIs, a DLQ that loses nothing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
local_app = typer.Typer(help="The embedded local stack: moto (AWS stand-in) and redis-server.", no_args_is_help=True)
app.add_typer(local_app, name="local")


class Store(StrEnum):
    dynamodb = "dynamodb"
    redis = "redis"


class Format(StrEnum):
    json = "json"
    table = "table"


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    from streamkpi.app import bootstrap

    try:
        return bootstrap()
    except SettingsError as exc:
        fail(str(exc))


def parse_time_ms(text: str, option: str) -> int:
    """ISO-8601 (naive means UTC), 'now', or 'now-15m' style relative times."""
    from aggregations.windows import parse_duration_ms

    now = int(datetime.now(UTC).timestamp() * 1000)
    text = text.strip()
    if text == "now":
        return now
    if text.startswith("now-"):
        try:
            return now - parse_duration_ms(text[4:])
        except ValueError as exc:
            fail(f"{option} {text!r}: {exc}")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{option} {text!r} is not a time; use ISO-8601 like 2026-11-25T10:00:00Z, 'now' or 'now-1h'.")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


# -- settings -------------------------------------------------------------------------------------


@app.command("settings")
def settings_command(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the table of every setting.")] = False,
) -> None:
    """Show the effective settings (or, with --markdown, the documented table of all settings)."""
    if markdown:
        typer.echo(settings_table_markdown())
        return
    from dataclasses import asdict

    typer.echo(orjson.dumps(asdict(_settings()), option=orjson.OPT_INDENT_2).decode())


# -- local stack ----------------------------------------------------------------------------------


@local_app.command("up")
def local_up() -> None:
    """Start moto and redis-server on 127.0.0.1, create the resources, write the env file."""
    from streamkpi import local_stack

    settings = _settings()
    try:
        env = local_stack.up(settings)
    except local_stack.LocalStackError as exc:
        fail(str(exc))
    typer.echo(f"local stack up; settings written to {settings.env_file}")
    for key, value in env.items():
        if "SECRET" not in key:
            typer.echo(f"  {key}={value}")


@local_app.command("down")
def local_down() -> None:
    """Stop exactly the processes `local up` started (by pid)."""
    from streamkpi import local_stack

    stopped = local_stack.down(_settings())
    typer.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@local_app.command("status")
def local_status() -> None:
    """Say what runs."""
    from streamkpi import local_stack

    rows = local_stack.status(_settings())
    for row in rows:
        state = "running" if row.alive else "stopped"
        typer.echo(f"{row.name:<8} {state:<8} pid={row.pid or '-':<8} {row.address}")
    if not any(r.alive for r in rows):
        raise typer.Exit(1)


# -- traffic --------------------------------------------------------------------------------------


@app.command("generate")
def generate(
    rate: Annotated[float, typer.Option(help="Events per second.", min=0.1)] = 200.0,
    duration: Annotated[float, typer.Option(help="Seconds to send for.", min=0.1)] = 10.0,
    invalid_fraction: Annotated[float, typer.Option(help="Fraction of invalid events (0-1).", min=0, max=1)] = 0.02,
    seed: Annotated[int | None, typer.Option(help="Seed for a reproducible stream of events.")] = None,
    truth: Annotated[Path | None, typer.Option(help="Write expected per-type per-minute counts here.")] = None,
    start: Annotated[str | None, typer.Option(help="Event time of the first event (ISO); default now.")] = None,
    stream: Annotated[str | None, typer.Option(help="Stream to send to; default STREAMKPI_STREAM.")] = None,
) -> None:
    """Send realistic browser/business events (with a chosen fraction of invalid ones) to the stream."""
    import time

    from streamkpi.app import Services
    from streamkpi.producer import GenerateError, run_generate

    settings = _settings()
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
            start_ms=start_ms,
            now_ms=lambda: int(time.time() * 1000),
        )
    except GenerateError as exc:
        fail(str(exc), 1)
    typer.echo(orjson.dumps(stats.as_dict()).decode())


@app.command("demo")
def demo(
    rate: Annotated[float, typer.Option(help="Events per second of demo traffic.", min=0.1)] = 50.0,
    invalid_fraction: Annotated[float, typer.Option(help="Fraction of invalid events.", min=0, max=1)] = 0.02,
) -> None:
    """Local stack + steady traffic + the worker, until Ctrl-C (which stops everything it started)."""
    from streamkpi import local_stack
    from streamkpi.demo import run_demo

    settings = _settings()
    try:
        code = run_demo(settings, rate, invalid_fraction, typer.echo)
    except local_stack.LocalStackError as exc:
        fail(str(exc))
    raise typer.Exit(code)


# -- the worker -----------------------------------------------------------------------------------


@app.command("consume")
def consume(
    print_properties: Annotated[
        bool, typer.Option("--print-properties", help="Print the KCL properties and exit.")
    ] = False,
) -> None:
    """Run the worker: the KCL MultiLangDaemon with the streamkpi record processor."""
    from streamkpi import kcl_daemon

    settings = _settings()
    try:
        if print_properties:
            worker_id = kcl_daemon.default_worker_id(settings)
            typer.echo(kcl_daemon.render_properties(settings, kcl_daemon.processor_command(), worker_id), nl=False)
            return
        code = kcl_daemon.run_daemon(settings)
    except kcl_daemon.DaemonError as exc:
        fail(str(exc))
    raise typer.Exit(code)


@app.command("query")
def query(
    metric: Annotated[str, typer.Option(help="Metric name (see the config file); `events` is built in.")] = "events",
    resolution: Annotated[str, typer.Option(help="Window size: one of the configured resolutions.")] = "1m",
    from_: Annotated[str, typer.Option("--from", help="Start (ISO-8601, 'now', 'now-1h').")] = "now-15m",
    to: Annotated[str, typer.Option(help="End, exclusive (ISO-8601, 'now').")] = "now",
    top: Annotated[int | None, typer.Option(help="Keep the N largest groups; fold the rest into __other__.")] = None,
    store: Annotated[Store, typer.Option(help="Where to read.")] = Store.dynamodb,
    format: Annotated[Format, typer.Option(help="Output format.")] = Format.table,
) -> None:
    """Print the stored windows of a metric: every window in the range, zeros filled."""
    from aggregations.query import read_metric
    from aggregations.store import StoreUnavailableError
    from streamkpi.app import Services
    from streamkpi.config import ConfigError

    settings = _settings()
    services = Services(settings)
    try:
        res = services.config.resolution(resolution)
        known = {m.name for m in services.config.metrics}
    except ConfigError as exc:
        fail(str(exc))
    if metric not in known:
        fail(f"unknown metric {metric!r}; configured metrics: {', '.join(sorted(known))}")
    from_ms, to_ms = parse_time_ms(from_, "--from"), parse_time_ms(to, "--to")
    if to_ms <= from_ms:
        fail("--to must be after --from.")
    if (to_ms - from_ms) // res.size_ms > 100_000:
        fail(f"that range holds more than 100,000 {res.name} windows; narrow it or use a coarser --resolution.")
    backend = services.dynamodb_store if store is Store.dynamodb else services.redis_store
    try:
        result = read_metric(backend, res, metric, from_ms, to_ms, top)
    except StoreUnavailableError as exc:
        fail(f"{store.value} is not reachable ({exc}); is the stack up? Try `streamkpi local status`.", 1)
    if format is Format.json:
        typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return
    _print_table(result)


def _print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['metric']} ({result['agg']}) per {result['resolution']}")
    table.add_column("window start (UTC)")
    table.add_column("total", justify="right")
    table.add_column("groups")
    for window in result["windows"]:
        groups = ", ".join(f"{g}={v}" for g, v in window["groups"].items())
        total = window["total"]
        table.add_row(window["start"], "" if total is None else f"{total:,}", groups)
    Console().print(table)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
