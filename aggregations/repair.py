"""Maintenance of stored aggregates: copying durable partials into the hot store (the automatic repair
after Redis lost its data, and `streamkpi rebuild-cache`) and deleting a range (`streamkpi reset`).
The write rule of both stores (never move a position backwards) makes copying safe while workers write."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from aggregations.partials import WindowKey
from aggregations.store import AggregateStore
from aggregations.windows import Resolution


def copy_range(
    durable: AggregateStore,
    hot: AggregateStore,
    resolutions: Iterable[Resolution],
    from_ms: int,
    to_ms: int,
    shard_id: str | None = None,
) -> int:
    """Write every durable partial of windows overlapping [from_ms, to_ms) to the hot store (optionally
    one shard's only). Returns how many partials were copied."""
    copied = 0
    for resolution in resolutions:
        starts = list(resolution.starts_between(resolution.start(from_ms), to_ms))
        for chunk in range(0, len(starts), 1000):
            found = durable.read(resolution.name, starts[chunk : chunk + 1000])
            partials = [p for ps in found.values() for p in ps if shard_id is None or p.shard_id == shard_id]
            hot.write(partials)
            copied += len(partials)
    return copied


def repair_hot(
    durable: AggregateStore, hot: AggregateStore, resolutions: Iterable[Resolution], now_ms: int, future_ms: int = 0
) -> int:
    """Refill everything the hot store keeps: every shard's partials (the ended parents of a reshard too,
    which no worker writes any more) of each resolution's Redis retention, up to `future_ms` past now."""
    copied = 0
    for resolution in resolutions:
        copied += copy_range(durable, hot, [resolution], now_ms - resolution.redis_retention_ms, now_ms + future_ms + 1)
    return copied


def repair_windows(durable: AggregateStore, hot: AggregateStore, keys: Iterable[WindowKey]) -> int:
    """Copy every shard's durable partial of these windows to the hot store (which lost some of them).
    Returns how many partials were copied."""
    starts_by_resolution: dict[str, list[int]] = {}
    for resolution, start in keys:
        starts_by_resolution.setdefault(resolution, []).append(start)
    copied = 0
    for resolution, starts in sorted(starts_by_resolution.items()):
        starts.sort()
        for chunk in range(0, len(starts), 1000):
            found = durable.read(resolution, starts[chunk : chunk + 1000])
            partials = [p for ps in found.values() for p in ps]
            hot.write(partials)
            copied += len(partials)
    return copied


def overlapping_starts(resolution: Resolution, from_ms: int, to_ms: int) -> list[int]:
    """Starts of every window of this resolution that overlaps [from_ms, to_ms)."""
    return list(resolution.starts_between(resolution.start(from_ms), to_ms))


def replay_span(resolutions: Iterable[Resolution], from_ms: int, to_ms: int) -> tuple[int, int]:
    """The event-time span a rebuild must replay after a reset of [from_ms, to_ms): whole windows of
    the coarsest resolution, since every overlapping window was emptied entirely."""
    starts = [r.start(from_ms) for r in resolutions]
    ends = [r.start(to_ms - 1) + r.size_ms for r in resolutions]
    return min(starts), max(ends)


def reset_range(
    store: AggregateStore, resolutions: Iterable[Resolution], from_ms: int, to_ms: int, metric: str | None = None
) -> int:
    """Delete the aggregates of every window overlapping [from_ms, to_ms), or only one metric's values.
    Returns how many shard partials were deleted or rewritten."""
    changed = 0
    for resolution in resolutions:
        starts = overlapping_starts(resolution, from_ms, to_ms)
        for chunk in range(0, len(starts), 1000):
            part = starts[chunk : chunk + 1000]
            if metric is None:
                changed += store.delete(resolution.name, part)
                continue
            found = store.read(resolution.name, part)
            rewritten = [
                replace(p, metrics={k: v for k, v in p.metrics.items() if k != metric})
                for ps in found.values()
                for p in ps
                if metric in p.metrics
            ]
            # Same position as stored: the write rule (never backwards) lets an equal position through.
            store.write(rewritten)
            changed += len(rewritten)
    return changed
