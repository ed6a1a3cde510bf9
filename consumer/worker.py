"""One shard's pipeline: decode -> validate -> aggregate / dead-letter, and durable flushes.

The KCL-facing processor (processor.py) owns the protocol; this class owns the order of effects:
dead letters, then DynamoDB, then Redis, and only then may the processor checkpoint. Stores are
injected; time comes from an injected monotonic clock.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import orjson

from aggregations.partials import Position, ShardAggregates, WindowKey
from aggregations.repair import repair_hot
from aggregations.store import AggregateStore, LossDetecting, StoreUnavailableError
from consumer.decode import decode_parts
from consumer.dlq import DeadLetter, DeadLetterSink
from consumer.health import HealthSink, RateMeter
from consumer.reasons import Reason
from consumer.sinks import FIREHOSE_MAX_RECORD_BYTES, EventSink, Forward
from consumer.validate import Invalid, Rules, check_event
from streamkpi.config import AppConfig

log = logging.getLogger("streamkpi.worker")
T = TypeVar("T")


class FatalError(Exception):
    """Processing cannot go on without losing or corrupting data: exit without checkpointing."""


class ZombieError(FatalError):
    """Another writer stored a newer partial for this shard: this worker lost its lease."""


class InRecord(NamedTuple):
    """A Kinesis record as the worker needs it (data already base64-decoded). A NamedTuple: one is built
    per record on the hot path, and a frozen dataclass costs twice as much to build."""

    data: bytes
    sequence_number: str
    sub_sequence_number: int
    partition_key: str
    arrival_ms: int


# A valid event on its way: (event, eventType, event time, position, record, bytes to forward or None).
_Valid = tuple[dict[str, Any], str, int, Position, InRecord, bytes | None]
_FOLD_CHUNK = 1_000  # events folded at a time while all their windows are in memory


@dataclass(frozen=True)
class Cadence:
    redis_flush_seconds: float = 1.0
    dynamodb_flush_seconds: float = 5.0
    checkpoint_seconds: float = 5.0
    checkpoint_records: int = 50_000
    store_retry_seconds: float = 60.0
    max_cached_windows: int = 5_000


@dataclass
class Stats:
    records: int = 0
    events: int = 0
    rejected: int = 0
    duplicates: int = 0
    durable_flushes: int = 0
    hot_flushes: int = 0
    dynamodb_writes: int = 0
    redis_writes: int = 0
    hot_repairs: int = 0
    dead_letters_sent: int = 0
    forwarded: int = 0
    last: dict[str, Any] = field(default_factory=dict)


class ShardWorker:
    def __init__(
        self,
        shard_id: str,
        stream: str,
        config: AppConfig,
        durable: AggregateStore,
        hot: AggregateStore,
        dead_letters: DeadLetterSink,
        cadence: Cadence = Cadence(),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        *,
        sinks: Mapping[str, EventSink] | None = None,
        health: HealthSink | None = None,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.shard_id = shard_id
        self.stream = stream
        self.rules: Rules = config.rules
        self.durable = durable
        self.hot = hot
        self.dead_letters = dead_letters
        self.cadence = cadence
        self.clock = clock
        self.sleep = sleep
        self.resolutions = config.resolutions
        self.aggregates = ShardAggregates(shard_id, config.metric_set, config.resolutions)
        # No sinks given (unit tests): nothing is forwarded. Otherwise every routed sink must exist.
        self.sinks = dict(sinks or {})
        self.router = config.router
        if sinks is not None:
            missing = {name for r in config.routes for name in r.sinks} - set(self.sinks)
            if missing:
                raise ValueError(f"routes name sinks that were not built: {sorted(missing)}")
        self.pending_forwards: dict[str, list[Forward]] = {}
        self.health = health
        self.wall_ms = wall_ms
        self.rate = RateMeter()
        self.last_batch_ms: int | None = None
        self.last_checkpoint_ms: int | None = None
        self.pending_letters: list[DeadLetter] = []
        self.stats = Stats()
        self.last_record: tuple[str, int] | None = None  # (sequenceNumber, subSequenceNumber)
        self.checkpointed: tuple[str, int] | None = None
        now = clock()
        self.last_durable = self.last_hot = self.last_checkpoint = now
        self.records_since_checkpoint = 0

    # -- processing ---------------------------------------------------------------------------------

    def process(self, records: Sequence[InRecord]) -> None:
        """Fold a batch into memory; dead letters and forwards are buffered until the next durable flush."""
        # A batch allocates a few containers per event and keeps them until its end, so the cyclic GC
        # would scan them over and over (half the time of a batch) to find nothing: processing makes
        # no reference cycles. Paused for the batch; what it missed, it finds after.
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._process(records)
        finally:
            if collecting:
                gc.enable()

    def _process(self, records: Sequence[InRecord]) -> None:
        rules = self.rules
        routes: dict[str, tuple[str, ...]] | None = {} if self.sinks else None  # event type -> sinks
        sinks_for = self.router.sinks_for
        span = self.aggregates.span
        # Valid events not folded yet. While every window they touch is in memory they are folded a
        # chunk at a time (while still in the CPU caches); after the first event whose window must be
        # loaded, the rest waits for the batch's one load, as folding must follow the records' order.
        unfolded: list[_Valid] = []
        append = unfolded.append
        missing: set[WindowKey] = set()
        low = high = 0  # the event times whose windows were looked at last: [low, high)
        queued: dict[str, list[Forward]] = {}  # this batch's forwards, per sink
        folded = 0
        for record in records:
            seq = int(record.sequence_number)
            sub = record.sub_sequence_number
            data = record.data
            arrival_ms = record.arrival_ms
            objects, rejections = decode_parts(data)
            for rejection in rejections:
                self._dead_letter(record, rejection.index, rejection.reason, rejection.detail, rejection.payload)
            alone = len(objects) + len(rejections) == 1  # the record is exactly this one event
            for index, obj in objects:
                verdict = check_event(obj, arrival_ms, rules)
                if isinstance(verdict, Invalid):
                    # A rejected event's raw bytes: the whole record when it held just this event.
                    self._dead_letter(
                        record, index, verdict.reason, verdict.detail, data if alone else _json(obj, data)
                    )
                    continue
                event_type, event_ms = verdict
                forward = None
                if routes is not None:
                    sinks = routes.get(event_type)
                    if sinks is None:
                        sinks = routes[event_type] = sinks_for(event_type)
                    if sinks:
                        # The record's own bytes when it is exactly this object on one line, else its JSON.
                        raw = data.strip() if alone else b""
                        one_line = raw[:1] == b"{" and b"\n" not in raw and b"\r" not in raw
                        forward = raw if one_line else _json(obj, data)
                        if len(forward) + 1 > FIREHOSE_MAX_RECORD_BYTES:
                            detail = f"event of {len(forward)} bytes is larger than a forward sink accepts"
                            self._dead_letter(record, index, Reason.TOO_LARGE, detail, forward)
                            continue
                if not low <= event_ms < high:
                    low, high, absent = span(event_ms)
                    missing.update(absent)
                append((obj, event_type, event_ms, (seq, sub, index), record, forward))
            self.last_record = (record.sequence_number, sub)
            if not missing and len(unfolded) >= _FOLD_CHUNK:
                folded += self._fold(unfolded, routes, queued)
                unfolded.clear()
        if missing:
            keys = sorted(missing)
            found = self._retry("load partials from DynamoDB", lambda: self.durable.load(self.shard_id, keys))
            for key in keys:
                self.aggregates.install(key, found.get(key))
        folded += self._fold(unfolded, routes, queued)
        unfolded.clear()
        for name, forwards in queued.items():
            self.pending_forwards.setdefault(name, []).extend(forwards)
        self.stats.records += len(records)
        self.stats.events += folded
        self.records_since_checkpoint += len(records)
        self.rate.add(self.clock(), folded)
        self.last_batch_ms = self.wall_ms()

    def _fold(
        self, events: list[_Valid], routes: dict[str, tuple[str, ...]] | None, queued: dict[str, list[Forward]]
    ) -> int:
        """Fold valid events into the aggregates and queue their forwards; returns how many there were."""
        included = self.aggregates.fold(events)
        if included:
            # Already in DynamoDB, so already forwarded too (sinks flush before DynamoDB): skip both.
            self.stats.duplicates += len(included)
            skipped = set(included)
            forwarded: Iterable[_Valid] = (item for i, item in enumerate(events) if i not in skipped)
        else:
            forwarded = events
        if routes is not None:
            for _, event_type, _, _, record, forward in forwarded:
                if forward is None:
                    continue
                for name in routes[event_type]:
                    queue = queued.get(name)
                    if queue is None:
                        queue = queued[name] = []
                    queue.append(Forward(record.partition_key, forward))
        return len(events)

    def _dead_letter(self, record: InRecord, index: int, reason: str, detail: str, payload: bytes) -> None:
        self.stats.rejected += 1
        self.pending_letters.append(
            DeadLetter(
                self.stream,
                self.shard_id,
                record.sequence_number,
                record.sub_sequence_number,
                index,
                record.partition_key,
                record.arrival_ms,
                str(reason),
                detail,
                payload,
            )
        )

    # -- flushing -----------------------------------------------------------------------------------

    def durable_due(self) -> bool:
        return (
            self.clock() - self.last_durable >= self.cadence.dynamodb_flush_seconds
            or self.records_since_checkpoint >= self.cadence.checkpoint_records
        )

    def checkpoint_due(self) -> bool:
        return self.last_record != self.checkpointed and (
            self.clock() - self.last_checkpoint >= self.cadence.checkpoint_seconds
            or self.records_since_checkpoint >= self.cadence.checkpoint_records
        )

    def hot_due(self) -> bool:
        return self.clock() - self.last_hot >= self.cadence.redis_flush_seconds

    def flush_hot(self) -> None:
        self._repair_hot_if_lost()
        dirty = self.aggregates.dirty("redis")
        if dirty:
            stale = self._retry("write partials to Redis", lambda: self.hot.write(dirty))
            # A stale Redis write means a newer copy of the same deterministic partial is there already.
            self.aggregates.mark_written("redis", dirty)
            self.stats.redis_writes += len(dirty) - len(stale)
        self.stats.hot_flushes += 1
        self.last_hot = self.clock()
        self.report_health()

    def _repair_hot_if_lost(self) -> None:
        """Redis restarted empty or was flushed: refill this shard's hot windows from DynamoDB now."""
        hot = self.hot
        if not isinstance(hot, LossDetecting) or self._retry("check Redis", lambda: hot.intact(self.shard_id)):
            return
        durable_copies = self._retry(
            "repair Redis from DynamoDB",
            lambda: repair_hot(self.durable, hot, self.resolutions, self.shard_id, self.wall_ms()),
        )
        self.aggregates.mark_all_dirty("redis")  # what is newer than DynamoDB goes with this flush
        self._retry("mark Redis repaired", lambda: hot.mark_intact(self.shard_id))
        self.stats.hot_repairs += 1
        log.info("hot store repaired from DynamoDB", extra={"shard": self.shard_id, "partials": durable_copies})

    def health_fields(self) -> dict[str, Any]:
        return {
            "shard": self.shard_id,
            "lastBatchMs": self.last_batch_ms,
            "millisBehindLatest": self.stats.last.get("millis_behind_latest"),
            "eventsPerSecond": self.rate.rate(self.clock()),
            "lastCheckpointSequence": self.checkpointed[0] if self.checkpointed else None,
            "lastCheckpointMs": self.last_checkpoint_ms,
            "dlqCount": self.stats.dead_letters_sent,
            "records": self.stats.records,
            "events": self.stats.events,
            "forwarded": self.stats.forwarded,
            "reportedMs": self.wall_ms(),
        }

    def report_health(self) -> None:
        if self.health is not None:
            self.health.report(self.shard_id, self.health_fields())

    def flush_durable(self) -> None:
        """Make every effect of the records seen so far durable: DLQ, DynamoDB, then Redis."""
        if self.pending_letters:
            letters = self.pending_letters
            self._retry("send dead letters", lambda: self.dead_letters.send(letters))
            self.stats.dead_letters_sent += len(letters)
            self.pending_letters = []
        for name, forwards in list(self.pending_forwards.items()):
            sink = self.sinks[name]
            self._retry(f"forward to sink {name}", lambda: sink.send(forwards))  # noqa: B023 - called at once
            self.stats.forwarded += len(forwards)
            del self.pending_forwards[name]
        dirty = self.aggregates.dirty("dynamodb")
        if dirty:
            stale = self._retry("write partials to DynamoDB", lambda: self.durable.write(dirty))
            if stale:
                raise ZombieError(
                    f"shard {self.shard_id}: DynamoDB holds newer partials for {len(stale)} windows "
                    f"(e.g. {stale[0].resolution} {stale[0].start_ms}); another worker owns this shard"
                )
            self.aggregates.mark_written("dynamodb", dirty)
            self.stats.dynamodb_writes += len(dirty)
        self.flush_hot()
        self.aggregates.evict_clean(self.cadence.max_cached_windows)
        self.stats.durable_flushes += 1
        self.last_durable = self.clock()

    def mark_checkpointed(self) -> None:
        self.checkpointed = self.last_record
        self.records_since_checkpoint = 0
        self.last_checkpoint = self.clock()
        self.last_checkpoint_ms = self.wall_ms()
        self.report_health()

    def _retry(self, what: str, action: Callable[[], T]) -> T:
        """Retry a store call with capped exponential backoff; give up (FatalError) after the limit."""
        deadline = self.clock() + self.cadence.store_retry_seconds
        delay = 0.1
        attempt = 0
        while True:
            attempt += 1
            try:
                return action()
            except StoreUnavailableError as exc:
                if self.clock() + delay > deadline:
                    raise FatalError(f"{what}: still failing after {attempt} attempts: {exc}") from exc
                log.warning(
                    "store unavailable, backing off",
                    extra={"shard": self.shard_id, "what": what, "attempt": attempt, "error": str(exc)},
                )
                self.sleep(delay)
                delay = min(delay * 2, 5.0)


def _json(obj: dict[str, Any], record_data: bytes) -> bytes:
    try:
        # A copy: orjson's own result keeps its whole (4 KiB or larger) buffer alive, and these bytes
        # wait in memory for the next durable flush.
        return memoryview(orjson.dumps(obj)).tobytes()
    except orjson.JSONEncodeError:
        # Nesting deeper than orjson writes (it reads deeper): keep the whole record so nothing is lost.
        return record_data
