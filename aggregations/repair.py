"""Copying durable partials into the hot store: the automatic repair after Redis lost its data, and
`streamkpi rebuild-cache`. The hot store's write rule (never move a position backwards) makes both safe
to run while workers write."""

from __future__ import annotations

from collections.abc import Iterable

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
    durable: AggregateStore, hot: AggregateStore, resolutions: Iterable[Resolution], shard_id: str, now_ms: int
) -> int:
    """Refill what the hot store keeps of one shard (each resolution's Redis retention up to now)."""
    copied = 0
    for resolution in resolutions:
        copied += copy_range(durable, hot, [resolution], now_ms - resolution.redis_retention_ms, now_ms + 1, shard_id)
    return copied
