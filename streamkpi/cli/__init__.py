"""`streamkpi`: one CLI for every job. Every error says what was wrong and what to do.

One module per area holds its commands (worker, query, dlq, replay, dashboard, local); this one registers
them all, in the order `streamkpi --help` lists them. The modules import only typer and the standard
library at start (the rest inside the commands), so `--help` stays quick.
"""

from __future__ import annotations

import sys

import typer

from streamkpi.cli import dashboard, dlq, health, local, query, replay, worker

app = typer.Typer(
    name="streamkpi",
    help="Streaming analytics worker for Amazon Kinesis: exactly-once KPIs, a DLQ that loses nothing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("settings")(worker.settings_command)
app.command("generate")(local.generate)
app.command("demo")(local.demo)
app.command("consume")(worker.consume)
app.command("health")(health.health)
app.command("query")(query.query)
app.command("rebuild-cache")(query.rebuild_cache)
app.command("reset")(query.reset)
app.command("replay")(replay.replay_command)
app.command("rebuild")(replay.rebuild_command)
app.add_typer(local.local_app, name="local")
app.add_typer(dashboard.dashboard_app, name="dashboard")
app.add_typer(dlq.dlq_app, name="dlq")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
