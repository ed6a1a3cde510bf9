"""Maintenance of stored aggregates: Redis-loss repair, rebuild-cache, reset, query --by and rolling."""

from __future__ import annotations

from dataclasses import replace

import orjson

from aggregations.memory_store import MemoryStore
from aggregations.query import read_metric, read_rolling
from aggregations.repair import copy_range, replay_span, reset_range
from aggregations.windows import DEFAULT_RESOLUTIONS
from consumer.dlq.memory import MemoryDeadLetterQueue
from consumer.worker import Cadence, Outputs, ShardWorker, Stores
from streamkpi.config import load_config

CONFIG = load_config(None)
MINUTE, HOUR = DEFAULT_RESOLUTIONS[0], DEFAULT_RESOLUTIONS[1]
T0 = 1_764_000_000_000 - 1_764_000_000_000 % 86_400_000 + 12 * 3_600_000  # noon of some day
EAGER = Cadence(redis_flush_seconds=0, dynamodb_flush_seconds=0, checkpoint_seconds=0, store_retry_seconds=0)


def donation(offset_ms: int, amount: float, currency: str, charity: str, user: str) -> dict[str, object]:
    return {
        "eventType": "donation.made",
        "timestamp": T0 + offset_ms,
        "userId": user,
        "data": {"amount": amount, "currency": currency, "charityId": charity},
    }


def worker_with(durable: MemoryStore, hot: MemoryStore, shard: str = "shard-0") -> ShardWorker:
    cadence = replace(EAGER, wall_ms=lambda: T0 + 600_000)
    return ShardWorker(shard, "s", CONFIG.pipeline, Stores(durable, hot), Outputs(MemoryDeadLetterQueue()), cadence)


def feed(worker: ShardWorker, events: list[dict[str, object]], first_seq: int = 1) -> None:
    records = [(orjson.dumps(e), str(first_seq + i), 0, "pk", T0 + 600_000) for i, e in enumerate(events)]
    worker.process(records)
    worker.flush_durable()


def test_the_hot_store_is_repaired_from_the_durable_one_at_the_next_flush_after_losing_everything() -> None:
    durable, hot = MemoryStore("dynamodb"), MemoryStore("redis")
    worker = worker_with(durable, hot)
    feed(worker, [donation(i * 1000, 5, "GBP", "c1", f"u{i}") for i in range(5)])
    assert hot.items == durable.items and hot.intact("shard-0")
    repairs = worker.stats.hot_repairs  # a first start checks once (the marker is not there yet)
    worker.flush_hot()
    assert worker.stats.hot_repairs == repairs  # intact: nothing to do
    hot.lose_everything()
    worker.flush_hot()
    assert hot.items == durable.items
    assert worker.stats.hot_repairs == repairs + 1


def test_copy_range_fills_an_empty_cache_and_reset_empties_whole_overlapping_windows() -> None:
    durable, hot = MemoryStore("dynamodb"), MemoryStore("redis")
    worker = worker_with(durable, MemoryStore("scratch"))
    feed(worker, [donation(i * 30_000, 1, "GBP", "c1", "u") for i in range(6)])  # 3 minutes of events
    assert copy_range(durable, hot, DEFAULT_RESOLUTIONS, T0, T0 + 180_000) == len(durable.items)
    assert hot.items == durable.items

    removed = reset_range(durable, DEFAULT_RESOLUTIONS, T0 + 60_000, T0 + 61_000)
    assert removed == 3  # the overlapping minute, hour and day of this shard
    minutes = read_metric(durable, MINUTE, "events", T0, T0 + 180_000)["windows"]
    assert [w["total"] for w in minutes] == [2, 0, 2]
    assert replay_span(DEFAULT_RESOLUTIONS, T0 + 60_000, T0 + 61_000) == (T0 - 12 * 3_600_000, T0 + 12 * 3_600_000)


def test_reset_of_one_metric_keeps_the_others() -> None:
    durable = MemoryStore("dynamodb")
    feed(worker_with(durable, MemoryStore("redis")), [donation(0, 7, "GBP", "c1", "u")])
    assert reset_range(durable, DEFAULT_RESOLUTIONS, T0, T0 + 1, metric="donation_amount") == 3
    assert read_metric(durable, MINUTE, "donation_amount", T0, T0 + 60_000)["windows"][0]["total"] == 0
    assert read_metric(durable, MINUTE, "events", T0, T0 + 60_000)["windows"][0]["total"] == 1


def test_query_by_folds_a_multi_dimension_metric_onto_one_dimension() -> None:
    durable = MemoryStore("dynamodb")
    feed(
        worker_with(durable, MemoryStore("redis")),
        [
            donation(0, 5, "GBP", "c1", "u1"),
            donation(1, 2.5, "GBP", "c2", "u2"),
            donation(2, 10, "USD", "c1", "u3"),
        ],
    )
    dims = CONFIG.metric_set.by_name["donation_amount"].by
    window = read_metric(durable, HOUR, "donation_amount", T0, T0 + 1, by="data.currency", dims=dims)["windows"][0]
    assert window["groups"] == {"USD": 10, "GBP": 7.5} and window["total"] == 17.5
    by_charity = read_metric(durable, HOUR, "donation_amount", T0, T0 + 1, by="data.charityId", dims=dims)
    assert by_charity["windows"][0]["groups"] == {"c1": 15, "c2": 2.5}


def test_rolling_values_merge_the_finest_windows_at_read_time() -> None:
    durable = MemoryStore("dynamodb")
    events = [donation(i * 60_000, 1, "GBP", "c1", f"u{i % 3}") for i in range(10)]  # one per minute
    feed(worker_with(durable, MemoryStore("redis")), events)
    last5 = read_rolling(durable, MINUTE, "events", T0 + 9 * 60_000 + 5, 5 * 60_000)
    assert last5["total"] == 5 and last5["groups"] == {"donation.made": 5}
    users = read_rolling(durable, MINUTE, "distinct_users", T0 + 9 * 60_000, 10 * 60_000)
    assert users["total"] == 3  # distinct over the whole span, not a sum of per-minute counts
