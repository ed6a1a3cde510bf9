"""The first slice end to end: generator -> Kinesis (moto) -> real KCL daemon -> processor -> stores."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from consumer.health.redis_health import RedisHealth
from tests.integration.conftest import STREAMKPI, Stack, wait_for

pytestmark = pytest.mark.integration


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([STREAMKPI, *args], env=stack.env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def stored_counts(stack: Stack, store: str, from_ms: int, to_ms: int) -> dict[str, dict[str, int]]:
    out = cli(stack, "query", "--metric", "events", "--resolution", "1m", "--from", iso(from_ms), "--to", iso(to_ms),
              "--store", store, "--format", "json")  # fmt: skip
    windows = json.loads(out.stdout)["windows"]
    return {str(w["start_ms"]): w["groups"] for w in windows if w["groups"]}


def last_sequence_per_shard(stack: Stack) -> dict[str, str]:
    kinesis = stack.client("kinesis")
    last: dict[str, str] = {}
    for shard in kinesis.list_shards(StreamName=stack.settings.stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stack.settings.stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            if page["Records"]:
                last[shard["ShardId"]] = page["Records"][-1]["SequenceNumber"]
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")
    return last


def checkpoints(stack: Stack) -> dict[str, str]:
    items = stack.client("dynamodb").scan(TableName=stack.settings.app_name, ConsistentRead=True)["Items"]
    return {item["leaseKey"]["S"]: item["checkpoint"]["S"] for item in items}


def event_types(counts: dict[str, dict[str, int]]) -> set[str]:
    return {t for window in counts.values() for t in window}


def archived_events(stack: Stack) -> list[dict[str, Any]]:
    s3 = stack.client("s3")
    events = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=stack.settings.archive_bucket):
        for obj in page.get("Contents", []):
            if obj["Key"].startswith("dlq/"):
                continue
            body = s3.get_object(Bucket=stack.settings.archive_bucket, Key=obj["Key"])["Body"].read()
            events += [json.loads(line) for line in body.splitlines()]
    return events


def archived_event_types(stack: Stack) -> dict[str, int]:
    found: dict[str, int] = {}
    for event in archived_events(stack):
        found[event["eventType"]] = found.get(event["eventType"], 0) + 1
    return found


def dlq_ids(stack: Stack) -> dict[str, str]:
    """Every letter's identity and reason (read without deleting; visible again afterwards)."""
    sqs = stack.client("sqs")
    url = sqs.get_queue_url(QueueName=stack.settings.dlq_queue)["QueueUrl"]
    seen: dict[str, str] = {}
    handles: list[str] = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=300).get("Messages", [])
        if not messages:
            break
        for message in messages:
            body = json.loads(message["Body"])
            seen[body["id"]] = body["reason"]
            handles.append(message["ReceiptHandle"])
    for start in range(0, len(handles), 10):
        entries = [
            {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
            for i, h in enumerate(handles[start : start + 10])
        ]
        sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries)
    return seen


def test_two_thousand_events_over_two_shards_are_counted_exactly(
    stack: Stack, start_worker: Any, tmp_path: Path
) -> None:
    s = stack.fresh(shards=2)
    truth_file = tmp_path / "truth.json"
    cli(s, "generate", "--rate", "1000", "--duration", "2", "--invalid-fraction", "0.05", "--seed", "42",
        "--truth", str(truth_file))  # fmt: skip
    truth = json.loads(truth_file.read_text())
    assert truth["events_sent"] == 2000
    expected = truth["counts"]["events"]["1m"]
    starts = sorted(int(k) for k in expected)
    from_ms, to_ms = starts[0], starts[-1] + 60_000
    last = last_sequence_per_shard(s)
    assert len(last) == 2, "the generator's user ids spread records over both shards"

    worker = start_worker(s)
    wait_for(lambda: checkpoints(s) == last, 120, "every shard checkpointed at its last record")
    assert worker.process.poll() is None, worker.logs()[-3000:]

    # Exact per-type per-minute counts, in the durable and in the hot store.
    assert stored_counts(s, "dynamodb", from_ms, to_ms) == expected
    assert stored_counts(s, "redis", from_ms, to_ms) == expected
    assert sum(sum(w.values()) for w in expected.values()) == truth["valid"]

    # Every invalid event reached the DLQ, once each identity, with the generator's reason.
    assert dlq_ids(s) == {entry["id"]: entry["reason"] for entry in truth["invalid"]}

    # Every valid event was archived through Firehose as one NDJSON line (no crash: exactly once).
    assert archived_event_types(s) == {t: sum(w.get(t, 0) for w in expected.values()) for t in event_types(expected)}

    # Health per shard in Redis, for operators and the dashboard.
    health = RedisHealth(redis.Redis.from_url(s.settings.redis_url), s.settings.stream).read()
    assert sorted(health) == sorted(last)
    for shard, fields in health.items():
        assert fields["lastCheckpointSequence"] == last[shard] and int(fields["lastCheckpointMs"]) > 0

    assert worker.stop() == 0
    logs = [line for line in worker.logs().splitlines() if line.strip()]
    assert logs and all(line.startswith("{") for line in logs), "every log line is JSON"
