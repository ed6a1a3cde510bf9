"""`streamkpi dashboard publish` and `streamkpi dashboard serve`."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from streamkpi.cli.common import fail, load_settings

dashboard_app = typer.Typer(
    help="The live-KPI dashboard: publish its snapshot (to a directory or S3), or serve it locally.",
    no_args_is_help=True,
)


class PreferredStore(StrEnum):
    """Which store is read first: redis, the default, is listed first (common.Store lists dynamodb first)."""

    redis = "redis"
    dynamodb = "dynamodb"


# The options publish and serve share.
EveryOption = Annotated[str, typer.Option(help="How often to publish: seconds, or a duration such as 2s or 1m.")]
StoreOption = Annotated[
    PreferredStore,
    typer.Option(help="Store to read the aggregates from first (the other one is read if it is unavailable)."),
]
DlqEveryOption = Annotated[
    str,
    typer.Option(
        help="How often to sample the DLQ for its top reasons (received and made visible again, never deleted); "
        "0 = never."
    ),
]
DlqSampleOption = Annotated[int, typer.Option(help="Most DLQ messages one sample looks at.", min=10, max=10_000)]


def _seconds(text: str, option: str, allow_zero: bool = False) -> float:
    from aggregations.windows import parse_duration_ms

    try:
        value = float(text)
    except ValueError:
        try:
            return parse_duration_ms(text) / 1000
        except ValueError as exc:
            fail(f"{option} {text!r}: {exc}")
    if value < 0 or (value == 0 and not allow_zero) or value != value:
        fail(f"{option} {text!r}: give a positive number of seconds (or a duration such as 2s).")
    return value


def _publisher(settings: Any, targets: Any, store: str, dlq_every_s: float, dlq_sample: int) -> Any:
    """build_publisher; a config mistake (an unknown metric in a panel, a wrong kind) stops the start (exit 2)."""
    from streamkpi.app import build_publisher
    from streamkpi.errors import ConfigError

    try:
        return build_publisher(settings, targets, store, dlq_every_s, dlq_sample)
    except ConfigError as exc:
        fail(str(exc))


@dashboard_app.command("publish")
def publish(
    to: Annotated[
        list[str],
        typer.Option("--to", help="Where to write snapshot.json: a directory or s3://bucket/prefix (repeatable)."),
    ],
    every: EveryOption = "2s",
    once: Annotated[bool, typer.Option("--once", help="Publish one snapshot and exit.")] = False,
    static: Annotated[
        bool, typer.Option("--static", help="Also write the page's files there once, so the target is the whole site.")
    ] = False,
    store: StoreOption = PreferredStore.redis,
    dlq_every: DlqEveryOption = "60s",
    dlq_sample: DlqSampleOption = 500,
) -> None:
    """Read the stores, write the dashboard snapshot (aggregates only) atomically, every --every seconds."""
    import signal
    import threading

    from dashboard.errors import PublishError
    from dashboard.publisher import parse_target
    from streamkpi.app import Services

    every_s = _seconds(every, "--every")
    dlq_every_s = _seconds(dlq_every, "--dlq-every", allow_zero=True)
    settings = load_settings()
    try:
        targets = [parse_target(t, lambda: Services(settings).client("s3")) for t in to]
    except PublishError as exc:
        fail(str(exc))
    publisher = _publisher(settings, targets, store.value, dlq_every_s, dlq_sample)
    where = ", ".join(t.description for t in targets)
    try:
        if static:
            publisher.copy_static()
        if once:
            snapshot = publisher.publish_once()
            problems = "; ".join(p["message"] for p in snapshot["problems"])
            ranges = " and the range files snapshot-{1h,24h,7d,30d}.json" if publisher.source.panels else ""
            typer.echo(
                f"published {where}{ranges} ({snapshot['generatedAt']})"
                + (f"; problems: {problems}" if problems else "")
            )
            return
    except PublishError as exc:
        fail(str(exc), 1)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _s, _f: stop.set())
    typer.echo(f"publishing {where} every {every_s:g} s; Ctrl-C stops.")
    publisher.run(every_s, stop)
    typer.echo(f"stopped after {publisher.published} snapshots ({publisher.failures} failed)")


@dashboard_app.command("serve")
def serve(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).", min=0, max=65535)] = 8080,
    every: EveryOption = "2s",
    store: StoreOption = PreferredStore.redis,
    dlq_every: DlqEveryOption = "60s",
    dlq_sample: DlqSampleOption = 500,
) -> None:
    """Publish into memory and serve the page, snapshot.json and /metrics on 127.0.0.1 (read-only)."""
    from dashboard.errors import ServeError
    from dashboard.server import SnapshotHolder
    from dashboard.server import serve as run_server

    every_s = _seconds(every, "--every")
    dlq_every_s = _seconds(dlq_every, "--dlq-every", allow_zero=True)
    settings = load_settings()
    holder = SnapshotHolder()
    publisher = _publisher(settings, [holder], store.value, dlq_every_s, dlq_sample)
    try:
        code = run_server(publisher, holder, port, every_s, lambda line: typer.echo(line))
    except ServeError as exc:
        fail(str(exc), 1)
    raise typer.Exit(code)
