"""Redis backend: the hot copy of every shard partial, for live reads.

One hash per window, `<prefix>:w:<resolution>:<start ms>`, with two fields per shard:
`p:<shard>` (position) and `d:<shard>` (zlib-compressed JSON partial). A Lua script writes both
atomically, only if the stored position is not newer, and sets the key's expiry (the resolution's
Redis retention after the window's end).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import redis

from aggregations.partials import StoredPartial, WindowKey
from aggregations.store import StoreUnavailableError, decode_metrics, encode_metrics
from aggregations.windows import Resolution

# Positions are fixed-width digit strings, so Lua's string comparison is numeric comparison.
_WRITE_IF_NOT_OLDER = """
local stored = redis.call('HGET', KEYS[1], 'p:' .. ARGV[1])
if stored and stored > ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'p:' .. ARGV[1], ARGV[2], 'd:' .. ARGV[1], ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 1
"""


class RedisStore:
    name = "redis"

    def __init__(self, client: redis.Redis, resolutions: Iterable[Resolution], prefix: str = "skpi") -> None:
        self.client = client
        self.resolutions = {r.name: r for r in resolutions}
        self.prefix = prefix
        self._write_script = client.register_script(_WRITE_IF_NOT_OLDER)
        self.writes = 0

    def intact(self, shard_id: str) -> bool:
        try:
            return bool(self.client.exists(f"{self.prefix}:intact:{shard_id}"))
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"Redis check failed: {exc}") from exc

    def mark_intact(self, shard_id: str) -> None:
        # No expiry: the marker disappears only with the data (restart without persistence, FLUSHALL).
        try:
            self.client.set(f"{self.prefix}:intact:{shard_id}", "1")
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"Redis write failed: {exc}") from exc

    def window_key(self, resolution: str, start_ms: int) -> str:
        return f"{self.prefix}:w:{resolution}:{start_ms}"

    def load(self, shard_id: str, keys: Sequence[WindowKey]) -> dict[WindowKey, StoredPartial]:
        try:
            pipe = self.client.pipeline(transaction=False)
            for resolution, start in keys:
                pipe.hmget(self.window_key(resolution, start), f"p:{shard_id}", f"d:{shard_id}")
            replies = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"Redis load failed: {exc}") from exc
        found = {}
        for (resolution, start), (position, blob) in zip(keys, replies, strict=True):
            if position is not None and blob is not None:
                found[(resolution, start)] = StoredPartial(
                    resolution, start, shard_id, position.decode(), decode_metrics(blob)
                )
        return found

    def write(self, partials: Sequence[StoredPartial]) -> list[StoredPartial]:
        if not partials:
            return []
        try:
            pipe = self.client.pipeline(transaction=False)
            for p in partials:
                expiry = self.resolutions[p.resolution].redis_expiry_ms(p.start_ms)
                self._write_script(
                    keys=[self.window_key(p.resolution, p.start_ms)],
                    args=[p.shard_id, p.position, encode_metrics(p.metrics), expiry],
                    client=pipe,
                )
            replies = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"Redis write failed: {exc}") from exc
        self.writes += sum(1 for r in replies if r == 1)
        return [p for p, ok in zip(partials, replies, strict=True) if ok != 1]

    def read(self, resolution: str, starts: Sequence[int]) -> dict[int, list[StoredPartial]]:
        try:
            pipe = self.client.pipeline(transaction=False)
            for start in starts:
                pipe.hgetall(self.window_key(resolution, start))
            replies = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"Redis read failed: {exc}") from exc
        out: dict[int, list[StoredPartial]] = {}
        for start, fields in zip(starts, replies, strict=True):
            for name, value in fields.items():
                if not name.startswith(b"p:"):
                    continue
                shard = name[2:].decode()
                blob = fields.get(b"d:" + name[2:])
                if blob is not None:
                    partial = StoredPartial(resolution, start, shard, value.decode(), decode_metrics(blob))
                    out.setdefault(start, []).append(partial)
        return out

    def delete(self, resolution: str, starts: Sequence[int]) -> int:
        try:
            keys = [self.window_key(resolution, s) for s in starts]
            return int(self.client.delete(*keys)) if keys else 0
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"Redis delete failed: {exc}") from exc
