"""`streamkpi demo` as a new user runs it: counts visible within 30 s, Ctrl-C leaves nothing behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import STREAMKPI, free_port, wait_for

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return not stat.read_text().split(") ")[-1].startswith("Z")
    except OSError:
        return False


def test_demo_shows_counts_within_30_seconds_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "STREAMKPI_STATE_DIR": str(tmp_path / "state"),
        "STREAMKPI_LOCAL_PORT": str(free_port()),
        "STREAMKPI_REDIS_PORT": str(free_port()),
    }
    for key in ("AWS_ENDPOINT_URL", "REDIS_URL"):
        env.pop(key, None)
    output = tmp_path / "demo.out"
    started = time.monotonic()
    with output.open("wb") as out:
        demo = subprocess.Popen([STREAMKPI, "demo", "--rate", "100"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        text = wait_for(lambda: "Press Ctrl-C" in output.read_text() and output.read_text(), 60, "demo started")
        pids = [int(p) for p in re.findall(r"pid=(\d+)", text)]
        assert len(pids) == 4, text  # moto, redis, worker, traffic

        def counted() -> int:
            result = subprocess.run(
                [STREAMKPI, "query", "--from", "now-5m", "--to", "now", "--format", "json"],
                env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            return result.returncode == 0 and sum(w["total"] or 0 for w in json.loads(result.stdout)["windows"])

        total = wait_for(counted, 30 - (time.monotonic() - started) + 15, "counts in DynamoDB via streamkpi query")
        assert total > 0
        assert time.monotonic() - started < 45, "counts should show within ~30 s of start (plus slack for CI)"
    finally:
        demo.send_signal(signal.SIGINT)  # what Ctrl-C sends
        code = demo.wait(120)
    assert code == 0, output.read_text()[-3000:]
    assert not [pid for pid in pids if alive(pid)], output.read_text()[-2000:]
