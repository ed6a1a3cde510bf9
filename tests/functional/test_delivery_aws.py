"""The delivery kit's adapters (delivery/aws.py) against moto's Kinesis, Firehose, SQS and S3: requests,
per-entry answers (ids and sequence numbers), replies that are short or malformed, and failed calls."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from delivery.aws import (
    FirehosePutRecordBatch,
    KinesisPutRecords,
    SqsBatch,
    call_failure,
    firehose_record,
    kinesis_record,
    positional_answers,
    sqs_answers,
    sqs_fifo_id,
    sqs_message,
)
from delivery.errors import DeliveryRefusedError, OversizeEntryError
from delivery.limits import FIREHOSE_MAX_RECORD_BYTES, KINESIS_MAX_RECORD_BYTES, SQS_MAX_MESSAGE_BYTES
from delivery.put import Acknowledged, Entry, Rejected, put_until_acknowledged
from delivery.retryable import CallOutcome
from tests.functional import moto_aws

REGION = "us-east-1"
BUCKET = "kit-archive"


@pytest.fixture
def aws(moto: None) -> None:
    """moto's AWS (the `moto` fixture)."""


def test_kinesis_results_name_the_records_the_stream_holds(aws: None) -> None:
    kinesis = boto3.client("kinesis", region_name=REGION)
    kinesis.create_stream(StreamName="kit", ShardCount=2)
    keys = [f"user-{n % 5}" for n in range(40)]
    entries = [kinesis_record(f'{{"n":{n}}}'.encode(), key) for n, key in enumerate(keys)]
    results = put_until_acknowledged(entries, KinesisPutRecords(kinesis, "kit"))
    stored = {(r["shard"], str(r["seq"])): (r["key"], r["data"]) for r in moto_aws.read_stream(kinesis, "kit")}
    assert len(stored) == 40
    for entry, result in zip(entries, results, strict=True):
        assert isinstance(result, Acknowledged)
        assert stored[(result.shard_id, result.id)] == (entry.request["PartitionKey"], entry.request["Data"])
    for key in set(keys):  # in order per key: sequence numbers grow with the input order
        sequence = [int(r.id) for r, k in zip(results, keys, strict=True) if isinstance(r, Acknowledged) and k == key]
        assert sequence == sorted(sequence)


def test_a_missing_stream_is_a_refused_call(aws: None) -> None:
    kinesis = boto3.client("kinesis", region_name=REGION)
    with pytest.raises(DeliveryRefusedError, match="ResourceNotFoundException") as raised:
        put_until_acknowledged([kinesis_record(b"{}", "k")], KinesisPutRecords(kinesis, "no-such-stream"))
    assert raised.value.code == "ResourceNotFoundException"


def test_firehose_results_carry_record_ids_and_the_archive_holds_the_data(aws: None) -> None:
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    firehose = boto3.client("firehose", region_name=REGION)
    firehose.create_delivery_stream(
        DeliveryStreamName="kit",
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/firehose",
            "BucketARN": f"arn:aws:s3:::{BUCKET}",
        },
    )
    lines = [b'{"n":%d}\n' % n for n in range(7)]
    results = put_until_acknowledged([firehose_record(line) for line in lines], FirehosePutRecordBatch(firehose, "kit"))
    assert all(isinstance(r, Acknowledged) and r.id for r in results)
    s3 = boto3.client("s3", region_name=REGION)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert b"".join(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys) == b"".join(lines)


def test_sqs_send_and_delete_batches_answer_per_entry(aws: None) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="kit")["QueueUrl"]
    messages = [sqs_message(f"body {n}", {"kind": {"DataType": "String", "StringValue": "test"}}) for n in range(23)]
    sent = put_until_acknowledged(messages, SqsBatch(sqs, url))
    assert all(isinstance(r, Acknowledged) and r.id for r in sent)
    received: list[dict[str, Any]] = []
    while reply := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        received += reply
    assert sorted(m["Body"] for m in received) == sorted(f"body {n}" for n in range(23))
    assert {m["MessageId"] for m in received} == {r.id for r in sent if isinstance(r, Acknowledged)}
    handles = [Entry({"ReceiptHandle": m["ReceiptHandle"]}, 0) for m in received]
    deleted = put_until_acknowledged(handles, SqsBatch(sqs, url, "delete_message_batch"))
    assert len(deleted) == 23 and all(isinstance(r, Acknowledged) for r in deleted)
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (
        attributes["ApproximateNumberOfMessages"] == "0" and attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    )


def test_an_sqs_entry_refused_for_the_senders_fault_is_rejected_for_good(aws: None) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="kit")["QueueUrl"]
    bad = Entry({"ReceiptHandle": "not-a-handle"}, 0)
    [result] = put_until_acknowledged([bad], SqsBatch(sqs, url, "delete_message_batch"), sleep=lambda s: None)
    assert isinstance(result, Rejected) and not result.retryable and result.code


def test_exceptions_become_call_outcomes() -> None:
    def client_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutRecords")

    throttled = call_failure(client_error("ProvisionedThroughputExceededException", 400))
    assert throttled is not None and throttled.failure is CallOutcome.NOT_STORED
    assert throttled.code == "ProvisionedThroughputExceededException"
    unavailable = call_failure(client_error("ServiceUnavailableException", 503))
    assert unavailable is not None and unavailable.failure is CallOutcome.UNKNOWN
    denied = call_failure(client_error("AccessDeniedException", 400))
    assert denied is not None and denied.failure is CallOutcome.REFUSED
    no_connection = call_failure(EndpointConnectionError(endpoint_url="https://kinesis"))
    assert no_connection is not None and no_connection.failure is CallOutcome.NOT_STORED
    timeout = call_failure(ReadTimeoutError(endpoint_url="https://kinesis"))
    assert timeout is not None and timeout.failure is CallOutcome.UNKNOWN
    dropped = call_failure(ConnectionResetError("reset by peer"))
    assert dropped is not None and dropped.failure is CallOutcome.UNKNOWN
    assert call_failure(KeyError("a bug")) is None

    class Buggy:
        def put_records(self, **kwargs: Any) -> Any:
            raise KeyError("a bug")

    with pytest.raises(KeyError):  # not a failure of the service: it propagates
        KinesisPutRecords(Buggy(), "s").call([{"Data": b"x", "PartitionKey": "k"}])


def test_replies_that_are_short_or_malformed_answer_nothing_for_what_they_leave_out() -> None:
    def ok(item: Any) -> Acknowledged:
        return Acknowledged(str(item["SequenceNumber"]))

    assert positional_answers({"Records": [{"SequenceNumber": "1"}]}, "Records", 3, ok) == [
        Acknowledged("1"),
        None,
        None,
    ]
    assert positional_answers({"Records": "nonsense"}, "Records", 2, ok) == [None, None]
    assert positional_answers({}, "Records", 2, ok) == [None, None]
    assert positional_answers(None, "Records", 1, ok) == [None]
    assert positional_answers({"Records": ["x", {"SequenceNumber": "2"}]}, "Records", 2, ok) == [
        None,
        Acknowledged("2"),
    ]
    longer = {"Records": [{"SequenceNumber": "1"}, {"SequenceNumber": "2"}]}
    assert positional_answers(longer, "Records", 1, ok) == [None]  # more answers than entries: none trusted

    class Answering:
        def __init__(self, reply: Any) -> None:
            self.reply = reply

        def put_records(self, **kwargs: Any) -> Any:
            return self.reply

    requests = [{"Data": b"a", "PartitionKey": "k"}, {"Data": b"b", "PartitionKey": "k"}]
    reply = {"Records": [{"ErrorCode": "InternalFailure", "ErrorMessage": "boom"}, {"ShardId": "s"}]}
    assert KinesisPutRecords(Answering(reply), "s").call(requests).answers == [
        Rejected("InternalFailure", "boom", retryable=True),
        None,  # no sequence number: not an acknowledgement
    ]
    sqs_reply = {
        "Successful": [{"Id": "0", "MessageId": "m0"}, {"Id": "7", "MessageId": "m7"}, {"Id": "x"}, "junk"],
        "Failed": [{"Id": "1", "Code": "InternalError", "SenderFault": False}, {"Id": "2"}],
    }
    assert sqs_answers(sqs_reply, 3) == [Acknowledged("m0"), Rejected("InternalError", "", retryable=True), None]
    assert sqs_answers("junk", 2) == [None, None]


def test_entries_over_a_limit_are_refused_before_anything_is_sent() -> None:
    assert kinesis_record(b"a" * (KINESIS_MAX_RECORD_BYTES - 1), "k").size == KINESIS_MAX_RECORD_BYTES
    with pytest.raises(OversizeEntryError, match="over the Kinesis record limit"):
        kinesis_record(b"a" * KINESIS_MAX_RECORD_BYTES, "k")
    for key in ("", "k" * 257):
        with pytest.raises(ValueError, match="partition key"):
            kinesis_record(b"{}", key)
    with pytest.raises(OversizeEntryError, match="over the Firehose record limit"):
        firehose_record(b"a" * (FIREHOSE_MAX_RECORD_BYTES + 1))
    assert sqs_message("a" * SQS_MAX_MESSAGE_BYTES).size == SQS_MAX_MESSAGE_BYTES
    with pytest.raises(OversizeEntryError, match="over the SQS message limit"):
        sqs_message("a" * SQS_MAX_MESSAGE_BYTES, {"r": {"DataType": "String", "StringValue": "x"}})


def test_fifo_ids_sqs_would_refuse_become_their_hash() -> None:
    assert sqs_fifo_id("user-42") == "user-42"
    assert sqs_fifo_id("shardId-000000000001-4959-0-3") == "shardId-000000000001-4959-0-3"
    for refused in ("k" * 129, "with space", "é", ""):
        hashed = sqs_fifo_id(refused)
        assert hashed.startswith("sha256:") and len(hashed) == 71 and hashed == sqs_fifo_id(refused)
    assert sqs_fifo_id("k" * 128) == "k" * 128
