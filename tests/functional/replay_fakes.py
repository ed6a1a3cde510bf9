"""Shared helpers of the replay tests: an archive writer for every layout and format, a stream reader,
a fake clock and Kinesis wrappers that refuse entries or stop the process."""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import orjson
from botocore.exceptions import ClientError

T0 = 1_795_600_800_000  # 2026-11-25T10:00:00Z
HOUR = 3_600_000
LAYOUTS = ("firehose", "firehose_prefixed", "hive", "plain")
FORMATS = ("ndjson", "concatenated", "array", "ndjson_gzip", "concatenated_gzip")


def make_events(
    n: int, start_ms: int = T0 - HOUR, span_ms: int = 3 * HOUR, users: int = 25, seed: int = 1
) -> list[dict]:
    """Events in time order over the span; timestamps in every accepted form; `n` is the identity."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        ts = start_ms + i * span_ms // max(1, n)
        form = i % 3
        stamp: Any = ts if form == 0 else datetime.fromtimestamp(ts / 1000, UTC).isoformat().replace("+00:00", "Z")
        if form == 2:
            stamp = stamp.replace("T", " ")
        event: dict[str, Any] = {
            "eventType": rng.choice(["page.view", "donation.made", "user.created"]),
            "timestamp": stamp,
            "n": i,
            "data": {"note": rng.choice(['}{"', "plain", "new\nline", "[]"])},
        }
        if rng.random() < 0.9:
            event["userId"] = f"u{rng.randrange(users)}"
        events.append(event)
    return events


def event_ms(event: dict[str, Any]) -> int:
    from consumer.validate import parse_timestamp_ms

    return parse_timestamp_ms(event["timestamp"])


def encode(events: list[dict[str, Any]], fmt: str) -> bytes:
    if fmt.startswith("ndjson"):
        body = b"".join(orjson.dumps(e) + b"\n" for e in events)
    elif fmt.startswith("concatenated"):
        body = b"".join(orjson.dumps(e) for e in events)
    elif fmt == "array":
        body = orjson.dumps(events)
    else:
        raise AssertionError(fmt)
    return gzip.compress(body) if fmt.endswith("gzip") else body


def key_for(layout: str, arrival_ms: int, part: int) -> str:
    t = datetime.fromtimestamp(arrival_ms / 1000, UTC)
    name = f"archive-1-{t:%Y-%m-%d-%H-%M-%S}-{part:04d}"
    if layout == "firehose":
        return f"{t:%Y/%m/%d/%H}/{name}"
    if layout == "firehose_prefixed":
        return f"events/{t:%Y/%m/%d/%H}/{name}"
    if layout == "hive":
        return f"type=all/year={t:%Y}/month={t:%m}/day={t:%d}/hour={t:%H}/{name}"
    if layout == "plain":
        return f"dump/{name}"
    raise AssertionError(layout)


def source_prefix(layout: str) -> str:
    return "events/" if layout == "firehose_prefixed" else ""


def write_archive(
    s3: Any, bucket: str, events: list[dict[str, Any]], layout: str, fmt: str, per_object: int = 40
) -> list[str]:
    """Objects of `per_object` events, each keyed by the arrival of its first event (as Firehose does)."""
    keys = []
    for part, start in enumerate(range(0, len(events), per_object)):
        chunk = events[start : start + per_object]
        key = key_for(layout, event_ms(chunk[0]), part)
        s3.put_object(Bucket=bucket, Key=key, Body=encode(chunk, fmt))
        keys.append(key)
    return keys


def archive_and_stream(bucket: str, stream: str) -> tuple[Any, Any]:
    """In moto (the `moto` fixture): an archive bucket and a 2-shard stream; their S3 and Kinesis clients."""
    s3 = boto3.client("s3", region_name="us-east-1")
    kinesis = boto3.client("kinesis", region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    return s3, kinesis


def assert_delivered_once_in_order(records: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Each expected event exactly once (as its own bytes) and, per partition key, in source order."""
    got = [orjson.loads(r["data"]) for r in records]
    assert sorted(e["n"] for e in got) == sorted(e["n"] for e in expected), "every event exactly once"
    by_n = {e["n"]: e for e in expected}
    assert all(g == by_n[g["n"]] for g in got)
    per_key: dict[str, list[tuple[int, int]]] = {}
    for r, g in zip(records, got, strict=True):
        per_key.setdefault(r["key"], []).append((r["seq"], g["n"]))
    for key, entries in per_key.items():
        ns = [n for _, n in sorted(entries)]
        assert ns == sorted(ns), f"order of partition key {key} kept"


class Clock:
    """monotonic() and sleep() over one fake timeline."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


class Interrupted(Exception):
    """Stands in for a crash (or Ctrl-C) of the replay process."""


class FlakyKinesis:
    """Passes calls to moto's Kinesis; refuses a fraction of the entries of each PutRecords (not stored,
    like ProvisionedThroughputExceededException), throttles whole calls, or crashes before call N."""

    def __init__(
        self,
        client: Any,
        refuse: float = 0.0,
        throttle: float = 0.0,
        seed: int = 7,
        crash_before_call: int | None = None,
        refuse_all_calls: range = range(0),
    ) -> None:
        self.client = client
        self.refuse, self.throttle = refuse, throttle
        self.rng = random.Random(seed)
        self.crash_before_call = crash_before_call
        self.refuse_all_calls = refuse_all_calls
        self.calls = 0
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def put_records(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        if self.crash_before_call is not None and self.calls >= self.crash_before_call:
            raise Interrupted(f"crash before call {self.calls}")
        if self.calls in self.refuse_all_calls or self.rng.random() < self.throttle:
            error = {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "Rate exceeded"}}
            raise ClientError(error, "PutRecords")
        entries = kwargs.pop("Records")
        refused = {i for i in range(len(entries)) if self.rng.random() < self.refuse}
        self.refused += len(refused)
        accepted = [e for i, e in enumerate(entries) if i not in refused]
        reply = self.client.put_records(Records=accepted, **kwargs)["Records"] if accepted else []
        answers: Iterator[dict[str, Any]] = iter(reply)
        results = []
        for i in range(len(entries)):
            if i in refused:
                code = self.rng.choice(["ProvisionedThroughputExceededException", "InternalFailure"])
                results.append({"ErrorCode": code, "ErrorMessage": "refused by the test"})
            else:
                results.append(next(answers))
        return {"FailedRecordCount": len(refused), "Records": results}
