"""A window's byte budget is shared out per metric: a flood of groups in one metric cannot crowd out another."""

from __future__ import annotations

import orjson

from aggregations.metrics import OTHER_GROUP
from aggregations.partials import ShardAggregates
from streamkpi.config import load_config

CONFIG = load_config(None)
T = 1_764_000_000_000


def test_a_flood_of_long_groups_in_one_metric_leaves_the_events_metric_exact() -> None:
    aggregates = ShardAggregates("shard-0", CONFIG.metric_set, CONFIG.resolutions, max_item_bytes=64 * 1024)
    for key in aggregates.keys_for(T):
        aggregates.install(key, None)
    events = [
        {
            "eventType": "donation.made",
            "timestamp": T,
            "data": {"amount": 1, "currency": "GBP", "charityId": f"{i:0400d}"},
        }
        for i in range(1000)
    ]
    events.append({"eventType": "user.verified", "timestamp": T})  # after the flood, in the same windows
    aggregates.fold([(e, e["eventType"], T, (1, 0, i)) for i, e in enumerate(events)])
    [minute] = [p for p in aggregates.dirty("dynamodb") if p.resolution == "1m"]
    groups = {name: body["groups"] for name, body in minute.metrics.items()}
    # The flooded metric folded its late groups into __other__, its total exact ...
    assert OTHER_GROUP in groups["donations"] and sum(groups["donations"].values()) == 1000
    # ... while every other metric kept its own groups.
    assert groups["events"] == {"donation.made": 1000, "user.verified": 1}
    assert groups["signups"] == {"user.verified": 1}
    # And the whole item stays within the budget (each metric within its share, one __other__ beyond it).
    assert len(orjson.dumps(minute.metrics)) <= 64 * 1024


def test_windows_past_their_redis_retention_are_not_written_to_redis() -> None:
    from aggregations.memory_store import MemoryStore
    from consumer.dlq.memory import MemoryDeadLetterQueue
    from consumer.worker import Cadence, Outputs, ShardWorker, Stores

    durable, hot = MemoryStore("dynamodb"), MemoryStore("redis")
    ten_hours_later = T + 10 * 3_600_000  # past the 1m resolution's 6 h in Redis, within its 48 h in DynamoDB
    stores, outputs, cadence = (
        Stores(durable, hot),
        Outputs(MemoryDeadLetterQueue()),
        Cadence(wall_ms=lambda: ten_hours_later),
    )
    worker = ShardWorker("shard-0", "s", CONFIG.pipeline, stores, outputs, cadence)
    event = orjson.dumps({"eventType": "click", "timestamp": T})
    worker.process([(event, "1", 0, "pk", T + 1000)])
    worker.flush_durable()
    assert sorted({p.resolution for p in durable.items.values()}) == ["1d", "1h", "1m"]
    assert sorted({p.resolution for p in hot.items.values()}) == ["1d", "1h"]  # no write with an expiry passed
