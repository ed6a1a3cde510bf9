"""Forward to a Firehose delivery stream as NDJSON with PutRecordBatch.

Each event is written as its data plus b"\\n" (Firehose concatenates records without a delimiter; the
archive is NDJSON), and that line may be at most 1,000 KiB; at most 500 records and 4 MiB per call.
Data must be one line of JSON: a b"\\n" inside it would split the event in the archive. By default
consecutive lines are packed into Firehose records of up to 1,000 KiB: the archive is byte for byte the
same, with far fewer records and calls (Firehose bills each record in 5 KB increments, and one call
carries 4 MiB instead of 500 small events). `pack=False` sends one record per event, for delivery
streams that transform or partition record by record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from consumer.sinks.sending import DeliverySink
from delivery.aws import FirehosePutRecordBatch, firehose_record
from delivery.backoff import DEFAULT_BACKOFF, Backoff
from delivery.batching import split_batches
from delivery.limits import FIREHOSE_MAX_RECORD_BYTES

if TYPE_CHECKING:
    from consumer.sinks import ForwardPair


class FirehoseSink(DeliverySink):
    """Forward to a Firehose delivery stream as NDJSON (data + b"\\n")."""

    def __init__(
        self,
        name: str,
        firehose_client: Any,
        delivery_stream: str,
        sleep: Callable[[float], None] = time.sleep,
        attempts: int = 8,
        pack: bool = True,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        super().__init__(name, FirehosePutRecordBatch(firehose_client, delivery_stream), sleep, attempts, backoff)
        self.delivery_stream = delivery_stream
        self.pack = pack

    def send(self, events: Sequence[ForwardPair]) -> None:
        """Forward every event, in order, or raise DeliveryUnavailableError (ValueError: see the module doc)."""
        lines = [self._line(event) for event in events]  # every limit is checked before sending anything
        if self.pack:  # consecutive lines joined into records of up to FIREHOSE_MAX_RECORD_BYTES, in order
            records = list(split_batches(lines, max(1, len(lines)), FIREHOSE_MAX_RECORD_BYTES, len))
        else:
            records = [[line] for line in lines]
        self._put([firehose_record(b"".join(record)) for record in records], [len(record) for record in records])

    def _line(self, event: ForwardPair) -> bytes:
        data = event[1]
        if b"\n" in data:
            raise ValueError(
                f"sink {self.name!r}: event data holds a newline; the NDJSON archive needs one line per event "
                "(forward compact JSON, e.g. orjson.dumps of the event)"
            )
        line = data + b"\n"
        if len(line) > FIREHOSE_MAX_RECORD_BYTES:
            raise self._refuse(
                ValueError(
                    f"event of {len(line)} bytes (with its newline) is over the Firehose record limit of "
                    f"{FIREHOSE_MAX_RECORD_BYTES} bytes"
                )
            )
        return line
