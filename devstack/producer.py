"""`streamkpi generate`: put the generator's records into a stream at their event-time pace.

Records are put through the delivery kit (`delivery.put`): PutRecords of at most 500 records and 5 MiB,
in order per partition key; entries Kinesis refuses (throttling and the like) are retried alone with
exponential backoff, and every acknowledged entry's shard and sequence number goes into the truth file,
so the expected counts and DLQ ids refer to what really is in the stream.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from delivery.aws import KinesisPutRecords, kinesis_record
from delivery.backoff import DEFAULT_BACKOFF, Backoff
from delivery.errors import DeliveryRefusedError, DeliveryRejectedError, DeliveryUnavailableError
from delivery.limits import KINESIS_MAX_BATCH_BYTES, KINESIS_MAX_RECORDS
from delivery.put import Budget, CallReport, RetryNotice, all_acknowledged, put_until_acknowledged
from devstack.generator import EventGenerator, PlannedRecord, Truth, event_count

log = logging.getLogger("streamkpi.generate")

# Records wait at most this long for company in a batch before the sender sleeps past them.
LINGER_MS = 100
PROGRESS_EVERY_MS = 5_000
DEFAULT_MAX_ATTEMPTS = 10


class GenerateError(RuntimeError):
    """Sending failed for good; the message says what to do."""


@dataclass
class GenerateStats:
    records: int = 0
    events: int = 0
    valid: int = 0
    invalid: int = 0
    seconds: float = 0.0
    retries: int = 0  # entries sent again after a failed attempt

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "events": self.events,
            "valid": self.valid,
            "invalid": self.invalid,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events_per_second, 1),
            "retries": self.retries,
        }


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _entry_bytes(record: PlannedRecord) -> int:
    return len(record.data) + len(record.partition_key.encode())


class _Sender:
    def __init__(
        self,
        client: Any,
        stream: str,
        truth: Truth,
        stats: GenerateStats,
        sleep: Callable[[float], None],
        max_attempts: int,
        backoff: Backoff,
    ) -> None:
        self.put_records = KinesisPutRecords(client, stream)
        self.stream, self.truth, self.stats = stream, truth, stats
        self.sleep, self.budget, self.backoff = sleep, Budget(max_attempts), backoff

    def send(self, batch: list[PlannedRecord]) -> None:
        """Put every record of the batch exactly once, or raise GenerateError."""

        def on_call(report: CallReport) -> None:
            for index, acknowledged in report.acknowledged:
                self.truth.add(batch[index], acknowledged.shard_id, acknowledged.id)
                self._count(batch[index])

        try:
            results = put_until_acknowledged(
                [kinesis_record(record.data, record.partition_key) for record in batch],
                self.put_records,
                budget=self.budget,
                backoff=self.backoff,
                sleep=self.sleep,
                on_call=on_call,
                on_retry=self._retrying,
            )
            all_acknowledged(results, self.put_records)
        except DeliveryRefusedError as exc:
            raise GenerateError(
                f"put_records to stream {self.stream!r} failed: {exc.code or exc.last_error}. "
                "Check that the stream exists (is the local stack up?) and that the credentials may write to it."
            ) from exc
        except DeliveryRejectedError as exc:
            raise GenerateError(f"{exc}; check the stream {self.stream!r} (its KMS key).") from exc
        except DeliveryUnavailableError as exc:
            raise GenerateError(
                f"{len(exc.unacknowledged)} records still refused after {exc.attempts} attempts (last error: "
                f"{exc.last_error}); the stream {self.stream!r} is overloaded: lower --rate or add shards."
            ) from exc

    def _retrying(self, notice: RetryNotice) -> None:
        report = notice.report
        log.warning(
            "put_records: retrying refused entries",
            extra={
                "failed": len(report.failed),
                "of": len(report.sent),
                "error": report.error,
                "attempt": report.attempt,
                "delay_s": notice.delay_s,
            },
        )
        self.stats.retries += len(report.failed)

    def _count(self, record: PlannedRecord) -> None:
        self.stats.records += 1
        self.stats.events += len(record.events)
        invalid = sum(1 for event in record.events if event.reason is not None)
        self.stats.invalid += invalid
        self.stats.valid += len(record.events) - invalid


def write_truth(path: Path, truth: Truth) -> None:
    """Write atomically: readers see the old file or the whole new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(orjson.dumps(truth.to_dict(), option=orjson.OPT_INDENT_2))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def run_generate(
    kinesis_client: Any,
    stream: str,
    *,
    rate: float,
    duration: float,
    invalid_fraction: float = 0.0,
    seed: int | None = None,
    truth_path: Path | str | None = None,
    late_fraction: float = 0.0,
    events_path: Path | str | None = None,
    start_ms: int | None = None,
    now_ms: Callable[[], int] = _wall_ms,
    sleep: Callable[[float], None] = time.sleep,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> GenerateStats:
    """Send `duration` seconds of events at `rate` events/s; event i is sent when its event time comes.

    Pacing is relative: event i is due `i / rate` seconds (by `now_ms`) after the call started, whatever
    `start_ms` (the event time of event 0, default now) says. The truth file is written even when sending
    stops early: it holds exactly the records Kinesis acknowledged. So does `events_path`, the valid
    events with their identities as NDJSON (see devstack.generator), also replaced atomically.
    """
    began = now_ms()
    first_ms = began if start_ms is None else start_ms
    generator = EventGenerator(seed, first_ms, rate, invalid_fraction, late_fraction=late_fraction)
    total = event_count(rate, duration)
    truth = Truth(generator.seed, first_ms)
    events_tmp = None
    if events_path is not None:
        events_path = Path(events_path)
        events_path.parent.mkdir(parents=True, exist_ok=True)
        events_tmp = events_path.with_name(f".{events_path.name}.{os.getpid()}.tmp")
        truth.events_out = events_tmp.open("wb")
    stats = GenerateStats()
    sender = _Sender(kinesis_client, stream, truth, stats, sleep, max_attempts, backoff)
    log.info(
        "generate: start",
        extra={"stream": stream, "rate": rate, "duration_s": duration, "events": total, "seed": generator.seed},
    )
    batch: list[PlannedRecord] = []
    batch_bytes = 0
    batch_due = 0  # when the oldest record in the batch was due
    next_progress = began + PROGRESS_EVERY_MS

    def flush() -> None:
        nonlocal batch, batch_bytes, next_progress
        if batch:
            sender.send(batch)
            batch, batch_bytes = [], 0
        if now_ms() >= next_progress:
            next_progress += PROGRESS_EVERY_MS
            log.info("generate: progress", extra={**stats.as_dict(), "of_events": total})

    try:
        for record in generator.records(total):
            due = began + (record.send_ms - first_ms)
            wait = due - now_ms()
            # Before sleeping, send what would otherwise wait longer than LINGER_MS.
            if wait > 0 and batch and due - batch_due > LINGER_MS:
                flush()
                wait = due - now_ms()
            if wait > 0:
                sleep(wait / 1000)
            size = _entry_bytes(record)
            if batch and (len(batch) >= KINESIS_MAX_RECORDS or batch_bytes + size > KINESIS_MAX_BATCH_BYTES):
                flush()
            if not batch:
                batch_due = due
            batch.append(record)
            batch_bytes += size
        flush()
    finally:
        stats.seconds = max(0, now_ms() - began) / 1000
        if truth.events_out is not None and events_tmp is not None and events_path is not None:
            try:
                truth.events_out.flush()
                os.fsync(truth.events_out.fileno())
                truth.events_out.close()
                os.replace(events_tmp, events_path)
            finally:
                truth.events_out = None
                events_tmp.unlink(missing_ok=True)
        if truth_path is not None:
            write_truth(Path(truth_path), truth)
    log.info("generate: done", extra=stats.as_dict())
    return stats
