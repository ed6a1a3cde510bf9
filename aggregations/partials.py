"""Per-shard window partials: the exactly-once core. Pure: no I/O, no clock.

Each shard owns one partial per (resolution, window): the aggregate of *its own* events in that
window, written to the stores as an absolute value together with the position (sequence number,
sub-sequence number, index in record) of the last event folded in. A partial at position P is a pure
function of the shard's records up to P, so

- after a restart, the partial is loaded from the durable store first and every redelivered event
  at or below its stored position is skipped: nothing counts twice, nothing is lost;
- writes are accepted only when they do not move a position backwards, so a late write from an
  older run (or a zombie behind the lease owner) cannot replace a newer value;
- the value of a window is the merge of its shards' partials, done at read time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aggregations.metrics import AGGREGATORS, OTHER_GROUP, MetricSet
from aggregations.windows import Resolution

Position = tuple[int, int, int]  # (sequenceNumber, subSequenceNumber, index in record)
WindowKey = tuple[str, int]  # (resolution name, window start ms)
StoreName = Literal["dynamodb", "redis"]

# Kinesis sequence numbers are decimal strings of up to 129 digits: wider than a DynamoDB Number.
# Fixed-width zero padding makes string order equal numeric order, in DynamoDB conditions and in Lua.
_SEQ_WIDTH, _SUB_WIDTH, _INDEX_WIDTH = 130, 20, 10


def encode_position(position: Position) -> str:
    seq, sub, index = position
    return f"{seq:0{_SEQ_WIDTH}d}.{sub:0{_SUB_WIDTH}d}.{index:0{_INDEX_WIDTH}d}"


def decode_position(text: str) -> Position:
    seq, sub, index = text.split(".")
    return int(seq), int(sub), int(index)


@dataclass(frozen=True)
class StoredPartial:
    """One shard's partial of one window, as the stores keep it. `metrics` is JSON-able:
    {metric: {"agg": "count", "groups": {group: encoded value}}}."""

    resolution: str
    start_ms: int
    shard_id: str
    position: str
    metrics: Mapping[str, Mapping[str, Any]]

    @property
    def key(self) -> WindowKey:
        return (self.resolution, self.start_ms)


@dataclass
class _Partial:
    resolution: Resolution
    start_ms: int
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    position: Position | None = None  # last event folded in (or loaded)
    skip_until: Position | None = None  # the stored position at load: replayed events up to it are in
    foreign: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # metrics no longer configured
    dirty: set[str] = field(default_factory=set)
    touched: int = 0


class ShardAggregates:
    """All window partials one shard holds in memory, and which stores still need them."""

    def __init__(self, shard_id: str, metrics: MetricSet, resolutions: Iterable[Resolution]) -> None:
        self.shard_id = shard_id
        self.metrics = metrics
        self.resolutions = tuple(resolutions)
        self._partials: dict[WindowKey, _Partial] = {}
        self._tick = 0

    def __len__(self) -> int:
        return len(self._partials)

    def keys_for(self, event_ms: int) -> list[WindowKey]:
        return [(r.name, r.start(event_ms)) for r in self.resolutions]

    def missing(self, keys: Iterable[WindowKey]) -> list[WindowKey]:
        """Keys that must be loaded from the durable store before events may be folded into them."""
        return sorted({k for k in keys if k not in self._partials})

    def install(self, key: WindowKey, stored: StoredPartial | None) -> None:
        """Adopt the durable partial (or an empty one) as the starting point of a window."""
        resolution = next(r for r in self.resolutions if r.name == key[0])
        partial = _Partial(resolution, key[1])
        if stored is not None:
            position = decode_position(stored.position)
            partial.position = partial.skip_until = position
            # Redis may have missed this version (a crash between the DynamoDB and Redis writes):
            # send it once; the Redis write rule ignores it if Redis already holds it or newer.
            partial.dirty = {"redis"}
            for name, body in stored.metrics.items():
                metric = self.metrics.by_name.get(name)
                if metric is None or metric.agg != body.get("agg"):
                    partial.foreign[name] = body
                    continue
                agg = metric.aggregator
                partial.groups[name] = {g: agg.decode(v) for g, v in body["groups"].items()}
        self._partials[key] = partial

    def add(self, event: Mapping[str, Any], event_type: str, event_ms: int, position: Position) -> bool:
        """Fold one valid event into every resolution's window. False if all were already included."""
        contributions = []
        for metric in self.metrics.for_type(event_type):
            found = metric.group_and_value(event)
            if found is not None:
                contributions.append((metric, found[0], found[1]))
        self._tick += 1
        applied = False
        for resolution in self.resolutions:
            partial = self._partials[(resolution.name, event_ms - event_ms % resolution.size_ms)]
            if partial.skip_until is not None and position <= partial.skip_until:
                continue
            for metric, group, value in contributions:
                groups = partial.groups.setdefault(metric.name, {})
                agg = metric.aggregator
                if group not in groups and len(groups) >= metric.max_groups:
                    group = OTHER_GROUP
                current = groups.get(group)
                groups[group] = agg.add(agg.initial() if current is None else current, value)
            partial.position = position
            partial.dirty = {"dynamodb", "redis"}
            partial.touched = self._tick
            applied = True
        return applied

    def dirty(self, store: StoreName) -> list[StoredPartial]:
        return [self._snapshot(k, p) for k, p in self._partials.items() if store in p.dirty]

    def mark_written(self, store: StoreName, written: Iterable[StoredPartial]) -> None:
        """Clear the dirty flag of partials whose stored position is still their current one."""
        for item in written:
            partial = self._partials.get(item.key)
            if (
                partial is not None
                and partial.position is not None
                and encode_position(partial.position) == item.position
            ):
                partial.dirty.discard(store)

    def mark_all_dirty(self, store: StoreName) -> None:
        """The store lost its copies: every cached partial must be written to it again."""
        for partial in self._partials.values():
            if partial.position is not None:
                partial.dirty.add(store)

    def evict_clean(self, keep: int) -> int:
        """Drop the least recently touched partials that both stores hold, down to `keep` windows.
        A dropped window is loaded again from DynamoDB if a late event needs it."""
        excess = len(self._partials) - keep
        if excess <= 0:
            return 0
        clean = sorted((p.touched, k) for k, p in self._partials.items() if not p.dirty)
        for _, key in clean[:excess]:
            del self._partials[key]
        return min(excess, len(clean))

    def _snapshot(self, key: WindowKey, partial: _Partial) -> StoredPartial:
        assert partial.position is not None
        metrics: dict[str, Mapping[str, Any]] = dict(partial.foreign)
        for name, groups in partial.groups.items():
            metric = self.metrics.by_name[name]
            agg = metric.aggregator
            metrics[name] = {"agg": metric.agg, "groups": {g: agg.encode(v) for g, v in groups.items()}}
        return StoredPartial(key[0], key[1], self.shard_id, encode_position(partial.position), metrics)


def merge_partials(partials: Iterable[StoredPartial]) -> dict[str, dict[str, Any]]:
    """The value of a window: every shard's partial merged, per metric and group (decoded values)."""
    merged: dict[str, dict[str, Any]] = {}
    aggs: dict[str, str] = {}
    for partial in sorted(partials, key=lambda p: p.shard_id):
        for name, body in partial.metrics.items():
            agg_name = body.get("agg", "count")
            if aggs.setdefault(name, agg_name) != agg_name:
                continue  # the metric changed kind; the older partials no longer merge
            agg = AGGREGATORS[agg_name]
            groups = merged.setdefault(name, {})
            for group, raw in body["groups"].items():
                value = agg.decode(raw)
                groups[group] = value if group not in groups else agg.merge(groups[group], value)
    return merged


def metric_kinds(partials: Iterable[StoredPartial]) -> dict[str, str]:
    return {name: body.get("agg", "count") for p in partials for name, body in p.metrics.items()}
