"""Forward to an SQS queue with SendMessageBatch: one message per event, the event's JSON as its body.

A standard queue takes the events in batches of up to 10 messages and 256 KiB, in no promised order. A
FIFO queue (its URL ends in .fifo) gets the event's partition key as MessageGroupId, so each key's events
come out in order (kept while refused entries are retried: a call holds at most one message per group),
and the event's identity as MessageDeduplicationId, so a batch sent again (the worker's retry, KCL
redelivery after a crash) is not stored twice within SQS's five-minute deduplication window. Group and
deduplication ids SQS would not take (over 128 characters, or not printable ASCII) become their SHA-256.

A body is at most 256 KiB: a larger event cannot be forwarded here (ValueError before anything is sent;
the caller dead-letters it). SQS refuses the characters U+FFFE and U+FFFF, which JSON can hold only in
strings, so they are sent escaped (\\ufffe, \\uffff): the same JSON value.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from consumer.sinks.sending import DeliverySink
from delivery.aws import SqsBatch, sqs_fifo_id, sqs_message
from delivery.backoff import DEFAULT_BACKOFF, Backoff
from delivery.put import Entry

if TYPE_CHECKING:
    from consumer.sinks import ForwardPair


class SqsQueueSink(DeliverySink):
    """Forward to one SQS queue, standard or FIFO, by its URL."""

    def __init__(
        self,
        name: str,
        sqs_client: Any,
        queue_url: str,
        sleep: Callable[[float], None] = time.sleep,
        attempts: int = 8,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        super().__init__(name, SqsBatch(sqs_client, queue_url), sleep, attempts, backoff)
        self.queue_url = queue_url
        self.fifo = queue_url.endswith(".fifo")

    def send(self, events: Sequence[ForwardPair]) -> None:
        """Forward every event (FIFO: in order per partition key) or raise DeliveryUnavailableError."""
        self._put([self._message(event) for event in events])  # every limit is checked before anything is sent

    def _message(self, event: ForwardPair) -> Entry:
        try:
            text = event[1].decode()
        except UnicodeDecodeError:
            raise self._refuse(ValueError("event data is not UTF-8 text")) from None
        body = text.replace("\ufffe", "\\ufffe").replace("\uffff", "\\uffff")
        identity = event[2] if len(event) > 2 else ""
        if self.fifo and not identity:
            raise ValueError(
                f"sink {self.name!r}: a FIFO queue needs each event's identity (shard/sequence/sub-sequence/index) "
                "for its deduplication id: forward (partition key, data, identity)"
            )
        try:
            if not self.fifo:
                return sqs_message(body)
            return sqs_message(
                body,
                group_id=sqs_fifo_id(event[0]),
                deduplication_id=sqs_fifo_id(identity.replace("/", "-")),
                ordered=True,
            )
        except ValueError as exc:
            raise self._refuse(exc) from None
