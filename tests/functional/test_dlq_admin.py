"""DLQ operations (deadletters/admin.py, deadletters/redrive.py and `streamkpi dlq ...`) against moto
in-process: stats and peek count and show without deleting; redrive puts what now validates back into
the stream (same bytes, same partition key) and deletes only that, each letter once across runs and
crashes; --dry-run changes nothing; a payload is read only from the DLQ's bucket and prefix."""

from __future__ import annotations

import dataclasses
import gzip
import logging
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from botocore.exceptions import ReadTimeoutError
from typer.testing import CliRunner

from consumer.dlq import MAX_PAYLOAD_BYTES, DeadLetter, PayloadUnavailableError, dlq_message, letter_payload, s3_key
from consumer.dlq.sqs import SqsDeadLetterQueue
from consumer.validate import Rules
from deadletters import admin as dlq_admin
from deadletters import redrive as redrive_mod
from deadletters.ledger import DEFAULT_TIMING, new_entry, shards_for_key
from deadletters.ledger_dynamodb import DynamoDbRedriveLedger
from devstack.resources import ensure_table
from streamkpi.cli import app
from tests.functional.moto_aws import read_stream
from tests.unit.test_redrive_ledger import check_ledger_conditions

QUEUE, BUCKET, STREAM, TABLE = "dlq", "archive", "events", "metrics"
NOW_MS = int(datetime.now(UTC).timestamp() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(event_type: str = "page.view", **extra: Any) -> dict[str, Any]:
    return {"eventType": event_type, "timestamp": iso(NOW_MS - 60_000), "path": "/", **extra}


BASE = DeadLetter(
    stream=STREAM,
    shard_id="shardId-000000000000",
    sequence_number="49590338271490256608559692538361571095921575989136588898",
    sub_sequence_number=0,
    index=0,
    partition_key="pk",
    arrival_ms=NOW_MS - 600_000,
    reason="in_future",
    detail="",
    payload=b"",
)


def letter(n: int, reason: str, payload: bytes, partition_key: str | None = None) -> DeadLetter:
    return dataclasses.replace(BASE, index=n, reason=reason, payload=payload, partition_key=partition_key or f"pk-{n}")


# Payloads that validate now (they were rejected under other rules or another clock) ...
NOW_VALID = [
    letter(0, "in_future", orjson.dumps(event(userId="u0"))),
    letter(1, "unknown_type", orjson.dumps(event("user.created", userId="u1")), partition_key="user-1"),
    letter(2, "in_future", gzip.compress(orjson.dumps(event()) + b"\n" + orjson.dumps(event("user.verified")))),
    # In S3 (over 250 kB): five events, each under the worker's bound on one event's bytes.
    letter(3, "in_future", b"\n".join(orjson.dumps(event(data={"blob": "b" * 60_000})) for _ in range(5))),
]
# ... and payloads that still fail.
STILL_INVALID = [
    letter(10, "not_json", b'{"eventType": broken'),
    letter(11, "not_json", b"\xff\xfe not text"),
    letter(12, "schema", orjson.dumps(event("donation.made", data={"amount": "12"}))),
    letter(13, "missing_field", orjson.dumps({"timestamp": iso(NOW_MS)})),
    letter(14, "missing_field", orjson.dumps({"eventType": "page.view"})),
]
SCHEMA_RULES = Rules(
    schemas={"donation.made": lambda e: e["data"]["amount"] + 0},  # raises on a string amount
)


@pytest.fixture
def aws(moto: None) -> dict[str, Any]:
    sqs = boto3.client("sqs", region_name="us-east-1")
    s3 = boto3.client("s3", region_name="us-east-1")
    kinesis = boto3.client("kinesis", region_name="us-east-1")
    url = sqs.create_queue(QueueName=QUEUE, Attributes={"MaximumMessageSize": "262144"})["QueueUrl"]
    s3.create_bucket(Bucket=BUCKET)
    kinesis.create_stream(StreamName=STREAM, ShardCount=2)
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    ensure_table(dynamodb, TABLE, [("pk", "S", "HASH"), ("sk", "S", "RANGE")], "expires_at")
    ledger = DynamoDbRedriveLedger(dynamodb, TABLE)
    return {"sqs": sqs, "s3": s3, "kinesis": kinesis, "url": url, "dynamodb": dynamodb, "ledger": ledger}


def fill(aws: dict[str, Any], letters: list[DeadLetter]) -> None:
    SqsDeadLetterQueue(aws["sqs"], aws["url"], s3_client=aws["s3"], bucket=BUCKET).send(letters)


def visible(aws: dict[str, Any]) -> int:
    attributes = aws["sqs"].get_queue_attributes(QueueUrl=aws["url"], AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def queued_ids(aws: dict[str, Any]) -> Counter[str]:
    """Letter ids of every message in the queue (received with visibility 0, so they stay)."""
    scanner = dlq_admin.Scanner(aws["sqs"], aws["url"], visibility_timeout=30, wait_seconds=0)
    messages = [m for batch in scanner.batches() for m in batch]
    scanner.release([m.message_id for m in messages])
    return Counter(m.letter_id for m in messages)


def stream_records(kinesis: Any, stream: str = STREAM) -> list[tuple[bytes, str]]:
    return [(r["data"], r["key"]) for r in read_stream(kinesis, stream)]


def wall_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def redrive(aws: dict[str, Any], **kwargs: Any) -> redrive_mod.RedriveResult:
    context = redrive_mod.Context(
        kinesis=kwargs.pop("kinesis", aws["kinesis"]),
        stream=kwargs.pop("stream", STREAM),
        rules=kwargs.pop("rules", SCHEMA_RULES),
        ledger=kwargs.pop("ledger", aws["ledger"]),
        s3=aws["s3"],
        bucket=kwargs.pop("bucket", BUCKET),
        now_ms=lambda: NOW_MS,
        clock_ms=kwargs.pop("clock_ms", wall_ms),
        sleep=lambda s: None,
        attempts=kwargs.pop("attempts", 5),
    )
    return redrive_mod.redrive(aws["sqs"], aws["url"], context, wait_seconds=0, **kwargs)


# -- pure helpers ---------------------------------------------------------------------------------


def test_judge_wants_every_event_valid() -> None:
    rules = Rules()
    assert dlq_admin.judge(orjson.dumps(event()), "pk", NOW_MS, rules).ok
    mixed = orjson.dumps([event(), {"eventType": "x"}])
    assert dlq_admin.judge(mixed, "pk", NOW_MS, rules) == dlq_admin.Verdict(
        False, "missing_field", "event 1: timestamp is missing"
    )
    assert dlq_admin.judge(b"[]", "pk", NOW_MS, rules).reason == dlq_admin.NO_EVENTS
    assert dlq_admin.judge(b"{", "pk", NOW_MS, rules).reason == "not_json"
    assert dlq_admin.judge(orjson.dumps(event()), "", NOW_MS, rules).reason == dlq_admin.UNREADABLE
    huge = orjson.dumps(event(data={"x": "y" * 1_100_000}))
    assert dlq_admin.judge(huge, "pk", NOW_MS, rules).reason == dlq_admin.TOO_LARGE_FOR_STREAM


def test_preview_replaces_bad_utf8_and_cuts() -> None:
    assert dlq_admin.preview(b"ok \xff") == "ok \ufffd"
    assert dlq_admin.preview(b"a" * 500, chars=10) == "a" * 10 + "…"


# -- stats and peek -------------------------------------------------------------------------------


def test_stats_counts_every_message_once_and_deletes_none(aws: dict[str, Any]) -> None:
    letters = (
        [letter(n, "not_json", b"x") for n in range(12)]
        + [letter(100 + n, "schema", b"{}") for n in range(7)]
        + [letter(200, "too_large", b"z" * 300_000)]
    )
    fill(aws, letters)
    aws["sqs"].send_message(QueueUrl=aws["url"], MessageBody="not a DLQ message")
    first = dlq_admin.stats(aws["sqs"], aws["url"], wait_seconds=0)
    assert first.by_reason == {"not_json": 12, "schema": 7, "too_large": 1, dlq_admin.UNREADABLE: 1}
    assert first.total == 21
    assert first.approximate == {"visible": 21, "inFlight": 0, "delayed": 0}
    assert not first.incomplete
    assert visible(aws) == 21  # all visible again
    second = dlq_admin.stats(aws["sqs"], aws["url"], wait_seconds=0)
    assert second.by_reason == first.by_reason
    assert queued_ids(aws) == Counter({lt.identity: 1 for lt in letters} | {"": 1})


class RepeatingSqs:
    """moto's SQS, but every receive also hands out again the first message of the previous one (as SQS may)."""

    def __init__(self, sqs: Any) -> None:
        self.sqs = sqs
        self.previous: dict[str, Any] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sqs, name)

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        messages = self.sqs.receive_message(**kwargs).get("Messages", [])
        repeated = [self.previous] if self.previous and messages else []
        self.previous = messages[0] if messages else None
        return {"Messages": messages + repeated}


def test_a_message_received_twice_is_counted_once(aws: dict[str, Any]) -> None:
    fill(aws, [letter(n, "not_json", b"x") for n in range(25)])
    result = dlq_admin.stats(RepeatingSqs(aws["sqs"]), aws["url"], wait_seconds=0)
    assert result.by_reason == {"not_json": 25}
    assert visible(aws) == 25


def test_stats_notices_messages_it_could_not_see(aws: dict[str, Any]) -> None:
    fill(aws, [letter(n, "not_json", b"x") for n in range(5)])
    # Someone else holds two messages in flight: the approximate count shows them, the scan cannot.
    aws["sqs"].receive_message(QueueUrl=aws["url"], MaxNumberOfMessages=2, VisibilityTimeout=60)
    result = dlq_admin.stats(aws["sqs"], aws["url"], wait_seconds=0)
    assert result.total == 3
    assert result.approximate["inFlight"] == 2


def test_peek_shows_n_with_previews_and_deletes_none(aws: dict[str, Any]) -> None:
    fill(aws, [NOW_VALID[3], STILL_INVALID[1], STILL_INVALID[0], NOW_VALID[0]])
    rows = dlq_admin.peek(aws["sqs"], aws["s3"], aws["url"], 3, wait_seconds=0, bucket=BUCKET)
    assert len(rows) == 3
    assert len({row["messageId"] for row in rows}) == 3
    assert visible(aws) == 4
    assert sum(queued_ids(aws).values()) == 4
    rows = dlq_admin.peek(aws["sqs"], aws["s3"], aws["url"], 10, wait_seconds=0, bucket=BUCKET)
    all_rows = {row["id"]: row for row in rows}
    assert len(all_rows) == 4
    big = all_rows[NOW_VALID[3].identity]
    assert big["payloadS3"] == {"bucket": BUCKET, "key": s3_key(NOW_VALID[3]), "bytes": len(NOW_VALID[3].payload)}
    assert big["preview"].startswith('{"eventType":"page.view"')
    assert big["payloadBytes"] == len(NOW_VALID[3].payload)
    bad = all_rows[STILL_INVALID[1].identity]
    assert bad["preview"] == "\ufffd\ufffd not text"
    assert bad["reason"] == "not_json"
    assert bad["partitionKey"] == "pk-11"
    assert bad["arrival"] == iso(BASE.arrival_ms).replace("Z", "+00:00")
    assert bad["payloadS3"] is None


# -- redrive --------------------------------------------------------------------------------------


def test_redrive_puts_what_now_validates_and_keeps_the_rest(aws: dict[str, Any]) -> None:
    fill(aws, NOW_VALID + STILL_INVALID)
    fill(aws, [NOW_VALID[0]])  # a duplicate delivery of the same letter (standard queue, worker restart)
    result = redrive(aws)
    assert result.redriven == len(NOW_VALID)
    assert result.duplicates == 1
    assert result.deleted == len(NOW_VALID) + 1
    assert result.kept == {"not_json": 1, "not_utf8": 1, "schema": 1, "missing_field": 2}
    assert result.not_deleted == 0
    records = stream_records(aws["kinesis"])
    assert Counter(records) == Counter((lt.payload, lt.partition_key) for lt in NOW_VALID)  # once each
    assert queued_ids(aws) == Counter({lt.identity: 1 for lt in STILL_INVALID})
    assert visible(aws) == len(STILL_INVALID)
    # A second run finds nothing more to do and changes nothing.
    again = redrive(aws)
    assert again.redriven == 0 and sum(again.kept.values()) == len(STILL_INVALID)
    assert len(stream_records(aws["kinesis"])) == len(NOW_VALID)


def test_dry_run_changes_nothing(aws: dict[str, Any]) -> None:
    fill(aws, NOW_VALID + STILL_INVALID)
    before = queued_ids(aws)
    result = redrive(aws, dry_run=True)
    assert result.redriven == len(NOW_VALID)
    assert sum(result.kept.values()) == len(STILL_INVALID)
    assert result.deleted == 0
    assert stream_records(aws["kinesis"]) == []
    assert queued_ids(aws) == before
    assert visible(aws) == len(NOW_VALID) + len(STILL_INVALID)


class RefusingKinesis:
    """moto's Kinesis, but the first `refuse_calls` put_records calls refuse the entries of `keys`."""

    def __init__(self, kinesis: Any, keys: set[str], refuse_calls: int) -> None:
        self.kinesis, self.keys, self.refuse_calls = kinesis, keys, refuse_calls
        self.calls: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kinesis, name)

    def put_records(self, *, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append([r["PartitionKey"] for r in Records])
        refuse = self.refuse_calls > 0
        self.refuse_calls -= 1
        passed = [r for r in Records if not (refuse and r["PartitionKey"] in self.keys)]
        accepted = iter(self.kinesis.put_records(StreamName=StreamName, Records=passed)["Records"] if passed else [])
        refused = {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded"}
        return {"Records": [refused if refuse and r["PartitionKey"] in self.keys else next(accepted) for r in Records]}


def test_refused_puts_are_retried_and_nothing_is_deleted_before_it_is_in_the_stream(aws: dict[str, Any]) -> None:
    fill(aws, NOW_VALID)
    keys = {NOW_VALID[1].partition_key, NOW_VALID[3].partition_key}
    kinesis = RefusingKinesis(aws["kinesis"], keys, refuse_calls=2)
    result = redrive(aws, kinesis=kinesis)
    assert [len(call) for call in kinesis.calls] == [4, 2, 2]  # only the refused entries again
    assert set(kinesis.calls[1]) == keys
    assert result.redriven == 4 and result.kept == {}
    assert Counter(stream_records(aws["kinesis"])) == Counter((lt.payload, lt.partition_key) for lt in NOW_VALID)
    assert visible(aws) == 0


def test_letters_kinesis_keeps_refusing_stay_in_the_queue(aws: dict[str, Any]) -> None:
    fill(aws, NOW_VALID)
    keys = {NOW_VALID[0].partition_key, NOW_VALID[2].partition_key}
    result = redrive(aws, kinesis=RefusingKinesis(aws["kinesis"], keys, refuse_calls=100), attempts=3)
    assert result.redriven == 2
    assert result.kept == {dlq_admin.PUT_FAILED: 2}
    assert queued_ids(aws) == Counter({NOW_VALID[0].identity: 1, NOW_VALID[2].identity: 1})
    assert sorted(pk for _, pk in stream_records(aws["kinesis"])) == ["pk-3", "user-1"]
    # Surely not in the stream: their ledger entries are gone, so the next run puts them at once.
    assert aws["ledger"].get(STREAM, [NOW_VALID[0].identity, NOW_VALID[2].identity]) == {}
    again = redrive(aws)
    assert again.redriven == 2 and again.kept == {}
    assert Counter(stream_records(aws["kinesis"])) == Counter((lt.payload, lt.partition_key) for lt in NOW_VALID)


def test_a_missing_stream_is_an_error_that_says_what_to_do(aws: dict[str, Any]) -> None:
    fill(aws, NOW_VALID)
    with pytest.raises(dlq_admin.DlqAdminError, match="does not exist; is the stack up"):
        redrive(aws, stream="no-such-stream")
    assert visible(aws) == len(NOW_VALID)


def test_a_missing_queue_is_an_error_that_says_what_to_do(aws: dict[str, Any]) -> None:
    with pytest.raises(dlq_admin.DlqAdminError, match="streamkpi local up"):
        dlq_admin.resolve_queue(aws["sqs"], "no-such-queue")


# -- exactly once across runs and crashes ---------------------------------------------------------

SETTLED_MS = DEFAULT_TIMING.put_window_ms + DEFAULT_TIMING.settle_ms


class Clock:
    """The ledger's clock: the real time (moto stamps records with it) plus what a test skips ahead."""

    def __init__(self) -> None:
        self.skipped_ms = 0

    def __call__(self) -> int:
        return wall_ms() + self.skipped_ms

    def skip(self, ms: int) -> None:
        self.skipped_ms += ms


class Crash(BaseException):
    """The process dies here: nothing after it runs (`finally` blocks aside, which is what SQS's visibility
    timeout does for a dead process anyway: the messages come back)."""


class CrashingLedger:
    """The real ledger, but the process dies at the first call of `method`."""

    def __init__(self, ledger: Any, method: str) -> None:
        self.ledger, self.method = ledger, method

    def __getattr__(self, name: str) -> Any:
        if name == self.method:
            raise Crash(name)
        return getattr(self.ledger, name)


class FlakyKinesis:
    """moto's Kinesis with one put_records call going wrong: `before` dies before sending, `first_only`
    sends only the first record and dies, `timeout` sends everything and then times out."""

    def __init__(self, kinesis: Any, mode: str) -> None:
        self.kinesis, self.mode, self.calls = kinesis, mode, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kinesis, name)

    def put_records(self, *, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls += 1
        if self.calls > 1:
            return self.kinesis.put_records(StreamName=StreamName, Records=Records)
        if self.mode == "before":
            raise Crash("before the put")
        if self.mode == "first_only":
            self.kinesis.put_records(StreamName=StreamName, Records=Records[:1])
            raise Crash("after the first record")
        self.kinesis.put_records(StreamName=StreamName, Records=Records)
        raise ReadTimeoutError(endpoint_url="https://kinesis")


def once_each(letters: list[DeadLetter]) -> Counter[tuple[bytes, str]]:
    return Counter((lt.payload, lt.partition_key) for lt in letters)


def test_redrive_three_times_counts_each_letter_once(aws: dict[str, Any]) -> None:
    fill(aws, NOW_VALID + STILL_INVALID + [NOW_VALID[0]])  # one letter twice in the queue
    first = redrive(aws)
    assert (first.redriven, first.duplicates, first.deleted) == (4, 1, 5)
    # The worker crashes and sends some letters again (the DLQ is at least once) after they were redriven.
    fill(aws, [NOW_VALID[0], NOW_VALID[3]])
    second = redrive(aws)
    assert (second.redriven, second.duplicates, second.deleted) == (0, 2, 2)
    fill(aws, [NOW_VALID[1], NOW_VALID[1]])
    third = redrive(aws)
    assert (third.redriven, third.duplicates, third.deleted) == (0, 2, 2)
    assert Counter(stream_records(aws["kinesis"])) == once_each(NOW_VALID)
    assert queued_ids(aws) == Counter({lt.identity: 1 for lt in STILL_INVALID})
    entries = aws["ledger"].get(STREAM, [lt.identity for lt in NOW_VALID + STILL_INVALID])
    assert set(entries) == {lt.identity for lt in NOW_VALID}
    assert all(e.done and e.sequence_number for e in entries.values())


def test_a_crash_after_the_put_before_the_ledger_says_done_puts_nothing_again(aws: dict[str, Any]) -> None:
    fill(aws, NOW_VALID)
    clock = Clock()
    with pytest.raises(Crash):
        redrive(aws, ledger=CrashingLedger(aws["ledger"], "claim"), clock_ms=clock)
    assert Counter(stream_records(aws["kinesis"])) == once_each(NOW_VALID)
    assert sum(queued_ids(aws).values()) == len(NOW_VALID)  # nothing deleted
    # Right away, the crashed run might still be putting: nothing is done, and the result says when.
    early = redrive(aws, clock_ms=clock)
    assert early.kept == {dlq_admin.REDRIVE_PENDING: len(NOW_VALID)}
    assert early.retry_after_ms is not None and early.retry_after_ms > clock()
    clock.skip(SETTLED_MS)
    later = redrive(aws, clock_ms=clock)
    assert (later.recovered, later.redriven, later.deleted, later.kept) == (len(NOW_VALID), 0, len(NOW_VALID), {})
    assert Counter(stream_records(aws["kinesis"])) == once_each(NOW_VALID)
    assert visible(aws) == 0
    entries = aws["ledger"].get(STREAM, [lt.identity for lt in NOW_VALID])
    assert all(e.done for e in entries.values()) and len(entries) == len(NOW_VALID)


def test_a_crash_between_the_ledger_and_the_put_loses_nothing(aws: dict[str, Any]) -> None:
    fill(aws, NOW_VALID)
    clock = Clock()
    with pytest.raises(Crash):
        redrive(aws, kinesis=FlakyKinesis(aws["kinesis"], "before"), clock_ms=clock)
    assert stream_records(aws["kinesis"]) == []
    clock.skip(SETTLED_MS)
    later = redrive(aws, clock_ms=clock)
    assert (later.recovered, later.redriven, later.kept) == (0, len(NOW_VALID), {})
    assert Counter(stream_records(aws["kinesis"])) == once_each(NOW_VALID)
    assert visible(aws) == 0


def test_letters_with_the_same_bytes_and_key_each_count_once(aws: dict[str, Any]) -> None:
    """A producer's retry: two letters, one payload, one key. One was put before the crash; the record
    found in the stream can stand for one of them only."""
    twins = [letter(n, "in_future", orjson.dumps(event(userId="twin")), partition_key="twin") for n in (40, 41)]
    fill(aws, twins)
    clock = Clock()
    with pytest.raises(Crash):
        redrive(aws, kinesis=FlakyKinesis(aws["kinesis"], "first_only"), clock_ms=clock)
    assert len(stream_records(aws["kinesis"])) == 1
    clock.skip(SETTLED_MS)
    later = redrive(aws, clock_ms=clock)
    assert (later.recovered, later.redriven) == (1, 1)
    assert Counter(stream_records(aws["kinesis"])) == once_each(twins)  # the same record twice, one per letter
    assert visible(aws) == 0


def test_a_record_another_letter_put_does_not_stand_for_a_twin_put_a_minute_later(aws: dict[str, Any]) -> None:
    twins = [letter(n, "in_future", orjson.dumps(event(userId="twin")), partition_key="twin") for n in (42, 43)]
    fill(aws, twins[:1])
    clock = Clock()
    assert redrive(aws, clock_ms=clock).redriven == 1  # claimed its record
    fill(aws, twins[1:])
    with pytest.raises(Crash):
        redrive(aws, kinesis=FlakyKinesis(aws["kinesis"], "before"), clock_ms=clock)
    clock.skip(SETTLED_MS)
    later = redrive(aws, clock_ms=clock)
    assert (later.recovered, later.redriven) == (0, 1)
    assert Counter(stream_records(aws["kinesis"])) == once_each(twins)


def test_the_record_a_letter_came_from_is_not_taken_for_its_put(aws: dict[str, Any]) -> None:
    payload = orjson.dumps(event(userId="u9"))
    original = aws["kinesis"].put_record(StreamName=STREAM, Data=payload, PartitionKey="u9")
    own = dataclasses.replace(
        BASE, shard_id=original["ShardId"], sequence_number=original["SequenceNumber"], partition_key="u9"
    )
    own = dataclasses.replace(own, payload=payload)
    fill(aws, [own])
    clock = Clock()
    with pytest.raises(Crash):
        redrive(aws, kinesis=FlakyKinesis(aws["kinesis"], "before"), clock_ms=clock)
    clock.skip(SETTLED_MS)
    later = redrive(aws, clock_ms=clock)
    assert (later.recovered, later.redriven) == (0, 1)
    assert stream_records(aws["kinesis"]) == [(payload, "u9"), (payload, "u9")]


def test_a_put_whose_outcome_is_unknown_is_never_sent_again_blindly(aws: dict[str, Any]) -> None:
    fill(aws, NOW_VALID)
    clock = Clock()
    first = redrive(aws, kinesis=FlakyKinesis(aws["kinesis"], "timeout"), clock_ms=clock)
    assert first.redriven == 0 and first.kept == {dlq_admin.REDRIVE_PENDING: len(NOW_VALID)}
    clock.skip(SETTLED_MS)
    later = redrive(aws, clock_ms=clock)
    assert (later.recovered, later.redriven) == (len(NOW_VALID), 0)
    assert Counter(stream_records(aws["kinesis"])) == once_each(NOW_VALID)
    assert visible(aws) == 0


class ShortReplyKinesis:
    """moto's Kinesis whose first put_records reply leaves out its last answer (the record is stored)."""

    def __init__(self, kinesis: Any) -> None:
        self.kinesis, self.calls = kinesis, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kinesis, name)

    def put_records(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        reply = self.kinesis.put_records(**kwargs)
        return {**reply, "Records": reply["Records"][:-1]} if self.calls == 1 else reply


def test_a_short_reply_leaves_the_unanswered_letter_to_be_settled_and_puts_the_rest(aws: dict[str, Any]) -> None:
    fill(aws, NOW_VALID)
    clock = Clock()
    first = redrive(aws, kinesis=ShortReplyKinesis(aws["kinesis"]), clock_ms=clock)
    assert first.redriven == len(NOW_VALID) - 1 and first.kept == {dlq_admin.REDRIVE_PENDING: 1}
    clock.skip(SETTLED_MS)
    later = redrive(aws, clock_ms=clock)
    assert (later.recovered, later.redriven) == (1, 0)  # it was in the stream: found, not put again
    assert Counter(stream_records(aws["kinesis"])) == once_each(NOW_VALID)
    assert visible(aws) == 0


def test_a_letter_another_run_holds_is_left_to_it(aws: dict[str, Any]) -> None:
    fill(aws, NOW_VALID[:2])
    other = new_entry(STREAM, NOW_VALID[0].identity, "other-run", wall_ms(), "pk-0", NOW_VALID[0].payload)
    assert aws["ledger"].begin(other)
    assert not aws["ledger"].begin(other)  # the condition: one run per letter
    result = redrive(aws)
    assert result.redriven == 1 and result.kept == {dlq_admin.REDRIVE_PENDING: 1}
    assert stream_records(aws["kinesis"]) == [(NOW_VALID[1].payload, NOW_VALID[1].partition_key)]
    assert queued_ids(aws) == Counter({NOW_VALID[0].identity: 1})


def test_a_pending_letter_older_than_the_stream_retention_is_kept_unverified(aws: dict[str, Any]) -> None:
    fill(aws, NOW_VALID[:1])
    old = new_entry(STREAM, NOW_VALID[0].identity, "old-run", wall_ms() - 25 * 3_600_000, "pk-0", b"x")
    assert aws["ledger"].begin(old)
    result = redrive(aws)
    assert result.kept == {dlq_admin.REDRIVE_UNVERIFIED: 1} and result.redriven == 0
    assert stream_records(aws["kinesis"]) == []
    assert visible(aws) == 1


def test_dry_run_reads_the_ledger_and_writes_nothing(aws: dict[str, Any]) -> None:
    fill(aws, NOW_VALID)
    redrive(aws)
    fill(aws, NOW_VALID[:2])
    dry = redrive(aws, dry_run=True)
    assert (dry.redriven, dry.duplicates, dry.deleted) == (0, 2, 0)
    assert visible(aws) == 2
    assert len(stream_records(aws["kinesis"])) == len(NOW_VALID)


def test_the_ledger_is_invisible_to_the_aggregate_store(aws: dict[str, Any]) -> None:
    """Ledger items live in the metrics table: every read of the aggregates (query, reset, rebuild go
    through DynamoDBStore.read/load/delete) must not see them."""
    from aggregations.dynamodb_store import DynamoDBStore, make_model
    from aggregations.partials import StoredPartial
    from aggregations.windows import DEFAULT_RESOLUTIONS

    fill(aws, NOW_VALID)
    redrive(aws)
    store = DynamoDBStore(make_model(TABLE, "us-east-1", None), DEFAULT_RESOLUTIONS)
    minute = DEFAULT_RESOLUTIONS[0]
    start = minute.start(NOW_MS)
    partial = StoredPartial(minute.name, start, "shardId-000000000000", "1", {})
    assert store.write([partial]) == []
    items = aws["dynamodb"].scan(TableName=TABLE)["Items"]
    assert sum(i["pk"]["S"].startswith("redrive#") for i in items) == 2 * len(NOW_VALID)  # entries and claims
    for resolution in DEFAULT_RESOLUTIONS:
        starts = [resolution.start(NOW_MS) + k * resolution.size_ms for k in range(-3, 3)]
        expected = {start: [partial]} if resolution is minute else {}
        assert store.read(resolution.name, starts) == expected
    assert store.load("shardId-000000000000", [(minute.name, start)]) == {(minute.name, start): partial}
    assert store.delete(minute.name, [start]) == 1
    assert sum(i["pk"]["S"].startswith("redrive#") for i in aws["dynamodb"].scan(TableName=TABLE)["Items"]) == 8


def test_the_dynamodb_ledger_keeps_the_ledger_contract(aws: dict[str, Any]) -> None:
    check_ledger_conditions(aws["ledger"])


def test_shards_for_key_finds_where_kinesis_put_the_record(aws: dict[str, Any]) -> None:
    shards = aws["kinesis"].list_shards(StreamName=STREAM)["Shards"]
    for n in range(20):
        key = f"user-{n}"
        put = aws["kinesis"].put_record(StreamName=STREAM, Data=b"{}", PartitionKey=key)
        assert shards_for_key(shards, key) == [put["ShardId"]]


# -- where a payload may be read from -------------------------------------------------------------


def test_a_pointer_out_of_the_dlq_bucket_or_prefix_is_not_followed(aws: dict[str, Any]) -> None:
    aws["s3"].create_bucket(Bucket="secrets")
    aws["s3"].put_object(Bucket="secrets", Key="dlq/token", Body=orjson.dumps(event()))
    aws["s3"].put_object(Bucket=BUCKET, Key="2026/01/01/00/archive", Body=orjson.dumps(event()))
    bodies = [
        dlq_message(letter(50, "in_future", b""), {"bucket": "secrets", "key": "dlq/token"}),
        dlq_message(letter(51, "in_future", b""), {"bucket": BUCKET, "key": "2026/01/01/00/archive"}),
    ]
    for body in bodies:
        aws["sqs"].send_message(QueueUrl=aws["url"], MessageBody=orjson.dumps(body).decode())
        with pytest.raises(PayloadUnavailableError, match="not read"):
            letter_payload(body, aws["s3"], bucket=BUCKET)
    result = redrive(aws)
    assert result.kept == {dlq_admin.PAYLOAD_UNAVAILABLE: 2} and stream_records(aws["kinesis"]) == []
    rows = dlq_admin.peek(aws["sqs"], aws["s3"], aws["url"], 10, wait_seconds=0, bucket=BUCKET)
    assert all(row["preview"].startswith("<payload unavailable:") for row in rows)


class SpyS3:
    """moto's S3, remembering how much of each object body was read."""

    def __init__(self, s3: Any) -> None:
        self.s3 = s3
        self.read: list[int | None] = []

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        reply: dict[str, Any] = self.s3.get_object(**kwargs)
        body, spy = reply["Body"], self

        class Body:
            def read(self, amount: int | None = None) -> bytes:
                spy.read.append(amount)
                return body.read(amount)

            def close(self) -> None:
                body.close()

        return reply | {"Body": Body()}


def test_a_huge_payload_object_is_refused_before_it_is_read(aws: dict[str, Any]) -> None:
    huge = b"x" * (MAX_PAYLOAD_BYTES + 1)
    aws["s3"].put_object(Bucket=BUCKET, Key="dlq/events/huge", Body=huge)
    body = dlq_message(letter(60, "too_large", b""), {"bucket": BUCKET, "key": "dlq/events/huge"})
    spy = SpyS3(aws["s3"])
    with pytest.raises(PayloadUnavailableError, match=f"more than {MAX_PAYLOAD_BYTES}"):
        letter_payload(body, spy, bucket=BUCKET)
    assert spy.read == []  # refused on ContentLength
    aws["s3"].put_object(Bucket=BUCKET, Key="dlq/events/fits", Body=b"y" * 1000)
    fits = dlq_message(letter(61, "too_large", b""), {"bucket": BUCKET, "key": "dlq/events/fits"})
    assert letter_payload(fits, spy, bucket=BUCKET, max_bytes=1000) == b"y" * 1000
    assert spy.read == [1001]  # never more than the bound (+1 to notice a longer body)
    with pytest.raises(PayloadUnavailableError, match="more than 999"):
        letter_payload(fits, spy, bucket=BUCKET, max_bytes=999)


# -- the CLI --------------------------------------------------------------------------------------


@pytest.fixture
def cli(aws: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """`streamkpi` in-process: no env file, no endpoint, so boto3 in the CLI talks to mock_aws."""
    monkeypatch.setenv("STREAMKPI_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("STREAMKPI_DLQ_QUEUE", QUEUE)
    monkeypatch.setenv("STREAMKPI_STREAM", STREAM)
    monkeypatch.setenv("STREAMKPI_ARCHIVE_BUCKET", BUCKET)
    monkeypatch.setenv("STREAMKPI_METRICS_TABLE", TABLE)
    monkeypatch.delenv("STREAMKPI_CONFIG", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield aws
    root.handlers[:], root.level = handlers, level  # bootstrap() points logging at the runner's stderr


def run(*args: str) -> Any:
    return CliRunner().invoke(app, ["dlq", *args, "--wait-seconds", "0"])


def test_cli_stats_peek_and_redrive(cli: dict[str, Any]) -> None:
    fill(cli, NOW_VALID + STILL_INVALID)

    stats = run("stats", "--format", "json")
    assert stats.exit_code == 0, stats.output
    assert orjson.loads(stats.stdout)["byReason"] == {
        "in_future": 3,
        "missing_field": 2,
        "not_json": 2,
        "schema": 1,
        "unknown_type": 1,
    }
    table = run("stats")
    assert table.exit_code == 0, table.output
    assert "in_future" in table.stdout and "visible 9" in table.stdout

    peek = run("peek", "-n", "3")
    assert peek.exit_code == 0, peek.output
    assert len(orjson.loads(peek.stdout)) == 3
    assert run("peek", "-n", "2", "--format", "table").exit_code == 0

    dry = run("redrive", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would redrive 4 letters into stream 'events'; nothing was changed" in dry.stdout
    assert stream_records(cli["kinesis"]) == [] and visible(cli) == 9

    # The built-in config knows donation.made's schema: amount must be a number.
    done = run("redrive", "--format", "json")
    assert done.exit_code == 0, done.output
    summary = orjson.loads(done.stdout)
    assert summary["redriven"] == 4
    assert summary["keptByReason"] == {"missing_field": 2, "not_json": 1, "not_utf8": 1, "schema": 1}
    assert Counter(stream_records(cli["kinesis"])) == Counter((lt.payload, lt.partition_key) for lt in NOW_VALID)
    assert queued_ids(cli) == Counter({lt.identity: 1 for lt in STILL_INVALID})


def test_cli_errors_say_what_to_do(cli: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    fill(cli, NOW_VALID)
    missing_stream = run("redrive", "--stream", "nope")
    assert missing_stream.exit_code == 1
    assert "the stream 'nope' does not exist; is the stack up? `streamkpi local up`" in missing_stream.stderr
    monkeypatch.setenv("STREAMKPI_DLQ_QUEUE", "gone")
    missing_queue = run("stats")
    assert missing_queue.exit_code == 1
    assert "the DLQ queue 'gone' does not exist; is the stack up? `streamkpi local up`" in missing_queue.stderr
