"""Replay I/O: list the archive in S3, stream its objects, put the events into a Kinesis stream.

- Listing: only the folders that can hold the range (`layout.plan`), once, at the start (a resumed
  replay reads the listing it saved, so copies archived since are not read again).
- Reading: each object is streamed in chunks through `split.split_chunks`; events are filtered by their
  own `timestamp` (the forms `consumer.validate` accepts) and `--type` globs.
- Writing: the queued events go through the delivery kit (`delivery.put`): PutRecords of at most 500
  entries and 5 MiB, in order per partition key; refused entries (throttling, internal failures) are
  sent again with exponential backoff and jitter before anything else goes. Each acknowledgement is
  recorded (and the resume file saved) after the call that brought it. An event over the 1 MiB record
  limit is reported and skipped. A stream that keeps refusing stops the replay (it can be resumed);
  nothing acknowledged is sent twice, as far as the resume file knows.
- Pace: a token bucket for records/s (default 90 % of open shards x 1,000/s) and one for bytes/s
  (90 % of open shards x 1 MiB/s); `--speedup` follows the events' timing within those limits.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from consumer.validate import TimestampError, parse_timestamp_ms
from delivery.aws import KinesisPutRecords, kinesis_record
from delivery.errors import DeliveryRefusedError, DeliveryRejectedError, DeliveryUnavailableError
from delivery.limits import KINESIS_MAX_BATCH_BYTES, KINESIS_MAX_RECORD_BYTES, KINESIS_MAX_RECORDS
from delivery.put import Budget, CallReport, RetryNotice, all_acknowledged, put_until_acknowledged
from replay import layout, progress
from replay.errors import ReplayAbortedError, ReplayError
from replay.layout import ObjectInfo
from replay.pace import EventTime, Pacer, TokenBucket, stream_limits
from replay.partition import PartitionKeys
from replay.progress import ACKED, NEW, OLD, ObjectTracker, Progress
from replay.split import Event, Malformed, split_chunks

log = logging.getLogger("streamkpi.replay")

CHUNK_BYTES = 256 * 1024
LINGER_S = 0.1  # a queued event waits at most about this long for company when the pace holds the next back
DEFAULT_MAX_ATTEMPTS = 10
UPDATE_EVERY_S = 0.1
LOGGED_PROBLEMS = 100
EXAMPLES = 20

# Skip reasons. Filters (not a failure): the event is not part of the replay.
BEFORE_RANGE = "before_range"
AFTER_RANGE = "after_range"
OTHER_TYPE = "type_not_selected"
FILTERS = frozenset({BEFORE_RANGE, AFTER_RANGE, OTHER_TYPE})
# Problems (the exit status is non-zero): data that should have been replayed and was not.
BAD_TIMESTAMP = "bad_timestamp"
TOO_LARGE = "too_large"  # over the 1 MiB Kinesis record limit (or the splitter's cap)
# ... and the splitter's reasons: not_json, truncated, bad_compression.


def parse_source(text: str) -> tuple[str, str]:
    """`s3://bucket/prefix` -> (bucket, prefix)."""
    if not text.startswith("s3://"):
        raise ReplayError(f"--source {text!r} is not an S3 URL; use s3://bucket/prefix (the prefix may be empty)")
    bucket, _, prefix = text[5:].partition("/")
    if not bucket:
        raise ReplayError(f"--source {text!r} names no bucket; use s3://bucket/prefix")
    return bucket, prefix


@dataclass(frozen=True)
class ReplayOptions:
    bucket: str
    prefix: str
    stream: str
    from_ms: int
    to_ms: int
    types: tuple[str, ...] = ()
    rate: float | None = None  # records/s; None: 90 % of the stream's write limit
    speedup: float | None = None
    partition_key: str | None = None
    dry_run: bool = False
    resume: Path | None = None
    slack_ms: int = layout.DEFAULT_SLACK_MS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    chunk_bytes: int = CHUNK_BYTES

    def params(self) -> dict[str, Any]:
        """What makes two runs the same replay (a resume must match)."""
        return {
            "source": f"s3://{self.bucket}/{layout.normalize_prefix(self.prefix)}",
            "stream": self.stream,
            "from_ms": self.from_ms,
            "to_ms": self.to_ms,
            "types": sorted(self.types),
            "partition_key": self.partition_key,
            "slack_ms": self.slack_ms,
        }


@dataclass
class Summary:
    objects_total: int = 0
    objects_done: int = 0
    bytes_total: int = 0  # sizes of the objects this run reads
    bytes_read: int = 0
    events_delivered: int = 0  # in a dry run: events that would be delivered
    bytes_delivered: int = 0
    retries: int = 0  # entries sent again after a refusal
    not_delivered: int = 0  # events queued when the run stopped
    already_delivered: int = 0  # skipped on resume: delivered by an earlier run
    skipped: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # where the first problems are (key, byte offset)
    layouts: list[str] = field(default_factory=list)
    rate: float | None = None  # records/s the pace allows
    speedup: float | None = None
    seconds: float = 0.0
    run_delivered: int = 0  # by this run
    stopped: str | None = None
    dry_run: bool = False

    @property
    def problems(self) -> int:
        return sum(n for reason, n in self.skipped.items() if reason not in FILTERS)

    @property
    def ok(self) -> bool:
        """Everything of the range was delivered (or, in a dry run, could be)."""
        return self.stopped is None and self.not_delivered == 0 and self.problems == 0

    @property
    def events_per_second(self) -> float:
        return self.run_delivered / self.seconds if self.seconds > 0 else 0.0

    def totals(self) -> dict[str, Any]:
        """What the resume file carries over to the next run."""
        return {
            "events_delivered": self.events_delivered,
            "bytes_delivered": self.bytes_delivered,
            "retries": self.retries,
            "skipped": dict(self.skipped),
            "examples": self.examples,
        }

    def add_totals(self, totals: dict[str, Any]) -> None:
        self.events_delivered += int(totals.get("events_delivered", 0))
        self.bytes_delivered += int(totals.get("bytes_delivered", 0))
        self.retries += int(totals.get("retries", 0))
        self.skipped.update({str(k): int(v) for k, v in totals.get("skipped", {}).items()})
        self.examples.extend(str(e) for e in totals.get("examples", [])[:EXAMPLES])

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "objects": {"total": self.objects_total, "done": self.objects_done},
            "events": {
                "delivered": self.events_delivered,
                "already_delivered": self.already_delivered,
                "not_delivered": self.not_delivered,
                "this_run": self.run_delivered,
            },
            "bytes": {"delivered": self.bytes_delivered, "read": self.bytes_read, "objects": self.bytes_total},
            "retries": self.retries,
            "problems": self.problems,
            "skipped": dict(sorted(self.skipped.items())),
            "examples": self.examples,
            "layouts": self.layouts,
            "rate": self.rate,
            "speedup": self.speedup,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events_per_second, 1),
            "stopped": self.stopped,
        }


@dataclass(slots=True)
class _Pending:
    tracker: ObjectTracker
    offset: int
    data: bytes
    key: str
    size: int  # data + partition key, as Kinesis counts
    at: float  # when it was queued


class S3Lister:
    """layout.Lister over S3 ListObjectsV2."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3, self.bucket = s3, bucket

    def level(self, prefix: str) -> tuple[list[str], list[ObjectInfo]]:
        folders: list[str] = []
        objects: list[ObjectInfo] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            folders += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
            objects += [ObjectInfo(o["Key"], int(o["Size"])) for o in page.get("Contents", []) if _is_object(o)]
        return folders, objects

    def everything(self, prefix: str) -> Iterator[ObjectInfo]:
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                if _is_object(o):
                    yield ObjectInfo(o["Key"], int(o["Size"]))


def _is_object(entry: dict[str, Any]) -> bool:
    return not entry["Key"].endswith("/")  # folder markers of consoles


def open_shards(kinesis: Any, stream: str) -> int:
    """Shards of the stream that take writes (no ending sequence number)."""
    arg = {"StreamARN": stream} if stream.startswith("arn:") else {"StreamName": stream}
    count, token = 0, None
    while True:
        page = kinesis.list_shards(NextToken=token) if token else kinesis.list_shards(**arg)
        count += sum(1 for s in page["Shards"] if "EndingSequenceNumber" not in s.get("SequenceNumberRange", {}))
        token = page.get("NextToken")
        if not token:
            return count


class Replayer:
    """One replay run. `run()` returns the Summary; `summary` is live while it runs (for progress bars)."""

    def __init__(
        self,
        s3: Any,
        kinesis: Any,
        options: ReplayOptions,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        on_update: Callable[[Summary], None] | None = None,
        on_start: Callable[[Summary], None] | None = None,
    ) -> None:
        if options.to_ms <= options.from_ms:
            raise ReplayError("--to must be after --from")
        if options.rate is not None and options.speedup is not None:
            raise ReplayError("give --rate or --speedup, not both")
        self.s3, self.kinesis, self.options = s3, kinesis, options
        self.clock, self.sleep = clock, sleep
        self.on_update, self.on_start = on_update, on_start
        self.keys = PartitionKeys(options.partition_key)
        self.summary = Summary(dry_run=options.dry_run, speedup=options.speedup)
        self.progress = Progress(options.params())
        self.trackers: dict[int, ObjectTracker] = {}  # objects with events not yet acknowledged, or being read
        self.queue: list[_Pending] = []
        self.queue_bytes = 0
        self.inflight: list[_Pending] = []
        self.pacer = Pacer()
        self.put_records = KinesisPutRecords(kinesis, options.stream)
        self._last_update = 0.0
        self._loaded = False  # the resume file was read (or there is none): saving cannot clobber it
        self._logged = 0

    # -- the run --------------------------------------------------------------------------------------

    def run(self) -> Summary:
        started = self.clock()
        try:
            objects = self._start()
            for index, info in enumerate(objects):
                if index in self.progress.done:
                    continue
                self._replay_object(index, info)
            self._flush_all()
        except ReplayAbortedError as exc:
            self.summary.stopped = str(exc)
            log.error("replay stopped", extra={"error": str(exc)})
        finally:
            self.summary.not_delivered = len(self.queue) + len(self.inflight)
            self.summary.seconds = self.clock() - started
            self._save()
            self._update(force=True)
        return self.summary

    def _start(self) -> list[ObjectInfo]:
        o = self.options
        path = o.resume if not o.dry_run else None
        listing: list[tuple[str, int]] | None = None
        if path is not None:
            try:
                loaded = progress.load(path)
                if loaded is not None:
                    loaded.check_params(o.params(), path)
                    self.progress = loaded
                    listing = progress.load_listing(path)
            except progress.ProgressError as exc:
                raise ReplayError(str(exc)) from None
            self.summary.add_totals(self.progress.totals)
        self._loaded = True
        if not o.dry_run:
            self.pacer = self._pacer()
        if listing is None:
            try:
                plan = layout.plan(S3Lister(self.s3, o.bucket), o.prefix, o.from_ms, o.to_ms, o.slack_ms)
            except ClientError as exc:
                raise ReplayError(
                    f"cannot list s3://{o.bucket}/{o.prefix}: {exc}; check the bucket name and the credentials"
                ) from None
            listing = [(info.key, info.size) for info in plan.objects]
            self.summary.layouts = sorted(plan.layouts)
            if path is not None:
                progress.save_listing(path, listing)
                self.progress.extra["layouts"] = self.summary.layouts
        else:
            self.summary.layouts = list(self.progress.extra.get("layouts", []))
        objects = [ObjectInfo(key, size) for key, size in listing]
        self.summary.objects_total = len(objects)
        self.summary.objects_done = len(self.progress.done)
        self.summary.bytes_total = sum(info.size for i, info in enumerate(objects) if i not in self.progress.done)
        log.info(
            "replay starting",
            extra={
                "source": f"s3://{o.bucket}/{o.prefix}",
                "stream": o.stream,
                "objects": len(objects),
                "resumed_done": len(self.progress.done),
                "layouts": self.summary.layouts,
                "rate": self.summary.rate,
                "dry_run": o.dry_run,
            },
        )
        if self.on_start is not None:
            self.on_start(self.summary)
        self._save()
        return objects

    def _pacer(self) -> Pacer:
        o = self.options
        try:
            shards = open_shards(self.kinesis, o.stream)
        except ClientError as exc:
            raise ReplayError(
                f"cannot describe stream {o.stream!r}: {exc}; check its name (is the local stack up?)"
            ) from None
        if shards < 1:
            raise ReplayError(f"stream {o.stream!r} has no open shard")
        records, nbytes = stream_limits(shards)
        rate = o.rate or records
        self.summary.rate = rate
        return Pacer(
            records=TokenBucket(rate, self.clock),
            bytes=TokenBucket(nbytes, self.clock),
            event_time=EventTime(o.speedup, self.clock) if o.speedup else None,
        )

    # -- reading --------------------------------------------------------------------------------------

    def _replay_object(self, index: int, info: ObjectInfo) -> None:
        tracker = ObjectTracker(index, info.key, self.progress.partial.get(index))
        self.trackers[index] = tracker
        try:
            body = self.s3.get_object(Bucket=self.options.bucket, Key=info.key)["Body"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404"):  # deleted since the listing (lifecycle rule): nothing to replay
                log.warning("replay: object gone since the listing", extra={"key": info.key})
                tracker.reading = False
                self._maybe_done(tracker)
                return
            raise ReplayAbortedError(f"cannot read s3://{self.options.bucket}/{info.key}: {exc}") from None
        try:
            for piece in split_chunks(self._chunks(body, info.key)):
                self._piece(tracker, piece)
        finally:
            body.close()
        tracker.reading = False
        self._maybe_done(tracker)

    def _chunks(self, body: Any, key: str) -> Iterator[bytes]:
        chunks = body.iter_chunks(self.options.chunk_bytes)
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except (BotoCoreError, ConnectionError, TimeoutError) as exc:  # a timeout, a dropped connection
                raise ReplayAbortedError(
                    f"reading s3://{self.options.bucket}/{key} failed: {exc}; resume to go on from here"
                ) from None
            self.summary.bytes_read += len(chunk)
            yield chunk
            self._update()

    def _piece(self, tracker: ObjectTracker, piece: Event | Malformed) -> None:
        state = tracker.classify(piece.offset)
        if state == OLD:
            return
        if state == ACKED:
            self.summary.already_delivered += 1
            return
        fresh = state == NEW
        tracker.counted(piece.offset)
        if isinstance(piece, Malformed):
            if fresh:
                self._skip(piece.reason, tracker.key, piece.offset, piece.describe(tracker.key))
            return
        event_ms, reason = self._filter(piece.obj)
        if reason is not None:
            if fresh:
                self._skip(reason, tracker.key, piece.offset, f"{tracker.key} at byte {piece.offset}: {reason}")
            return
        key = self.keys.key(piece.obj, piece.data)
        size = len(piece.data) + len(key.encode())
        if size > KINESIS_MAX_RECORD_BYTES:
            if fresh:
                detail = f"{tracker.key} at byte {piece.offset}: event of {size} bytes is over the 1 MiB record limit"
                self._skip(TOO_LARGE, tracker.key, piece.offset, detail)
            return
        if self.options.dry_run:
            self.summary.events_delivered += 1
            self.summary.run_delivered += 1
            self.summary.bytes_delivered += len(piece.data)
            return
        tracker.queued(piece.offset)  # before pacing: a save while it waits must not count it as finished
        self._pace(event_ms, size)
        self.queue.append(_Pending(tracker, piece.offset, piece.data, key, size, self.clock()))
        self.queue_bytes += size
        if len(self.queue) >= KINESIS_MAX_RECORDS or self.queue_bytes >= KINESIS_MAX_BATCH_BYTES:
            self._flush_all()

    def _filter(self, event: dict[str, Any]) -> tuple[int, str | None]:
        if "timestamp" not in event:
            return 0, BAD_TIMESTAMP
        try:
            event_ms = parse_timestamp_ms(event["timestamp"])
        except (TimestampError, ValueError, OverflowError, ArithmeticError):
            return 0, BAD_TIMESTAMP
        if event_ms < self.options.from_ms:
            return event_ms, BEFORE_RANGE
        if event_ms >= self.options.to_ms:
            return event_ms, AFTER_RANGE
        if self.options.types:
            event_type = event.get("eventType")
            if not isinstance(event_type, str) or not any(fnmatchcase(event_type, g) for g in self.options.types):
                return event_ms, OTHER_TYPE
        return event_ms, None

    def _skip(self, reason: str, key: str, offset: int, detail: str) -> None:
        self.summary.skipped[reason] += 1
        if reason in FILTERS:
            return
        if len(self.summary.examples) < EXAMPLES:
            self.summary.examples.append(detail)
        if self._logged < LOGGED_PROBLEMS:
            self._logged += 1
            log.warning("replay: skipped", extra={"reason": reason, "key": key, "offset": offset, "detail": detail})

    # -- writing --------------------------------------------------------------------------------------

    def _pace(self, event_ms: int, size: int) -> None:
        delay = self.pacer.delay(event_ms, size)
        if delay > 0:
            if self.queue and self.clock() + delay - self.queue[0].at >= LINGER_S:
                self._flush_all()
                delay = self.pacer.delay(event_ms, size)
            if delay > 0:
                self.sleep(delay)
        self.pacer.take(event_ms, size)

    def _flush_all(self) -> None:
        """Put every queued event; an acknowledgement is recorded after the call that brought it."""
        if not self.queue:
            return
        batch, self.queue, self.queue_bytes = self.queue, [], 0
        self.inflight = batch
        acknowledged: set[int] = set()

        def on_call(report: CallReport) -> None:
            done: list[ObjectTracker] = []
            for index, _ in report.acknowledged:
                entry = batch[index]
                entry.tracker.acknowledged(entry.offset)
                self.summary.events_delivered += 1
                self.summary.run_delivered += 1
                self.summary.bytes_delivered += len(entry.data)
                if entry.tracker.done:
                    done.append(entry.tracker)
                acknowledged.add(index)
            for tracker in done:
                self._maybe_done(tracker, save=False)
            if report.acknowledged:
                self.inflight = [p for n, p in enumerate(batch) if n not in acknowledged]
                self._save()
            self._update()

        stream = self.options.stream
        try:
            results = put_until_acknowledged(
                [kinesis_record(p.data, p.key) for p in batch],
                self.put_records,
                budget=Budget(self.options.max_attempts),
                sleep=self.sleep,
                on_call=on_call,
                on_retry=self._retrying,
            )
            all_acknowledged(results, self.put_records)
        except DeliveryRefusedError as exc:
            raise ReplayAbortedError(
                f"put_records to stream {stream!r} failed: {exc.code or exc.last_error}; check that the stream "
                "exists and that the credentials may write to it, then resume"
            ) from None
        except DeliveryRejectedError as exc:
            raise ReplayAbortedError(f"{exc}; check the stream (its KMS key), then resume") from None
        except DeliveryUnavailableError as exc:
            raise ReplayAbortedError(
                f"stream {stream!r} still refused {len(exc.unacknowledged)} events after {exc.attempts} attempts "
                f"(last error: {exc.last_error}); lower --rate, or add shards, then resume"
            ) from None
        self.inflight = []

    def _retrying(self, notice: RetryNotice) -> None:
        report = notice.report
        self.summary.retries += len(report.failed)
        log.warning(
            "replay: retrying refused entries",
            extra={
                "failed": len(report.failed),
                "of": len(report.sent),
                "error": report.error,
                "attempt": report.attempt,
                "delay_s": notice.delay_s,
            },
        )

    # -- bookkeeping ----------------------------------------------------------------------------------

    def _maybe_done(self, tracker: ObjectTracker, save: bool = True) -> None:
        if not tracker.done or tracker.index not in self.trackers:
            return
        del self.trackers[tracker.index]
        self.progress.done.add(tracker.index)
        self.progress.partial.pop(tracker.index, None)
        self.summary.objects_done += 1
        if save:
            self._save()

    def _save(self) -> None:
        path = self.options.resume
        if path is None or self.options.dry_run or not self._loaded:
            return
        for index, tracker in self.trackers.items():
            self.progress.partial[index] = tracker.mark()
        self.progress.totals = self.summary.totals()
        progress.save(path, self.progress)

    def _update(self, force: bool = False) -> None:
        if self.on_update is None:
            return
        now = self.clock()
        if force or now - self._last_update >= UPDATE_EVERY_S:
            self._last_update = now
            self.on_update(self.summary)


def replay(s3: Any, kinesis: Any, options: ReplayOptions, **kwargs: Any) -> Summary:
    return Replayer(s3, kinesis, options, **kwargs).run()


def iter_events(s3: Any, bucket: str, keys: Iterable[str]) -> Iterator[Event]:
    """Every event of the given objects (for checks and the naive benchmark loop)."""
    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        for piece in split_chunks(body.iter_chunks(CHUNK_BYTES)):
            if isinstance(piece, Event):
                yield piece
