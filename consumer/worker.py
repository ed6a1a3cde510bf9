"""One shard's pipeline: decode -> validate -> aggregate / dead-letter / forward, and durable flushes.

The KCL-facing processor (processor.py) owns the protocol; this class owns the order of effects:
dead letters and forwards, then DynamoDB, then Redis, and only then may the processor checkpoint.
A worker is built from a few parts: the `Pipeline` it runs (shared by every shard), its `Stores`, its
`Outputs` (dead letters, forward sinks, health) and its `Cadence` (when to flush, and the clocks).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aggregations.errors import StoreRejectedError, StoreUnavailableError
from aggregations.partials import Position, ShardAggregates, StoredPartial, WindowKey
from aggregations.repair import repair_hot, repair_windows
from aggregations.store import AggregateStore, LossDetecting
from consumer.bounds import to_json_bytes
from consumer.decode import Rejection, decode_parts, too_many_invalid
from consumer.dlq import DeadLetter, DeadLetterSink
from consumer.errors import FatalError, ZombieError
from consumer.forwarding import forward_body, refusal
from consumer.health import HealthSink, RateMeter
from consumer.pipeline import Pipeline, Record
from consumer.reasons import Reason
from consumer.redaction import withheld as redaction_withheld
from consumer.sinks import EventSink, ForwardPair
from consumer.validate import READ_AGAIN, Invalid, check_event
from delivery.backoff import DEFAULT_BACKOFF, Backoff
from delivery.errors import DeliveryUnavailableError

log = logging.getLogger("streamkpi.worker")
T = TypeVar("T")


# A valid event on its way: (event, eventType, event time, position, its queued forward or None).
_Valid = tuple[dict[str, Any], str, int, Position, ForwardPair | None]
_EAGER_LOADS = 4  # windows loaded at once when first met in a batch (then one load at its end)
_FOLD_CHUNK = 200  # events folded at a time while all their windows are in memory


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Stores:
    durable: AggregateStore  # DynamoDB: the partials a restart resumes from
    hot: AggregateStore  # Redis: the live copy the dashboard reads (it may lose data: LossDetecting)


@dataclass(frozen=True)
class Outputs:
    """Where a worker's other effects go: dead letters, forwarded events (no sinks given, as in unit tests:
    nothing is forwarded; given, every sink a route names must be there) and its health reports."""

    dead_letters: DeadLetterSink
    sinks: Mapping[str, EventSink] | None = None
    health: HealthSink | None = None


@dataclass(frozen=True)
class Cadence:
    """When a worker flushes and checkpoints, how long it retries a store, and the clocks it goes by:
    `clock` (monotonic seconds) for the cadence and back-off, `wall_ms` for expiries and health."""

    redis_flush_seconds: float = 1.0
    dynamodb_flush_seconds: float = 5.0
    checkpoint_seconds: float = 5.0
    checkpoint_records: int = 50_000
    store_retry_seconds: float = 60.0
    max_cached_windows: int = 5_000
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    backoff: Backoff = DEFAULT_BACKOFF  # between retries of a store, the DLQ or a sink
    wall_ms: Callable[[], int] = wall_clock_ms


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
    hot_windows_repaired: int = 0
    dead_letters_sent: int = 0
    forwarded: int = 0
    last: dict[str, Any] = field(default_factory=dict)


class ShardWorker:
    def __init__(
        self,
        shard_id: str,
        stream: str,
        pipeline: Pipeline,
        stores: Stores,
        outputs: Outputs,
        cadence: Cadence = Cadence(),
    ) -> None:
        self.shard_id = shard_id
        self.stream = stream
        self.pipeline = pipeline
        self.stores = stores
        self.outputs = outputs
        self.cadence = cadence
        if outputs.sinks is not None:
            missing = pipeline.router.sink_names - set(outputs.sinks)
            if missing:
                raise ValueError(f"routes name sinks that were not built: {sorted(missing)}")
        # Events later than this after their arrival miss a resolution whose DynamoDB retention has passed.
        self._late_ms = min(r.dynamodb_retention_ms for r in pipeline.resolutions)
        self._resolution_by_name = {r.name: r for r in pipeline.resolutions}
        self.aggregates = ShardAggregates(
            shard_id, pipeline.metrics, pipeline.resolutions, max_item_bytes=pipeline.limits.max_item_bytes
        )
        self.pending_forwards: dict[str, list[ForwardPair]] = {}
        self.rate = RateMeter()
        self.last_batch_ms: int | None = None
        self.last_checkpoint_ms: int | None = None
        self.ended_ms: int | None = None  # SHARD_END checkpointed: its health report stays, marked ended
        self.pending_letters: list[DeadLetter] = []
        self.pending_bytes = 0  # payloads of pending letters and bodies of pending forwards
        self.stats = Stats()
        self.last_record: tuple[str, int] | None = None  # (sequenceNumber, subSequenceNumber)
        self.checkpointed: tuple[str, int] | None = None
        now = cadence.clock()
        self.last_durable = self.last_hot = self.last_checkpoint = now
        self.records_since_checkpoint = 0
        # Redis loss detection: the position this process last wrote to Redis per window, and the last audit.
        self.hot_written: dict[WindowKey, str] = {}
        self.last_hot_audit = now

    # -- processing ---------------------------------------------------------------------------------

    def process(self, records: Sequence[Record]) -> None:
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

    def _process(self, records: Sequence[Record]) -> None:
        rules = self.pipeline.rules
        limits = self.pipeline.limits
        max_letters = limits.max_letters_per_record
        max_pending = limits.max_pending_bytes
        late_ms = self._late_ms
        letters = self.pending_letters
        plan_for = self.pipeline.router.plan_for if self.outputs.sinks else None
        # [redaction]: applied to each event that parsed, after validation and before anything leaves; such
        # events then leave as their JSON, never as the bytes that came (see _dead_letter).
        redact = self.pipeline.redactor.redact if self.pipeline.redactor is not None else None
        span = self.aggregates.span
        # Valid events not folded yet. While every window they touch is in memory they are folded a
        # chunk at a time (while still in the CPU caches). A window not in memory is loaded at once, up
        # to _EAGER_LOADS loads a batch; after that the rest of the batch waits for one load at its end,
        # as folding must follow the records' order.
        unfolded: list[_Valid] = []
        missing: set[WindowKey] = set()
        loads = 0
        low = high = 0  # the event times whose windows were looked at last: [low, high)
        late = False  # the batch holds an event some resolution no longer keeps
        # This batch's forwards per sink, and per event type the appends of the queues it goes to and what
        # those sinks take (its ForwardPlan's terms).
        queued: dict[str, list[ForwardPair]] = {}
        forward_to: dict[str, tuple[tuple[Callable[[ForwardPair], None], ...], int, bool, bool]] = {}
        marks: dict[str, int] = {}  # queue lengths when the chunk being gathered began
        folded = 0
        forward_bytes = 0  # bodies forwarded by the record being processed (added to pending_bytes at its end)
        for record in records:
            data, sequence_number, sub, partition_key, arrival_ms = record
            seq = int(sequence_number)
            letters_before = len(letters)
            unfolded_before = len(unfolded)
            late_before = arrival_ms - late_ms
            if low < late_before:  # the window range cached below may hold events late for this record
                low = high = 0
            exact = False
            while True:  # once, or twice when a summed integer beyond 64 bits asks for an exact reading
                objects, rejections = decode_parts(data, limits, exact)
                for rejection in rejections:
                    self._dead_letter(
                        record,
                        rejection.index,
                        rejection.reason,
                        rejection.detail,
                        rejection.payload,
                        rejection.events,
                        unparsed=True,
                    )
                alone = len(objects) + len(rejections) == 1  # the record is exactly this one event
                for index, obj, text in objects:
                    verdict = check_event(obj, arrival_ms, rules, exact)
                    if type(verdict) is Invalid:
                        if verdict is READ_AGAIN:
                            break
                        # A rejected event's raw bytes: the whole record when it held just this event, else
                        # its own line, else its JSON (never its siblings, which may be counted). Redacted:
                        # its JSON.
                        if redact is not None:
                            redact(obj)
                            payload = to_json_bytes(obj)
                        else:
                            payload = data if alone else text if text is not None else to_json_bytes(obj)
                        self._dead_letter(record, index, verdict.reason, verdict.detail, payload)
                        continue
                    event_type, event_ms = verdict  # type: ignore[misc]
                    if redact is not None:
                        redact(obj)
                        text = None  # forwarded as its JSON: the bytes that came may hide a field (a repeated key)
                    forward: ForwardPair | None = None
                    if plan_for is not None:
                        to = forward_to.get(event_type)
                        if to is None:
                            plan = plan_for(event_type)
                            appends = tuple(queued.setdefault(name, []).append for name in plan.sinks)
                            to = forward_to[event_type] = (appends, plan.max_body_bytes, plan.escaped, plan.identity)
                        appends, max_body_bytes, escaped, identity = to
                        if appends:
                            body = forward_body(obj, text, max_body_bytes, escaped)
                            if body is None:
                                payload, detail = refusal(obj, escaped)
                                self._dead_letter(record, index, Reason.TOO_LARGE, detail, payload)
                                continue
                            if identity:  # (a FIFO queue deduplicates by it)
                                forward = (partition_key, body, f"{self.shard_id}/{sequence_number}/{sub}/{index}")
                            else:
                                forward = (partition_key, body)
                            forward_bytes += len(body)
                            for add in appends:
                                add(forward)
                    if not low <= event_ms < high:  # (low >= late_before: an event inside is not late)
                        if event_ms < late_before:
                            # Rare: later than the shortest retention. Its windows are loaded now, and it
                            # is folded one by one into the resolutions that still keep it.
                            keep = self.aggregates.keeping(event_ms, arrival_ms)
                            absent = self.aggregates.missing(self.aggregates.keys_for(event_ms, keep))
                            if absent:
                                self._load(absent)
                            late = True
                            late_event = (obj, event_type, event_ms, (seq, sub, index), forward, keep)
                            unfolded.append(late_event)  # type: ignore[arg-type]
                            continue
                        low, high, absent = span(event_ms)
                        if absent:
                            if not missing and loads < _EAGER_LOADS:
                                loads += 1
                                self._load(absent)
                            else:
                                missing.update(absent)
                    # (`unfolded.append`, not a hoisted `append`: CPython 3.11 specialises the method call)
                    unfolded.append((obj, event_type, event_ms, (seq, sub, index), forward))
                else:
                    break  # every event was read as it must be
                # Undo what this reading did, and read the record again exactly.
                self.pending_bytes += forward_bytes
                forward_bytes = 0
                self._undo_record(letters_before, unfolded, unfolded_before, queued)
                exact = True
            if forward_bytes:
                self.pending_bytes += forward_bytes
                forward_bytes = 0
            if len(letters) - letters_before > max_letters:
                self._reject_record(record, letters_before, unfolded, unfolded_before, queued)
            if not missing and len(unfolded) >= _FOLD_CHUNK:
                folded += self._fold(unfolded, queued, marks, late)
                unfolded.clear()
                marks = {name: len(queue) for name, queue in queued.items()}
            if self.pending_bytes > max_pending:
                # Dead letters and forwards are sent before the batch ends: memory stays bounded.
                if missing:
                    self._load(missing)
                    missing.clear()
                folded += self._fold(unfolded, queued, marks, late)
                unfolded.clear()
                self._queue_forwards(queued)
                marks = {}
                self._send_letters_and_forwards()
        if missing:
            self._load(missing)
        folded += self._fold(unfolded, queued, marks, late)
        unfolded.clear()
        self._queue_forwards(queued)
        if records:  # (KCL sends empty batches on idle polls: callProcessRecordsEvenForEmptyRecordList)
            last = records[-1]
            self.last_record = (last[1], last[2])  # (sequenceNumber, subSequenceNumber)
        self.stats.records += len(records)
        self.stats.events += folded
        self.records_since_checkpoint += len(records)
        self.rate.add(self.cadence.clock(), folded)
        self.last_batch_ms = self.cadence.wall_ms()

    def _queue_forwards(self, queued: dict[str, list[ForwardPair]]) -> None:
        for name, forwards in queued.items():
            if forwards:
                self.pending_forwards.setdefault(name, []).extend(forwards)
                forwards.clear()

    def _undo_record(
        self,
        letters_before: int,
        unfolded: list[_Valid],
        unfolded_before: int,
        queued: dict[str, list[ForwardPair]],
    ) -> tuple[list[DeadLetter], list[_Valid]]:
        """Take back the letters, events and forwards the record being processed added (none is folded or
        sent yet); returns the letters and events taken back."""
        letters = self.pending_letters
        invalid = letters[letters_before:]
        del letters[letters_before:]
        self.stats.rejected -= len(invalid)
        self.pending_bytes -= sum(len(letter.payload) for letter in invalid)
        valid = unfolded[unfolded_before:]
        del unfolded[unfolded_before:]
        forwards = [item[4] for item in valid if item[4] is not None]
        if forwards:
            dropped = {id(forward) for forward in forwards}
            self.pending_bytes -= sum(len(forward[1]) for forward in forwards)
            for queue in queued.values():
                queue[:] = [f for f in queue if id(f) not in dropped]
        return invalid, valid

    def _reject_record(
        self,
        record: Record,
        letters_before: int,
        unfolded: list[_Valid],
        unfolded_before: int,
        queued: dict[str, list[ForwardPair]],
    ) -> None:
        """Too many of a record's events are invalid: one letter stands for the record and none of its
        events counts (a redrive of that letter then puts the whole record back, counted once)."""
        invalid, valid = self._undo_record(letters_before, unfolded, unfolded_before, queued)
        first = [(Reason(letter.reason), letter.detail) for letter in invalid[:3]]
        events = len(invalid) + len(valid)
        rejection: Rejection = too_many_invalid(record[0], events, first, len(invalid), self.pipeline.limits)
        self._dead_letter(record, 0, rejection.reason, rejection.detail, rejection.payload, events, unparsed=True)

    def _load(self, missing: Iterable[WindowKey]) -> None:
        """Load windows from DynamoDB into memory (an empty window where none is stored)."""
        keys = sorted(missing)
        found = self._retry("load partials from DynamoDB", lambda: self.stores.durable.load(self.shard_id, keys))
        for key in keys:
            self.aggregates.install(key, found.get(key))

    def _fold(
        self, events: list[_Valid], queued: dict[str, list[ForwardPair]], marks: dict[str, int], late: bool = False
    ) -> int:
        """Fold valid events into the aggregates; returns how many there were. Events already included
        were already forwarded too (sinks flush before DynamoDB): their forwards leave the queues, whose
        entries past `marks` are the forwards of `events`. `late`: some events carry the resolutions
        that still keep them."""
        included = self.aggregates.fold(events, late)
        if included:
            self.stats.duplicates += len(included)
            dropped = {id(events[i][4]) for i in included}
            for name, queue in queued.items():
                mark = marks.get(name, 0)
                queue[mark:] = [f for f in queue[mark:] if id(f) not in dropped]
        return len(events)

    def _dead_letter(
        self,
        record: Record,
        index: int,
        reason: str,
        detail: str,
        payload: bytes,
        events: int | None = None,
        unparsed: bool = False,
    ) -> None:
        """Buffer a letter. `unparsed`: its payload is raw bytes that did not parse into an object, which
        redaction cannot go through field by field: `unparsed = "drop"` keeps only their size and sha256."""
        _, sequence_number, sub_sequence_number, partition_key, arrival_ms = record
        withheld = None
        redactor = self.pipeline.redactor
        if unparsed and redactor is not None and not redactor.keep_unparsed:
            withheld = redaction_withheld(payload)
            payload = b""
        self.stats.rejected += 1
        self.pending_bytes += len(payload)
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
                events,
                withheld,
            )
        )

    # -- flushing -----------------------------------------------------------------------------------

    def durable_due(self) -> bool:
        return (
            self.cadence.clock() - self.last_durable >= self.cadence.dynamodb_flush_seconds
            or self.records_since_checkpoint >= self.cadence.checkpoint_records
            or self.pending_bytes > self.pipeline.limits.max_pending_bytes
        )

    def checkpoint_due(self) -> bool:
        return self.last_record != self.checkpointed and (
            self.cadence.clock() - self.last_checkpoint >= self.cadence.checkpoint_seconds
            or self.records_since_checkpoint >= self.cadence.checkpoint_records
        )

    def hot_due(self) -> bool:
        return self.cadence.clock() - self.last_hot >= self.cadence.redis_flush_seconds

    # Redis loss. A marker per shard tells a total loss (restarted empty, FLUSHALL); the position this process
    # last wrote to each window tells a partial one (a lagging replica promoted, a lost fsync), at each write
    # and at a periodic audit. Either way every shard's partials of the windows concerned come back.
    hot_audit_seconds = 30.0  # how often the windows this process wrote to Redis are checked
    hot_repair_lease_seconds = 600.0  # how long the claim and marker of a repair outlive a worker that died in it

    def flush_hot(self) -> None:
        self._repair_hot_if_lost()
        lost = set(self._audit_hot())
        dirty = self.aggregates.dirty("redis")
        now_ms = self.cadence.wall_ms()
        expired = [p for p in dirty if self._redis_expiry_ms(p.key) <= now_ms]
        if expired:  # past the Redis retention (a late event): a write would set an expiry in the past
            self.aggregates.mark_written("redis", expired)
            dirty = [p for p in dirty if self._redis_expiry_ms(p.key) > now_ms]
        if dirty:
            stale = self._write_hot(dirty, lost)
            # A stale Redis write means a newer copy of the same deterministic partial is there already.
            self.aggregates.mark_written("redis", dirty)
            self.stats.redis_writes += len(dirty) - len(stale)
        if lost:
            self._repair_hot_windows(lost, sent={p.key for p in dirty})
        self.stats.hot_flushes += 1
        self.last_hot = self.cadence.clock()
        self.report_health()

    def _write_hot(self, dirty: list[StoredPartial], lost: set[WindowKey]) -> list[StoredPartial]:
        """Write to Redis, telling it the position last written to each window; adds the windows found lost."""
        hot = self.stores.hot
        if not isinstance(hot, LossDetecting):
            return self._retry("write partials to Redis", lambda: hot.write(dirty))
        written = self.hot_written
        last = [written.get(p.key) for p in dirty]
        stale, found = self._retry("write partials to Redis", lambda: hot.write_checked(dirty, last))
        lost.update(found)
        for p in dirty:  # Redis holds this position now, or a newer one
            if p.position > written.get(p.key, ""):
                written[p.key] = p.position
        return stale

    def _repair_hot_if_lost(self) -> None:
        """Redis lost this shard's marker: it restarted empty or was flushed (or this shard is new). The first
        worker to claim it copies every shard's hot windows from DynamoDB, the ended parents of a reshard
        included; each re-sends what it holds in memory (it may be newer than DynamoDB) with this flush."""
        hot = self.stores.hot
        if not isinstance(hot, LossDetecting) or self._retry("check Redis", lambda: hot.intact(self.shard_id)):
            return
        lease_ms = int(self.hot_repair_lease_seconds * 1000)
        claim = self._retry("claim the Redis repair", lambda: hot.begin_repair(self.shard_id, lease_ms))
        copied = 0
        if claim is not None:
            now_ms, ahead_ms = self.cadence.wall_ms(), self.pipeline.rules.future_skew_ms
            copied = self._retry(
                "repair Redis from DynamoDB",
                lambda: repair_hot(self.stores.durable, self.stores.hot, self.pipeline.resolutions, now_ms, ahead_ms),
            )
        self.hot_written.clear()  # Redis holds DynamoDB's copy of this shard's partials now, or nothing
        self.aggregates.mark_all_dirty("redis")  # what is newer than DynamoDB goes with this flush
        confirmed = self._retry("mark Redis repaired", lambda: hot.end_repair(self.shard_id, claim))
        self.stats.hot_repairs += 1
        log.info(
            "hot store repaired from DynamoDB",
            extra={"shard": self.shard_id, "partials": copied, "allShards": claim is not None},
        )
        if not confirmed:
            log.warning("Redis lost data again during its repair: repairing again", extra={"shard": self.shard_id})

    def _audit_hot(self) -> list[WindowKey]:
        """Every `hot_audit_seconds`, one read of this shard's positions in every window this process wrote to
        Redis (those it no longer writes too): the windows where Redis holds an older one, or none. What this
        worker holds in memory goes with this flush again."""
        hot = self.stores.hot
        now = self.cadence.clock()
        if not isinstance(hot, LossDetecting) or now - self.last_hot_audit < self.hot_audit_seconds:
            return []
        self.last_hot_audit = now
        wall_ms = self.cadence.wall_ms()
        written = self.hot_written
        for key in [k for k in written if self._redis_expiry_ms(k) <= wall_ms]:
            del written[key]  # Redis let it expire
        if not written:
            return []
        lost = self._retry("audit Redis", lambda: hot.lost_windows(self.shard_id, written))
        if lost:
            self.aggregates.mark_all_dirty("redis")
        return lost

    def _repair_hot_windows(self, lost: set[WindowKey], sent: set[WindowKey]) -> None:
        """Redis lost partials of these windows: copy every shard's durable partial of those it still keeps.
        A window whose partial this flush did not re-send leaves the audit: Redis holds DynamoDB's copy."""
        for key in lost - sent:
            self.hot_written.pop(key, None)
        now_ms = self.cadence.wall_ms()
        kept = sorted(k for k in lost if self._redis_expiry_ms(k) > now_ms)
        if not kept:
            return
        copied = self._retry(
            "repair Redis windows from DynamoDB", lambda: repair_windows(self.stores.durable, self.stores.hot, kept)
        )
        self.stats.hot_windows_repaired += len(kept)
        log.warning(
            "Redis lost partials of some windows: repaired them from DynamoDB",
            extra={"shard": self.shard_id, "windows": len(kept), "partials": copied, "first": list(kept[0])},
        )

    def _redis_expiry_ms(self, key: WindowKey) -> int:
        return self._resolution_by_name[key[0]].redis_expiry_ms(key[1])

    def health_fields(self) -> dict[str, Any]:
        return {
            "shard": self.shard_id,
            "lastBatchMs": self.last_batch_ms,
            "millisBehindLatest": self.stats.last.get("millis_behind_latest"),
            "eventsPerSecond": self.rate.rate(self.cadence.clock()),
            "lastCheckpointSequence": self.checkpointed[0] if self.checkpointed else None,
            "lastCheckpointMs": self.last_checkpoint_ms,
            "dlqCount": self.stats.dead_letters_sent,
            "records": self.stats.records,
            "events": self.stats.events,
            "forwarded": self.stats.forwarded,
            "reportedMs": self.cadence.wall_ms(),
            "endedMs": self.ended_ms,
        }

    def mark_shard_ended(self) -> None:
        """After the SHARD_END checkpoint: the last report says the shard ended (resharded), so a reader can
        tell it from a shard whose worker stopped (no alert for a parent whose children carry on)."""
        self.ended_ms = self.cadence.wall_ms()
        self.report_health()

    def report_health(self) -> None:
        if self.outputs.health is not None:
            self.outputs.health.report(self.shard_id, self.health_fields())

    def flush_durable(self) -> None:
        """Make every effect of the records seen so far durable: DLQ, sinks, DynamoDB, then Redis."""
        self._send_letters_and_forwards()
        dirty = self.aggregates.dirty("dynamodb")
        if dirty:
            stale = self._write_durable(dirty)
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
        self.last_durable = self.cadence.clock()

    def _send_letters_and_forwards(self) -> None:
        if self.pending_letters:
            letters = list(self.pending_letters)
            self._retry("send dead letters", lambda: self.outputs.dead_letters.send(letters))
            self.stats.dead_letters_sent += len(letters)
            self._log_letters_sent(letters)
            self.pending_letters.clear()  # (the same list object: _process holds it)
        sinks = self.outputs.sinks or {}
        for name, forwards in list(self.pending_forwards.items()):
            sink = sinks[name]
            self._retry(f"forward to sink {name}", lambda: sink.send(forwards))  # noqa: B023 - called at once
            self.stats.forwarded += len(forwards)
            del self.pending_forwards[name]
        self.pending_bytes = 0

    def _log_letters_sent(self, letters: Sequence[DeadLetter]) -> None:
        """One line per reason code of a send (not per letter: a hostile flood must not flood the log too),
        with the first and last sequence number that reason came from."""
        by_reason: dict[str, list[DeadLetter]] = {}
        for letter in letters:
            by_reason.setdefault(letter.reason, []).append(letter)
        for reason, sent in by_reason.items():
            log.info(
                "dead letters sent",
                extra={
                    "shard": self.shard_id,
                    "reason": reason,
                    "letters": len(sent),
                    "sequence": sent[0].sequence_number,
                    "last_sequence": sent[-1].sequence_number,
                },
            )

    def _write_durable(self, dirty: list[StoredPartial]) -> list[StoredPartial]:
        """Write partials to DynamoDB. An item the store refuses as invalid (too large) is a bug of the
        budget, not an outage: its groups fold into __other__ and it is written again, once."""
        try:
            return self._retry("write partials to DynamoDB", lambda: self.stores.durable.write(dirty))
        except StoreRejectedError as exc:
            log.error(
                "DynamoDB refused partials as invalid; folding their groups into __other__",
                extra={
                    "shard": self.shard_id,
                    "reason": "store_rejected",
                    "windows": [f"{k[0]} {k[1]}" for k in exc.keys],
                    "error": str(exc),
                },
            )
            for key in exc.keys:
                self.aggregates.fold_into_other(key)
            again = self.aggregates.dirty("dynamodb")
            try:
                return self._retry("write partials to DynamoDB", lambda: self.stores.durable.write(again))
            except StoreRejectedError as exc2:
                raise FatalError(f"DynamoDB refused partials even after folding their groups: {exc2}") from exc2

    def mark_checkpointed(self) -> None:
        self.checkpointed = self.last_record
        self.records_since_checkpoint = 0
        self.last_checkpoint = self.cadence.clock()
        self.last_checkpoint_ms = self.cadence.wall_ms()
        self.report_health()

    def _retry(self, what: str, action: Callable[[], T]) -> T:
        """Retry a store call with capped exponential backoff; give up (FatalError) after the limit, which
        runs from the first failure (a slow first attempt still gets its retries)."""
        deadline: float | None = None
        attempt = 0
        while True:
            attempt += 1
            try:
                return action()
            except (StoreUnavailableError, DeliveryUnavailableError) as exc:
                if deadline is None:
                    deadline = self.cadence.clock() + self.cadence.store_retry_seconds
                delay = self.cadence.backoff.delay_s(attempt)
                if self.cadence.clock() + delay > deadline:
                    raise FatalError(f"{what}: still failing after {attempt} attempts: {exc}") from exc
                reason = "store_unavailable" if isinstance(exc, StoreUnavailableError) else "delivery_unavailable"
                log.warning(
                    "store unavailable, backing off",
                    extra={
                        "shard": self.shard_id,
                        "reason": reason,
                        "sequence": self.checkpointed[0] if self.checkpointed else None,  # a restart resumes after it
                        "what": what,
                        "attempt": attempt,
                        "error": str(exc),
                    },
                )
                self.cadence.sleep(delay)
