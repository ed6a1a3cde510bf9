"""Per-shard health kept in Redis, one hash per shard, for operators and the dashboard:

<prefix>:health:<stream>            set of shard ids seen
<prefix>:health:<stream>:<shard>    hash: the fields the shard's worker last reported
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import redis

from aggregations.redis_store import redis_failure

log = logging.getLogger("streamkpi.health")
HEALTH_TTL_MS = 24 * 3600 * 1000  # an ended or idle shard's entry fades away after a day


class RedisHealth:
    def __init__(self, client: redis.Redis, stream: str, prefix: str = "skpi") -> None:
        self.client = client
        self.index_key = f"{prefix}:health:{stream}"

    def report(self, shard_id: str, fields: Mapping[str, Any]) -> None:
        """Best effort: a failed write is logged, never a reason to stop processing."""
        key = f"{self.index_key}:{shard_id}"
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(key, mapping={k: "" if v is None else str(v) for k, v in fields.items()})
            pipe.pexpire(key, HEALTH_TTL_MS)
            pipe.sadd(self.index_key, shard_id)
            pipe.pexpire(self.index_key, HEALTH_TTL_MS)
            pipe.execute()
        except redis.RedisError as exc:
            error = redis_failure("health write", exc, self.client)
            log.warning("health report failed", extra={"shard": shard_id, "error": str(error)})

    def read(self) -> dict[str, dict[str, str]]:
        """Every shard's last report. StoreUnavailableError (its cause the Redis error) when Redis fails."""
        try:
            shards = sorted(s.decode() for s in self.client.smembers(self.index_key))  # type: ignore[union-attr]
            out = {}
            for shard in shards:
                raw = self.client.hgetall(f"{self.index_key}:{shard}")
                if raw:
                    out[shard] = {k.decode(): v.decode() for k, v in raw.items()}  # type: ignore[union-attr]
        except redis.RedisError as exc:
            raise redis_failure("health read", exc, self.client) from exc
        return out
