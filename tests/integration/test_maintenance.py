"""Redis loss and the maintenance commands, with the real daemon, moto and redis-server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.conftest import Stack, wait_for
from tests.integration.test_failures import window_range
from tests.integration.test_kcl_end_to_end import checkpoints, cli, last_sequence_per_shard, stored_counts

pytestmark = pytest.mark.integration


def test_redis_flushed_under_a_running_worker_is_repaired_and_the_commands_work(
    stack: Stack, start_worker: Any, tmp_path: Path
) -> None:
    s = stack.fresh(shards=2)
    truth_file = tmp_path / "truth.json"
    cli(s, "generate", "--rate", "1000", "--duration", "1", "--seed", "8", "--truth", str(truth_file))
    expected = json.loads(truth_file.read_text())["counts"]["events"]["1m"]
    from_ms, to_ms = window_range(expected)
    worker = start_worker(s)
    last = last_sequence_per_shard(s)
    wait_for(lambda: checkpoints(s) == last, 120, "processed")
    assert stored_counts(s, "redis", from_ms, to_ms) == expected

    client = redis.Redis.from_url(s.settings.redis_url)
    repairs = worker.logs().count("hot store repaired from DynamoDB")  # once per shard at start
    client.flushall()  # what a Redis restart without persistence leaves
    # The workers notice at their next hot flush (every second) and refill from DynamoDB.
    wait_for(lambda: worker.logs().count("hot store repaired from DynamoDB") >= repairs + 2, 30, "both shards repair")
    wait_for(lambda: stored_counts(s, "redis", from_ms, to_ms) == expected, 30, "Redis repaired")
    assert worker.stop() == 0

    # rebuild-cache does the same on demand, for any range.
    client.flushall()
    out = cli(s, "rebuild-cache", "--from", from_ms_iso(from_ms), "--to", from_ms_iso(to_ms))
    assert "copied" in out.stdout
    assert stored_counts(s, "redis", from_ms, to_ms) == expected

    # reset empties every overlapping window in both stores and says what to replay.
    out = cli(s, "reset", "--from", from_ms_iso(from_ms), "--to", from_ms_iso(to_ms), "--yes")
    assert "to rebuild, replay the archive" in out.stdout
    assert stored_counts(s, "dynamodb", from_ms, to_ms) == {} == stored_counts(s, "redis", from_ms, to_ms)


def from_ms_iso(ms: int) -> str:
    from aggregations.query import iso

    return iso(ms)
