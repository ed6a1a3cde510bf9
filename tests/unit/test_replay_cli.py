"""`streamkpi replay` / `rebuild` argument errors say what to do, before any AWS call; help documents them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamkpi.cli import app

RANGE = ["--from", "2026-11-25T10:00:00Z", "--to", "2026-11-25T11:00:00Z"]


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("STREAMKPI_STATE_DIR", str(tmp_path))
    return CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "10", "--speedup", "2"], "not both"),
        (["--source", "bucket/prefix"], "not an S3 URL"),
        (["--source", "s3:///prefix"], "names no bucket"),
        (["--slack", "an hour"], "--slack"),
        (["--partition-key", "a..b"], "not a dotted JSON path"),
    ],
)
def test_replay_argument_errors(runner: CliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["replay", *RANGE, *args])
    assert result.exit_code == 2
    assert message in result.output


def test_replay_needs_a_range_that_ends_after_it_starts(runner: CliRunner) -> None:
    result = runner.invoke(app, ["replay", "--from", "2026-11-25T11:00:00Z", "--to", "2026-11-25T10:00:00Z"])
    assert result.exit_code == 2 and "--to must be after --from" in result.output


def test_help_documents_the_commands(runner: CliRunner) -> None:
    replay = runner.invoke(app, ["replay", "--help"]).output
    for option in ("--source", "--stream", "--type", "--rate", "--speedup", "--partition-key", "--dry-run", "--resume"):
        assert option in replay
    rebuild = runner.invoke(app, ["rebuild", "--help"]).output
    assert "Stop every worker" in rebuild and "Start the workers" in rebuild
