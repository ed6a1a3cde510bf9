"""Dead-letter queue: every rejected record or event, with its payload and a stable reason.

The message body is JSON (see `dlq_message`): the letter's identity, its reason code (also a message
attribute, so consumers can filter without parsing), a readable detail, where it came from, and the raw
payload (base64), or, when that would make the message too large for SQS, a pointer to the payload in S3
(`payload` null, `payloadS3` set; see `sqs.py`). `letter_payload` gets a payload back from either place.
Under `[redaction]` with `unparsed = "drop"` a letter of a record that parsed into no object carries no
payload at all, only its size and sha256 (`payload` null, `payloadWithheld` set).
Backends: `sqs.py` (SQS, large payloads in S3) and `memory.py` (the tests' fake).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

DEFAULT_S3_PREFIX = "dlq/"
# The largest payload a letter can hold: a whole record (1 MiB), or one event of a record inflated up to
# the decoder's default cap (8 MiB). `letter_payload` reads no more than this from S3.
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
MAX_DETAIL_CHARS = 1000


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
    # Redaction withheld the payload (an unparsed record, `unparsed = "drop"`): (its size, its sha256), and
    # `payload` is empty.
    withheld: tuple[int, str] | None = None

    @property
    def identity(self) -> str:
        return f"{self.shard_id}/{self.sequence_number}/{self.sub_sequence_number}/{self.index}"


class DeadLetterSink(Protocol):
    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Returns only when every letter is acknowledged; raises DeliveryUnavailableError otherwise."""
        ...


class PayloadUnavailableError(Exception):
    """A DLQ message's payload cannot be had: malformed inline payload, the S3 object is gone, the
    pointer leads outside the DLQ's bucket and prefix or to an object over the size bound, or redaction
    withheld it."""


def dlq_message(letter: DeadLetter, payload_s3: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The message body; with `payload_s3` the payload is in S3 and `payload` is null."""
    message: dict[str, Any] = {
        "id": letter.identity,
        "reason": letter.reason,
        "detail": letter.detail[:MAX_DETAIL_CHARS],
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
    if letter.withheld is not None:
        message["payload"] = None
        message["payloadWithheld"] = {"bytes": letter.withheld[0], "sha256": letter.withheld[1]}
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
    withheld = body.get("payloadWithheld")
    if pointer is None and isinstance(withheld, Mapping):
        raise PayloadUnavailableError(
            'redaction withheld the payload (unparsed = "drop"): only its size and sha256 are kept; read the '
            "record from the stream by its sequence number while the stream still holds it"
        )
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


__all__ = [
    "DEFAULT_S3_PREFIX",
    "MAX_PAYLOAD_BYTES",
    "DeadLetter",
    "DeadLetterSink",
    "PayloadUnavailableError",
    "dlq_message",
    "encode_body",
    "letter_payload",
    "s3_key",
]
