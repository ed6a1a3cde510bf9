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
from consumer.sinks import FIREHOSE_MAX_RECORD_BYTES, EventSink, ForwardPair
from consumer.validate import Invalid, Rules, check_event
from streamkpi.config import AppConfig

log = logging.getLogger("streamkpi.worker")
T = TypeVar("T")


class FatalError(Exception):
    """Processing cannot go on without losing or corrupting data: exit without checkpointing."""


class ZombieError(FatalError):
    """Another writer stored a newer partial for this shard: this worker lost its lease."""


class InRecord(NamedTuple):
    """A Kinesis record as the worker needs it (data already base64-decoded)."""

    data: bytes
    sequence_number: str
    sub_sequence_number: int
    partition_key: str
    arrival_ms: int


# What the worker takes: an InRecord or a plain tuple of the same fields (the processor builds those: one
# per record on the hot path, and a plain tuple costs a fraction of a NamedTuple to build).
RecordFields = tuple[bytes, str, int, str, int]


# A valid event on its way: (event, eventType, event time, position, its queued forward or None).
_Valid = tuple[dict[str, Any], str, int, Position, ForwardPair | None]
_EAGER_LOADS = 4  # windows loaded at once when first met in a batch (then one load at its end)
_FOLD_CHUNK = 200  # events folded at a time while all their windows are in memory


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
        self.pending_forwards: dict[str, list[ForwardPair]] = {}
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

    def process(self, records: Sequence[RecordFields]) -> None:
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

    def _process(self, records: Sequence[RecordFields]) -> None:
        rules = self.rules
        sinks_for = self.router.sinks_for if self.sinks else None
        span = self.aggregates.span
        # Valid events not folded yet. While every window they touch is in memory they are folded a
        # chunk at a time (while still in the CPU caches). A window not in memory is loaded at once, up
        # to _EAGER_LOADS loads a batch; after that the rest of the batch waits for one load at its end,
        # as folding must follow the records' order.
        unfolded: list[_Valid] = []
        append = unfolded.append
        missing: set[WindowKey] = set()
        loads = 0
        low = high = 0  # the event times whose windows were looked at last: [low, high)
        # This batch's forwards per sink, and per event type the appends of the queues it goes to.
        queued: dict[str, list[ForwardPair]] = {}
        forward_to: dict[str, tuple[Callable[[ForwardPair], None], ...]] = {}
        marks: dict[str, int] = {}  # queue lengths when the chunk being gathered began
        folded = 0
        for record in records:
            data, sequence_number, sub, partition_key, arrival_ms = record
            seq = int(sequence_number)
            objects, rejections = decode_parts(data)
            for rejection in rejections:
                self._dead_letter(record, rejection.index, rejection.reason, rejection.detail, rejection.payload)
            alone = len(objects) + len(rejections) == 1  # the record is exactly this one event
            for index, obj, text in objects:
                verdict = check_event(obj, arrival_ms, rules)
                if type(verdict) is Invalid:
                    # A rejected event's raw bytes: the whole record when it held just this event, else
                    # its own line, else its JSON.
                    payload = data if alone else text if text is not None else _json(obj, data)
                    self._dead_letter(record, index, verdict.reason, verdict.detail, payload)
                    continue
                event_type, event_ms = verdict  # type: ignore[misc]
                forward = None
                if sinks_for is not None:
                    appends = forward_to.get(event_type)
                    if appends is None:
                        appends = forward_to[event_type] = tuple(
                            queued.setdefault(name, []).append for name in sinks_for(event_type)
                        )
                    if appends:
                        # The event's own line as it came (one line: no CR either), else its JSON.
                        if text is not None and b"\r" not in text and len(text) < FIREHOSE_MAX_RECORD_BYTES:
                            body: bytes | None = text
                        else:
                            body = _compact_json(obj)
                        if body is None or len(body) + 1 > FIREHOSE_MAX_RECORD_BYTES:
                            detail = (
                                f"event nested deeper than {_MAX_WRITE_DEPTH} levels: no forward sink can take its JSON"
                                if body is None
                                else f"event of {len(body)} bytes is larger than a forward sink accepts"
                            )
                            payload = body or (text if text is not None else data)
                            self._dead_letter(record, index, Reason.TOO_LARGE, detail, payload)
                            continue
                        forward = (partition_key, body)
                        for add in appends:
                            add(forward)
                if not low <= event_ms < high:
                    low, high, absent = span(event_ms)
                    if absent:
                        if not missing and loads < _EAGER_LOADS:
                            loads += 1
                            self._load(absent)
                        else:
                            missing.update(absent)
                append((obj, event_type, event_ms, (seq, sub, index), forward))
            if not missing and len(unfolded) >= _FOLD_CHUNK:
                folded += self._fold(unfolded, queued, marks)
                unfolded.clear()
                marks = {name: len(queue) for name, queue in queued.items()}
        if missing:
            self._load(missing)
        folded += self._fold(unfolded, queued, marks)
        unfolded.clear()
        for name, forwards in queued.items():
            if forwards:
                self.pending_forwards.setdefault(name, []).extend(forwards)
        if records:  # (KCL sends empty batches on idle polls: callProcessRecordsEvenForEmptyRecordList)
            last = records[-1]
            self.last_record = (last[1], last[2])  # (sequenceNumber, subSequenceNumber)
        self.stats.records += len(records)
        self.stats.events += folded
        self.records_since_checkpoint += len(records)
        self.rate.add(self.clock(), folded)
        self.last_batch_ms = self.wall_ms()

    def _load(self, missing: Iterable[WindowKey]) -> None:
        """Load windows from DynamoDB into memory (an empty window where none is stored)."""
        keys = sorted(missing)
        found = self._retry("load partials from DynamoDB", lambda: self.durable.load(self.shard_id, keys))
        for key in keys:
            self.aggregates.install(key, found.get(key))

    def _fold(self, events: list[_Valid], queued: dict[str, list[ForwardPair]], marks: dict[str, int]) -> int:
        """Fold valid events into the aggregates; returns how many there were. Events already included
        were already forwarded too (sinks flush before DynamoDB): their forwards leave the queues, whose
        entries past `marks` are the forwards of `events`."""
        included = self.aggregates.fold(events)
        if included:
            self.stats.duplicates += len(included)
            dropped = {id(events[i][4]) for i in included}
            for name, queue in queued.items():
                mark = marks.get(name, 0)
                queue[mark:] = [f for f in queue[mark:] if id(f) not in dropped]
        return len(events)

    def _dead_letter(self, record: RecordFields, index: int, reason: str, detail: str, payload: bytes) -> None:
        _, sequence_number, sub_sequence_number, partition_key, arrival_ms = record
        self.stats.rejected += 1
        self.pending_letters.append(
            DeadLetter(
                self.stream,
                self.shard_id,
                sequence_number,
                sub_sequence_number,
                index,
                partition_key,
                arrival_ms,
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


_MAX_WRITE_DEPTH = 254  # levels of nesting orjson writes (it reads deeper)


def _compact_json(obj: dict[str, Any]) -> bytes | None:
    """The event as compact JSON, or None when orjson cannot write it (nested deeper than it writes)."""
    try:
        # A copy: orjson's own result keeps its whole (4 KiB or larger) buffer alive, and these bytes
        # wait in memory for the next durable flush.
        return memoryview(orjson.dumps(obj)).tobytes()
    except orjson.JSONEncodeError:
        return None


def _json(obj: dict[str, Any], record_data: bytes) -> bytes:
    """A rejected event's JSON; the whole record when orjson cannot write the event, so nothing is lost."""
    body = _compact_json(obj)
    return record_data if body is None else body
