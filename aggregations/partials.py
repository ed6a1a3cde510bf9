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

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from aggregations import hll
from aggregations.metrics import (
    AGGREGATORS,
    ALL_GROUP,
    MISSING,
    OTHER_GROUP,
    CountAggregator,
    DistinctAggregator,
    MetricDef,
    MetricSet,
    group_part,
    plain_key,
)
from aggregations.windows import Resolution

DEFAULT_MAX_ITEM_BYTES = 262_144  # STREAMKPI_MAX_ITEM_BYTES: a window partial's JSON, at most
METRIC_COST = 64  # what one metric adds to a partial's JSON besides its groups: {"name":{"agg":..,"groups":{}}}


def group_cost(group: str, agg: str) -> int:
    """The most one group may add to a partial's JSON: its key as JSON, and the largest value its
    aggregator writes (bounded because validation bounds the numbers fed to it)."""
    return len(orjson.dumps(group)) + 2 + AGGREGATORS[agg].max_encoded_bytes


Position = tuple[int, int, int]  # (sequenceNumber, subSequenceNumber, index in record)
WindowKey = tuple[str, int]  # (resolution name, window start ms)
StoreName = Literal["dynamodb", "redis"]

# Kinesis sequence numbers are decimal strings of up to 129 digits: wider than a DynamoDB Number.
# Fixed-width zero padding makes string order equal numeric order, in DynamoDB conditions and in Lua.
_SEQ_WIDTH, _SUB_WIDTH, _INDEX_WIDTH = 130, 20, 10
_BOTH_STORES: frozenset[str] = frozenset(("dynamodb", "redis"))
# How a metric's values are folded: the two common aggregators inline, any other through its methods.
_COUNT, _DISTINCT, _GENERIC = 0, 1, 2
# Per metric: (name, fold kind, the top-level key that alone decides it or None, group_and_value, metric).
_Plan = tuple[tuple[str, int, str | None, Callable[[Mapping[str, Any]], tuple[str, Any] | None], MetricDef], ...]


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
    # Per metric, the bytes its part of the stored JSON may take at most (see group_cost): each metric's
    # share of max_item_bytes bounds it, so no metric's flood of groups can crowd out another's.
    sizes: dict[str, int] = field(default_factory=dict)


class ShardAggregates:
    """All window partials one shard holds in memory, and which stores still need them."""

    def __init__(
        self,
        shard_id: str,
        metrics: MetricSet,
        resolutions: Iterable[Resolution],
        max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES,
    ) -> None:
        self.shard_id = shard_id
        self.metrics = metrics
        self.resolutions = tuple(resolutions)
        self.max_item_bytes = max_item_bytes
        # Each configured metric's share of a window's item (a metric no longer configured keeps what it has).
        self.metric_budget = max_item_bytes // max(1, len(metrics.metrics))
        self._partials: dict[WindowKey, _Partial] = {}
        self._tick = 0
        # Hot-path caches (results are the same without them): per event type, the metrics that apply
        # and how to fold them; per resolution, the window the last event fell into.
        self._plans: dict[str, _Plan] = {}
        self._recent: list[tuple[int, int, _Partial] | None] = [None] * len(self.resolutions)
        self._sizes = tuple((r.name, r.size_ms) for r in self.resolutions)

    def __len__(self) -> int:
        return len(self._partials)

    def keys_for(self, event_ms: int, keep: tuple[int, ...] | None = None) -> list[WindowKey]:
        """The windows of an event, at every resolution or at those of `keep` (indexes)."""
        return [(r.name, r.start(event_ms)) for i, r in enumerate(self.resolutions) if keep is None or i in keep]

    def keeping(self, event_ms: int, arrival_ms: int) -> tuple[int, ...]:
        """The resolutions (indexes) whose DynamoDB retention still keeps the event's window when it
        arrived: an event later than a resolution keeps its windows does not write them again."""
        return tuple(i for i, r in enumerate(self.resolutions) if r.dynamodb_expiry_ms(r.start(event_ms)) > arrival_ms)

    def _admit(self, partial: _Partial, metric: MetricDef, groups: dict[str, Any], group: str) -> str:
        """The group a new group becomes: itself, or OTHER_GROUP past max_groups or the item's byte budget."""
        if len(groups) < metric.max_groups:
            cost = group_cost(group, metric.agg)
            used = partial.sizes.get(metric.name, METRIC_COST)
            if used + cost <= self.metric_budget:
                partial.sizes[metric.name] = used + cost
                return group
        if OTHER_GROUP not in groups:  # charged even past the budget: one group, of a known size
            used = partial.sizes.get(metric.name, METRIC_COST)
            partial.sizes[metric.name] = used + group_cost(OTHER_GROUP, metric.agg)
        return OTHER_GROUP

    def missing(self, keys: Iterable[WindowKey]) -> list[WindowKey]:
        """Keys that must be loaded from the durable store before events may be folded into them."""
        return sorted({k for k in keys if k not in self._partials})

    def span(self, event_ms: int) -> tuple[int, int, list[WindowKey]]:
        """The event times [low, high) that fall into the same window of every resolution as `event_ms`,
        and the keys of those windows that are not in memory (`missing` must load them first)."""
        partials = self._partials
        low, high = event_ms, event_ms + 1
        absent = []
        for index, (name, size) in enumerate(self._sizes):
            start = event_ms - event_ms % size
            if (name, start) not in partials:
                absent.append((name, start))
            low, high = (start, start + size) if index == 0 else (max(low, start), min(high, start + size))
        return low, high, absent

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
                # The same charges as when the groups were made, so the budget does not depend on loads.
                partial.sizes[name] = METRIC_COST + sum(group_cost(g, metric.agg) for g in body["groups"])
        self._partials[key] = partial
        self._recent = [None] * len(self.resolutions)

    def _plan(self, event_type: str) -> _Plan:
        plan = []
        for metric in self.metrics.for_type(event_type):
            kind = type(metric.aggregator)
            fold = _COUNT if kind is CountAggregator else _DISTINCT if kind is DistinctAggregator else _GENERIC
            shape = plain_key(metric)
            key = None
            if shape is not None and (shape[0], fold) in (("group", _COUNT), ("value", _DISTINCT)):
                key = shape[1]
            plan.append((metric.name, fold, key, metric.group_and_value, metric))
        found = tuple(plan)
        if len(self._plans) < 100_000:
            self._plans[event_type] = found
        return found

    def add(
        self,
        event: Mapping[str, Any],
        event_type: str,
        event_ms: int,
        position: Position,
        keep: tuple[int, ...] | None = None,
    ) -> bool:
        """Fold one valid event into every resolution's window (those of `keep` only, when given). False if
        all were already included."""
        plan = self._plans.get(event_type)
        if plan is None:
            plan = self._plan(event_type)
        contributions = []
        for _, kind, _, extract, metric in plan:
            found = extract(event)
            if found is not None:
                group, value = found
                if kind == _DISTINCT:
                    value = hll.locate(value)  # (register, rank): hashed once, folded into every resolution
                contributions.append((metric, kind, group, value))
        self._tick += 1
        tick = self._tick
        applied = False
        recent = self._recent
        for i, (name, size) in enumerate(self._sizes):
            if keep is not None and i not in keep:
                continue
            window = recent[i]
            if window is not None and window[0] <= event_ms < window[1]:
                partial = window[2]
            else:
                start = event_ms - event_ms % size
                partial = self._partials[(name, start)]
                recent[i] = (start, start + size, partial)
            skip_until = partial.skip_until
            if skip_until is not None and position <= skip_until:
                continue
            metric_groups = partial.groups
            for metric, kind, group, value in contributions:
                groups = metric_groups.get(metric.name)
                if groups is None:
                    groups = metric_groups[metric.name] = {}
                current = groups.get(group)
                if current is None and group not in groups:
                    group = self._admit(partial, metric, groups, group)
                    current = groups.get(group)
                if kind == _COUNT:  # CountAggregator.add
                    groups[group] = (0 if current is None else current) + 1
                elif kind == _DISTINCT:  # hll.add with the located register
                    if current is None:
                        current = groups[group] = hll.new()
                    index, rank = value
                    if current[index] < rank:
                        current[index] = rank
                else:
                    agg = metric.aggregator
                    groups[group] = agg.add(agg.initial() if current is None else current, value)
            partial.position = position
            if partial.dirty != _BOTH_STORES:
                partial.dirty = {"dynamodb", "redis"}
            partial.touched = tick
            applied = True
        return applied

    def fold(self, events: Sequence[tuple[Any, ...]], late: bool = False) -> list[int]:
        """`add` of every item `(event, event_type, event_ms, position, ...)` in order, with the same result.

        Returns the indexes of the items `add` would have returned False for (already included).
        Consecutive events that fall into the same windows of every resolution (nearly all of a batch)
        are summed once per metric and group, then added to each of those windows; windows loaded with
        a stored position (a replay after a restart) take the events one by one through `add`. With
        `late`, an item may carry a sixth field: the resolutions that still keep it (see `keeping`).
        """
        included: list[int] = []
        partials = self._partials
        plans = self._plans
        locate = hll.locate
        windows: list[_Partial] = []
        low = high = 0  # the event times [low, high) that fall into `windows`
        one_by_one = False
        pending: dict[str, Any] = {}  # metric name -> its sums per group, in the order they appeared
        kinds: dict[str, tuple[int, MetricDef]] = {}
        located = hll.LOCATED
        folded = 0  # events summed in `pending`
        position: Position | None = None
        for i, item in enumerate(events):
            event, event_type, event_ms = item[0], item[1], item[2]
            if late and len(item) > 5:  # folded alone, into the resolutions that keep it
                if folded:
                    assert position is not None
                    self._apply(windows, pending, kinds, position)
                    pending, folded = {}, 0
                low = high = 0
                if not self.add(event, event_type, event_ms, item[3], item[5]):
                    included.append(i)
                continue
            if not low <= event_ms < high:
                if folded:
                    assert position is not None
                    self._apply(windows, pending, kinds, position)
                    pending, folded = {}, 0
                starts = [(name, event_ms - event_ms % size, size) for name, size in self._sizes]
                windows = [partials[(name, start)] for name, start, _ in starts]
                low = max(start for _, start, _ in starts)
                high = min(start + size for _, start, size in starts)
                one_by_one = any(w.skip_until is not None for w in windows)
            if one_by_one:
                if not self.add(event, event_type, event_ms, item[3]):
                    included.append(i)
                continue
            plan = plans.get(event_type)
            if plan is None:
                plan = self._plan(event_type)
            plain = type(event) is dict
            for name, kind, key, extract, metric in plan:
                if key is not None and plain:  # group_and_value, inline
                    value = event.get(key, MISSING)
                    if kind == _COUNT:
                        group = value if type(value) is str else group_part(value)
                    elif value is None or value is MISSING:
                        continue
                    else:
                        group = ALL_GROUP
                else:
                    found = extract(event)
                    if found is None:
                        continue
                    group, value = found
                sums: Any = pending.get(name)
                if sums is None:
                    sums = pending[name] = [] if kind == _GENERIC else {}
                    kinds[name] = (kind, metric)
                if kind == _COUNT:
                    sums[group] = sums.get(group, 0) + 1
                elif kind == _DISTINCT:
                    index, rank = (type(value) is str and located.get(value)) or locate(value)
                    ranks = sums.get(group)
                    if ranks is None:
                        sums[group] = {index: rank}
                    elif ranks.get(index, 0) < rank:
                        ranks[index] = rank
                else:
                    sums.append((group, value))  # folded in order: an aggregator may care about it
            self._tick += 1
            folded += 1
            position = item[3]
        if folded:
            assert position is not None
            self._apply(windows, pending, kinds, position)
        return included

    def _apply(
        self,
        windows: list[_Partial],
        pending: dict[str, Any],
        kinds: dict[str, tuple[int, MetricDef]],
        position: Position,
    ) -> None:
        """Add summed contributions to each window as `add` would have, event by event."""
        for partial in windows:
            metric_groups = partial.groups
            for name, sums in pending.items():
                kind, metric = kinds[name]
                groups = metric_groups.get(name)
                if groups is None:
                    groups = metric_groups[name] = {}
                if kind == _GENERIC:
                    agg = metric.aggregator
                    for group, value in sums:
                        current = groups.get(group)
                        if current is None and group not in groups:
                            group = self._admit(partial, metric, groups, group)
                            current = groups.get(group)
                        groups[group] = agg.add(agg.initial() if current is None else current, value)
                    continue
                # Groups in the order they first appeared: a group past max_groups goes to OTHER_GROUP
                # exactly when it would have event by event.
                for group, summed in sums.items():
                    current = groups.get(group)
                    if current is None and group not in groups:
                        group = self._admit(partial, metric, groups, group)
                        current = groups.get(group)
                    if kind == _COUNT:
                        groups[group] = (0 if current is None else current) + summed
                    else:
                        if current is None:
                            current = groups[group] = hll.new()
                        for index, rank in summed.items():
                            if current[index] < rank:
                                current[index] = rank
            partial.position = position
            if partial.dirty != _BOTH_STORES:
                partial.dirty = {"dynamodb", "redis"}
            partial.touched = self._tick

    def fold_into_other(self, key: WindowKey) -> None:
        """Merge every group of the window's metrics into OTHER_GROUP (totals unchanged): the way out when
        a store refuses the item as too large, which the byte budget should make impossible."""
        partial = self._partials.get(key)
        if partial is None or partial.position is None:
            return
        partial.sizes.clear()
        for name, groups in partial.groups.items():
            metric = self.metrics.by_name[name]
            agg = metric.aggregator
            merged: Any = None
            for value in groups.values():
                merged = value if merged is None else agg.merge(merged, value)
            partial.groups[name] = {} if merged is None else {OTHER_GROUP: merged}
            partial.sizes[name] = METRIC_COST + group_cost(OTHER_GROUP, metric.agg)
        partial.foreign.clear()  # metrics no longer configured: dropped rather than stop the shard
        partial.dirty = {"dynamodb", "redis"}

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
        self._recent = [None] * len(self.resolutions)
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
