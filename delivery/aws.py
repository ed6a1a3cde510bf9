"""Thin adapters over boto3 clients for `put.put_until_acknowledged`, one batch action of one target each.

They build the service's request, read its reply into one answer per entry (a reply that is short or
not what the service documents answers nothing for the entries it leaves out), and translate botocore's
exceptions into the terms of `retryable`. The clients are injected; every decision is `put`'s.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from delivery.errors import OversizeEntryError
from delivery.limits import (
    FIREHOSE,
    FIREHOSE_MAX_RECORD_BYTES,
    KINESIS,
    KINESIS_MAX_PARTITION_KEY_CHARS,
    KINESIS_MAX_RECORD_BYTES,
    SQS,
    SQS_MAX_ID_CHARS,
    SQS_MAX_MESSAGE_BYTES,
    BatchLimits,
)
from delivery.put import Acknowledged, Answer, CallReply, Entry, Rejected
from delivery.retryable import call_outcome, entry_retryable, transport_outcome


def call_failure(exc: Exception) -> CallReply | None:
    """A failed call as the kit sees it; None for an exception that is no failure of the service (a bug,
    an interrupt): the caller lets it propagate."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code") or "")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return CallReply(failure=call_outcome(code, status), code=code, error=code or str(exc))
    if isinstance(exc, BotocoreConnectionError):  # could not connect: the request never went out
        return CallReply(failure=transport_outcome(request_sent=False), error=f"{type(exc).__name__}: {exc}")
    if isinstance(exc, BotoCoreError | ConnectionError | TimeoutError):  # read timeout, dropped connection
        return CallReply(failure=transport_outcome(request_sent=True), error=f"{type(exc).__name__}: {exc}")
    return None


def _call(operation: Callable[..., Any], read: Callable[[Any], list[Answer]], **kwargs: Any) -> CallReply:
    try:
        reply = operation(**kwargs)
    except Exception as exc:
        failure = call_failure(exc)
        if failure is None:
            raise
        return failure
    return CallReply(answers=read(reply))


def positional_answers(reply: Any, key: str, count: int, read: Callable[[Mapping[str, Any]], Answer]) -> list[Answer]:
    """Answers listed in request order under `key` (Kinesis, Firehose); missing ones are None."""
    items = reply.get(key) if isinstance(reply, Mapping) else None
    if not isinstance(items, list) or len(items) > count:  # more answers than entries: none can be trusted
        return [None] * count
    answers = [read(item) if isinstance(item, Mapping) else None for item in items]
    return answers + [None] * (count - len(answers))


def _refusal(item: Mapping[str, Any], code_key: str, sender_fault: bool | None = None) -> Rejected:
    code = str(item[code_key])
    message = str(item.get("ErrorMessage") or item.get("Message") or "")
    return Rejected(code, message, entry_retryable(code, sender_fault))


# -- Kinesis PutRecords ----------------------------------------------------------------------------


def kinesis_record(data: bytes, partition_key: str) -> Entry:
    """A PutRecords entry, ordered by its partition key; ValueError if Kinesis could never take it."""
    if not 1 <= len(partition_key) <= KINESIS_MAX_PARTITION_KEY_CHARS:
        raise ValueError(
            f"partition key of {len(partition_key)} characters; Kinesis needs 1 to {KINESIS_MAX_PARTITION_KEY_CHARS}"
        )
    size = len(data) + len(partition_key.encode())
    if size > KINESIS_MAX_RECORD_BYTES:
        raise OversizeEntryError(
            f"record of {size} bytes (data + partition key) is over the Kinesis record limit of "
            f"{KINESIS_MAX_RECORD_BYTES} bytes"
        )
    return Entry({"Data": data, "PartitionKey": partition_key}, size, partition_key)


def _kinesis_answer(item: Mapping[str, Any]) -> Answer:
    if item.get("ErrorCode"):
        return _refusal(item, "ErrorCode")
    sequence_number = item.get("SequenceNumber")
    return Acknowledged(sequence_number, str(item.get("ShardId") or "")) if isinstance(sequence_number, str) else None


class KinesisPutRecords:
    """PutRecords into one stream (a name, or an ARN)."""

    service = "Kinesis stream"
    limits = KINESIS

    def __init__(self, client: Any, stream: str) -> None:
        self.client, self.target = client, stream
        self._stream_arg = {"StreamARN": stream} if stream.startswith("arn:") else {"StreamName": stream}

    def call(self, requests: Sequence[Mapping[str, Any]]) -> CallReply:
        def read(reply: Any) -> list[Answer]:
            return positional_answers(reply, "Records", len(requests), _kinesis_answer)

        return _call(self.client.put_records, read, Records=list(requests), **self._stream_arg)


# -- Firehose PutRecordBatch -----------------------------------------------------------------------


def firehose_record(data: bytes) -> Entry:
    """A PutRecordBatch entry; OversizeEntryError if Firehose could never take it."""
    if len(data) > FIREHOSE_MAX_RECORD_BYTES:
        raise OversizeEntryError(
            f"record of {len(data)} bytes is over the Firehose record limit of {FIREHOSE_MAX_RECORD_BYTES} bytes"
        )
    return Entry({"Data": data}, len(data))


def _firehose_answer(item: Mapping[str, Any]) -> Answer:
    if item.get("ErrorCode"):
        return _refusal(item, "ErrorCode")
    record_id = item.get("RecordId")
    return Acknowledged(record_id) if isinstance(record_id, str) else None


class FirehosePutRecordBatch:
    """PutRecordBatch into one delivery stream."""

    service = "Firehose delivery stream"
    limits = FIREHOSE

    def __init__(self, client: Any, delivery_stream: str) -> None:
        self.client, self.target = client, delivery_stream

    def call(self, requests: Sequence[Mapping[str, Any]]) -> CallReply:
        def read(reply: Any) -> list[Answer]:
            return positional_answers(reply, "RequestResponses", len(requests), _firehose_answer)

        return _call(self.client.put_record_batch, read, DeliveryStreamName=self.target, Records=list(requests))


# -- SQS batch actions -----------------------------------------------------------------------------

_SQS_ID = re.compile(f"[!-~]{{1,{SQS_MAX_ID_CHARS}}}")


def sqs_fifo_id(text: str) -> str:
    """`text` as a FIFO group or deduplication id: itself if SQS takes it (1 to 128 printable ASCII
    characters, no space), else its SHA-256 (one text, one id)."""
    if _SQS_ID.fullmatch(text):
        return text
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def sqs_message_bytes(request: Mapping[str, Any]) -> int:
    """What a message counts against the SQS limits: its body plus attribute names, types and values."""
    size = len(request["MessageBody"].encode())
    for name, attribute in request.get("MessageAttributes", {}).items():
        size += len(name.encode()) + len(attribute["DataType"].encode())
        size += len(attribute.get("StringValue", "").encode()) + len(attribute.get("BinaryValue", b""))
    return size


def sqs_message(
    body: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    group_id: str | None = None,
    deduplication_id: str | None = None,
    ordered: bool = False,
) -> Entry:
    """A SendMessageBatch entry (FIFO queues: with a group and a deduplication id; `ordered`: kept in order
    per group); OversizeEntryError if SQS could never take it."""
    request: dict[str, Any] = {"MessageBody": body}
    if attributes:
        request["MessageAttributes"] = dict(attributes)
    if group_id is not None:
        request["MessageGroupId"] = group_id
    if deduplication_id is not None:
        request["MessageDeduplicationId"] = deduplication_id
    size = sqs_message_bytes(request)
    if size > SQS_MAX_MESSAGE_BYTES:
        raise OversizeEntryError(
            f"message of {size} bytes (body + attributes) is over the SQS message limit of "
            f"{SQS_MAX_MESSAGE_BYTES} bytes"
        )
    return Entry(request, size, group_id if ordered else None)


def sqs_answers(reply: Any, count: int) -> list[Answer]:
    """Answers of an SQS batch action, matched by entry Id (the request position); missing ones are None."""
    answers: list[Answer] = [None] * count
    if not isinstance(reply, Mapping):
        return answers
    for key in ("Successful", "Failed"):
        items = reply.get(key)
        for item in items if isinstance(items, list) else []:
            entry_id = item.get("Id") if isinstance(item, Mapping) else None
            if not (isinstance(entry_id, str) and entry_id.isdigit() and int(entry_id) < count):
                continue
            if key == "Successful":
                answers[int(entry_id)] = Acknowledged(str(item.get("MessageId") or ""))
            elif item.get("Code"):
                fault = item.get("SenderFault")
                answers[int(entry_id)] = _refusal(item, "Code", fault if isinstance(fault, bool) else None)
    return answers


class SqsBatch:
    """One SQS batch action on one queue: `send_message_batch` (entries from `sqs_message`) or
    `delete_message_batch` (entries holding a ReceiptHandle, size 0). Entry Ids are given here."""

    service = "SQS queue"

    def __init__(
        self, client: Any, queue_url: str, operation: str = "send_message_batch", limits: BatchLimits = SQS
    ) -> None:
        self.client, self.target, self.limits = client, queue_url, limits
        self._operation = getattr(client, operation)

    def call(self, requests: Sequence[Mapping[str, Any]]) -> CallReply:
        entries = [{**request, "Id": str(n)} for n, request in enumerate(requests)]

        def read(reply: Any) -> list[Answer]:
            return sqs_answers(reply, len(requests))

        return _call(self._operation, read, QueueUrl=self.target, Entries=entries)
