"""Replay and rebuild end to end with the real daemon: generator -> stream -> worker -> Firehose -> S3
archive -> `streamkpi replay` -> a second stream -> a second worker, and `streamkpi rebuild`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import STREAMKPI, Stack, wait_for
from tests.integration.test_failures import window_range
from tests.integration.test_kcl_end_to_end import archived_events, checkpoints, cli, iso, last_sequence_per_shard

pytestmark = pytest.mark.integration


def counts(stack: Stack, store: str, resolution: str, from_ms: int, to_ms: int) -> dict[str, dict[str, int]]:
    out = cli(
        stack,
        "query",
        "--metric",
        "events",
        "--resolution",
        resolution,
        "--from",
        iso(from_ms),
        "--to",
        iso(to_ms),
        "--store",
        store,
        "--format",
        "json",
    )
    return {str(w["start_ms"]): w["groups"] for w in json.loads(out.stdout)["windows"] if w["groups"]}


def everything(stack: Stack, from_ms: int, to_ms: int) -> dict[tuple[str, str], dict[str, dict[str, int]]]:
    day = 86_400_000
    start, end = from_ms - from_ms % day, to_ms - to_ms % day + day
    return {
        (store, res): counts(stack, store, res, start, end)
        for store in ("dynamodb", "redis")
        for res in ("1m", "1h", "1d")
    }


def generate_and_process(stack: Stack, start_worker: Any, truth_file: Path, seed: str) -> tuple[dict[str, Any], Any]:
    cli(
        stack,
        "generate",
        "--rate",
        "1000",
        "--duration",
        "2",
        "--invalid-fraction",
        "0.05",
        "--seed",
        seed,
        "--truth",
        str(truth_file),
    )
    truth = json.loads(truth_file.read_text())
    worker = start_worker(stack)
    last = last_sequence_per_shard(stack)
    wait_for(lambda: checkpoints(stack) == last, 120, "the worker processed (and archived) every record")
    return truth, worker


def test_the_archive_replayed_into_a_second_stream_gives_the_same_counts(
    stack: Stack, start_worker: Any, tmp_path: Path
) -> None:
    first = stack.fresh(shards=2)
    truth, worker = generate_and_process(first, start_worker, tmp_path / "truth.json", "61")
    expected = truth["counts"]["events"]["1m"]
    from_ms, to_ms = window_range(expected)
    assert worker.stop() == 0
    original = archived_events(first)
    assert len(original) == truth["valid"]

    second = stack.fresh(shards=2)  # its own stream, lease table, metrics table and archive
    consumer = start_worker(second)
    out = cli(
        second,
        "replay",
        "--source",
        f"s3://{first.settings.archive_bucket}/",
        "--from",
        iso(from_ms),
        "--to",
        iso(to_ms),
        "--format",
        "json",
    )
    summary = json.loads(out.stdout)
    assert summary["ok"] and summary["events"]["delivered"] == truth["valid"], summary
    assert summary["layouts"] == ["firehose"] and summary["problems"] == 0
    assert summary["rate"] == 1800  # 90 % of 2 shards x 1,000 records/s
    wait_for(lambda: counts(second, "dynamodb", "1m", from_ms, to_ms) == expected, 120, "replayed events counted")
    assert counts(second, "redis", "1m", from_ms, to_ms) == expected
    # The second worker archived the replayed events in turn: the same events, byte for byte.
    wait_for(lambda: len(archived_events(second)) == len(original), 30, "second archive complete")
    assert sorted(map(json.dumps, archived_events(second))) == sorted(map(json.dumps, original))
    assert consumer.stop() == 0


def test_rebuild_from_the_archive_gives_back_every_aggregate(stack: Stack, start_worker: Any, tmp_path: Path) -> None:
    s = stack.fresh(shards=2)
    truth, worker = generate_and_process(s, start_worker, tmp_path / "truth.json", "62")
    from_ms, to_ms = window_range(truth["counts"]["events"]["1m"])
    before = everything(s, from_ms, to_ms)
    assert before[("dynamodb", "1m")] == truth["counts"]["events"]["1m"]
    first_minute = ["--from", iso(from_ms), "--to", iso(from_ms + 60_000)]

    # Stop the world: with the worker running, the rebuild refuses and changes nothing.
    refused = subprocess.run(
        [STREAMKPI, "rebuild", *first_minute, "--yes"], env=s.env, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 1 and "workers are running" in refused.stderr, refused.stderr[-2000:]
    assert everything(s, from_ms, to_ms) == before
    assert worker.stop() == 0

    out = cli(s, "rebuild", *first_minute, "--yes", "--format", "json")
    assert "reset " in out.stdout and "start the workers" in out.stdout
    summary = json.loads(out.stdout[out.stdout.index("{") : out.stdout.rindex("}") + 1])
    day = from_ms // 86_400_000  # the span is that whole day (1d windows); a run at midnight UTC splits traffic
    of_day = sum(sum(g.values()) for k, g in truth["counts"]["events"]["1m"].items() if int(k) // 86_400_000 == day)
    assert summary["ok"] and summary["events"]["delivered"] == of_day, summary
    assert counts(s, "dynamodb", "1m", from_ms, from_ms + 60_000) == {}  # the span was reset

    restarted = start_worker(s)
    wait_for(lambda: everything(s, from_ms, to_ms) == before, 120, "aggregates rebuilt at every resolution")
    assert restarted.stop() == 0
