"""`streamkpi dlq stats`, `peek` and `redrive`: the dead-letter queue."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, NoReturn

import orjson
import typer

from streamkpi.cli.common import Format, fail, load_settings

if TYPE_CHECKING:
    from streamkpi.settings import Settings

dlq_app = typer.Typer(
    help="The dead-letter queue: count letters by reason, peek at them, redrive the ones that now validate.",
    no_args_is_help=True,
)

_DLQ_WAIT_HELP = "Long-poll seconds of each receive (0-20); the scan ends at the first empty receive."
_DLQ_VISIBILITY_HELP = "Seconds the scanned messages stay hidden (they are made visible again at the end)."


def _dlq_queue(settings: Settings) -> tuple[object, str]:
    """(sqs, queue url) of the configured DLQ, or a message that says what to do."""
    from deadletters.admin import DlqAdminError, resolve_queue
    from streamkpi.app import Services

    sqs = Services(settings).client("sqs")
    try:
        url = resolve_queue(sqs, settings.dlq_queue)
    except DlqAdminError as exc:
        fail(str(exc), 1)
    return sqs, url


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

    sqs, url = _dlq_queue(load_settings())
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
    from streamkpi.app import Services

    settings = load_settings()
    sqs, url = _dlq_queue(settings)
    s3 = Services(settings).client("s3")
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
    from botocore.exceptions import BotoCoreError, ClientError

    from deadletters import admin as dlq_admin
    from deadletters import redrive as redrive_mod
    from streamkpi.app import build_redrive
    from streamkpi.errors import ConfigError

    settings = load_settings()
    target = stream or settings.stream
    try:
        ledger, context = build_redrive(settings, target)
    except ConfigError as exc:
        fail(str(exc))
    sqs, url = _dlq_queue(settings)
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
