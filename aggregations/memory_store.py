"""In-memory AggregateStore: the fake the unit and functional tests use. Same rules as the real ones."""

from __future__ import annotations

from collections.abc import Sequence

from aggregations.partials import StoredPartial, WindowKey
from aggregations.store import StoreUnavailableError


class MemoryStore:
    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.items: dict[tuple[str, int, str], StoredPartial] = {}
        self.writes = 0
        self.available = True
        self.intact_shards: set[str] = set()

    def intact(self, shard_id: str) -> bool:
        self._check()
        return shard_id in self.intact_shards

    def mark_intact(self, shard_id: str) -> None:
        self._check()
        self.intact_shards.add(shard_id)

    def lose_everything(self) -> None:
        """What a Redis restart without persistence does (for tests)."""
        self.items.clear()
        self.intact_shards.clear()

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailableError(f"{self.name} is unavailable (test outage)")

    def load(self, shard_id: str, keys: Sequence[WindowKey]) -> dict[WindowKey, StoredPartial]:
        self._check()
        found = {}
        for resolution, start in keys:
            item = self.items.get((resolution, start, shard_id))
            if item is not None:
                found[(resolution, start)] = item
        return found

    def write(self, partials: Sequence[StoredPartial]) -> list[StoredPartial]:
        self._check()
        stale = []
        for partial in partials:
            key = (partial.resolution, partial.start_ms, partial.shard_id)
            current = self.items.get(key)
            if current is not None and current.position > partial.position:
                stale.append(partial)
                continue
            self.items[key] = partial
            self.writes += 1
        return stale

    def read(self, resolution: str, starts: Sequence[int]) -> dict[int, list[StoredPartial]]:
        self._check()
        wanted = set(starts)
        out: dict[int, list[StoredPartial]] = {}
        for (res, start, _), item in sorted(self.items.items()):
            if res == resolution and start in wanted:
                out.setdefault(start, []).append(item)
        return out

    def delete(self, resolution: str, starts: Sequence[int]) -> int:
        self._check()
        wanted = set(starts)
        doomed = [k for k in self.items if k[0] == resolution and k[1] in wanted]
        for key in doomed:
            del self.items[key]
        return len(doomed)
