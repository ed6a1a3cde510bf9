"""Dead-letter queue: every rejected record or event, with its payload and a stable reason.

The message body is JSON (see `dlq_message`). SQS takes at most 256 KiB per message and per batch
(bodies and attributes together): a payload whose message would be larger goes to S3 at a key made
from the letter's identity (a retry overwrites it, never duplicates it) and the message points to it
(`payload` null, `payloadS3` set). Batches hold at most 10 entries and 256 KiB; failed entries are
retried. `letter_payload` gets a payload back from either place.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from aggregations.store import StoreUnavailableError

log = logging.getLogger("streamkpi.dlq")

SQS_MAX_BYTES = 262_144  # 256 KiB: one message, and one batch (bodies + attributes of all entries)
SQS_MAX_BATCH_ENTRIES = 10
# A body above this goes to S3 instead: leaves room for the attributes under SQS_MAX_BYTES.
MAX_INLINE_BODY_BYTES = 250_000
DEFAULT_S3_PREFIX = "dlq/"
# The largest payload a letter can hold: a whole record (1 MiB), or one event of a record inflated up to
# the decoder's default cap (8 MiB). `letter_payload` reads no more than this from S3.
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected thing and where it came from."""

    stream: str
    shard_id: str
    sequence_number: str
    sub_sequence_number: int
    index: int
    partition_key: str
    arrival_ms: int
    reason: str
    detail: str
    payload: bytes
    events: int | None = None  # a letter standing for a whole record: how many events it held

    @property
    def identity(self) -> str:
        return f"{self.shard_id}/{self.sequence_number}/{self.sub_sequence_number}/{self.index}"


def dlq_message(letter: DeadLetter, payload_s3: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The message body; with `payload_s3` the payload is in S3 and `payload` is null."""
    message: dict[str, Any] = {
        "id": letter.identity,
        "reason": letter.reason,
        "detail": letter.detail[:1000],
        "stream": letter.stream,
        "shardId": letter.shard_id,
        "sequenceNumber": letter.sequence_number,
        "subSequenceNumber": letter.sub_sequence_number,
        "index": letter.index,
        "partitionKey": letter.partition_key,
        "approximateArrivalTimestamp": datetime.fromtimestamp(letter.arrival_ms / 1000, UTC).isoformat(
            timespec="milliseconds"
        ),
        "payload": None if payload_s3 is not None else base64.b64encode(letter.payload).decode(),
    }
    if payload_s3 is not None:
        message["payloadS3"] = dict(payload_s3)
    if letter.events is not None:
        message["events"] = letter.events
    return message


def encode_body(message: Mapping[str, Any]) -> str:
    """JSON text SQS accepts: it refuses U+FFFE, U+FFFF and lone surrogates, so those are escaped."""
    try:
        text = orjson.dumps(message).decode()
    except orjson.JSONEncodeError:  # a lone surrogate (orjson refuses them): plain ASCII JSON instead
        return json.dumps(message, ensure_ascii=True, separators=(",", ":"))
    # orjson escapes the C0 controls SQS refuses, but writes these two as they are.
    return text.replace("\ufffe", "\\ufffe").replace("\uffff", "\\uffff")


def s3_key(letter: DeadLetter, prefix: str = DEFAULT_S3_PREFIX) -> str:
    """Where a large payload goes: one key per identity, so a retry overwrites rather than duplicates."""
    return (
        f"{prefix}{letter.stream}/{letter.shard_id}/"
        f"{letter.sequence_number}-{letter.sub_sequence_number}-{letter.index}"
    )


def entry_bytes(entry: Mapping[str, Any]) -> int:
    """What an SQS batch entry counts against the 256 KiB limit: body plus attribute names, types, values."""
    size = len(entry["MessageBody"].encode())
    for name, attribute in entry.get("MessageAttributes", {}).items():
        size += len(name.encode()) + len(attribute["DataType"].encode())
        size += len(attribute.get("StringValue", "").encode()) + len(attribute.get("BinaryValue", b""))
    return size


def plan_batches(sizes: Sequence[int], max_entries: int, max_bytes: int) -> list[list[int]]:
    """Split items (by index, in order) into batches of at most `max_entries` and `max_bytes` each.

    An item larger than `max_bytes` on its own gets a batch of its own (the caller keeps items smaller).
    """
    batches: list[list[int]] = []
    current: list[int] = []
    current_bytes = 0
    for index, size in enumerate(sizes):
        if current and (len(current) >= max_entries or current_bytes + size > max_bytes):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(index)
        current_bytes += size
    if current:
        batches.append(current)
    return batches


class PayloadUnavailableError(Exception):
    """A DLQ message's payload cannot be had: malformed inline payload, the S3 object is gone, or the
    pointer leads outside the DLQ's bucket and prefix, or to an object over the size bound."""


def letter_payload(
    body: Mapping[str, Any],
    s3_client: Any | None,
    *,
    bucket: str | None = None,
    prefix: str = DEFAULT_S3_PREFIX,
    max_bytes: int = MAX_PAYLOAD_BYTES,
) -> bytes:
    """The raw payload of a DLQ message body: inline (base64) or from S3 (`payloadS3`).

    A message is input too (anyone who may send to the queue writes one): a pointer is followed only
    into `bucket` (the archive bucket the worker writes to; every caller that reads a queue names it)
    under `prefix`, and an object over `max_bytes` is refused before its body is read.
    """
    inline = body.get("payload")
    if isinstance(inline, str):
        if len(inline) > (max_bytes + 2) // 3 * 4:
            raise PayloadUnavailableError(f"inline payload is larger than {max_bytes} bytes")
        try:
            return base64.b64decode(inline, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PayloadUnavailableError(f"inline payload is not base64: {exc}") from None
    pointer = body.get("payloadS3")
    if not isinstance(pointer, Mapping) or not pointer.get("bucket") or not pointer.get("key"):
        raise PayloadUnavailableError("the message has neither an inline payload nor a payloadS3 pointer")
    where = f"s3://{pointer['bucket']}/{pointer['key']}"
    if not isinstance(pointer["bucket"], str) or not isinstance(pointer["key"], str):
        raise PayloadUnavailableError("payloadS3 names its bucket and key with something other than strings")
    if bucket is not None and pointer["bucket"] != bucket:
        raise PayloadUnavailableError(f"{where} is not in the archive bucket {bucket!r}: not read")
    if not pointer["key"].startswith(prefix):
        raise PayloadUnavailableError(f"{where} is not under the DLQ prefix {prefix!r}: not read")
    if s3_client is None:
        raise PayloadUnavailableError(f"payload is in {where} but no S3 client")
    try:
        reply = s3_client.get_object(Bucket=pointer["bucket"], Key=pointer["key"])
    except Exception as exc:  # botocore ClientError (NoSuchKey, AccessDenied) / connection errors
        raise PayloadUnavailableError(f"cannot read {where}: {exc}") from None
    size = reply.get("ContentLength")
    if not isinstance(size, int) or size > max_bytes:
        reply["Body"].close()
        raise PayloadUnavailableError(f"{where} holds {size} bytes, more than {max_bytes}: not read")
    try:
        data: bytes = reply["Body"].read(max_bytes + 1)
    except Exception as exc:  # the connection broke while reading
        raise PayloadUnavailableError(f"cannot read {where}: {exc}") from None
    finally:
        reply["Body"].close()
    if len(data) > max_bytes:
        raise PayloadUnavailableError(f"{where} holds more than {max_bytes} bytes: not read")
    expected = pointer.get("bytes")
    if isinstance(expected, int) and expected != len(data):
        raise PayloadUnavailableError(f"{where} holds {len(data)} bytes, the message says {expected}")
    return data


class DeadLetterSink(Protocol):
    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Returns only when every letter is acknowledged; raises StoreUnavailableError otherwise."""
        ...


class MemoryDeadLetterQueue:
    """In-memory DLQ for tests."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []
        self.available = True

    def send(self, letters: Sequence[DeadLetter]) -> None:
        if not self.available:
            raise StoreUnavailableError("dlq is unavailable (test outage)")
        self.letters.extend(letters)


class SqsDeadLetterQueue:
    """SQS backend, large payloads in S3. FIFO queues get the identity as deduplication id, the shard as group."""

    def __init__(
        self,
        sqs_client: Any,
        queue_url: str,
        sleep: Callable[[float], None] = time.sleep,
        attempts: int = 5,
        *,
        s3_client: Any | None = None,
        bucket: str | None = None,
        s3_prefix: str = DEFAULT_S3_PREFIX,
        max_inline_body_bytes: int = MAX_INLINE_BODY_BYTES,
        max_batch_bytes: int = SQS_MAX_BYTES,
    ) -> None:
        self.sqs = sqs_client
        self.queue_url = queue_url
        self.fifo = queue_url.endswith(".fifo")
        self.sleep = sleep
        self.attempts = attempts
        self.s3 = s3_client
        self.bucket = bucket
        self.s3_prefix = s3_prefix
        self.max_inline_body_bytes = max_inline_body_bytes
        self.max_batch_bytes = max_batch_bytes

    def send(self, letters: Sequence[DeadLetter]) -> None:
        # Large payloads are in S3 before any message points to them.
        entries = [self._entry(str(i), letter) for i, letter in enumerate(letters)]
        sizes = [entry_bytes(entry) for entry in entries]
        for batch in plan_batches(sizes, SQS_MAX_BATCH_ENTRIES, self.max_batch_bytes):
            self._send_batch([entries[i] for i in batch])

    def _send_batch(self, entries: Sequence[dict[str, Any]]) -> None:
        pending = {entry["Id"]: entry for entry in entries}
        for attempt in range(self.attempts):
            try:
                reply = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=list(pending.values()))
            except Exception as exc:  # botocore ClientError / connection errors
                log.warning("dlq send failed", extra={"error": str(exc), "attempt": attempt + 1})
            else:
                for ok in reply.get("Successful", []):
                    pending.pop(ok["Id"], None)
                if not pending:
                    return
                failed = reply.get("Failed", [])
                log.warning(
                    "dlq entries refused",
                    extra={"refused": len(pending), "codes": sorted({f.get("Code", "") for f in failed})},
                )
            if attempt + 1 < self.attempts:
                self.sleep(min(0.1 * 2**attempt, 2.0))
        raise StoreUnavailableError(f"SQS refused {len(pending)} DLQ messages after {self.attempts} attempts")

    def _entry(self, entry_id: str, letter: DeadLetter) -> dict[str, Any]:
        body = encode_body(dlq_message(letter))
        if len(body.encode()) > self.max_inline_body_bytes:
            body = encode_body(dlq_message(letter, self._store_payload(letter)))
        entry: dict[str, Any] = {
            "Id": entry_id,
            "MessageBody": body,
            "MessageAttributes": {"reason": {"DataType": "String", "StringValue": letter.reason}},
        }
        if self.fifo:
            entry["MessageDeduplicationId"] = letter.identity.replace("/", "-")[-128:]
            entry["MessageGroupId"] = letter.shard_id
        return entry

    def _store_payload(self, letter: DeadLetter) -> dict[str, Any]:
        if self.s3 is None or not self.bucket:
            raise StoreUnavailableError(
                f"a DLQ payload of {len(letter.payload)} bytes is too large for SQS and no S3 bucket is configured"
            )
        key = s3_key(letter, self.s3_prefix)
        for attempt in range(self.attempts):
            try:
                self.s3.put_object(
                    Bucket=self.bucket, Key=key, Body=letter.payload, ContentType="application/octet-stream"
                )
            except Exception as exc:  # botocore ClientError / connection errors
                log.warning("dlq payload upload failed", extra={"error": str(exc), "attempt": attempt + 1, "key": key})
                if attempt + 1 < self.attempts:
                    self.sleep(min(0.1 * 2**attempt, 2.0))
                continue
            return {"bucket": self.bucket, "key": key, "bytes": len(letter.payload)}
        raise StoreUnavailableError(
            f"S3 refused the DLQ payload s3://{self.bucket}/{key} after {self.attempts} attempts"
        )
