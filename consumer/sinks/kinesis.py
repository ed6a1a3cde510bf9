"""Forward to a Kinesis data stream with PutRecords, in order per partition key.

Limits: at most 500 records and 5 MiB per call, counting data plus partition key bytes; one record (data
plus partition key bytes, the stricter reading of the AWS limit) at most 1 MiB; the partition key 1 to
256 characters. An entry is never sent before an earlier entry with its key is acknowledged (a call
holds at most one record per key), so a refused and retried record cannot land behind a later one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from consumer.sinks.sending import DeliverySink
from delivery.aws import KinesisPutRecords, kinesis_record
from delivery.backoff import DEFAULT_BACKOFF, Backoff

if TYPE_CHECKING:
    from consumer.sinks import ForwardPair


class KinesisStreamSink(DeliverySink):
    """Forward to a Kinesis data stream (name or ARN)."""

    def __init__(
        self,
        name: str,
        kinesis_client: Any,
        stream: str,
        sleep: Callable[[float], None] = time.sleep,
        attempts: int = 8,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        super().__init__(name, KinesisPutRecords(kinesis_client, stream), sleep, attempts, backoff)
        self.stream = stream

    def send(self, events: Sequence[ForwardPair]) -> None:
        """Forward every event, in order per partition key, or raise DeliveryUnavailableError."""
        try:  # every limit is checked before anything is sent
            entries = [kinesis_record(event[1], event[0]) for event in events]
        except ValueError as exc:
            raise self._refuse(exc) from None
        self._put(entries)
