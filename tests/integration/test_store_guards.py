"""The position guard of the real Redis store: its Lua script against a real redis-server (its own, on a free
port; no moto, no KCL).

A shard's partial of a window (fields `p:<shard>` and `d:<shard>` of the window's hash) is written only if the
stored position is not newer. An older write is refused and reported as stale, and leaves the hash as it
was (its expiry too); an equal one is accepted (a replay rewrites the same value); a newer one is accepted.
The guard is per shard: one shard's position never stops another's write. Positions are fixed-width strings,
so Lua's string order is numeric order even for 56-digit Kinesis sequence numbers. The DynamoDB store's
guard is pinned in tests/functional/test_store_guards.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from aggregations.partials import Position, StoredPartial, encode_position
from aggregations.redis_store import RedisStore
from streamkpi.config import load_config
from tests.integration.conftest import own_redis_server

pytestmark = pytest.mark.integration

CONFIG = load_config(None)
MINUTE = 60_000
START = int(time.time() * 1000) // MINUTE * MINUTE - 30 * MINUTE  # recent: Redis keeps the window for hours
SHARD = "shardId-000000000001"
OTHER = "shardId-000000000002"
SEQ = 49_656_985_323_216_112_287_917_218_401_765_390_818_157_442_962_030_821_394  # 56 digits, as Kinesis gives
STORED: Position = (SEQ, 3, 7)

OLDER = {
    "sequence number one less": (SEQ - 1, 3, 7),
    "sub-sequence one less": (SEQ, 2, 7),
    "index in record one less": (SEQ, 3, 6),
    "fewer digits, larger leading digit": (9_999_999_999, 99, 99),
}
NEWER = {
    "sequence number one more": (SEQ + 1, 0, 0),
    "sub-sequence one more": (SEQ, 4, 0),
    "index in record one more": (SEQ, 3, 8),
    "more digits, smaller leading digit": (SEQ * 10 + 1, 0, 0),
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    with own_redis_server(tmp_path_factory.mktemp("redis-guards")) as connection:
        yield connection


@pytest.fixture
def store(client: redis.Redis) -> RedisStore:
    return RedisStore(client, CONFIG.resolutions, prefix=f"g{uuid.uuid4().hex[:8]}")


def partial(position: Position, clicks: int, shard: str = SHARD) -> StoredPartial:
    metrics = {"events": {"agg": "count", "groups": {"click": clicks}}}
    return StoredPartial("1m", START, shard, encode_position(position), metrics)


def window(store: RedisStore) -> tuple[dict[bytes, bytes], int]:
    """The window's hash exactly as Redis holds it, and its expiry (ms since the epoch)."""
    key = store.window_key("1m", START)
    return store.client.hgetall(key), int(store.client.pexpiretime(key))


def stored(store: RedisStore, shard: str = SHARD) -> StoredPartial:
    return store.load(shard, [("1m", START)])[("1m", START)]


def test_the_resolution_of_the_tests_is_one_minute() -> None:
    assert CONFIG.resolutions[0].name == "1m" and CONFIG.resolutions[0].size_ms == MINUTE


@pytest.mark.parametrize("older", list(OLDER.values()), ids=list(OLDER))
def test_redis_refuses_an_older_position_as_stale_and_leaves_the_window_unchanged(
    store: RedisStore, older: Position
) -> None:
    assert encode_position(older) < encode_position(STORED)
    assert store.write([partial(STORED, 5), partial(STORED, 6, shard=OTHER)]) == []
    before = window(store)
    assert before[1] > 0, "the window has an expiry"
    writes = store.writes
    refused = partial(older, 99)
    assert store.write([refused]) == [refused]
    assert window(store) == before
    assert stored(store) == partial(STORED, 5)
    assert store.writes == writes
    # The loss-detecting write refuses it the same way, and reports no loss (nothing was lost).
    assert store.write_checked([refused], [encode_position(STORED)]) == ([refused], [])
    assert window(store) == before


def test_redis_reports_exactly_the_stale_partials_of_a_write(store: RedisStore) -> None:
    assert store.write([partial(STORED, 5), partial(STORED, 6, shard=OTHER)]) == []
    stale = partial((SEQ - 1, 0, 0), 1)
    assert store.write([stale, partial((SEQ + 1, 0, 0), 7, shard=OTHER)]) == [stale]
    assert stored(store) == partial(STORED, 5)
    assert stored(store, OTHER) == partial((SEQ + 1, 0, 0), 7, shard=OTHER)


def test_redis_accepts_the_same_position_again(store: RedisStore) -> None:
    assert store.write([partial(STORED, 5)]) == []
    first = window(store)
    # A replay after a crash rewrites the same value at the same position: accepted, not reported as stale.
    assert store.write([partial(STORED, 5)]) == []
    assert window(store) == first
    assert store.writes == 2
    # Accepted means written: the same position with another value replaces the stored one.
    assert store.write([partial(STORED, 6)]) == []
    assert stored(store) == partial(STORED, 6)
    assert store.writes == 3


@pytest.mark.parametrize("newer", list(NEWER.values()), ids=list(NEWER))
def test_redis_accepts_a_newer_position(store: RedisStore, newer: Position) -> None:
    assert encode_position(newer) > encode_position(STORED)
    assert store.write([partial(STORED, 5)]) == []
    assert store.write([partial(newer, 8)]) == []
    assert stored(store) == partial(newer, 8)
    assert store.client.hget(store.window_key("1m", START), f"p:{SHARD}") == encode_position(newer).encode()
    # ... and from there on the formerly stored position is the older one.
    assert store.write([partial(STORED, 5)]) == [partial(STORED, 5)]
    assert stored(store) == partial(newer, 8)


def test_redis_guards_each_shard_by_its_own_position(store: RedisStore) -> None:
    assert store.write([partial(STORED, 5)]) == []
    # Another shard's partial of the same window at a far lower position: its own first write, accepted.
    assert store.write([partial((7, 0, 0), 2, shard=OTHER)]) == []
    assert stored(store, OTHER) == partial((7, 0, 0), 2, shard=OTHER)
    assert stored(store) == partial(STORED, 5)
    # And its later write is judged against its own position, not the window's highest.
    assert store.write([partial((8, 0, 0), 3, shard=OTHER)]) == []
    assert stored(store, OTHER) == partial((8, 0, 0), 3, shard=OTHER)
    assert store.write([partial((6, 0, 0), 1, shard=OTHER)]) == [partial((6, 0, 0), 1, shard=OTHER)]
    assert stored(store, OTHER) == partial((8, 0, 0), 3, shard=OTHER)
