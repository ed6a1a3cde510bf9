"""Forward sinks: valid events fanned out by event type to another Kinesis stream or a Firehose archive.

A sink's `send` returns only when every event it was given is acknowledged by the service, so the
worker may checkpoint past them; otherwise it raises `StoreUnavailableError` and the worker backs off
without checkpointing (invariant 1: nothing is skipped).

Delivery of forwarded copies is at-least-once, never at-most-once: a whole-call failure after the
service already stored the records (a timeout, a lost connection), the worker's own retry of a failed
`send`, and KCL redelivery after a crash can all forward an event again. Events are immutable facts;
whoever reads a forwarded stream or the archive deduplicates if it needs to.

Limits (checked before anything is sent, so a `ValueError` means nothing of the call went out):

- `KinesisStreamSink`: `PutRecords` with at most 500 records and 5 MiB per call, counting data plus
  partition key bytes; one record (data plus partition key bytes, the stricter reading of the AWS
  limit) at most 1 MiB; the partition key 1 to 256 characters.
- `FirehoseSink`: `PutRecordBatch` with at most 500 records and 4 MiB per call; each event is written
  as its data plus b"\\n" (Firehose concatenates records without a delimiter; the archive is NDJSON),
  and that line may be at most 1,000 KiB. Data must be one line of JSON: a b"\\n" inside it would split
  the event in the archive. By default consecutive lines are packed into Firehose records of up to
  1,000 KiB: the archive is byte for byte the same, with far fewer records and calls (Firehose bills
  each record in 5 KB increments, and one call carries 4 MiB instead of 500 small events). `pack=False`
  sends one record per event, for delivery streams that transform or partition record by record.

An event over a limit can never be forwarded; the caller routes it to the DLQ before it reaches a
sink (see `KINESIS_MAX_RECORD_BYTES` and `FIREHOSE_MAX_RECORD_BYTES`).

Only the entries a call reports as failed (`FailedRecordCount` / `FailedPutCount`, per-entry
`ErrorCode`) are sent again, in their original order, with capped exponential backoff and jitter.
Throttled, 5xx and connection-level failures of a whole call are retried the same way; any other
refusal of the call (missing stream, access denied, bad request) is not retried here. Retried entries
may land after later entries of the same batch: `PutRecords` gives no ordering across a partial failure.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from aggregations.store import StoreUnavailableError

log = logging.getLogger("streamkpi.sinks")

MIB = 1024 * 1024

KINESIS_MAX_RECORDS = 500
KINESIS_MAX_BATCH_BYTES = 5 * MIB
KINESIS_MAX_RECORD_BYTES = MIB  # data + partition key (UTF-8 bytes)
KINESIS_MAX_PARTITION_KEY_CHARS = 256

FIREHOSE_MAX_RECORDS = 500
FIREHOSE_MAX_BATCH_BYTES = 4 * MIB
FIREHOSE_MAX_RECORD_BYTES = 1000 * 1024  # data + the appended b"\n"

BACKOFF_BASE_S = 0.1
BACKOFF_MAX_S = 5.0

# Whole-call error codes worth retrying (throttling and transient service faults of Kinesis and Firehose).
RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "KMSThrottlingException",
        "ServiceUnavailableException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalFailureException",
        "InternalServerError",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)

_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    BotocoreConnectionError,  # EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError
    HTTPClientError,  # ReadTimeoutError, ConnectionClosedError, ResponseStreamingError
    ConnectionError,
    TimeoutError,
)

T = TypeVar("T")


class Forward(NamedTuple):
    """One valid event to forward: its partition key and its own JSON bytes (one object, no trailing
    newline). Sinks take any such pair: the worker queues plain tuples, which cost less to build."""

    partition_key: str
    data: bytes


ForwardPair = tuple[str, bytes]  # (partition key, data): a Forward or a plain tuple


class EventSink(Protocol):
    name: str  # as named in the config, e.g. "archive"

    def send(self, events: Sequence[ForwardPair]) -> None:
        """Returns only when every event is acknowledged; raises aggregations.store.StoreUnavailableError otherwise."""
        ...


def batches(events: Iterable[T], max_records: int, max_bytes: int, size: Callable[[T], int]) -> Iterator[list[T]]:
    """Split `events` in order into lists of at most `max_records` items and `max_bytes` of `size`.

    Greedy: a list is closed only when the next item would break a limit. Raises ValueError for an item
    that alone is larger than `max_bytes` (when reached: check sizes first if nothing may go out).
    """
    if max_records < 1 or max_bytes < 0:
        raise ValueError(f"batches: need max_records >= 1 and max_bytes >= 0, got {max_records}, {max_bytes}")
    batch: list[T] = []
    batch_bytes = 0
    for event in events:
        n = size(event)
        if n > max_bytes:
            raise ValueError(f"an item of {n} bytes cannot fit a batch of at most {max_bytes} bytes")
        if batch and (len(batch) >= max_records or batch_bytes + n > max_bytes):
            yield batch
            batch, batch_bytes = [], 0
        batch.append(event)
        batch_bytes += n
    if batch:
        yield batch


def backoff_seconds(attempt: int) -> float:
    """Delay after failed attempt number `attempt` (1, 2, ...): 0.1 s doubling up to 5 s, with jitter."""
    ceiling = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
    return ceiling / 2 + random.random() * ceiling / 2


class MemorySink:
    """In-memory sink for tests: `events` received, `available` (False raises StoreUnavailableError), `calls`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[ForwardPair] = []
        self.available = True
        self.calls = 0

    def send(self, events: Sequence[ForwardPair]) -> None:
        self.calls += 1
        if not self.available:
            raise StoreUnavailableError(
                f"sink {self.name!r} is unavailable (test outage); {len(events)} events pending"
            )
        self.events.extend(events)


@dataclass(frozen=True, slots=True)
class _Entry:
    request: dict[str, Any]
    size: int
    events: int = 1  # events in this entry (a packed Firehose record holds many)


def _entry_size(entry: _Entry) -> int:
    return entry.size


def _events_in(entries: Iterable[_Entry]) -> int:
    return sum(entry.events for entry in entries)


def _client_error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "") or "")


def _retryable(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0
    return _client_error_code(exc) in RETRYABLE_CODES or status >= 500 or status == 429


class _BatchingSink:
    """Batching, retry of failed entries and backoff shared by the Kinesis and Firehose sinks."""

    service = ""
    max_records = 0
    max_batch_bytes = 0

    def __init__(self, name: str, target: str, sleep: Callable[[float], None], attempts: int) -> None:
        if attempts < 1:
            raise ValueError(f"sink {name!r}: attempts must be at least 1, got {attempts}")
        self.name = name
        self.target = target
        self.sleep = sleep
        self.attempts = attempts

    def send(self, events: Sequence[ForwardPair]) -> None:
        """Forward every event, in order, or raise StoreUnavailableError (ValueError: see the module doc)."""
        entries = self._entries(events)  # every limit is checked before sending anything
        total = len(events)
        done = 0
        for batch in batches(entries, self.max_records, self.max_batch_bytes, _entry_size):
            in_batch = _events_in(batch)
            self._send_batch(batch, unsent_after=total - done - in_batch, total=total)
            done += in_batch

    def _entries(self, events: Sequence[ForwardPair]) -> list[_Entry]:
        return [self._entry(event) for event in events]

    def _entry(self, event: ForwardPair) -> _Entry:
        raise NotImplementedError

    def _put(self, entries: list[dict[str, Any]]) -> list[str | None]:
        """One call; the error code of each entry (None when stored), in request order."""
        raise NotImplementedError

    def _send_batch(self, batch: list[_Entry], unsent_after: int, total: int) -> None:
        pending = batch
        for attempt in range(1, self.attempts + 1):
            try:
                codes = self._put([entry.request for entry in pending])
            except ClientError as exc:
                if not _retryable(exc):
                    raise StoreUnavailableError(
                        f"sink {self.name!r}: {self.service} {self.target!r} refused the call "
                        f"({_client_error_code(exc) or exc}); {_events_in(pending) + unsent_after} of {total} "
                        "events pending"
                    ) from exc
                failed, error = pending, _client_error_code(exc) or str(exc)
            except _TRANSIENT_ERRORS as exc:
                failed, error = pending, f"{type(exc).__name__}: {exc}"
            else:
                if len(codes) != len(pending):  # cannot tell which were stored: send all again (at-least-once)
                    failed, error = pending, f"{len(codes)} answers for {len(pending)} records"
                else:
                    failed = [entry for entry, code in zip(pending, codes, strict=True) if code is not None]
                    error = ", ".join(sorted({code for code in codes if code is not None}))
            if not failed:
                return
            if attempt == self.attempts:
                raise StoreUnavailableError(
                    f"sink {self.name!r}: {self.service} {self.target!r} did not acknowledge "
                    f"{_events_in(failed) + unsent_after} of {total} events after {attempt} attempts "
                    f"(last error: {error})"
                )
            delay = backoff_seconds(attempt)
            log.warning(
                "sink: retrying unacknowledged records",
                extra={
                    "sink": self.name,
                    "service": self.service,
                    "target": self.target,
                    "failed": len(failed),  # records (a packed Firehose record holds many events)
                    "of": len(pending),
                    "pending": _events_in(failed) + unsent_after,  # events
                    "error": error,
                    "attempt": attempt,
                    "delay_s": round(delay, 3),
                },
            )
            self.sleep(delay)
            pending = failed


class KinesisStreamSink(_BatchingSink):
    """Forward to a Kinesis data stream (name or ARN) with PutRecords; see the module doc for limits."""

    service = "Kinesis stream"
    max_records = KINESIS_MAX_RECORDS
    max_batch_bytes = KINESIS_MAX_BATCH_BYTES

    def __init__(
        self,
        name: str,
        kinesis_client: Any,
        stream: str,
        sleep: Callable[[float], None] = time.sleep,
        attempts: int = 8,
    ) -> None:
        super().__init__(name, stream, sleep, attempts)
        self.kinesis = kinesis_client
        self.stream = stream
        self._stream_arg = {"StreamARN": stream} if stream.startswith("arn:") else {"StreamName": stream}

    def _entry(self, event: ForwardPair) -> _Entry:
        key, data = event
        if not 1 <= len(key) <= KINESIS_MAX_PARTITION_KEY_CHARS:
            raise ValueError(
                f"sink {self.name!r}: partition key of {len(key)} characters; Kinesis needs 1 to "
                f"{KINESIS_MAX_PARTITION_KEY_CHARS} (route the event to the DLQ)"
            )
        size = len(data) + len(key.encode())
        if size > KINESIS_MAX_RECORD_BYTES:
            raise ValueError(
                f"sink {self.name!r}: event of {size} bytes (data + partition key) is over the Kinesis record "
                f"limit of {KINESIS_MAX_RECORD_BYTES} bytes (route the event to the DLQ)"
            )
        return _Entry({"Data": data, "PartitionKey": key}, size)

    def _put(self, entries: list[dict[str, Any]]) -> list[str | None]:
        reply = self.kinesis.put_records(Records=entries, **self._stream_arg)
        return [result.get("ErrorCode") or None for result in reply.get("Records", [])]


class FirehoseSink(_BatchingSink):
    """Forward to a Firehose delivery stream as NDJSON (data + b"\\n") with PutRecordBatch; see the module doc."""

    service = "Firehose delivery stream"
    max_records = FIREHOSE_MAX_RECORDS
    max_batch_bytes = FIREHOSE_MAX_BATCH_BYTES

    def __init__(
        self,
        name: str,
        firehose_client: Any,
        delivery_stream: str,
        sleep: Callable[[float], None] = time.sleep,
        attempts: int = 8,
        pack: bool = True,
    ) -> None:
        super().__init__(name, delivery_stream, sleep, attempts)
        self.firehose = firehose_client
        self.delivery_stream = delivery_stream
        self.pack = pack

    def _entries(self, events: Sequence[ForwardPair]) -> list[_Entry]:
        lines = [self._entry(event) for event in events]
        if not self.pack:
            return lines
        # Consecutive lines joined into records of up to FIREHOSE_MAX_RECORD_BYTES, in order.
        return [
            _Entry({"Data": b"".join(line.request["Data"] for line in group)}, sum(map(_entry_size, group)), len(group))
            for group in batches(lines, max(1, len(lines)), FIREHOSE_MAX_RECORD_BYTES, _entry_size)
        ]

    def _entry(self, event: ForwardPair) -> _Entry:
        data = event[1]
        if b"\n" in data:
            raise ValueError(
                f"sink {self.name!r}: event data holds a newline; the NDJSON archive needs one line per event "
                "(forward compact JSON, e.g. orjson.dumps of the event)"
            )
        line = data + b"\n"
        if len(line) > FIREHOSE_MAX_RECORD_BYTES:
            raise ValueError(
                f"sink {self.name!r}: event of {len(line)} bytes (with its newline) is over the Firehose record "
                f"limit of {FIREHOSE_MAX_RECORD_BYTES} bytes (route the event to the DLQ)"
            )
        return _Entry({"Data": line}, len(line))

    def _put(self, entries: list[dict[str, Any]]) -> list[str | None]:
        reply = self.firehose.put_record_batch(DeliveryStreamName=self.delivery_stream, Records=entries)
        return [result.get("ErrorCode") or None for result in reply.get("RequestResponses", [])]
