"""Redaction through the record processor (KCLReader over pipes, in-memory stores, DLQ and sink): no email and
no raw user id reaches a forward sink, a dead letter or the aggregates; metrics count hashes; a redriven letter
(the real redrive, on moto) counts the same hash again; a large letter's payload in S3 is redacted too."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import hmac
from dataclasses import replace
from typing import Any

import boto3
import orjson
import pytest

from aggregations.memory_store import MemoryStore
from aggregations.metrics import AGGREGATORS
from aggregations.partials import merge_partials
from consumer.dlq import dlq_message, encode_body
from consumer.dlq.memory import MemoryDeadLetterQueue
from consumer.dlq.sqs import SqsDeadLetterQueue
from consumer.processor import RecordProcessor
from consumer.redaction import HASH_PREFIX, MASK, Redactor
from consumer.sinks.memory import MemorySink
from consumer.worker import Cadence, Outputs, ShardWorker, Stores
from deadletters import redrive as redrive_mod
from deadletters.ledger_dynamodb import DynamoDbRedriveLedger
from devstack.resources import ensure_table
from streamkpi.config import AppConfig, default_config_text, parse_config
from tests.functional.kcl_harness import FakeDaemon, kinesis_record, raising_exit
from tests.functional.moto_aws import read_stream

ARRIVAL_MS = 1_764_000_000_000
KEY = "0123456789abcdef0123456789abcdef"
EAGER = Cadence(redis_flush_seconds=0, dynamodb_flush_seconds=0, checkpoint_seconds=0, store_retry_seconds=0)
REDACTION = """
[metrics.per_user]
by = ["userId"]

[redaction]
drop = ["data.email"]
mask = ["data.phone"]
hash = ["userId"]
unparsed = "{unparsed}"
"""
EMAILS = ("alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com", "eve@example.com")
USERS = ("u-alice", "u-bob", "u-carol", "u-dave")


def hashed(user: str) -> str:
    return HASH_PREFIX + hmac.new(KEY.encode(), user.encode(), hashlib.sha256).hexdigest()


def load(unparsed: str = "drop") -> AppConfig:
    text = default_config_text() + REDACTION.format(unparsed=unparsed)
    config = parse_config(text, "redaction.toml")
    assert config.redaction is not None
    return dataclasses.replace(config, pipeline=replace(config.pipeline, redactor=Redactor(config.redaction, KEY)))


class Rig:
    def __init__(self, config: AppConfig) -> None:
        self.durable, self.hot, self.dlq = MemoryStore("dynamodb"), MemoryStore("redis"), MemoryDeadLetterQueue()
        self.sink = MemorySink("archive")
        self.config = config

    def factory(self, shard_id: str) -> ShardWorker:
        outputs = Outputs(self.dlq, sinks={"archive": self.sink})
        cadence = replace(EAGER, wall_ms=lambda: ARRIVAL_MS + 1000)
        return ShardWorker(shard_id, "events", self.config.pipeline, Stores(self.durable, self.hot), outputs, cadence)

    def run(self, records: list[dict[str, Any]]) -> FakeDaemon:
        daemon = FakeDaemon(RecordProcessor(self.factory, sleep=lambda s: None, exit=raising_exit))
        daemon.initialize()
        daemon.records(records)
        daemon.send({"action": "shutdownRequested"})
        return daemon

    def metric(self, name: str, resolution: str = "1h") -> dict[str, Any]:
        partials = [p for (res, _start, _shard), p in self.durable.items.items() if res == resolution]
        merged = merge_partials(partials).get(name, {})
        agg = AGGREGATORS["distinct" if name == "distinct_users" else "count"]
        return {group: agg.present(value) for group, value in merged.items()}

    def everything_written(self) -> bytes:
        """Every byte that left the worker: forwarded bodies, DLQ messages (as SQS gets them), stored partials."""
        out = [body for _key, body, *_ in self.sink.events]
        out += [encode_body(dlq_message(letter)).encode() for letter in self.dlq.letters]
        out += [orjson.dumps(p.metrics) for p in self.durable.items.values()]
        return b"\n".join(out)


def event(user: str | None, email: str | None = None, event_type: str = "page.view", **data: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"eventType": event_type, "timestamp": ARRIVAL_MS - 60_000, "path": "/signup"}
    if user is not None:
        out["userId"] = user
    if email is not None:
        data["email"] = email
    out["data"] = data
    return out


def record(data: bytes, seq: int) -> dict[str, Any]:
    return kinesis_record(data, seq, ARRIVAL_MS)


def line(value: Any) -> bytes:
    return orjson.dumps(value)


def browser_records() -> list[dict[str, Any]]:
    invalid_donation = event("u-dave", EMAILS[3], "donation.made", amount="12")  # schema: amount is no number
    return [
        # One event on one line: what used to be forwarded as the producer sent it.
        record(line(event("u-alice", EMAILS[0], phone="+44 7700 900123")), 1),
        # NDJSON, and an array with a schema-invalid sibling.
        record(line(event("u-bob", EMAILS[1])) + b"\n" + line(event("u-alice", EMAILS[0])), 2),
        record(line([event("u-carol", EMAILS[2]), invalid_donation]), 3),
        # A schema-invalid event alone in a gzip record: its letter used to carry the record's raw bytes.
        record(gzip.compress(line(invalid_donation)), 4),
        # A repeated key hides the first `data` (and its email) from the parsed event, not from the bytes.
        record(
            b'{"eventType":"page.view","timestamp":%d,"data":{"email":"%s"},"data":{}}'
            % (ARRIVAL_MS - 60_000, EMAILS[4].encode()),
            5,
        ),
        # Records that parse into no object: not JSON at all, and one bad NDJSON line.
        record(b'{"eventType":"page.view","data":{"email":"%s"' % EMAILS[4].encode(), 6),
        record(line(event("u-bob")) + b"\n" + b"not json " + EMAILS[4].encode(), 7),
    ]


def test_no_email_or_raw_user_id_leaves_the_worker_and_metrics_count_hashes() -> None:
    rig = Rig(load())
    rig.run(browser_records())
    written = rig.everything_written()
    for secret in (*EMAILS, *USERS, "+44 7700"):
        assert secret.encode() not in written, secret
    assert gzip.compress(b"x")[:2] not in written  # (no compressed raw bytes either)

    # Forwarded: every valid event, as its redacted JSON (never the line that came).
    bodies = [orjson.loads(body) for _key, body, *_ in rig.sink.events]
    assert [b.get("userId") for b in bodies] == [
        hashed("u-alice"), hashed("u-bob"), hashed("u-alice"), hashed("u-carol"), None, hashed("u-bob")
    ]  # fmt: skip
    assert bodies[0]["data"] == {"phone": MASK}
    assert all("email" not in b["data"] for b in bodies)

    # Counted: the events, and users by their hashes (distinct users = 3 hashes: alice, bob, carol).
    assert sum(rig.metric("events").values()) == 6
    assert rig.metric("per_user") == {hashed("u-alice"): 2, hashed("u-bob"): 2, hashed("u-carol"): 1, "(none)": 1}
    assert rig.metric("distinct_users") == {"all": 3}

    # Dead letters: the parsed ones carry the redacted event, the unparsed ones only size and sha256.
    letters = {(letter.sequence_number, letter.index): letter for letter in rig.dlq.letters}
    assert sorted(letters) == [("3", 1), ("4", 0), ("6", 0), ("7", 1)]
    for key in (("3", 1), ("4", 0)):
        assert letters[key].reason == "schema"
        assert orjson.loads(letters[key].payload) == {
            "eventType": "donation.made", "timestamp": ARRIVAL_MS - 60_000, "path": "/signup",
            "userId": hashed("u-dave"), "data": {"amount": "12"},
        }  # fmt: skip
    raw = b'{"eventType":"page.view","data":{"email":"%s"' % EMAILS[4].encode()
    assert letters[("6", 0)].reason == "not_json" and letters[("6", 0)].payload == b""
    assert letters[("6", 0)].withheld == (len(raw), hashlib.sha256(raw).hexdigest())
    assert dlq_message(letters[("6", 0)])["payloadWithheld"] == {
        "bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    assert letters[("7", 1)].payload == b"" and letters[("7", 1)].withheld is not None


def test_unparsed_keep_leaves_the_raw_bytes_of_what_did_not_parse_and_only_those() -> None:
    rig = Rig(load(unparsed="keep"))
    rig.run(browser_records())
    letters = {(letter.sequence_number, letter.index): letter for letter in rig.dlq.letters}
    assert letters[("6", 0)].payload == b'{"eventType":"page.view","data":{"email":"%s"' % EMAILS[4].encode()
    assert letters[("6", 0)].withheld is None
    assert EMAILS[3].encode() not in letters[("4", 0)].payload  # a parsed event is redacted all the same
    forwarded = b"".join(body for _key, body, *_ in rig.sink.events)
    assert not any(email.encode() in forwarded for email in EMAILS)


def test_a_record_with_too_many_invalid_events_is_withheld_whole() -> None:
    config = load()
    limits = replace(config.pipeline.limits, max_letters_per_record=2)
    rig = Rig(dataclasses.replace(config, pipeline=replace(config.pipeline, limits=limits)))
    bad = [{"eventType": "page.view", "data": {"email": e}} for e in EMAILS[:3]]  # no timestamp
    data = line([event("u-alice", EMAILS[0]), *bad])
    rig.run([record(data, 1)])
    [letter] = rig.dlq.letters
    assert letter.reason == "too_many_invalid" and letter.payload == b"" and letter.events == 4
    assert letter.withheld == (len(data), hashlib.sha256(data).hexdigest())
    assert rig.sink.events == [] and sum(rig.metric("events").values()) == 0


@pytest.fixture
def aws(moto: None) -> dict[str, Any]:
    sqs = boto3.client("sqs", region_name="us-east-1")
    s3 = boto3.client("s3", region_name="us-east-1")
    kinesis = boto3.client("kinesis", region_name="us-east-1")
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    url = sqs.create_queue(QueueName="dlq")["QueueUrl"]
    s3.create_bucket(Bucket="archive")
    kinesis.create_stream(StreamName="events", ShardCount=1)
    ensure_table(dynamodb, "metrics", [("pk", "S", "HASH"), ("sk", "S", "RANGE")], "expires_at")
    return {"sqs": sqs, "s3": s3, "kinesis": kinesis, "url": url, "ledger": DynamoDbRedriveLedger(dynamodb, "metrics")}


def test_a_redriven_letter_counts_the_same_hash_and_a_withheld_one_stays(aws: dict[str, Any]) -> None:
    config = load()
    # A schema refuses every signup.step for now; redrive then judges by the config's rules, which accept it.
    rules = replace(config.pipeline.rules, schemas={"signup.step": _refuse})
    rig = Rig(dataclasses.replace(config, pipeline=replace(config.pipeline, rules=rules)))
    rig.run([record(line(event("u-alice", EMAILS[0], "page.view")), 1),
             record(line(event("u-alice", EMAILS[0], "signup.step")), 2),
             record(b"not json " + EMAILS[1].encode(), 3)])  # fmt: skip
    assert sorted(letter.reason for letter in rig.dlq.letters) == ["not_json", "schema"]
    SqsDeadLetterQueue(aws["sqs"], aws["url"], s3_client=aws["s3"], bucket="archive").send(rig.dlq.letters)

    context = redrive_mod.Context(
        kinesis=aws["kinesis"], stream="events", rules=config.pipeline.rules, ledger=aws["ledger"], s3=aws["s3"],
        bucket="archive", now_ms=lambda: ARRIVAL_MS, sleep=lambda s: None,
    )  # fmt: skip
    result = redrive_mod.redrive(aws["sqs"], aws["url"], context, wait_seconds=0)
    assert result.redriven == 1 and result.kept == {"payload_unavailable": 1}
    [put] = read_stream(aws["kinesis"], "events")
    assert EMAILS[0].encode() not in put["data"] and b"u-alice" not in put["data"]

    # The worker reads the redriven event and redacts it again: the hash stays, the user is counted once.
    again = Rig(config)
    again.durable, again.hot = rig.durable, rig.hot
    again.run([record(put["data"], 10)])
    [body] = [orjson.loads(body) for _key, body, *_ in again.sink.events]
    assert body["userId"] == hashed("u-alice")
    assert rig.metric("per_user") == {hashed("u-alice"): 2}  # one page.view before, the redriven signup.step now
    assert rig.metric("distinct_users") == {"all": 1}


def _refuse(event: Any) -> None:
    raise ValueError("signup.step refused for now")


def test_a_large_letter_goes_to_s3_redacted(aws: dict[str, Any]) -> None:
    rig = Rig(load())
    big = event("u-alice", EMAILS[0], "donation.made", amount="12", note="n" * 60_000)
    rig.run([record(line(big), 1)])
    [letter] = rig.dlq.letters
    dlq = SqsDeadLetterQueue(aws["sqs"], aws["url"], s3_client=aws["s3"], bucket="archive", max_inline_body_bytes=1000)
    dlq.send([letter])
    [message] = aws["sqs"].receive_message(QueueUrl=aws["url"])["Messages"]
    pointer = orjson.loads(message["Body"])["payloadS3"]
    stored = aws["s3"].get_object(Bucket=pointer["bucket"], Key=pointer["key"])["Body"].read()
    assert len(stored) > 60_000 and EMAILS[0].encode() not in stored and b"u-alice" not in stored
    assert orjson.loads(stored)["userId"] == hashed("u-alice")
