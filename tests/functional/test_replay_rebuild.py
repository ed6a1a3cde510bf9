"""The rebuild workflow with the real ShardWorker, in-memory stores and moto's S3 and Kinesis:
reset the span of whole windows, replay it from the archive, let restarted workers count the stream,
and every metric at every resolution equals what it was before."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import boto3
import orjson
import pytest
from moto import mock_aws

from aggregations.memory_store import MemoryStore
from aggregations.query import read_metric
from consumer.dlq.memory import MemoryDeadLetterQueue
from consumer.worker import Cadence, Outputs, ShardWorker, Stores
from replay.rebuild import rebuild_span, run_rebuild, running_leases
from replay.runner import ReplayOptions, Summary
from streamkpi.config import load_config
from tests.functional.moto_aws import read_stream
from tests.functional.replay_fakes import (
    HOUR,
    T0,
    Clock,
    FlakyKinesis,
    Interrupted,
    archive_and_stream,
    event_ms,
    write_archive,
)

CONFIG = load_config(None)
RESOLUTIONS = CONFIG.resolutions
DAY = 86_400_000
EAGER = Cadence(redis_flush_seconds=0, dynamodb_flush_seconds=0, checkpoint_seconds=0, store_retry_seconds=0)
BUCKET, STREAM = "archive-bucket", "events"


@pytest.fixture
def aws(moto: None) -> tuple[Any, Any]:
    return archive_and_stream(BUCKET, STREAM)


def day_events(n: int = 400) -> list[dict[str, Any]]:
    """Browser and business events over 26 hours: the evening before, and most of the day of T0."""
    start = T0 - T0 % DAY - 3 * HOUR
    events = []
    for i in range(n):
        kind = ("page.view", "donation.made", "user.created", "user.verified")[i % 4]
        event: dict[str, Any] = {"eventType": kind, "timestamp": start + i * 26 * HOUR // n, "userId": f"u{i % 37}"}
        if kind == "page.view":
            event["path"] = f"/p/{i % 5}"
        if kind == "donation.made":
            event["data"] = {"amount": 5 + i % 7, "currency": "GBP", "charityId": f"c{i % 3}"}
        events.append(event)
    return events


def process(worker: ShardWorker, records: list[tuple[bytes, str]], arrival_ms: int) -> None:
    worker.process([(data, seq, 0, "pk", arrival_ms) for data, seq in records])
    worker.flush_durable()


def new_worker(shard: str, durable: MemoryStore, hot: MemoryStore) -> ShardWorker:
    cadence = replace(EAGER, wall_ms=lambda: T0 + DAY)
    return ShardWorker(shard, STREAM, CONFIG.pipeline, Stores(durable, hot), Outputs(MemoryDeadLetterQueue()), cadence)


def snapshot(store: MemoryStore) -> dict[tuple[str, str], Any]:
    first, last = T0 - T0 % DAY - DAY, T0 - T0 % DAY + 2 * DAY
    return {
        (r.name, m.name): read_metric(store, r, m.name, first, last, None, None, m.by)["windows"]
        for r in RESOLUTIONS
        for m in CONFIG.metric_set.metrics
    }


def original_processing(events: list[dict[str, Any]]) -> tuple[MemoryStore, MemoryStore, ShardWorker]:
    durable, hot = MemoryStore("dynamodb"), MemoryStore("redis")
    worker = new_worker("shardId-000000000000", durable, hot)  # as if all had come through the first shard
    process(worker, [(orjson.dumps(e), str(i + 1)) for i, e in enumerate(events)], T0 + DAY)
    return durable, hot, worker


def consume_stream(kinesis: Any, workers: dict[str, ShardWorker], durable: MemoryStore, hot: MemoryStore) -> int:
    records = read_stream(kinesis, STREAM)
    for shard in sorted({r["shard"] for r in records}):
        worker = workers.get(shard) or new_worker(shard, durable, hot)
        process(worker, [(r["data"], str(r["seq"])) for r in records if r["shard"] == shard], T0 + DAY)
    return len(records)


def rebuild(s3: Any, kinesis: Any, stores: list[tuple[str, Any]], resume: Any, echo: list[str]) -> Summary:
    span = rebuild_span(RESOLUTIONS, T0 + 10 * 60_000, T0 + 20 * 60_000)  # ten minutes asked for
    options = ReplayOptions(bucket=BUCKET, prefix="", stream=STREAM, from_ms=span[0], to_ms=span[1], resume=resume)
    clock = Clock()
    return run_rebuild(
        stores=stores,
        resolutions=RESOLUTIONS,
        s3=s3,
        kinesis=kinesis,
        options=options,
        echo=echo.append,
        clock=clock,
        sleep=clock.sleep,
    )


def test_the_span_is_whole_windows_of_every_resolution() -> None:
    span = rebuild_span(RESOLUTIONS, T0 + 10 * 60_000, T0 + 20 * 60_000)
    assert span == (T0 - T0 % DAY, T0 - T0 % DAY + DAY)  # the whole day: its 1d window is emptied
    assert rebuild_span(RESOLUTIONS, *span) == span


def test_reset_and_replay_then_restarted_workers_give_back_every_aggregate(aws: Any, tmp_path: Any) -> None:
    s3, kinesis = aws
    events = day_events()
    durable, hot, _ = original_processing(events)
    write_archive(s3, BUCKET, events, "firehose", "ndjson", per_object=3)  # ~12 min each
    before_durable, before_hot = snapshot(durable), snapshot(hot)
    echo: list[str] = []
    summary = rebuild(s3, kinesis, [("DynamoDB", durable), ("Redis", hot)], tmp_path / "rebuild.json", echo)
    assert summary.ok and echo[0].startswith("reset ")
    day = T0 - T0 % DAY
    in_span = [e for e in events if day <= event_ms(e) < day + DAY]
    assert summary.events_delivered == len(in_span) < len(events)  # the evening before is not replayed
    assert not (tmp_path / "rebuild.json").exists(), "a finished rebuild leaves no progress file"
    assert snapshot(durable) != before_durable  # reset: the day's windows are empty until the stream is read
    assert consume_stream(kinesis, {}, durable, hot) == len(in_span)  # the workers, restarted
    assert snapshot(durable) == before_durable
    assert snapshot(hot) == before_hot


def test_a_worker_that_kept_running_would_count_twice_so_the_rebuild_stops_the_world(aws: Any, tmp_path: Any) -> None:
    s3, kinesis = aws
    events = day_events()
    durable, hot, running = original_processing(events)
    write_archive(s3, BUCKET, events, "firehose", "ndjson", per_object=3)  # ~12 min each
    before = snapshot(durable)
    rebuild(s3, kinesis, [("DynamoDB", durable), ("Redis", hot)], tmp_path / "rebuild.json", [])
    # The old worker still holds the day's windows in memory: it adds the replayed events to them.
    consume_stream(kinesis, {"shardId-000000000000": running}, durable, hot)
    assert snapshot(durable) != before


def test_an_interrupted_rebuild_continues_without_a_second_reset(aws: Any, tmp_path: Any) -> None:
    s3, kinesis = aws
    events = day_events()
    durable, hot, _ = original_processing(events)
    write_archive(s3, BUCKET, events, "firehose", "ndjson", per_object=3)  # ~12 min each
    before = snapshot(durable)
    resume = tmp_path / "rebuild.json"
    echo: list[str] = []
    with pytest.raises(Interrupted):
        rebuild(s3, FlakyKinesis(kinesis, crash_before_call=2), [("DynamoDB", durable), ("Redis", hot)], resume, echo)
    assert resume.exists() and echo[0].startswith("reset ")
    # The first replayed records are in the stream; a second reset now would lose nothing, but a second
    # full replay would count them twice. The rebuild goes on where it stopped.
    summary = rebuild(s3, kinesis, [("DynamoDB", durable), ("Redis", hot)], resume, echo)
    assert summary.ok and echo[1].startswith("continuing the interrupted rebuild")
    consume_stream(kinesis, {}, durable, hot)
    assert snapshot(durable) == before


def test_running_workers_are_seen_in_the_lease_table(aws: Any) -> None:
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        assert running_leases(dynamodb, "no-such-app", 0.01, lambda s: None) is None
        dynamodb.create_table(
            TableName="app",
            AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        for shard, owner in (("s-0", "w1"), ("s-1", "w1"), ("s-2", "")):
            item = {"leaseKey": {"S": shard}, "leaseCounter": {"N": "1"}}
            if owner:
                item["leaseOwner"] = {"S": owner}
            dynamodb.put_item(TableName="app", Item=item)

        def renew(_: float) -> None:  # a worker renews s-0 while we wait; s-1 was left by a stopped one
            dynamodb.update_item(
                TableName="app",
                Key={"leaseKey": {"S": "s-0"}},
                UpdateExpression="SET leaseCounter = :c",
                ExpressionAttributeValues={":c": {"N": "2"}},
            )

        assert running_leases(dynamodb, "app", 0.01, renew) == ["s-0"]
        assert running_leases(dynamodb, "app", 0.01, lambda s: None) == []
