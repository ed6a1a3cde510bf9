"""The worker runs without the `local` extra (devstack, moto, hypercorn), as in its image: what it needs
imports and works, and the local stack's commands say what is missing instead of failing on an import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

# Run in a fresh interpreter: a finder first on sys.meta_path refuses the blocked names, as if they were
# not installed; then the worker's entry points are imported and the CLI is run in-process.
PROBE = """
import importlib.abc, importlib.metadata, sys
import orjson

BLOCKED = set(sys.argv[1].split(","))


class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())

import streamkpi.app
from typer.testing import CliRunner
from streamkpi.cli import app

(processor,) = importlib.metadata.entry_points(group="console_scripts", name="streamkpi-processor")
runs = {}
for line in sys.argv[2:]:
    result = CliRunner().invoke(app, line.split())
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    runs[line] = {"code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr, "crashed": crashed}
print(orjson.dumps({
    "processor": processor.load() is streamkpi.app.run_record_processor,
    "runs": runs,
    "imported": sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED),
}).decode())
"""

WORKS = ("--help", "consume --print-properties", "settings", "query --help", "replay --help", "dashboard --help")
NEEDS_THE_EXTRA = ("local status", "local up", "local down", "generate --duration 1", "demo")


@pytest.mark.parametrize(
    "blocked",
    [("moto", "hypercorn"), ("devstack", "moto", "hypercorn")],
    ids=["checkout-without-extra", "worker-image"],
)
def test_the_worker_runs_without_the_local_extra(blocked: tuple[str, ...], tmp_path: Path) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(blocked), *WORKS, *NEEDS_THE_EXTRA],
        capture_output=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "STREAMKPI_STATE_DIR": str(tmp_path), "AWS_REGION": "us-east-1"},
    )
    assert probe.returncode == 0, probe.stderr.decode()
    found = orjson.loads(probe.stdout)
    assert found["processor"], "the streamkpi-processor entry point is not streamkpi.app.run_record_processor"
    assert found["imported"] == []
    runs = found["runs"]
    for command in WORKS:
        assert runs[command]["code"] == 0 and not runs[command]["crashed"], (command, runs[command])
    assert "executableName = " in runs["consume --print-properties"]["stdout"]
    for command in NEEDS_THE_EXTRA:
        run = runs[command]
        assert run["code"] == 2 and not run["crashed"], (command, run)
        assert run["stdout"] == ""
        message = run["stderr"].strip()
        assert "\n" not in message, f"{command}: not one line: {message}"
        assert message.startswith(f"error: missing {', '.join(blocked)}: "), message
        assert "pip install 'streamkpi[local]'" in message and "make setup" in message
