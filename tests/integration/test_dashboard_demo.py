"""`streamkpi demo` starts the dashboard, prints its URL, the page's snapshot fills with the demo's
numbers, and Ctrl-C stops the dashboard with everything else."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from tests.integration.conftest import STREAMKPI, free_port, wait_for
from tests.integration.test_demo import alive

pytestmark = pytest.mark.integration


def get(url: str, path: str) -> tuple[int, bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_the_demo_serves_a_live_dashboard_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "STREAMKPI_STATE_DIR": str(tmp_path / "state"),
        "STREAMKPI_LOCAL_PORT": str(free_port()),
        "STREAMKPI_REDIS_PORT": str(free_port()),
    }
    for key in ("AWS_ENDPOINT_URL", "REDIS_URL"):
        env.pop(key, None)
    output = tmp_path / "demo.out"
    with output.open("wb") as out:
        demo = subprocess.Popen([STREAMKPI, "demo", "--rate", "100"], env=env, stdout=out, stderr=subprocess.STDOUT)
    dashboard_pid = None
    try:
        text = wait_for(lambda: "Press Ctrl-C" in output.read_text() and output.read_text(), 90, "demo started")
        url = re.search(r"Open the live dashboard: (http://127\.0\.0\.1:\d+/)", text)
        assert url, text
        pid = re.search(r"dashboard http://\S+ \(pid (\d+)", text)
        assert pid, text
        dashboard_pid = int(pid.group(1))
        status, page = get(url.group(1), "/")
        assert status == 200 and b"streamkpi" in page

        def counted() -> Any:
            status, body = get(url.group(1), "/snapshot.json")
            snap = orjson.loads(body) if status == 200 else None
            return snap and (snap["today"]["events"] or 0) > 0 and snap["shards"]["rows"] and snap

        snap = wait_for(counted, 60, "the demo's events on the dashboard")
        assert snap["problems"] == [] and snap["store"] == "redis"
        assert sum(m["total"] for m in snap["perMinute"]["minutes"]) > 0
        assert time.time() * 1000 - snap["generatedAtMs"] < 10_000
        # The demo's page is drawn from the default config's panels, with a file per range.
        assert [p["id"] for p in snap["panels"]][:2] == ["rate", "events-today"] and snap["range"]["id"] == "1h"
        status, body = get(url.group(1), "/snapshot-24h.json")
        day = orjson.loads(body)
        assert status == 200 and day["range"]["id"] == "24h"
        assert {p["id"]: p for p in day["panels"]}["minutes"]["resolution"] == "1h"
        status, metrics = get(url.group(1), "/metrics")
        assert status == 200 and b"streamkpi_shard_up{" in metrics
    finally:
        demo.send_signal(signal.SIGINT)
        code = demo.wait(120)
    assert code == 0, output.read_text()[-3000:]
    assert "stopped dashboard (exit 0)" in output.read_text()
    assert dashboard_pid is not None and not alive(dashboard_pid)
