"""What every command shares: the option types, loading the settings, `fail`, the time options.

Only typer and the standard library are imported here; the rest comes inside the functions, so
`streamkpi --help` stays quick.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    from streamkpi.settings import Settings


class Store(StrEnum):
    dynamodb = "dynamodb"
    redis = "redis"


class Format(StrEnum):
    json = "json"
    table = "table"


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `error: message` on stderr and exit: 2 for a usage or config mistake, 1 for a failed job."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def fail_unreachable(cause: object, then: str = "") -> NoReturn:
    from aggregations.errors import StoreAccessError

    if isinstance(cause, StoreAccessError):  # refused login or certificate: its message names the setting to fix
        fail(f"{cause}{then}", 1)
    fail(f"{cause}; is the stack up? Try `streamkpi local status`.{then}", 1)


def load_settings() -> Settings:
    from streamkpi.app import bootstrap
    from streamkpi.errors import SettingsError

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


def parse_range_ms(from_: str, to: str) -> tuple[int, int]:
    """The --from and --to options as epoch milliseconds; --to must come after --from."""
    from_ms, to_ms = parse_time_ms(from_, "--from"), parse_time_ms(to, "--to")
    if to_ms <= from_ms:
        fail("--to must be after --from.")
    return from_ms, to_ms


def refuse_while_workers_run(settings: Settings, dynamodb: object, why: str, then: str) -> None:
    """Fail if a worker renews its KCL leases: its in-memory windows would undo the job (`why` says how)."""
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
            f"Stop every `streamkpi consume` of this stream first ({why}), then {then}",
            1,
        )
