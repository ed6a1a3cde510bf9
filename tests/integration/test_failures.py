"""The worker under failure, with the real daemon: SIGTERM, SIGKILL and restart, a store outage.

What the daemon does when a Python child exits (seen with KCL 2.5.8): the MultiLangDaemon logs
"Child process failed to process records", shuts every other shard down gracefully and exits 1. So a
child that gives up on an unavailable store takes the whole worker down with a non-zero code and the
orchestrator restarts it: a shard never stalls silently.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Stack, Worker, free_port, wait_for
from tests.integration.test_kcl_end_to_end import (
    archived_events,
    checkpoints,
    cli,
    dlq_ids,
    last_sequence_per_shard,
    stored_counts,
)
from tests.integration.verify import merged_counts

pytestmark = pytest.mark.integration


def window_range(expected: dict[str, dict[str, int]]) -> tuple[int, int]:
    starts = sorted(int(k) for k in expected)
    return starts[0], starts[-1] + 60_000


def generate_in_background(stack: Stack, truth: Path, *args: str) -> threading.Thread:
    thread = threading.Thread(target=cli, args=(stack, "generate", "--truth", str(truth), *args), daemon=True)
    thread.start()
    return thread


def test_sigterm_checkpoints_every_shard_and_exits_0_within_the_grace(
    stack: Stack, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    s = stack.fresh(shards=2)
    truth_file = tmp_path / "t.json"
    cli(s, "generate", "--rate", "500", "--duration", "1", "--seed", "3", "--truth", str(truth_file))
    truth = json.loads(truth_file.read_text())
    expected = merged_counts(truth)
    from_ms, to_ms = window_range(expected)
    letters = {entry["id"]: entry["reason"] for entry in truth["invalid"]}
    assert letters, "the traffic holds invalid events: their letters tell that the records holding them were processed"
    # The periodic checkpoint is a day (or a billion records) away: only the shutdown checkpoint can land. DynamoDB
    # and the DLQ are flushed every second, so every record's effects become visible while no checkpoint moves.
    worker = start_worker(s, STREAMKPI_CHECKPOINT_SECONDS="86400", STREAMKPI_CHECKPOINT_RECORDS="1000000000")
    wait_for(
        lambda: stored_counts(s, "dynamodb", from_ms, to_ms) == expected and dlq_ids(s) == letters,
        240,
        "every record processed: its events counted in DynamoDB or dead-lettered",
        interval=1,
    )
    last = last_sequence_per_shard(s)
    assert len(last) == 2
    assert set(checkpoints(s).values()) == {"TRIM_HORIZON"}, "no checkpoint before the shutdown's"
    started = time.monotonic()
    assert worker.stop(signal.SIGTERM, timeout=120) == 0, worker.logs()[-3000:]
    assert time.monotonic() - started < s.settings.kcl_shutdown_grace_millis / 1000 + 5
    assert checkpoints(s) == last
    assert worker.logs().count("shutdown requested; checkpointed") == 2


def test_sigkill_mid_stream_then_restart_loses_nothing_and_counts_once(
    stack: Stack, start_worker: Any, tmp_path: Path
) -> None:
    s = stack.fresh(shards=2)
    worker = start_worker(s)
    wait_for(lambda: "shard initialized" in worker.logs(), 60, "worker started")
    truth_file = tmp_path / "truth.json"
    sender = generate_in_background(
        s, truth_file, "--rate", "500", "--duration", "6", "--seed", "11", "--invalid-fraction", "0.05"
    )
    wait_for(lambda: any(c != "TRIM_HORIZON" for c in checkpoints(s).values()), 60, "a first checkpoint")
    os.killpg(worker.process.pid, signal.SIGKILL)  # the whole worker: daemon and children, no goodbye
    worker.process.wait(10)
    sender.join(120)
    truth = json.loads(truth_file.read_text())
    last = last_sequence_per_shard(s)
    assert checkpoints(s) != last, "the kill came before the end, so there is something to redo"

    restarted = start_worker(s)
    wait_for(lambda: checkpoints(s) == last, 120, "every shard checkpointed at its last record after restart")
    expected = merged_counts(truth)
    from_ms, to_ms = window_range(expected)
    assert stored_counts(s, "dynamodb", from_ms, to_ms) == expected
    assert stored_counts(s, "redis", from_ms, to_ms) == expected
    # The DLQ may hold a redelivered letter twice; its distinct identities are exactly the invalid events.
    assert dlq_ids(s) == {entry["id"]: entry["reason"] for entry in truth["invalid"]}
    # The archive is at-least-once: every valid event is there (by eventId), perhaps more than once.
    archived = archived_events(s)
    assert len({e["eventId"] for e in archived}) == truth["valid"] <= len(archived)
    assert restarted.stop() == 0


def test_a_store_outage_makes_the_worker_exit_non_zero_and_a_restart_catches_up(
    stack: Stack, start_worker: Any, tmp_path: Path
) -> None:
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    server = [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", str(port),
              "--dir", str(data), "--appendonly", "yes", "--save", ""]  # fmt: skip

    def start_redis() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(server, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode == 0,
                 20, "redis up")  # fmt: skip
        return process

    redis_server = start_redis()
    s = stack.fresh(shards=2, REDIS_URL=f"redis://127.0.0.1:{port}/0", STREAMKPI_STORE_RETRY_SECONDS="3")
    try:
        worker = start_worker(s)
        wait_for(lambda: "shard initialized" in worker.logs(), 60, "worker started")
        first = tmp_path / "first.json"
        cli(s, "generate", "--rate", "500", "--duration", "1", "--seed", "5", "--truth", str(first))
        wait_for(lambda: checkpoints(s) == last_sequence_per_shard(s), 60, "first batch checkpointed")

        redis_server.terminate()
        redis_server.wait(10)
        second = tmp_path / "second.json"
        cli(s, "generate", "--rate", "500", "--duration", "1", "--seed", "6", "--truth", str(second))
        code = worker.process.wait(90)
        assert code != 0, "the worker must not go on (or stall) without its hot store"
        assert "exiting without checkpoint" in worker.logs()
        assert checkpoints(s) != last_sequence_per_shard(s)

        redis_server = start_redis()
        restarted = start_worker(s)
        last = last_sequence_per_shard(s)
        wait_for(lambda: checkpoints(s) == last, 120, "caught up after restart")
        expected = merged_counts(json.loads(first.read_text()), json.loads(second.read_text()))
        from_ms, to_ms = window_range(expected)
        assert stored_counts(s, "dynamodb", from_ms, to_ms) == expected
        assert stored_counts(s, "redis", from_ms, to_ms) == expected
        assert restarted.stop() == 0
    finally:
        redis_server.kill()
        redis_server.wait(10)
