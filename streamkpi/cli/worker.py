"""The worker's commands: `streamkpi consume` and `streamkpi settings`."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer

from streamkpi.cli.common import fail, load_settings


def settings_command(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the table of every setting.")] = False,
) -> None:
    """Show the effective settings, with the credentials in URLs hidden (or, with --markdown, the documented
    table of all settings)."""
    from streamkpi.settings import redact_url, settings_table_markdown

    if markdown:
        typer.echo(settings_table_markdown())
        return
    from dataclasses import asdict

    shown = {k: redact_url(v) if isinstance(v, str) else v for k, v in asdict(load_settings()).items()}
    typer.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())


def consume(
    print_properties: Annotated[
        bool, typer.Option("--print-properties", help="Print the KCL properties and exit.")
    ] = False,
) -> None:
    """Run the worker: the KCL MultiLangDaemon with the streamkpi record processor."""
    from streamkpi import kcl_daemon
    from streamkpi.errors import DaemonError

    settings = load_settings()
    try:
        if print_properties:
            worker_id = kcl_daemon.default_worker_id(settings)
            typer.echo(kcl_daemon.render_properties(settings, kcl_daemon.processor_command(), worker_id), nl=False)
            return
        code = kcl_daemon.run_daemon(settings)
    except DaemonError as exc:
        fail(str(exc))
    raise typer.Exit(code)
