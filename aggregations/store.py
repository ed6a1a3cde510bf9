"""The narrow protocol every aggregate store implements and the shared codec (its errors: aggregations.errors)."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import orjson

# (re-exported: callers catch the store errors where they use the store)
from aggregations.errors import StoreAccessError as StoreAccessError
from aggregations.errors import StoreError as StoreError
from aggregations.errors import StoreRejectedError as StoreRejectedError
from aggregations.errors import StoreUnavailableError as StoreUnavailableError
from aggregations.partials import StoredPartial, WindowKey


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
    """A cache that can lose data: everything (Redis restarted empty, FLUSHALL) or its newest writes (a
    lagging replica promoted, a lost fsync). A marker per shard tells the first; the positions a writer
    last stored tell the second, window by window."""

    def intact(self, shard_id: str) -> bool:
        """False when the store lost the shard's marker since `end_repair` confirmed it (or never had it)."""
        ...

    def begin_repair(self, shard_id: str, lease_ms: int) -> str | None:
        """Set the shard's marker for `lease_ms` (until `end_repair` confirms it) and claim the copy of every
        shard's partials: a claim token when this caller should copy, None when the copy is done or under way
        (a claim whose holder died expires after `lease_ms`)."""
        ...

    def end_repair(self, shard_id: str, claim: str | None) -> bool:
        """Confirm the shard's marker (and the copy, with its claim token). False when the marker is gone
        again: the store lost data during the repair, which must run again."""
        ...

    def write_checked(
        self, partials: Sequence[StoredPartial], last_written: Sequence[str | None]
    ) -> tuple[list[StoredPartial], list[WindowKey]]:
        """`write`, each partial with the position its writer last stored there (None: not known). Returns the
        partials refused as stale and the windows where a written partial found an older position than that,
        or none: the store lost data there (the partial is written all the same)."""
        ...

    def lost_windows(self, shard_id: str, last_written: Mapping[WindowKey, str]) -> list[WindowKey]:
        """The windows where the shard's stored position is older than the one it last wrote, or absent."""
        ...


def encode_metrics(metrics: Any) -> bytes:
    return zlib.compress(orjson.dumps(metrics), 6)


def decode_metrics(blob: bytes) -> Any:
    return orjson.loads(zlib.decompress(blob))
