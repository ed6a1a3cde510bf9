"""Redaction through the real KCL daemon: browser events with emails and user ids go in; no email and no raw
user id comes out in the DLQ, the forward Kinesis stream or the Firehose archive in S3; counts stay exact and
the distinct users are counted by their hashes."""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamkpi.config import default_config_text
from tests.integration.conftest import Stack, wait_for
from tests.integration.test_kcl_end_to_end import checkpoints, cli, last_sequence_per_shard

pytestmark = pytest.mark.integration

KEY = "integration-key-0123456789abcdef0123"
USERS = [f"user-{n}@example.com" for n in range(7)]  # user ids that are emails: the worst case
EMAILS = [f"person{n}@mail.example" for n in range(7)]
REDACTION = """
[metrics.per_user]
by = ["userId"]

[sinks.copy]
type = "kinesis"
stream = "{forward}"

[[routes]]
types = ["*"]
sinks = ["copy"]

[redaction]
drop = ["data.email"]
mask = ["data.phone"]
hash = ["userId"]
"""


def hashed(user: str) -> str:
    return "hmac:" + hmac.new(KEY.encode(), user.encode(), hashlib.sha256).hexdigest()


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def read_stream(stack: Stack, name: str) -> list[bytes]:
    kinesis = stack.client("kinesis")
    out: list[bytes] = []
    for shard in kinesis.list_shards(StreamName=name)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            out += [r["Data"] for r in page["Records"]]
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")
    return out


def archive_objects(stack: Stack) -> list[bytes]:
    s3 = stack.client("s3")
    bucket = stack.settings.archive_bucket
    bodies = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            bodies.append(gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body)
    return bodies


def dlq_bodies(stack: Stack) -> list[dict[str, Any]]:
    """Every DLQ message body (read without deleting: they stay for whoever looks next)."""
    sqs = stack.client("sqs")
    url = sqs.get_queue_url(QueueName=stack.settings.dlq_queue)["QueueUrl"]
    bodies, handles = [], []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=300).get(
        "Messages", []
    ):
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            handles.append(message["ReceiptHandle"])
    for start in range(0, len(handles), 10):
        chunk = handles[start : start + 10]
        entries = [{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0} for i, h in enumerate(chunk)]
        sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries)
    return bodies


def query(stack: Stack, metric: str, resolution: str, from_ms: int, to_ms: int) -> dict[str, Any]:
    out = cli(stack, "query", "--metric", metric, "--resolution", resolution, "--from", iso(from_ms),
              "--to", iso(to_ms), "--format", "json")  # fmt: skip
    groups: dict[str, Any] = {}
    for window in json.loads(out.stdout)["windows"]:
        for group, value in window["groups"].items():
            groups[group] = groups.get(group, 0) + value
    return groups


def browser_records(now_ms: int) -> tuple[list[tuple[bytes, str]], list[dict[str, Any]]]:
    """(records as (data, partition key), the valid events they hold), in the forms browsers send."""
    valid: list[dict[str, Any]] = []

    def event(n: int, event_type: str = "page.view") -> dict[str, Any]:
        user = USERS[n % len(USERS)]
        data = {"email": EMAILS[n % len(EMAILS)], "phone": f"+44 7700 9{n:05d}", "plan": "free"}
        return {"eventType": event_type, "timestamp": iso(now_ms - 30_000 - n), "userId": user, "data": data}

    records: list[tuple[bytes, str]] = []
    n = 0
    for i in range(12):  # one event per record, on one line: the shape the forward shortcut used to pass on
        valid.append(event(n))
        records.append((orjson.dumps(valid[-1]), f"pk-{i}"))
        n += 1
    for i in range(4):  # NDJSON of three events
        lines = [event(n + k, "user.created") for k in range(3)]
        valid += lines
        records.append((b"\n".join(map(orjson.dumps, lines)), f"nd-{i}"))
        n += 3
    batch = [event(n + k, "user.verified") for k in range(5)]  # an array
    valid += batch
    records.append((orjson.dumps(batch), "array"))
    invalid = event(99, "donation.made")
    invalid["data"].update(amount="not a number", currency="GBP", charityId="c1")  # schema: amount
    records.append((orjson.dumps(invalid), "invalid"))
    records.append((b'{"eventType": "page.view", "data": {"email": "' + EMAILS[0].encode() + b'", ', "broken"))
    return records, valid


def test_no_personal_data_leaves_the_worker_and_distinct_users_count_hashes(
    stack: Stack, start_worker: Any, tmp_path: Path
) -> None:
    forward = f"forward-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "redaction.toml"
    config.write_text(default_config_text() + REDACTION.replace("{forward}", forward))
    s = stack.fresh(shards=2, STREAMKPI_CONFIG=str(config), STREAMKPI_REDACTION_KEY=KEY)
    kinesis = s.client("kinesis")
    kinesis.create_stream(StreamName=forward, ShardCount=1)
    wait_for(
        lambda: (
            kinesis.describe_stream_summary(StreamName=forward)["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"
        ),
        30,
        "forward stream active",
    )
    now_ms = int(time.time() * 1000)
    records, valid = browser_records(now_ms)
    reply = kinesis.put_records(
        StreamName=s.settings.stream, Records=[{"Data": data, "PartitionKey": key} for data, key in records]
    )
    assert reply["FailedRecordCount"] == 0
    last = last_sequence_per_shard(s)

    worker = start_worker(s)
    wait_for(lambda: checkpoints(s) == last, 120, "every shard checkpointed at its last record")
    assert worker.process.poll() is None, worker.logs()[-3000:]
    personal = [u.encode() for u in USERS] + [e.encode() for e in EMAILS] + [b"+44 7700"]

    # The forward stream and the archive: every valid event once, redacted, as its JSON.
    forwarded = read_stream(s, forward)
    archived = [line for body in archive_objects(s) for line in body.splitlines() if line]
    for copies in (forwarded, archived):
        assert len(copies) == len(valid)
        for data in copies:
            assert not [p for p in personal if p in data], data
        events = [orjson.loads(data) for data in copies]
        assert sorted(e["userId"] for e in events) == sorted(hashed(e["userId"]) for e in valid)
        assert all(e["data"] == {"phone": "***", "plan": "free"} for e in events)

    # The DLQ: the schema-invalid event redacted, the broken record withheld (size and sha256 only).
    letters = {body["reason"]: body for body in dlq_bodies(s)}
    assert sorted(letters) == ["not_json", "schema"]
    raw_letters = json.dumps(list(letters.values())).encode()
    assert not [p for p in personal if p in raw_letters]
    payload = orjson.loads(base64.b64decode(letters["schema"]["payload"]))
    assert payload["userId"] == hashed(USERS[99 % len(USERS)]) and "email" not in payload["data"]
    broken = records[-1][0]
    assert letters["not_json"]["payload"] is None
    assert letters["not_json"]["payloadWithheld"] == {
        "bytes": len(broken),
        "sha256": hashlib.sha256(broken).hexdigest(),
    }

    # Counts exact; users counted by their hashes, distinct users = the distinct user ids.
    from_ms, to_ms = now_ms - 3_600_000, now_ms + 60_000
    counts = query(s, "events", "1h", from_ms, to_ms)
    assert counts == {"page.view": 12, "user.created": 12, "user.verified": 5}
    per_user = query(s, "per_user", "1h", from_ms, to_ms)
    expected: dict[str, int] = {}
    for e in valid:
        expected[hashed(e["userId"])] = expected.get(hashed(e["userId"]), 0) + 1
    assert per_user == expected
    assert query(s, "distinct_users", "1d", now_ms - 86_400_000, to_ms) == {"all": len({e["userId"] for e in valid})}
    assert worker.stop() == 0
    assert KEY not in worker.logs()
