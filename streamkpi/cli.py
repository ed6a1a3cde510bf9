"""`streamkpi`: one CLI for every job. Every error says what was wrong and what to do."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import orjson
import typer

from dashboard.cli import dashboard_app
from streamkpi.settings import Settings, SettingsError, redact_url, settings_table_markdown

app = typer.Typer(
    name="streamkpi",
    help="Streaming analytics worker for Amazon Kinesis: exactly-once KPIs, a DLQ that loses nothing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
local_app = typer.Typer(help="The embedded local stack: moto (AWS stand-in) and redis-server.", no_args_is_help=True)
app.add_typer(local_app, name="local")
app.add_typer(dashboard_app, name="dashboard")


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
    """Show the effective settings, with the credentials in URLs hidden (or, with --markdown, the documented
    table of all settings)."""
    if markdown:
        typer.echo(settings_table_markdown())
        return
    from dataclasses import asdict

    shown = {k: redact_url(v) if isinstance(v, str) else v for k, v in asdict(_settings()).items()}
    typer.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())


# -- local stack ----------------------------------------------------------------------------------


@local_app.command("up")
def local_up() -> None:
    """Start moto and redis-server on 127.0.0.1, create the resources, write the env file."""
    from devstack import local_stack

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
    from devstack import local_stack

    stopped = local_stack.down(_settings())
    typer.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@local_app.command("status")
def local_status() -> None:
    """Say what runs."""
    from devstack import local_stack

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
    import time

    from devstack.producer import GenerateError, run_generate
    from streamkpi.app import Services

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
            late_fraction=late_fraction,
            events_path=events_out,
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
    from devstack import local_stack
    from devstack.demo import run_demo

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
    from aggregations.store import StoreUnavailableError
    from aggregations.windows import parse_duration_ms
    from streamkpi.app import Services
    from streamkpi.config import ConfigError

    settings = _settings()
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
    except StoreUnavailableError as exc:
        fail(f"{store.value} is not reachable ({exc}); is the stack up? Try `streamkpi local status`.", 1)
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


# -- aggregates maintenance ------------------------------------------------------------------------


@app.command("rebuild-cache")
def rebuild_cache(
    from_: Annotated[str, typer.Option("--from", help="Start (ISO-8601, 'now', 'now-6h').")] = "now-6h",
    to: Annotated[str, typer.Option(help="End, exclusive (ISO-8601, 'now').")] = "now",
) -> None:
    """Copy the aggregates of a range from DynamoDB into Redis (every resolution). Safe while workers run."""
    from aggregations.repair import copy_range
    from aggregations.store import StoreUnavailableError
    from streamkpi.app import Services

    settings = _settings()
    services = Services(settings)
    from_ms, to_ms = parse_time_ms(from_, "--from"), parse_time_ms(to, "--to")
    if to_ms <= from_ms:
        fail("--to must be after --from.")
    try:
        copied = copy_range(services.dynamodb_store, services.redis_store, services.config.resolutions, from_ms, to_ms)
    except StoreUnavailableError as exc:
        fail(f"{exc}; is the stack up? Try `streamkpi local status`.", 1)
    typer.echo(f"copied {copied} shard partials from DynamoDB to Redis")


def _refuse_while_workers_run(settings: Settings, dynamodb: object, command: str) -> None:
    """Fail if a worker renews its KCL leases: its in-memory windows would write the old counts back."""
    import time

    from botocore.exceptions import BotoCoreError, ClientError

    from replay.rebuild import running_leases

    wait_s = max(1.0, settings.kcl_failover_millis / 1000 * 0.6)  # KCL renews every failover time / 3
    typer.echo(f"checking lease table {settings.app_name!r} for running workers ({wait_s:.0f} s) ...", err=True)
    try:
        live = running_leases(dynamodb, settings.app_name, wait_s, time.sleep)
    except (BotoCoreError, ClientError) as exc:
        fail(f"cannot read the lease table {settings.app_name!r}: {exc}; is the stack up? (--force skips the check)", 1)
    if live:
        fail(
            f"workers are running: the leases of {', '.join(live)} in {settings.app_name!r} are being renewed. "
            f"Stop every `streamkpi consume` of this stream first (their in-memory windows would write the old "
            f"counts back), then run the {command} again; --force skips this check once you know they are stopped.",
            1,
        )


@app.command("reset")
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

    settings = _settings()
    services = Services(settings)
    resolutions = services.config.resolutions
    if metric is not None and metric not in services.config.metric_set.by_name:
        fail(f"unknown metric {metric!r}; configured metrics: {', '.join(sorted(services.config.metric_set.by_name))}")
    from_ms, to_ms = parse_time_ms(from_, "--from"), parse_time_ms(to, "--to")
    if to_ms <= from_ms:
        fail("--to must be after --from.")
    span = replay_span(resolutions, from_ms, to_ms)
    what = f"metric {metric!r}" if metric else "every metric"
    if not force:
        _refuse_while_workers_run(settings, services.client("dynamodb"), "reset")
    if not yes and not typer.confirm(
        f"Delete {what} in every window overlapping {iso(from_ms)} .. {iso(to_ms)} "
        f"(whole windows: {iso(span[0])} .. {iso(span[1])}) in DynamoDB and Redis?"
    ):
        fail("nothing deleted.", 1)
    try:
        durable = reset_range(services.dynamodb_store, resolutions, from_ms, to_ms, metric)
        hot = reset_range(services.redis_store, resolutions, from_ms, to_ms, metric)
    except StoreUnavailableError as exc:
        fail(f"{exc}; is the stack up? Try `streamkpi local status`.", 1)
    typer.echo(f"reset {durable} DynamoDB and {hot} Redis window entries ({what})")
    typer.echo(f"to rebuild, replay the archive for event times {iso(span[0])} .. {iso(span[1])}")


# -- dead-letter queue ----------------------------------------------------------------------------

dlq_app = typer.Typer(
    help="The dead-letter queue: count letters by reason, peek at them, redrive the ones that now validate.",
    no_args_is_help=True,
)
app.add_typer(dlq_app, name="dlq")

_DLQ_WAIT_HELP = "Long-poll seconds of each receive (0-20); the scan ends at the first empty receive."
_DLQ_VISIBILITY_HELP = "Seconds the scanned messages stay hidden (they are made visible again at the end)."


def _dlq_clients(settings: Settings) -> tuple[object, object, str]:
    """(sqs, s3, queue url) of the configured DLQ, or a message that says what to do."""
    from deadletters.admin import DlqAdminError, resolve_queue
    from streamkpi.app import Services

    services = Services(settings)
    sqs = services.client("sqs")
    try:
        url = resolve_queue(sqs, settings.dlq_queue)
    except DlqAdminError as exc:
        fail(str(exc), 1)
    return sqs, services.client("s3"), url


def _aws_failure(exc: Exception) -> NoReturn:
    fail(f"an AWS call failed: {exc}; is the stack up? Try `streamkpi local status` (or `streamkpi local up`).", 1)


@dlq_app.command("stats")
def dlq_stats(
    format: Annotated[Format, typer.Option(help="Output format.")] = Format.table,
    visibility_timeout: Annotated[int, typer.Option(help=_DLQ_VISIBILITY_HELP, min=1, max=43_200)] = 60,
    wait_seconds: Annotated[int, typer.Option(help=_DLQ_WAIT_HELP, min=0, max=20)] = 1,
) -> None:
    """Count every message in the DLQ by reason (nothing is deleted), with SQS's approximate counts."""
    from botocore.exceptions import BotoCoreError, ClientError

    from consumer.reasons import REASON_DOCS
    from deadletters import admin as dlq_admin

    sqs, _, url = _dlq_clients(_settings())
    try:
        result = dlq_admin.stats(sqs, url, visibility_timeout, wait_seconds)
    except (ClientError, BotoCoreError) as exc:
        _aws_failure(exc)
    if format is Format.json:
        typer.echo(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"DLQ {url}: {result.total} messages")
        table.add_column("reason")
        table.add_column("messages", justify="right")
        table.add_column("what it means")
        for reason, count in result.by_reason.items():
            table.add_row(reason, f"{count:,}", REASON_DOCS.get(reason, ""))
        Console().print(table)
        a = result.approximate
        typer.echo(f"SQS approximate counts: visible {a['visible']}, in flight {a['inFlight']}, delayed {a['delayed']}")
    if result.incomplete:
        typer.echo(
            "warning: the scan may have missed messages (SQS reported more visible ones than were received, or "
            "the visibility timeout ran out); run again, with a longer --visibility-timeout.",
            err=True,
        )


@dlq_app.command("peek")
def dlq_peek(
    n: Annotated[int, typer.Option("-n", help="How many messages to show.", min=1, max=1000)] = 10,
    format: Annotated[Format, typer.Option(help="Output format.")] = Format.json,
    visibility_timeout: Annotated[int, typer.Option(help=_DLQ_VISIBILITY_HELP, min=1, max=43_200)] = 60,
    wait_seconds: Annotated[int, typer.Option(help=_DLQ_WAIT_HELP, min=0, max=20)] = 1,
) -> None:
    """Show N messages with a preview of their payload; none is deleted."""
    from botocore.exceptions import BotoCoreError, ClientError

    from deadletters import admin as dlq_admin

    settings = _settings()
    sqs, s3, url = _dlq_clients(settings)
    try:
        rows = dlq_admin.peek(sqs, s3, url, n, visibility_timeout, wait_seconds, bucket=settings.archive_bucket)
    except (ClientError, BotoCoreError) as exc:
        _aws_failure(exc)
    if format is Format.json:
        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"DLQ {url}: {len(rows)} of the messages")
    for column in ("id", "reason", "detail", "partition key", "arrival", "payload"):
        table.add_column(column, overflow="fold")
    for row in rows:
        pointer = row["payloadS3"]
        where = f"s3://{pointer['bucket']}/{pointer['key']} ({pointer.get('bytes')} bytes)\n" if pointer else ""
        table.add_row(
            row["id"], row["reason"], row["detail"], row["partitionKey"], row["arrival"], where + row["preview"]
        )
    Console().print(table)


@dlq_app.command("redrive")
def dlq_redrive(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Change nothing; say what would happen.")] = False,
    stream: Annotated[str | None, typer.Option(help="Stream to put letters into; default STREAMKPI_STREAM.")] = None,
    format: Annotated[Format, typer.Option(help="Output format.")] = Format.table,
    visibility_timeout: Annotated[int, typer.Option(help=_DLQ_VISIBILITY_HELP, min=1, max=43_200)] = 300,
    wait_seconds: Annotated[int, typer.Option(help=_DLQ_WAIT_HELP, min=0, max=20)] = 1,
) -> None:
    """Put letters whose payload now validates (current config) back into the stream once, then delete them.

    A ledger in the metrics table remembers every letter put back, across runs and crashes."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from deadletters import admin as dlq_admin
    from deadletters import redrive as redrive_mod
    from deadletters.ledger_dynamodb import DynamoDbRedriveLedger
    from streamkpi.app import Services
    from streamkpi.config import ConfigError, load_config

    settings = _settings()
    try:
        rules = load_config(settings.config_path, settings.limits()).rules
    except ConfigError as exc:
        fail(str(exc))
    target = stream or settings.stream
    sqs, s3, url = _dlq_clients(settings)
    services = Services(settings)
    ledger = DynamoDbRedriveLedger(services.client("dynamodb"), settings.metrics_table)
    context = redrive_mod.Context(
        # No automatic retries: a PutRecords retried after a timeout could put a letter twice.
        kinesis=boto3.client("kinesis", **settings.kinesis_client_kwargs(), config=redrive_mod.NO_RETRY_CONFIG),
        stream=target,
        rules=rules,
        ledger=ledger,
        s3=s3,
        bucket=settings.archive_bucket,
        limits=settings.limits(),
    )
    try:
        ledger.check()
        result = redrive_mod.redrive(
            sqs, url, context, dry_run=dry_run, visibility_timeout=visibility_timeout, wait_seconds=wait_seconds
        )
    except dlq_admin.DlqAdminError as exc:
        fail(str(exc), 1)
    except (ClientError, BotoCoreError) as exc:
        _aws_failure(exc)
    if format is Format.json:
        typer.echo(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        kept = sum(result.kept.values())
        by_reason = ", ".join(f"{reason}={count}" for reason, count in result.as_dict()["keptByReason"].items())
        if dry_run:
            typer.echo(f"dry run: would redrive {result.redriven} letters into stream {target!r}; nothing was changed")
            typer.echo(f"would keep {kept}" + (f": {by_reason}" if by_reason else ""))
        else:
            typer.echo(
                f"redriven {result.redriven} letters into stream {target!r} "
                f"({result.deleted} messages deleted, {result.duplicates} of them duplicates)"
            )
            if result.recovered:
                typer.echo(f"{result.recovered} letters were already in the stream (an interrupted run put them)")
            typer.echo(f"kept {kept}" + (f": {by_reason}" if by_reason else ""))
    if result.not_deleted:
        typer.echo(
            f"warning: {result.not_deleted} messages are back in the stream but could not be deleted; the next "
            "redrive deletes them (the ledger knows their letters are back; they are not put again).",
            err=True,
        )
    if result.kept.get(dlq_admin.REDRIVE_PENDING):
        when = datetime.fromtimestamp((result.retry_after_ms or 0) / 1000, UTC).isoformat(timespec="seconds")
        typer.echo(
            f"warning: {result.kept[dlq_admin.REDRIVE_PENDING]} messages belong to letters another redrive is putting, "
            f"or an interrupted one may have put; run `streamkpi dlq redrive` again after {when} to settle them.",
            err=True,
        )
    if result.kept.get(dlq_admin.REDRIVE_UNVERIFIED):
        typer.echo(
            f"warning: {result.kept[dlq_admin.REDRIVE_UNVERIFIED]} messages belong to letters an interrupted redrive "
            "may have put, and the stream cannot tell (older than its retention, or too much to read); they stay "
            "in the queue: "
            "check them (`streamkpi dlq peek`) and delete or resend them by hand.",
            err=True,
        )
    if result.incomplete:
        typer.echo(
            "warning: the scan may have missed messages; run again with a longer --visibility-timeout.", err=True
        )
    unsettled = (dlq_admin.PUT_FAILED, dlq_admin.REDRIVE_PENDING, dlq_admin.REDRIVE_UNVERIFIED)
    if any(result.kept.get(reason) for reason in unsettled):
        raise typer.Exit(1)


# -- replay from the archive (replay/cli.py) ------------------------------------------------------
from replay.cli import rebuild_command, replay_command  # noqa: E402 - registered here, kept light (typer only)

app.command("replay")(replay_command)
app.command("rebuild")(rebuild_command)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
