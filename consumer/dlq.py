"""Dead-letter queue: every rejected record or event, with its payload and a stable reason.

The message body is JSON (see `dlq_message`); SQS gets batches of 10 with failed entries retried.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from aggregations.store import StoreUnavailableError

log = logging.getLogger("streamkpi.dlq")


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

    @property
    def identity(self) -> str:
        return f"{self.shard_id}/{self.sequence_number}/{self.sub_sequence_number}/{self.index}"


def dlq_message(letter: DeadLetter) -> dict[str, Any]:
    return {
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
        "payload": base64.b64encode(letter.payload).decode(),
    }


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
    """SQS backend. FIFO queues get the identity as deduplication id and the shard as group."""

    def __init__(
        self, sqs_client: Any, queue_url: str, sleep: Callable[[float], None] = time.sleep, attempts: int = 5
    ) -> None:
        self.sqs = sqs_client
        self.queue_url = queue_url
        self.fifo = queue_url.endswith(".fifo")
        self.sleep = sleep
        self.attempts = attempts

    def send(self, letters: Sequence[DeadLetter]) -> None:
        for start in range(0, len(letters), 10):
            self._send_batch(letters[start : start + 10])

    def _send_batch(self, batch: Sequence[DeadLetter]) -> None:
        pending = {str(i): letter for i, letter in enumerate(batch)}
        for attempt in range(self.attempts):
            entries = [self._entry(i, letter) for i, letter in pending.items()]
            try:
                reply = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except Exception as exc:  # botocore ClientError / connection errors
                log.warning("dlq send failed", extra={"error": str(exc), "attempt": attempt + 1})
            else:
                for ok in reply.get("Successful", []):
                    pending.pop(ok["Id"], None)
                if not pending:
                    return
            self.sleep(min(0.1 * 2**attempt, 2.0))
        raise StoreUnavailableError(f"SQS refused {len(pending)} DLQ messages after {self.attempts} attempts")

    def _entry(self, entry_id: str, letter: DeadLetter) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "Id": entry_id,
            "MessageBody": orjson.dumps(dlq_message(letter)).decode(),
            "MessageAttributes": {"reason": {"DataType": "String", "StringValue": letter.reason}},
        }
        if self.fifo:
            entry["MessageDeduplicationId"] = letter.identity.replace("/", "-")[-128:]
            entry["MessageGroupId"] = letter.shard_id
        return entry
