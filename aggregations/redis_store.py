"""Redis backend: the hot copy of every shard partial, for live reads.

One hash per window, `<prefix>:w:<resolution>:<start ms>`, with two fields per shard:
`p:<shard>` (position) and `d:<shard>` (zlib-compressed JSON partial). A Lua script writes both
atomically, only if the stored position is not newer, and sets the key's expiry (the resolution's
Redis retention after the window's end). Given the position its writer last stored there, the script also
tells when that one is gone (see `LossDetecting`).
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterable, Mapping, Sequence

import redis

from aggregations.errors import StoreAccessError, StoreUnavailableError
from aggregations.partials import StoredPartial, WindowKey
from aggregations.store import decode_metrics, encode_metrics
from aggregations.windows import Resolution

# Positions are fixed-width digit strings, so Lua's string comparison is numeric comparison.
# ARGV[5] is the position this writer last stored in the window ('' when not known): finding an older one,
# or none, means the store lost data there; the write goes ahead and returns 2 to say so.
_WRITE_IF_NOT_OLDER = """
local stored = redis.call('HGET', KEYS[1], 'p:' .. ARGV[1])
if stored and stored > ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'p:' .. ARGV[1], ARGV[2], 'd:' .. ARGV[1], ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
if ARGV[5] ~= '' and (not stored or stored < ARGV[5]) then
  return 2
end
return 1
"""
# Confirms a repair: the copy's claim if this caller holds it (ARGV[1]), and the shard's marker, if each is
# still there (a loss during the repair took them: it must run again). Returns whether the marker was.
_END_REPAIR = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PERSIST', KEYS[1])
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
redis.call('PERSIST', KEYS[2])
return 1
"""


class RedisStore:
    name = "redis"

    def __init__(self, client: redis.Redis, resolutions: Iterable[Resolution], prefix: str = "skpi") -> None:
        self.client = client
        self.resolutions = {r.name: r for r in resolutions}
        self.prefix = prefix
        self._write_script = client.register_script(_WRITE_IF_NOT_OLDER)
        self._end_repair_script = client.register_script(_END_REPAIR)
        self.writes = 0

    # -- loss detection: `<prefix>:intact:<shard>` per shard, `<prefix>:copied` for the copy of all shards.
    # Confirmed, neither expires: they disappear only with the data (restart without persistence, FLUSHALL).

    def _marker(self, shard_id: str) -> str:
        return f"{self.prefix}:intact:{shard_id}"

    def intact(self, shard_id: str) -> bool:
        try:
            return bool(self.client.exists(self._marker(shard_id)))
        except redis.RedisError as exc:
            raise redis_failure("check", exc, self.client) from exc

    def begin_repair(self, shard_id: str, lease_ms: int) -> str | None:
        token = uuid.uuid4().hex
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.set(f"{self.prefix}:copied", token, nx=True, px=lease_ms)
            pipe.set(self._marker(shard_id), "1", px=lease_ms)
            claimed, _ = pipe.execute()
        except redis.RedisError as exc:
            raise redis_failure("write", exc, self.client) from exc
        return token if claimed else None

    def end_repair(self, shard_id: str, claim: str | None) -> bool:
        try:
            keys = [f"{self.prefix}:copied", self._marker(shard_id)]
            return bool(self._end_repair_script(keys=keys, args=[claim or ""]))
        except redis.RedisError as exc:
            raise redis_failure("write", exc, self.client) from exc

    def lost_windows(self, shard_id: str, last_written: Mapping[WindowKey, str]) -> list[WindowKey]:
        keys = list(last_written)
        try:
            pipe = self.client.pipeline(transaction=False)
            for resolution, start in keys:
                pipe.hget(self.window_key(resolution, start), f"p:{shard_id}")
            replies = pipe.execute()
        except redis.RedisError as exc:
            raise redis_failure("read", exc, self.client) from exc
        return [
            k for k, stored in zip(keys, replies, strict=True) if stored is None or stored.decode() < last_written[k]
        ]

    def window_key(self, resolution: str, start_ms: int) -> str:
        return f"{self.prefix}:w:{resolution}:{start_ms}"

    def load(self, shard_id: str, keys: Sequence[WindowKey]) -> dict[WindowKey, StoredPartial]:
        try:
            pipe = self.client.pipeline(transaction=False)
            for resolution, start in keys:
                pipe.hmget(self.window_key(resolution, start), f"p:{shard_id}", f"d:{shard_id}")
            replies = pipe.execute()
        except redis.RedisError as exc:
            raise redis_failure("load", exc, self.client) from exc
        found = {}
        for (resolution, start), (position, blob) in zip(keys, replies, strict=True):
            if position is not None and blob is not None:
                found[(resolution, start)] = StoredPartial(
                    resolution, start, shard_id, position.decode(), decode_metrics(blob)
                )
        return found

    def write(self, partials: Sequence[StoredPartial]) -> list[StoredPartial]:
        return self.write_checked(partials, [None] * len(partials))[0]

    def write_checked(
        self, partials: Sequence[StoredPartial], last_written: Sequence[str | None]
    ) -> tuple[list[StoredPartial], list[WindowKey]]:
        if not partials:
            return [], []
        try:
            pipe = self.client.pipeline(transaction=False)
            for p, last in zip(partials, last_written, strict=True):
                expiry = self.resolutions[p.resolution].redis_expiry_ms(p.start_ms)
                self._write_script(
                    keys=[self.window_key(p.resolution, p.start_ms)],
                    args=[p.shard_id, p.position, encode_metrics(p.metrics), expiry, last or ""],
                    client=pipe,
                )
            replies = pipe.execute()
        except redis.RedisError as exc:
            raise redis_failure("write", exc, self.client) from exc
        self.writes += sum(1 for r in replies if r != 0)
        stale = [p for p, reply in zip(partials, replies, strict=True) if reply == 0]
        lost = [p.key for p, reply in zip(partials, replies, strict=True) if reply == 2]
        return stale, lost

    def read(self, resolution: str, starts: Sequence[int]) -> dict[int, list[StoredPartial]]:
        try:
            pipe = self.client.pipeline(transaction=False)
            for start in starts:
                pipe.hgetall(self.window_key(resolution, start))
            replies = pipe.execute()
        except redis.RedisError as exc:
            raise redis_failure("read", exc, self.client) from exc
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
            raise redis_failure("delete", exc, self.client) from exc


def redis_failure(what: str, exc: redis.RedisError, client: redis.Redis) -> StoreUnavailableError:
    """The store error for a failed Redis call: where (host and port), what went wrong and what to do. Never
    the password: redis-py's texts carry none, and it is masked should one ever appear."""
    options = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    where = options.get("path") or f"{options.get('host', 'localhost')}:{options.get('port', 6379)}"
    text = str(exc)
    if options.get("password"):
        text = text.replace(options["password"], "***")
    advice, is_access = _advice(exc)
    error = StoreAccessError if is_access else StoreUnavailableError
    return error(f"Redis {what} failed at {where}: {text.rstrip('.')}. {advice}".rstrip())


def _advice(exc: redis.RedisError) -> tuple[str, bool]:
    """What to do about `exc`, and whether a setting is wrong (login, ACL, certificate) rather than Redis away.
    redis-py raises socket and TLS errors inside its own handlers, so they are the context of `exc`."""
    underlying = exc.__context__
    if isinstance(exc, redis.AuthenticationError):
        return "Check the user name and password (AUTH token or ACL user's) in REDIS_URL, percent-encoded.", True
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return "Give the REDIS_URL user every key and command the worker uses (ACL: `on ~* +@all`).", True
    if isinstance(underlying, ssl.SSLCertVerificationError):
        return (
            "The server's TLS certificate is not trusted or does not name this host: set STREAMKPI_REDIS_CA_FILE "
            "to the CA bundle that signed it, and use the host name the certificate names.",
            True,
        )
    if isinstance(underlying, ssl.SSLError):
        return "The TLS handshake failed: use rediss:// only for a TLS port, redis:// for a plain one.", False
    if isinstance(underlying, ConnectionResetError) or "closed by server" in str(exc):
        return "The server closed the connection: if it requires TLS (in-transit encryption), use rediss://.", False
    if isinstance(exc, redis.TimeoutError):
        return "No answer in time: is the host reachable from here (network, security group)?", False
    if isinstance(exc, redis.ConnectionError):
        return "Is Redis running there, and does REDIS_URL name it?", False
    return "", False
