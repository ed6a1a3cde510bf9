"""`streamkpi replay` and `streamkpi rebuild`: the archive back into a stream."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from streamkpi.cli.common import Format, fail, fail_unreachable, load_settings, parse_range_ms, refuse_while_workers_run

if TYPE_CHECKING:
    from replay.runner import ReplayOptions, Summary
    from streamkpi.settings import Settings

_FROM_HELP = "Start of the event-time range (ISO-8601, 'now-1h'); events are filtered by their own timestamp."
_TO_HELP = "End of the event-time range, exclusive (ISO-8601, 'now')."


def replay_command(
    from_: Annotated[str, typer.Option("--from", help=_FROM_HELP)],
    to: Annotated[str, typer.Option("--to", help=_TO_HELP)],
    source: Annotated[
        str | None,
        typer.Option(
            help="s3://bucket/prefix of the archive; default s3://<STREAMKPI_ARCHIVE_BUCKET>/ (dlq/ skipped)."
        ),
    ] = None,
    stream: Annotated[str | None, typer.Option(help="Stream to put the events into; default STREAMKPI_STREAM.")] = None,
    type_: Annotated[
        list[str] | None, typer.Option("--type", help="Replay only event types matching this glob (repeatable).")
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            help="Records per second; default 90 % of the stream's write limit (open shards x 1,000/s).", min=0.001
        ),
    ] = None,
    speedup: Annotated[
        float | None,
        typer.Option(
            help="Follow the events' original timing X times faster (within the stream's limit).", min=0.000001
        ),
    ] = None,
    partition_key: Annotated[
        str | None,
        typer.Option(
            help="JSON path of the partition key (e.g. data.charity); default userId, then sessionId, then a hash."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read and count; write nothing.")] = False,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Progress file: continue the replay it records (or start it); acknowledged events are not sent again."
        ),
    ] = None,
    slack: Annotated[
        str, typer.Option(help="Time folders are named after arrival: also list this much before and after the range.")
    ] = "1h",
    format: Annotated[Format, typer.Option(help="Format of the final summary (stdout).")] = Format.table,
) -> None:
    """Put the events of an event-time range from the S3 archive into a stream.

    Layouts: Firehose YYYY/MM/DD/HH/, Hive year=/month=/day=/hour=, plain.
    Formats: NDJSON, concatenated JSON, JSON arrays, gzip. Malformed data is
    reported (object key, byte offset) and the replay goes on. A progress bar
    shows on stderr, a summary on stdout. Exit status 0 when every event of
    the range was delivered (or, with --dry-run, could be); 1 when anything
    was not; 130 when interrupted (resume with --resume)."""
    from replay.runner import ReplayError, ReplayOptions, parse_source

    settings = load_settings()
    if rate is not None and speedup is not None:
        fail("give --rate or --speedup, not both.")
    from_ms, to_ms = parse_range_ms(from_, to)
    try:
        bucket, prefix = parse_source(source or f"s3://{settings.archive_bucket}/")
        options = ReplayOptions(
            bucket=bucket,
            prefix=prefix,
            stream=stream or settings.stream,
            from_ms=from_ms,
            to_ms=to_ms,
            types=tuple(type_ or ()),
            rate=rate,
            speedup=speedup,
            partition_key=partition_key,
            dry_run=dry_run,
            resume=resume,
            slack_ms=_duration(slack, "--slack"),
        )
        _check_partition_key(partition_key)
    except ReplayError as exc:
        fail(str(exc))
    summary = _run(settings, options, format)
    if not summary.ok:
        raise typer.Exit(1)


def rebuild_command(
    from_: Annotated[str, typer.Option("--from", help="Start of the range to rebuild (ISO-8601).")],
    to: Annotated[str, typer.Option("--to", help="End of the range, exclusive (ISO-8601).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Do not check the lease table for running workers (you stopped them).")
    ] = False,
    source: Annotated[
        str | None, typer.Option(help="s3://bucket/prefix of the archive; default s3://<STREAMKPI_ARCHIVE_BUCKET>/.")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Progress file of the rebuild; default rebuild-<stream>-<span>.json in STREAMKPI_STATE_DIR."),
    ] = None,
    format: Annotated[Format, typer.Option(help="Format of the final summary (stdout).")] = Format.table,
) -> None:
    """Rebuild the aggregates of a closed range from the archive (stop the world).

    1. Stop every worker of the stream (`streamkpi consume`). A running worker
    keeps windows in memory and would add the replayed events to the old
    counts. The rebuild refuses while the KCL lease table shows leases being
    renewed (--force skips that check).

    2. Run `streamkpi rebuild --from T --to T`. It deletes the aggregates of
    every window (every resolution, DynamoDB and Redis) in the span of whole
    windows holding the range (a whole day with a 1d resolution), then
    replays the events of that span from the archive into STREAMKPI_STREAM.

    3. Start the workers. They count the replayed records; then the
    aggregates equal what they were before (plus the effect of any fix of
    the config or schemas).

    Run it again after an interruption: it goes on where it stopped, without
    a second reset. The workers archive the replayed events again, so
    rebuild a range once it ended more than an hour ago (the listing slack):
    a later replay of the range then does not read those copies."""
    from aggregations.query import iso
    from aggregations.store import StoreUnavailableError
    from replay.rebuild import rebuild_span
    from replay.runner import ReplayError, ReplayOptions, parse_source
    from streamkpi.app import Services, build_rebuild

    settings = load_settings()
    services = Services(settings)
    from_ms, to_ms = parse_range_ms(from_, to)
    span = rebuild_span(services.config.resolutions, from_ms, to_ms)
    path = resume or Path(settings.state_dir) / f"rebuild-{settings.stream}-{span[0]}-{span[1]}.json"
    try:
        bucket, prefix = parse_source(source or f"s3://{settings.archive_bucket}/")
    except ReplayError as exc:
        fail(str(exc))
    if not force:
        refuse_while_workers_run(
            settings,
            services.client("dynamodb"),
            why="their in-memory windows would add the replayed events to the old counts",
            then="run the rebuild again; start them after it.",
        )
    if not yes and not typer.confirm(
        f"Delete the aggregates of every window in {iso(span[0])} .. {iso(span[1])} (DynamoDB and Redis) and replay "
        f"those event times from s3://{bucket}/{prefix} into stream {settings.stream!r}?"
    ):
        fail("nothing changed.", 1)
    typer.echo(f"rebuilding event times {iso(span[0])} .. {iso(span[1])} (whole windows holding the range)")
    options = ReplayOptions(bucket=bucket, prefix=prefix, stream=settings.stream, from_ms=span[0], to_ms=span[1],
                            resume=path)  # fmt: skip
    try:
        summary = _run(settings, options, format, build_rebuild(settings, options, typer.echo))
    except StoreUnavailableError as exc:
        fail_unreachable(exc, " Run the rebuild again to continue.")
    if not summary.ok:
        typer.echo(f"the rebuild is not complete; run it again to continue (progress in {path})", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"replayed {summary.events_delivered:,} events into stream {settings.stream!r}: start the workers; "
        "when they have read the stream, the aggregates of the span are complete again"
    )


# -- shared by replay and rebuild ---------------------------------------------------------------------


def _duration(text: str, option: str) -> int:
    from aggregations.windows import parse_duration_ms

    if text.strip() in ("0", "0s", "0m", "0h"):
        return 0
    try:
        return parse_duration_ms(text)
    except ValueError as exc:
        fail(f"{option} {exc}")


def _check_partition_key(path: str | None) -> None:
    from replay.partition import PathError, parse_path
    from replay.runner import ReplayError

    if path is not None:
        try:
            parse_path(path)
        except PathError as exc:
            raise ReplayError(str(exc)) from None


def _run(
    settings: Settings, options: ReplayOptions, format: Format, rebuild: Callable[..., Summary] | None = None
) -> Summary:
    """Run a replay (or `rebuild(**callbacks)`) with a progress bar on stderr; print the summary on stdout."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from replay.runner import Replayer, ReplayError
    from streamkpi.app import build_replayer

    console = Console(stderr=True)
    bar = Progress(
        TextColumn("[bold]replay[/bold]"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[objects]} objects"),
        TextColumn("{task.fields[events]} events"),
        TextColumn("{task.fields[rate]} ev/s"),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    task = bar.add_task("replay", total=None, objects="0/0", events="0", rate="0")
    samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=50)

    def on_start(s: Summary) -> None:
        bar.update(task, total=max(1, s.bytes_total), objects=f"{s.objects_done}/{s.objects_total}")

    def on_update(s: Summary) -> None:
        now = time.monotonic()
        samples.append((now, s.run_delivered))
        while len(samples) > 2 and now - samples[0][0] > 3:
            samples.popleft()
        span = samples[-1][0] - samples[0][0]
        rate = (samples[-1][1] - samples[0][1]) / span if span > 0 else 0.0
        bar.update(
            task,
            completed=s.bytes_read,
            objects=f"{s.objects_done}/{s.objects_total}",
            events=f"{s.events_delivered:,}",
            rate=f"{rate:,.0f}",
        )

    callbacks: dict[str, Any] = {"on_start": on_start, "on_update": on_update}
    interrupted = False
    replayer: Replayer | None = None
    summary: Summary | None = None
    try:
        with bar:
            if rebuild is not None:
                summary = rebuild(**callbacks)
            else:
                replayer = build_replayer(settings, options, **callbacks)
                summary = replayer.run()
    except ReplayError as exc:
        fail(str(exc), 1)
    except KeyboardInterrupt:
        interrupted = True
    if summary is None:
        if replayer is None:
            raise typer.Exit(130)
        summary = replayer.summary
    _print_summary(summary, format)
    if options.resume is not None and not summary.ok and not options.dry_run:
        typer.echo(f"resume with the same options and --resume {options.resume}", err=True)
    if interrupted:
        raise typer.Exit(130)
    return summary


def _print_summary(summary: Summary, format: Format) -> None:
    import orjson

    if format is Format.json:
        typer.echo(orjson.dumps(summary.as_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    from rich.console import Console
    from rich.table import Table

    s = summary.as_dict()
    title = "replay (dry run: nothing written)" if summary.dry_run else "replay"
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    verb = "would deliver" if summary.dry_run else "delivered"
    table.add_row(
        "objects", f"{s['objects']['done']:,} of {s['objects']['total']:,} done ({', '.join(s['layouts']) or '-'})"
    )
    table.add_row(f"events {verb}", f"{summary.events_delivered:,} ({summary.bytes_delivered:,} bytes)")
    if summary.already_delivered:
        table.add_row("already delivered", f"{summary.already_delivered:,} (by an earlier run)")
    table.add_row("read", f"{summary.bytes_read:,} bytes of objects in {summary.seconds:.1f} s")
    rate = f"{summary.events_per_second:,.0f} events/s"
    if summary.rate:
        rate += f" (pace {summary.rate:,.0f}/s" + (f", speedup {summary.speedup:g}x)" if summary.speedup else ")")
    table.add_row("throughput", rate)
    table.add_row("retries", f"{summary.retries:,}")
    table.add_row("not delivered", f"{summary.not_delivered + summary.problems:,}")
    for reason, count in s["skipped"].items():
        table.add_row(f"skipped: {reason}", f"{count:,}")
    for example in summary.examples[:10]:
        table.add_row("problem", example)
    if summary.stopped:
        table.add_row("stopped", summary.stopped)
    table.add_row("result", "ok" if summary.ok else "NOT everything was delivered")
    Console().print(table)
