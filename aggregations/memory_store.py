"""In-memory AggregateStore: the fake the unit and functional tests use. Same rules as the real ones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aggregations.errors import StoreUnavailableError
from aggregations.partials import StoredPartial, WindowKey


class MemoryStore:
    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.items: dict[tuple[str, int, str], StoredPartial] = {}
        self.writes = 0
        self.available = True
        self.intact_shards: set[str] = set()
        self.leased_shards: set[str] = set()  # markers that expire unless `end_repair` confirms them
        self.copy_claim: str | None = None  # the claim token of the copy of all shards (None: not copied)
        self.copy_leased = False  # the claim expires (its holder has not confirmed it)
        self._claims = 0

    def intact(self, shard_id: str) -> bool:
        self._check()
        return shard_id in self.intact_shards

    def begin_repair(self, shard_id: str, lease_ms: int) -> str | None:
        self._check()
        self.intact_shards.add(shard_id)
        self.leased_shards.add(shard_id)
        if self.copy_claim is not None:
            return None
        self._claims += 1
        self.copy_claim, self.copy_leased = f"claim-{self._claims}", True
        return self.copy_claim

    def end_repair(self, shard_id: str, claim: str | None) -> bool:
        self._check()
        if claim is not None and claim == self.copy_claim:
            self.copy_leased = False
        self.leased_shards.discard(shard_id)
        return shard_id in self.intact_shards

    def expire_leases(self) -> None:
        """What time does to the markers and the claim of a repair that never ended (its worker died)."""
        self.intact_shards -= self.leased_shards
        self.leased_shards.clear()
        if self.copy_leased:
            self.copy_claim, self.copy_leased = None, False

    def lose_everything(self) -> None:
        """What a Redis restart without persistence does (for tests)."""
        self.items.clear()
        self.intact_shards.clear()
        self.leased_shards.clear()
        self.copy_claim, self.copy_leased = None, False

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

    def write_checked(
        self, partials: Sequence[StoredPartial], last_written: Sequence[str | None]
    ) -> tuple[list[StoredPartial], list[WindowKey]]:
        self._check()
        found = []
        for partial, last in zip(partials, last_written, strict=True):
            current = self.items.get((partial.resolution, partial.start_ms, partial.shard_id))
            found.append(last is not None and (current is None or current.position < last))
        stale = self.write(partials)  # (through `write`, so a test's override of it applies here too)
        refused = {id(p) for p in stale}
        lost = [p.key for p, gone in zip(partials, found, strict=True) if gone and id(p) not in refused]
        return stale, lost

    def lost_windows(self, shard_id: str, last_written: Mapping[WindowKey, str]) -> list[WindowKey]:
        self._check()
        lost = []
        for (resolution, start), last in last_written.items():
            current = self.items.get((resolution, start, shard_id))
            if current is None or current.position < last:
                lost.append((resolution, start))
        return lost

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
