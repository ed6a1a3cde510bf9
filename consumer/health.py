"""Per-shard health for operators and the dashboard: kept in Redis, one hash per shard.

    <prefix>:health:<stream>            set of shard ids seen
    <prefix>:health:<stream>:<shard>    hash: last batch time, millisBehindLatest, events/s, last
                                        checkpoint sequence and time, DLQ count, totals
Reporting is best effort: a failed health write is logged, never a reason to stop processing.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

import redis

log = logging.getLogger("streamkpi.health")
HEALTH_TTL_MS = 24 * 3600 * 1000  # an ended or idle shard's entry fades away after a day


class HealthSink(Protocol):
    def report(self, shard_id: str, fields: Mapping[str, Any]) -> None: ...


class MemoryHealth:
    def __init__(self) -> None:
        self.shards: dict[str, dict[str, Any]] = {}

    def report(self, shard_id: str, fields: Mapping[str, Any]) -> None:
        self.shards[shard_id] = dict(fields)


class RedisHealth:
    def __init__(self, client: redis.Redis, stream: str, prefix: str = "skpi") -> None:
        self.client = client
        self.index_key = f"{prefix}:health:{stream}"

    def report(self, shard_id: str, fields: Mapping[str, Any]) -> None:
        key = f"{self.index_key}:{shard_id}"
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(key, mapping={k: "" if v is None else str(v) for k, v in fields.items()})
            pipe.pexpire(key, HEALTH_TTL_MS)
            pipe.sadd(self.index_key, shard_id)
            pipe.pexpire(self.index_key, HEALTH_TTL_MS)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("health report failed", extra={"shard": shard_id, "error": str(exc)})

    def read(self) -> dict[str, dict[str, str]]:
        shards = sorted(s.decode() for s in self.client.smembers(self.index_key))  # type: ignore[union-attr]
        out = {}
        for shard in shards:
            raw = self.client.hgetall(f"{self.index_key}:{shard}")
            if raw:
                out[shard] = {k.decode(): v.decode() for k, v in raw.items()}  # type: ignore[union-attr]
        return out


class RateMeter:
    """Events per second over a sliding window of recent batches (monotonic seconds in, pure)."""

    def __init__(self, window_seconds: float = 10.0) -> None:
        self.window = window_seconds
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, count: int) -> None:
        self.samples.append((now, count))
        while self.samples and now - self.samples[0][0] > self.window:
            self.samples.popleft()

    def rate(self, now: float) -> float:
        recent = [(t, n) for t, n in self.samples if now - t <= self.window]
        if not recent:
            return 0.0
        span = max(now - recent[0][0], 1.0)
        return round(sum(n for _, n in recent) / span, 1)
