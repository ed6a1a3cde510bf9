"""Forward sinks: valid events fanned out by event type to another Kinesis stream, a Firehose archive or
an SQS queue, each a thin shell over the delivery kit (`delivery/`).

A sink's `send` returns only when every event it was given is acknowledged by the service, so the
worker may checkpoint past them; otherwise it raises `DeliveryUnavailableError` and the worker backs off
without checkpointing (invariant 1: nothing is skipped).

Delivery of forwarded copies is at-least-once, never at-most-once: a whole-call failure after the
service already stored the records (a timeout, a lost connection), the worker's own retry of a failed
`send`, and KCL redelivery after a crash can all forward an event again. Events are immutable facts;
whoever reads a forwarded stream, queue or the archive deduplicates if it needs to (a FIFO queue does
it within its deduplication window).

Limits (`delivery.limits`) are checked before anything is sent, so a `ValueError` means nothing of the
call went out. An event over a limit can never be forwarded; the caller routes it to the DLQ before it
reaches a sink.

Only the entries a call refuses with a retryable code are sent again (`delivery.put`), with exponential
backoff and full jitter; any other refusal of the call (missing stream, access denied, bad request) is
not retried here. The Kinesis sink, and the SQS sink on a FIFO queue, keep the order per partition key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from delivery.limits import FIREHOSE_MAX_RECORD_BYTES, KINESIS_MAX_RECORD_BYTES, SQS_MAX_MESSAGE_BYTES


class Forward(NamedTuple):
    """One valid event to forward: its partition key, its own JSON bytes (one object, no trailing
    newline) and its identity `<shardId>/<sequenceNumber>/<subSequenceNumber>/<index>` (a FIFO queue
    deduplicates by it). Sinks take any such tuple: the worker queues plain tuples, which cost less."""

    partition_key: str
    data: bytes
    identity: str = ""


# (partition key, data) or (partition key, data, identity): a Forward or a plain tuple.
ForwardPair = tuple[str, bytes] | tuple[str, bytes, str]


class EventSink(Protocol):
    name: str  # as named in the config, e.g. "archive"

    def send(self, events: Sequence[ForwardPair]) -> None:
        """Returns only when every event is acknowledged; raises delivery.errors.DeliveryUnavailableError otherwise."""
        ...


__all__ = [
    "FIREHOSE_MAX_RECORD_BYTES",
    "KINESIS_MAX_RECORD_BYTES",
    "SQS_MAX_MESSAGE_BYTES",
    "EventSink",
    "Forward",
    "ForwardPair",
]
