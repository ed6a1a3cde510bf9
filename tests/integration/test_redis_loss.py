"""Redis loss repaired per window, against a real redis-server (its own, on a free port; no moto, no KCL).

The Lua write script and the memory fake must agree; then shard workers (DynamoDB played by the memory
store) lose window keys, one shard's fields, or the newest writes while their markers survive, and see
every shard's partials come back; and after FLUSHALL everything does, the ended parent's partials too.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import orjson
import pytest
import redis

from aggregations.memory_store import MemoryStore
from aggregations.partials import StoredPartial, encode_position
from aggregations.redis_store import RedisStore
from consumer.dlq.memory import MemoryDeadLetterQueue
from consumer.worker import Cadence, Outputs, ShardWorker, Stores
from streamkpi.config import load_config
from tests.integration.conftest import own_redis_server, wait_for

pytestmark = pytest.mark.integration

CONFIG = load_config(None)
MINUTE = 60_000
# Real time: Redis expires each window key at its end plus the resolution's retention.
T0 = int(time.time() * 1000) // MINUTE * MINUTE - 30 * MINUTE
NOW = T0 + 10 * MINUTE
EAGER = Cadence(redis_flush_seconds=0, dynamodb_flush_seconds=0, checkpoint_seconds=0, store_retry_seconds=0)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    with own_redis_server(tmp_path_factory.mktemp("redis-loss")) as connection:
        yield connection


def fresh(client: redis.Redis) -> RedisStore:
    return RedisStore(client, CONFIG.resolutions, prefix=f"t{uuid.uuid4().hex[:8]}")


def partial(shard: str, seq: int, count: int = 1, start: int = T0) -> StoredPartial:
    metrics = {"events": {"agg": "count", "groups": {"click": count}}}
    return StoredPartial("1m", start, shard, encode_position((seq, 0, 0)), metrics)


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_the_lua_script_and_the_memory_fake_agree_on_stale_writes_and_losses(client: redis.Redis, kind: str) -> None:
    store: Any = MemoryStore("redis") if kind == "memory" else fresh(client)
    a5, b5 = partial("a", 5), partial("b", 5)
    assert store.write_checked([a5, b5], [None, None]) == ([], [])
    # Each writer names the position it last stored: the same or older is there, so nothing was lost.
    assert store.write_checked([partial("a", 6)], [a5.position]) == ([], [])
    # Older than that stored, or nothing at all: lost, and written all the same.
    assert store.write_checked([partial("b", 7)], [partial("b", 6).position]) == ([], [("1m", T0)])
    assert store.write_checked([partial("c", 2)], [partial("c", 1).position]) == ([], [("1m", T0)])
    # A stale write is refused and reports nothing.
    assert store.write_checked([partial("a", 4)], [partial("a", 9).position]) == ([partial("a", 4)], [])
    assert {p.shard_id: p.position for p in store.read("1m", [T0])[T0]} == {
        "a": partial("a", 6).position,
        "b": partial("b", 7).position,
        "c": partial("c", 2).position,
    }
    # The audit: one read of a shard's positions.
    later = T0 + MINUTE
    written = {("1m", T0): partial("a", 6).position, ("1m", later): partial("a", 1).position}
    assert store.lost_windows("a", written) == [("1m", later)]
    assert store.lost_windows("a", {("1m", T0): partial("a", 7).position}) == [("1m", T0)]
    assert store.lost_windows("b", {("1m", T0): partial("b", 7).position}) == []


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_the_repair_markers_agree(client: redis.Redis, kind: str) -> None:
    store: Any = MemoryStore("redis") if kind == "memory" else fresh(client)
    assert not store.intact("a")
    claim = store.begin_repair("a", 60_000)
    assert claim is not None and store.intact("a")
    assert store.begin_repair("b", 60_000) is None, "one copy at a time"
    assert store.end_repair("b", None) and store.end_repair("a", claim)
    assert store.begin_repair("c", 60_000) is None, "the copy is done"
    assert store.end_repair("c", None)
    if kind == "redis":
        assert client.ttl(f"{store.prefix}:intact:a") == -1 == client.ttl(f"{store.prefix}:copied"), "confirmed"
        client.delete(f"{store.prefix}:intact:c")  # lost between begin and end
    else:
        store.intact_shards.discard("c")
    assert not store.end_repair("c", None), "a marker lost during the repair is not set again"
    assert not store.intact("c")


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_the_marker_and_claim_of_a_repair_that_never_ends_expire(client: redis.Redis, kind: str) -> None:
    store: Any = MemoryStore("redis") if kind == "memory" else fresh(client)
    assert store.begin_repair("dead", 300) is not None and store.intact("dead")  # then its worker died
    assert store.begin_repair("other", 60_000) is None and store.end_repair("other", None)
    if kind == "redis":
        wait_for(lambda: not store.intact("dead"), 10, "the dead worker's marker expired", interval=0.05)
    else:
        store.expire_leases()
    assert not store.intact("dead") and store.intact("other")
    assert store.begin_repair("next", 60_000) is not None, "the claim expired too: the next worker copies"


def worker(durable: MemoryStore, hot: RedisStore, shard: str, clock: list[float]) -> ShardWorker:
    cadence = replace(EAGER, clock=lambda: clock[0], wall_ms=lambda: NOW)
    return ShardWorker(shard, "s", CONFIG.pipeline, Stores(durable, hot), Outputs(MemoryDeadLetterQueue()), cadence)


def feed(w: ShardWorker, minutes: Sequence[int], first_seq: int) -> None:
    events = [
        {"eventType": "click", "timestamp": T0 + m * MINUTE + s * 1000, "userId": f"u{s}"}
        for m in minutes
        for s in range(3)
    ]
    w.process([(orjson.dumps(e), str(first_seq + i), 0, "pk", NOW) for i, e in enumerate(events)])
    w.flush_durable()


def differences(durable: MemoryStore, hot: RedisStore) -> list[str]:
    """Every window of the durable store, shard by shard, against Redis (and no window Redis has alone)."""
    problems = []
    for resolution in CONFIG.resolutions:
        starts = sorted({k[1] for k in durable.items if k[0] == resolution.name})
        want, got = durable.read(resolution.name, starts), hot.read(resolution.name, starts)
        for start in starts:
            a = {p.shard_id: p for p in want.get(start, [])}
            b = {p.shard_id: p for p in got.get(start, [])}
            problems += [f"{resolution.name} {start} {s}" for s in sorted(set(a) | set(b)) if a.get(s) != b.get(s)]
    held = {key.decode() for key in hot.client.scan_iter(f"{hot.prefix}:w:*")}
    problems += sorted(held - {hot.window_key(r, s) for r, s, _ in durable.items})
    return problems


def test_lost_windows_and_fields_come_back_with_every_shards_partials_and_flushall_brings_back_the_parent(
    client: redis.Redis,
) -> None:
    durable, hot, clock = MemoryStore("dynamodb"), fresh(client), [0.0]
    feed(worker(durable, hot, "parent", clock), [0, 1], first_seq=1)  # then the parent ended
    a, b = worker(durable, hot, "a", clock), worker(durable, hot, "b", clock)
    feed(a, [1, 2, 3], first_seq=1000)
    feed(b, [2, 3, 4], first_seq=1000)
    assert differences(durable, hot) == []
    markers = [f"{hot.prefix}:intact:{shard}" for shard in ("parent", "a", "b")]
    assert client.exists(*markers) == 3

    # Partial losses, the markers surviving: whole window keys, one shard's fields, a newest write.
    client.delete(hot.window_key("1m", T0 + MINUTE), hot.window_key("1m", T0 + 3 * MINUTE))
    client.hdel(hot.window_key("1m", T0 + 2 * MINUTE), "p:b", "d:b")
    hour = hot.window_key("1h", CONFIG.resolutions[1].start(T0 + 4 * MINUTE))
    client.hset(hour, "p:b", encode_position((1, 0, 0)))  # b's hour partial as of an old write: position only
    assert client.exists(*markers) == 3
    assert differences(durable, hot) != []

    feed(a, [3], first_seq=2000)  # a writes m3 again: found lost at the write, repaired with b's partial
    assert not [d for d in differences(durable, hot) if d.startswith(f"1m {T0 + 3 * MINUTE} ")]
    assert a.stats.hot_windows_repaired >= 1
    # m1 (a and the parent) and m2 (b's fields) are written by no one now: the audit finds them.
    clock[0] += a.hot_audit_seconds
    a.flush_hot()
    b.flush_hot()
    assert differences(durable, hot) == []

    # Everything at once: FLUSHALL. The next flush of a live shard brings back all of it, the parent's too.
    client.flushall()
    a.flush_hot()
    assert differences(durable, hot) == []
    assert {p.shard_id for p in hot.read("1m", [T0])[T0]} == {"parent"}
    b.flush_hot()
    assert client.exists(*markers[1:]) == 2 and differences(durable, hot) == []
