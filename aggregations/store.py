"""The narrow protocol every aggregate store implements, its errors, and the shared codec."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import orjson

from aggregations.partials import StoredPartial, WindowKey


class StoreError(Exception):
    """Base of store errors."""


class StoreUnavailableError(StoreError):
    """The store did not answer or refused for a transient reason: back off, do not checkpoint."""


class AggregateStore(Protocol):
    """Where shard partials live. Writes never move a (window, shard) position backwards."""

    name: str

    def load(self, shard_id: str, keys: Sequence[WindowKey]) -> dict[WindowKey, StoredPartial]:
        """The stored partials of one shard for these windows (absent windows are left out)."""
        ...

    def write(self, partials: Sequence[StoredPartial]) -> list[StoredPartial]:
        """Store each partial unless a newer position is stored; returns the ones refused as stale."""
        ...

    def read(self, resolution: str, starts: Sequence[int]) -> dict[int, list[StoredPartial]]:
        """Every shard's partial of each window start (windows with none are left out)."""
        ...

    def delete(self, resolution: str, starts: Sequence[int]) -> int:
        """Remove every shard's partial of these windows; returns how many were removed."""
        ...


@runtime_checkable
class LossDetecting(Protocol):
    """A cache that can lose everything (Redis restarted empty, FLUSHALL): it keeps a marker per shard."""

    def intact(self, shard_id: str) -> bool:
        """False when the store lost the shard's data since `mark_intact` (or never had it)."""
        ...

    def mark_intact(self, shard_id: str) -> None: ...


def encode_metrics(metrics: Any) -> bytes:
    return zlib.compress(orjson.dumps(metrics), 6)


def decode_metrics(blob: bytes) -> Any:
    return orjson.loads(zlib.decompress(blob))
