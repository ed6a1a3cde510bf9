"""`streamkpi health`: is the worker on this machine (or in this container) alive? For a HEALTHCHECK.

It reads only local files (consumer/health/local_file.py): no Redis, no AWS, no JVM, so it answers in a
fraction of a second even when a store is down. Exit 0 when healthy, 1 otherwise (a container runtime
reads 1 as unhealthy; 2 is reserved there, so a setting error exits 1 too); one line says why.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from streamkpi.settings import Settings


def health(
    max_silence: Annotated[
        float | None,
        typer.Option(
            "--max-silence",
            help="Seconds a held shard may go without a report (default STREAMKPI_HEALTH_MAX_SILENCE_SECONDS).",
        ),
    ] = None,
) -> None:
    """Exit 0 if the KCL daemon runs and every shard it holds reported lately (or it holds none), else 1."""
    from consumer.health.liveness import judge
    from consumer.health.local_file import read_liveness
    from streamkpi.errors import SettingsError
    from streamkpi.settings import Settings

    try:
        settings = Settings.load()
        directory = _worker_dir(settings)
    except (SettingsError, LookupError) as exc:
        _unhealthy(str(exc))
    silence = settings.health_max_silence_seconds if max_silence is None else max_silence
    if not silence > 0:
        _unhealthy(f"--max-silence {max_silence}: use a positive number of seconds.")
    try:
        liveness = read_liveness(directory)
    except (OSError, ValueError, KeyError) as exc:
        _unhealthy(f"cannot read the liveness files in {directory}: {exc!r}")
    verdict = judge(
        liveness.daemon_pid, liveness.daemon_alive, liveness.beats, int(time.time() * 1000), int(silence * 1000)
    )
    typer.echo(verdict.message)
    raise typer.Exit(0 if verdict.healthy else 1)


def _worker_dir(settings: Settings) -> Path:
    """STREAMKPI_HEALTH_DIR; else the folder of STREAMKPI_WORKER_ID; else the one worker of the app here."""
    from consumer.health.local_file import worker_dirs, worker_health_dir

    if settings.health_dir:
        return Path(settings.health_dir)
    if settings.worker_id:
        return worker_health_dir(settings.state_dir, settings.app_name, settings.worker_id)
    found = worker_dirs(settings.state_dir, settings.app_name, host=socket.gethostname())
    if len(found) == 1:
        return found[0]
    if not found:
        raise LookupError(
            f"no worker of {settings.app_name} is running here (nothing in {Path(settings.state_dir) / 'health'})"
        )
    names = ", ".join(p.name for p in found)
    raise LookupError(f"{len(found)} workers of {settings.app_name} run here ({names}): set STREAMKPI_WORKER_ID")


def _unhealthy(reason: str) -> NoReturn:
    typer.echo(f"unhealthy: {reason}")
    raise typer.Exit(1)
