"""The position guard of the real DynamoDB store (pynamodb against moto's DynamoDB, in-process).

A shard's partial of a window is written only if the stored one is not newer (`aggregations/dynamodb_store.py`:
a PutItem conditioned on `position <= :new`). An older write is refused and reported as stale (the worker takes
that for a zombie and stops without a checkpoint), an equal one is accepted (a replay after a crash rewrites
the same value), a newer one is accepted. Positions are fixed-width strings: a Kinesis sequence number has
more digits than a DynamoDB Number holds. The same rules for the Redis store (its Lua script) are pinned
against a real redis-server in tests/integration/test_store_guards.py.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import boto3
import orjson
import pytest

from aggregations.dynamodb_store import DynamoDBStore, item_keys, make_model
from aggregations.memory_store import MemoryStore
from aggregations.partials import Position, StoredPartial, encode_position, merge_partials
from consumer.dlq.memory import MemoryDeadLetterQueue
from consumer.processor import RecordProcessor
from consumer.sinks.memory import MemorySink
from consumer.worker import Cadence, Outputs, ShardWorker, Stores
from devstack.resources import ensure_table
from streamkpi.config import load_config
from tests.functional.kcl_harness import FakeDaemon, ProcessorExited, kinesis_record, raising_exit

REGION = "us-east-1"
TABLE = "guard-metrics"
CONFIG = load_config(None)
MINUTE = 60_000
START = int(time.time() * 1000) // MINUTE * MINUTE - 30 * MINUTE  # a recent minute: nothing about it expired
SHARD = "shardId-000000000001"
# A real Kinesis sequence number: 56 digits, more than a DynamoDB Number (38) or a double holds exactly.
SEQ = 49_656_985_323_216_112_287_917_218_401_765_390_818_157_442_962_030_821_394
STORED: Position = (SEQ, 3, 7)

OLDER = {
    "sequence number one less": (SEQ - 1, 3, 7),
    "sub-sequence one less": (SEQ, 2, 7),
    "index in record one less": (SEQ, 3, 6),
    "fewer digits, larger leading digit": (9_999_999_999, 99, 99),  # older, though its unpadded text sorts later
}
NEWER = {
    "sequence number one more": (SEQ + 1, 0, 0),
    "sub-sequence one more": (SEQ, 4, 0),
    "index in record one more": (SEQ, 3, 8),
    "more digits, smaller leading digit": (SEQ * 10 + 1, 0, 0),  # newer, though its unpadded text sorts earlier
}


@pytest.fixture
def store(moto: None) -> DynamoDBStore:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    ensure_table(dynamodb, TABLE, [("pk", "S", "HASH"), ("sk", "S", "RANGE")], "expires_at")
    return DynamoDBStore(make_model(TABLE, REGION, None), CONFIG.resolutions)


def partial(position: Position, clicks: int, shard: str = SHARD, start: int = START) -> StoredPartial:
    return StoredPartial(
        "1m", start, shard, encode_position(position), {"events": {"agg": "count", "groups": {"click": clicks}}}
    )


def raw_item(shard: str = SHARD, start: int = START) -> dict[str, Any]:
    """The item exactly as DynamoDB holds it (every attribute), read strongly consistent."""
    pk, sk = item_keys(CONFIG.resolutions[0], start, shard)
    reply = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=TABLE, Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True
    )
    item: dict[str, Any] = reply["Item"]
    return item


def stored(store: DynamoDBStore, shard: str = SHARD) -> StoredPartial:
    return store.load(shard, [("1m", START)])[("1m", START)]


def test_the_resolution_of_the_tests_is_one_minute() -> None:
    assert CONFIG.resolutions[0].name == "1m" and CONFIG.resolutions[0].size_ms == MINUTE


@pytest.mark.parametrize("older", list(OLDER.values()), ids=list(OLDER))
def test_dynamodb_refuses_an_older_position_as_stale_and_leaves_the_item_unchanged(
    store: DynamoDBStore, older: Position
) -> None:
    assert encode_position(older) < encode_position(STORED)
    assert store.write([partial(STORED, 5)]) == []
    before = raw_item()
    writes = store.writes
    refused = partial(older, 99)
    assert store.write([refused]) == [refused]  # reported as stale: what the worker takes for a zombie
    assert raw_item() == before
    assert stored(store) == partial(STORED, 5)
    assert store.writes == writes


def test_dynamodb_reports_exactly_the_stale_partials_of_a_write_of_several(store: DynamoDBStore) -> None:
    other = "shardId-000000000002"
    assert store.write([partial(STORED, 5), partial(STORED, 6, shard=other)]) == []
    before = raw_item()
    stale, fresh = partial((SEQ - 1, 0, 0), 1), partial((SEQ + 1, 0, 0), 7, shard=other)
    assert store.write([stale, fresh]) == [stale]  # (several partials go out concurrently)
    assert raw_item() == before
    assert stored(store, other) == fresh


def test_dynamodb_accepts_the_same_position_again(store: DynamoDBStore) -> None:
    assert store.write([partial(STORED, 5)]) == []
    first = raw_item()
    # A replay after a crash rewrites the same value at the same position: accepted, not taken for a zombie.
    assert store.write([partial(STORED, 5)]) == []
    assert raw_item() == first
    assert store.writes == 2
    # Accepted means written: the same position with another value replaces the stored one.
    assert store.write([partial(STORED, 6)]) == []
    assert stored(store) == partial(STORED, 6)
    assert store.writes == 3


@pytest.mark.parametrize("newer", list(NEWER.values()), ids=list(NEWER))
def test_dynamodb_accepts_a_newer_position(store: DynamoDBStore, newer: Position) -> None:
    assert encode_position(newer) > encode_position(STORED)
    assert store.write([partial(STORED, 5)]) == []
    assert store.write([partial(newer, 8)]) == []
    assert stored(store) == partial(newer, 8)
    assert raw_item()["position"] == {"S": encode_position(newer)}
    # ... and from there on the formerly stored position is the older one.
    assert store.write([partial(STORED, 5)]) == [partial(STORED, 5)]
    assert stored(store) == partial(newer, 8)


def test_dynamodb_accepts_the_first_write_of_a_window(store: DynamoDBStore) -> None:
    assert store.write([partial((1, 0, 0), 1)]) == []
    assert stored(store) == partial((1, 0, 0), 1)


# -- a zombie through the KCL protocol -----------------------------------------------------------------------------

LAZY = Cadence(redis_flush_seconds=3600, dynamodb_flush_seconds=3600, checkpoint_seconds=3600, store_retry_seconds=0)
EAGER = Cadence(redis_flush_seconds=0, dynamodb_flush_seconds=0, checkpoint_seconds=0, store_retry_seconds=0)


def click(seq: int) -> dict[str, Any]:
    return kinesis_record(orjson.dumps({"eventType": "click", "timestamp": START + seq * 1000}), seq, START + MINUTE)


def start_processor(store: DynamoDBStore, cadence: Cadence) -> FakeDaemon:
    def factory(shard_id: str) -> ShardWorker:
        stores = Stores(store, MemoryStore("redis"))
        outputs = Outputs(MemoryDeadLetterQueue(), sinks={"archive": MemorySink("archive")})
        timed = replace(cadence, wall_ms=lambda: START + MINUTE)
        return ShardWorker(shard_id, "events", CONFIG.pipeline, stores, outputs, timed)

    daemon = FakeDaemon(RecordProcessor(factory, sleep=lambda s: None, exit=raising_exit))
    daemon.initialize(SHARD)
    return daemon


def table_items() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = boto3.client("dynamodb", region_name=REGION).scan(
        TableName=TABLE, ConsistentRead=True
    )["Items"]
    return sorted(items, key=lambda item: (item["pk"]["S"], item["sk"]["S"]))


def test_a_zombie_behind_the_stored_partials_exits_without_checkpoint_and_changes_nothing(
    store: DynamoDBStore,
) -> None:
    zombie = start_processor(store, LAZY)
    zombie.records([click(1), click(2)])  # held in memory: its lease moves before it flushes
    owner = start_processor(store, EAGER)
    owner.records([click(1), click(2), click(3)])
    assert owner.checkpoints == [("3", 0)]
    items = table_items()
    assert len(items) == len(CONFIG.resolutions)
    assert {p.position for p in store.read("1m", [START])[START]} == {encode_position((3, 0, 0))}
    # The zombie is asked to shut down: its flush is older than what the owner stored.
    with pytest.raises(ProcessorExited):
        zombie.send({"action": "shutdownRequested"})
    assert zombie.exit_code == 2
    assert zombie.checkpoints == []
    assert table_items() == items
    assert merge_partials(store.read("1m", [START])[START]) == {"events": {"click": 3}}
    owner.close()
