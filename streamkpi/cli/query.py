"""Reading and maintaining the aggregates: `streamkpi query`, `rebuild-cache` and `reset`."""

from __future__ import annotations

from typing import Annotated

import typer

from streamkpi.cli.common import (
    Format,
    Store,
    fail,
    fail_unreachable,
    load_settings,
    parse_range_ms,
    parse_time_ms,
    refuse_while_workers_run,
)


def query(
    metric: Annotated[str, typer.Option(help="Metric name (see the config file); `events` is built in.")] = "events",
    resolution: Annotated[str, typer.Option(help="Window size: one of the configured resolutions.")] = "1m",
    from_: Annotated[str, typer.Option("--from", help="Start (ISO-8601, 'now', 'now-1h').")] = "now-15m",
    to: Annotated[str, typer.Option(help="End, exclusive (ISO-8601, 'now').")] = "now",
    by: Annotated[str | None, typer.Option(help="Fold the groups onto one of the metric's `by` dimensions.")] = None,
    top: Annotated[int | None, typer.Option(help="Keep the N largest groups; fold the rest into __other__.")] = None,
    rolling: Annotated[
        str | None,
        typer.Option(help="One rolling value over this span ending at --to (e.g. 5m), from the finest windows."),
    ] = None,
    store: Annotated[Store, typer.Option(help="Where to read.")] = Store.dynamodb,
    format: Annotated[Format, typer.Option(help="Output format.")] = Format.table,
) -> None:
    """Print the stored windows of a metric: every window in the range, zeros filled."""
    from aggregations.query import QueryError, read_metric, read_rolling, to_json
    from aggregations.store import StoreAccessError, StoreUnavailableError
    from aggregations.windows import parse_duration_ms
    from streamkpi.app import Services
    from streamkpi.errors import ConfigError

    settings = load_settings()
    services = Services(settings)
    try:
        res = services.config.resolution(resolution)
        metrics = services.config.metric_set.by_name
    except ConfigError as exc:
        fail(str(exc))
    if metric not in metrics:
        fail(f"unknown metric {metric!r}; configured metrics: {', '.join(sorted(metrics))}")
    dims = metrics[metric].by
    from_ms, to_ms = parse_time_ms(from_, "--from"), parse_time_ms(to, "--to")
    backend = services.dynamodb_store if store is Store.dynamodb else services.redis_store
    try:
        if rolling is not None:
            try:
                span_ms = parse_duration_ms(rolling)
            except ValueError as exc:
                fail(f"--rolling {rolling!r}: {exc}")
            finest = services.config.resolutions[0]
            result = read_rolling(backend, finest, metric, to_ms, span_ms, top, by, dims)
            typer.echo(to_json(result, indent=True).decode())
            return
        if to_ms <= from_ms:
            fail("--to must be after --from.")
        if (to_ms - from_ms) // res.size_ms > 100_000:
            fail(f"that range holds more than 100,000 {res.name} windows; narrow it or use a coarser --resolution.")
        result = read_metric(backend, res, metric, from_ms, to_ms, top, by, dims)
    except QueryError as exc:
        fail(str(exc))
    except StoreAccessError as exc:
        fail_unreachable(exc)
    except StoreUnavailableError as exc:
        fail_unreachable(f"{store.value} is not reachable ({exc})")
    if format is Format.json:
        typer.echo(to_json(result, indent=True).decode())
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


def rebuild_cache(
    from_: Annotated[str, typer.Option("--from", help="Start (ISO-8601, 'now', 'now-6h').")] = "now-6h",
    to: Annotated[str, typer.Option(help="End, exclusive (ISO-8601, 'now').")] = "now",
) -> None:
    """Copy the aggregates of a range from DynamoDB into Redis (every resolution). Safe while workers run."""
    from aggregations.repair import copy_range
    from aggregations.store import StoreUnavailableError
    from streamkpi.app import Services

    settings = load_settings()
    services = Services(settings)
    from_ms, to_ms = parse_range_ms(from_, to)
    try:
        copied = copy_range(services.dynamodb_store, services.redis_store, services.config.resolutions, from_ms, to_ms)
    except StoreUnavailableError as exc:
        fail_unreachable(exc)
    typer.echo(f"copied {copied} shard partials from DynamoDB to Redis")


def reset(
    from_: Annotated[str, typer.Option("--from", help="Start (ISO-8601).")],
    to: Annotated[str, typer.Option(help="End, exclusive (ISO-8601).")],
    metric: Annotated[str | None, typer.Option(help="Delete only this metric's values.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Do not check the lease table for running workers (you stopped them).")
    ] = False,
) -> None:
    """Delete the aggregates of every window overlapping a range, in DynamoDB and Redis.

    Used before rebuilding from the archive: stop the workers, reset, replay the span printed here.
    Refuses while the KCL lease table shows leases being renewed (--force skips that check)."""
    from aggregations.query import iso
    from aggregations.repair import replay_span, reset_range
    from aggregations.store import StoreUnavailableError
    from streamkpi.app import Services

    settings = load_settings()
    services = Services(settings)
    resolutions = services.config.resolutions
    if metric is not None and metric not in services.config.metric_set.by_name:
        fail(f"unknown metric {metric!r}; configured metrics: {', '.join(sorted(services.config.metric_set.by_name))}")
    from_ms, to_ms = parse_range_ms(from_, to)
    span = replay_span(resolutions, from_ms, to_ms)
    what = f"metric {metric!r}" if metric else "every metric"
    if not force:
        refuse_while_workers_run(
            settings,
            services.client("dynamodb"),
            why="their in-memory windows would write the old counts back",
            then="run the reset again; --force skips this check once you know they are stopped.",
        )
    if not yes and not typer.confirm(
        f"Delete {what} in every window overlapping {iso(from_ms)} .. {iso(to_ms)} "
        f"(whole windows: {iso(span[0])} .. {iso(span[1])}) in DynamoDB and Redis?"
    ):
        fail("nothing deleted.", 1)
    try:
        durable = reset_range(services.dynamodb_store, resolutions, from_ms, to_ms, metric)
        hot = reset_range(services.redis_store, resolutions, from_ms, to_ms, metric)
    except StoreUnavailableError as exc:
        fail_unreachable(exc)
    typer.echo(f"reset {durable} DynamoDB and {hot} Redis window entries ({what})")
    typer.echo(f"to rebuild, replay the archive for event times {iso(span[0])} .. {iso(span[1])}")
