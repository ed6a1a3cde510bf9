"""SqsDeadLetterQueue against moto's SQS and S3 (in-process): exact bodies, large payloads in S3,
batches under the SQS byte limit, FIFO deduplication, partial failures retried, outages raised."""

from __future__ import annotations

import base64
import dataclasses
from collections import Counter
from typing import Any

import boto3
import orjson
import pytest

from consumer.dlq import DeadLetter, dlq_message, encode_body, letter_payload, s3_key
from consumer.dlq.sqs import MAX_INLINE_BODY_BYTES, SqsDeadLetterQueue
from delivery.aws import sqs_message_bytes
from delivery.errors import DeliveryUnavailableError
from delivery.limits import SQS_MAX_BATCH_BYTES, SQS_MAX_MESSAGE_BYTES
from devstack.resources import ensure_bucket, ensure_dlq_payload_expiry

BUCKET = "archive"

LETTER = DeadLetter(
    stream="events",
    shard_id="shardId-000000000001",
    sequence_number="49590338271490256608559692538361571095921575989136588898",
    sub_sequence_number=0,
    index=0,
    partition_key="user-42",
    arrival_ms=1_764_000_000_123,
    reason="not_json",
    detail="unexpected character",
    payload=b'{"eventType": broken',
)


def letters(n: int, payload_bytes: int = 20, reason: str = "schema") -> list[DeadLetter]:
    return [
        dataclasses.replace(
            LETTER, index=i, reason=reason, payload=(b"%04d" % i) * (payload_bytes // 4), partition_key=f"pk-{i}"
        )
        for i in range(n)
    ]


@pytest.fixture
def aws(moto: None) -> None:
    """moto's AWS (the `moto` fixture)."""


def make_queue(name: str = "dlq") -> tuple[Any, str]:
    sqs = boto3.client("sqs", region_name="us-east-1")
    attributes = {"MaximumMessageSize": str(SQS_MAX_MESSAGE_BYTES)}  # moto's default is 1 MiB; hold it to 256 KiB
    if name.endswith(".fifo"):
        attributes["FifoQueue"] = "true"
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return sqs, url


def make_bucket() -> Any:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    return s3


def drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every message in the queue (received and deleted)."""
    out: list[dict[str, Any]] = []
    while True:
        reply = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=60
        )
        messages = reply.get("Messages", [])
        if not messages:
            return out
        out += messages
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)]
        )


class RecordingSqs:
    """Passes calls to moto; records every batch; can refuse entries or fail whole calls."""

    def __init__(self, sqs: Any, refuse_first_call: set[int] | None = None, down_calls: int = 0) -> None:
        self.sqs = sqs
        self.refuse = refuse_first_call  # entry positions the first call reports as Failed
        self.down_calls = down_calls
        self.batches: list[list[dict[str, Any]]] = []

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.batches.append(list(Entries))
        if self.down_calls:
            self.down_calls -= 1
            raise ConnectionError("sqs is down (test)")
        if self.refuse is None:
            return self.sqs.send_message_batch(QueueUrl=QueueUrl, Entries=Entries)
        refused = [e for n, e in enumerate(Entries) if n in self.refuse]
        self.refuse = None
        accepted = [e for e in Entries if e not in refused]
        reply = self.sqs.send_message_batch(QueueUrl=QueueUrl, Entries=accepted)
        failed = [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError"} for e in refused]
        return {"Successful": reply.get("Successful", []), "Failed": failed}


def test_small_letters_arrive_as_exact_json_bodies(aws: None) -> None:
    sqs, url = make_queue()
    sent = letters(3)
    SqsDeadLetterQueue(sqs, url, sleep=lambda s: None).send(sent)
    messages = drain(sqs, url)
    raw = sorted((m["Body"] for m in messages), key=lambda body: orjson.loads(body)["index"])
    assert raw == [orjson.dumps(dlq_message(letter)).decode() for letter in sent]
    bodies = [orjson.loads(body) for body in raw]
    assert bodies == [dlq_message(letter) for letter in sent]
    assert [m["MessageAttributes"]["reason"]["StringValue"] for m in messages] == ["schema"] * 3
    assert [letter_payload(b, None) for b in bodies] == [letter.payload for letter in sent]


def test_a_300_kb_payload_goes_to_s3_and_round_trips(aws: None) -> None:
    sqs, url = make_queue()
    s3 = make_bucket()
    payload = bytes(range(256)) * 1200  # 307,200 bytes, not UTF-8
    big = dataclasses.replace(LETTER, payload=payload)
    SqsDeadLetterQueue(sqs, url, sleep=lambda s: None, s3_client=s3, bucket=BUCKET).send([big, LETTER])
    by_index = {}
    for message in drain(sqs, url):
        body = orjson.loads(message["Body"])
        by_index[(body["index"], body["payload"] is None)] = body
    assert set(by_index) == {(0, True), (0, False)}
    pointer_body = by_index[(0, True)]
    key = "dlq/events/shardId-000000000001/49590338271490256608559692538361571095921575989136588898-0-0"
    assert key == s3_key(big)
    assert pointer_body == dlq_message(big, {"bucket": BUCKET, "key": key, "bytes": len(payload)})
    assert pointer_body["payloadS3"] == {"bucket": BUCKET, "key": key, "bytes": 307_200}
    assert letter_payload(pointer_body, s3) == payload
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == payload
    # The small letter stays inline.
    assert base64.b64decode(by_index[(0, False)]["payload"]) == LETTER.payload


def test_the_s3_key_is_deterministic_so_a_resend_overwrites(aws: None) -> None:
    sqs, url = make_queue()
    s3 = make_bucket()
    big = dataclasses.replace(LETTER, payload=b"x" * 400_000)
    queue = SqsDeadLetterQueue(sqs, url, sleep=lambda s: None, s3_client=s3, bucket=BUCKET)
    queue.send([big])
    queue.send([big])
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]] == [s3_key(big)]


def test_a_body_just_over_the_inline_limit_goes_to_s3(aws: None) -> None:
    sqs, url = make_queue()
    s3 = make_bucket()
    inline_len = len(encode_body(dlq_message(dataclasses.replace(LETTER, payload=b""))).encode())
    fits = dataclasses.replace(LETTER, index=1, payload=b"a" * ((MAX_INLINE_BODY_BYTES - inline_len) // 4 * 3))
    over = dataclasses.replace(LETTER, index=2, payload=fits.payload + b"abc")
    assert len(encode_body(dlq_message(fits)).encode()) <= MAX_INLINE_BODY_BYTES
    assert len(encode_body(dlq_message(over)).encode()) > MAX_INLINE_BODY_BYTES
    SqsDeadLetterQueue(sqs, url, sleep=lambda s: None, s3_client=s3, bucket=BUCKET).send([fits, over])
    bodies = {b["index"]: b for b in (orjson.loads(m["Body"]) for m in drain(sqs, url))}
    assert bodies[1]["payload"] is not None and "payloadS3" not in bodies[1]
    assert bodies[2]["payload"] is None and bodies[2]["payloadS3"]["bytes"] == len(over.payload)
    assert letter_payload(bodies[1], s3) == fits.payload
    assert letter_payload(bodies[2], s3) == over.payload


def test_too_large_without_a_bucket_is_refused_not_truncated(aws: None) -> None:
    sqs, url = make_queue()
    with pytest.raises(DeliveryUnavailableError, match="no S3 bucket"):
        SqsDeadLetterQueue(sqs, url, sleep=lambda s: None).send([dataclasses.replace(LETTER, payload=b"x" * 300_000)])
    assert drain(sqs, url) == []


def test_ten_100_kb_letters_are_split_under_the_batch_limit(aws: None) -> None:
    sqs, url = make_queue()
    recording = RecordingSqs(sqs)
    sent = letters(10, payload_bytes=100_000)
    SqsDeadLetterQueue(recording, url, sleep=lambda s: None).send(sent)
    sizes = [sum(sqs_message_bytes(e) for e in batch) for batch in recording.batches]
    assert len(recording.batches) > 1
    assert all(size <= SQS_MAX_BATCH_BYTES for size in sizes), sizes
    assert all(len(batch) <= 10 for batch in recording.batches)
    bodies = [orjson.loads(m["Body"]) for m in drain(sqs, url)]
    assert sorted(b["index"] for b in bodies) == list(range(10))
    assert all(b["payload"] is not None for b in bodies)  # 100 KB is still inline
    assert {b["index"]: letter_payload(b, None) for b in bodies} == {letter.index: letter.payload for letter in sent}


def test_more_than_ten_small_letters_go_in_batches_of_ten(aws: None) -> None:
    sqs, url = make_queue()
    recording = RecordingSqs(sqs)
    SqsDeadLetterQueue(recording, url, sleep=lambda s: None).send(letters(25))
    assert [len(b) for b in recording.batches] == [10, 10, 5]
    assert sorted(orjson.loads(m["Body"])["index"] for m in drain(sqs, url)) == list(range(25))


def test_fifo_queue_deduplicates_a_resend_by_identity(aws: None) -> None:
    sqs, url = make_queue("dlq.fifo")
    s3 = make_bucket()
    sent = [*letters(4), dataclasses.replace(LETTER, index=99, payload=b"y" * 300_000)]
    queue = SqsDeadLetterQueue(sqs, url, sleep=lambda s: None, s3_client=s3, bucket=BUCKET)
    queue.send(sent)
    queue.send(sent)  # a worker restarted from its checkpoint sends the same letters again
    bodies = [orjson.loads(m["Body"]) for m in drain(sqs, url)]
    assert Counter(b["id"] for b in bodies) == Counter({letter.identity: 1 for letter in sent})
    assert {b["id"]: letter_payload(b, s3) for b in bodies} == {letter.identity: letter.payload for letter in sent}


def test_refused_entries_alone_are_retried(aws: None) -> None:
    sqs, url = make_queue()
    recording = RecordingSqs(sqs, refuse_first_call={1, 4, 7})
    sleeps: list[float] = []
    sent = letters(10)
    SqsDeadLetterQueue(recording, url, sleep=sleeps.append).send(sent)
    assert [len(b) for b in recording.batches] == [10, 3]
    assert sorted(orjson.loads(e["MessageBody"])["index"] for e in recording.batches[1]) == [1, 4, 7]
    assert len(sleeps) == 1
    indices = [orjson.loads(m["Body"])["index"] for m in drain(sqs, url)]
    assert sorted(indices) == list(range(10))  # none lost, none twice


def test_sqs_down_for_every_attempt_raises_delivery_unavailable(aws: None) -> None:
    sqs, url = make_queue()
    recording = RecordingSqs(sqs, down_calls=100)
    with pytest.raises(DeliveryUnavailableError, match="after 5 attempts"):
        SqsDeadLetterQueue(recording, url, sleep=lambda s: None, attempts=5).send(letters(3))
    assert len(recording.batches) == 5
    assert drain(sqs, url) == []


def test_entries_refused_for_the_senders_fault_are_not_sent_again(aws: None) -> None:
    class Refusing:
        calls = 0

        def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
            self.calls += 1
            return {"Failed": [{"Id": e["Id"], "SenderFault": True, "Code": "InvalidParameterValue"} for e in Entries]}

    refusing = Refusing()
    with pytest.raises(DeliveryUnavailableError, match=r"refused 3 of 3 entries for good \(InvalidParameterValue\)"):
        SqsDeadLetterQueue(refusing, "https://sqs/dlq", sleep=lambda s: None).send(letters(3))
    assert refusing.calls == 1


def test_sqs_down_for_a_while_then_back_loses_nothing(aws: None) -> None:
    sqs, url = make_queue()
    recording = RecordingSqs(sqs, down_calls=2)
    SqsDeadLetterQueue(recording, url, sleep=lambda s: None).send(letters(12))
    assert sorted(orjson.loads(m["Body"])["index"] for m in drain(sqs, url)) == list(range(12))


def test_s3_down_raises_delivery_unavailable_and_sends_no_dangling_pointer(aws: None) -> None:
    sqs, url = make_queue()
    s3 = boto3.client("s3", region_name="us-east-1")  # no bucket: every put fails
    with pytest.raises(DeliveryUnavailableError, match="S3 refused"):
        SqsDeadLetterQueue(sqs, url, sleep=lambda s: None, s3_client=s3, bucket=BUCKET).send(
            [LETTER, dataclasses.replace(LETTER, index=1, payload=b"z" * 300_000)]
        )
    assert drain(sqs, url) == []


def test_characters_sqs_refuses_are_escaped_and_round_trip(aws: None) -> None:
    sqs, url = make_queue()
    odd = dataclasses.replace(LETTER, detail="bad \ufffe and \uffff and \x00", partition_key="pk-\uffff")
    body = encode_body(dlq_message(odd))
    assert "\ufffe" not in body and "\uffff" not in body and "\x00" not in body
    assert orjson.loads(body) == dlq_message(odd)
    lone = dataclasses.replace(LETTER, detail="half a pair: \ud800")
    assert encode_body(dlq_message(lone)).isascii()
    SqsDeadLetterQueue(sqs, url, sleep=lambda s: None).send([odd])
    [message] = drain(sqs, url)
    assert orjson.loads(message["Body"])["partitionKey"] == "pk-\uffff"


def test_dlq_payload_objects_expire_by_a_lifecycle_rule_that_keeps_the_buckets_own(aws: None) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    ensure_bucket(s3, BUCKET, "us-east-1")
    own = {"ID": "raw-archive-to-glacier", "Filter": {"Prefix": "2025/"}, "Status": "Enabled",
           "Transitions": [{"Days": 30, "StorageClass": "GLACIER"}]}  # fmt: skip
    s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [own]})
    assert ensure_dlq_payload_expiry(s3, BUCKET) is True
    assert ensure_dlq_payload_expiry(s3, BUCKET) is False  # once
    rules = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert [r["ID"] for r in rules] == ["raw-archive-to-glacier", "streamkpi-dlq-payloads"]
    assert rules[1]["Filter"] == {"Prefix": "dlq/"} and rules[1]["Expiration"] == {"Days": 15}
    assert rules[1]["Status"] == "Enabled"


def test_the_dlq_payload_rule_is_added_to_a_bucket_without_lifecycle_and_mended_when_changed(aws: None) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    ensure_bucket(s3, BUCKET, "us-east-1")
    assert ensure_dlq_payload_expiry(s3, BUCKET) is True  # no lifecycle configuration before
    stale = {"ID": "streamkpi-dlq-payloads", "Filter": {"Prefix": "dlq/"}, "Status": "Enabled",
             "Expiration": {"Days": 3}}  # fmt: skip
    s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [stale]})
    assert ensure_dlq_payload_expiry(s3, BUCKET) is True
    rules = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert [(r["ID"], r["Expiration"]) for r in rules] == [("streamkpi-dlq-payloads", {"Days": 15})]


def test_legacy_prefix_rules_are_kept_as_the_equivalent_filter(aws: None) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    ensure_bucket(s3, BUCKET, "us-east-1")
    legacy = {"ID": "old", "Prefix": "tmp/", "Status": "Enabled", "Expiration": {"Days": 1}}
    s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [legacy]})
    assert ensure_dlq_payload_expiry(s3, BUCKET) is True
    rules = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert [(r["ID"], r.get("Filter"), r["Expiration"]) for r in rules] == [
        ("old", {"Prefix": "tmp/"}, {"Days": 1}),
        ("streamkpi-dlq-payloads", {"Prefix": "dlq/"}, {"Days": 15}),
    ]
