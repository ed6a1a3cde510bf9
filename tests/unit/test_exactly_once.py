"""Exactly-once aggregates on at-least-once delivery (design.md invariant 2).

Whatever the interleaving of crashes (before, during or after a flush), restarts from the last
checkpoint, and batch sizes, the stored value of every window equals the value over the distinct
events. The shard workers run against in-memory stores with the real stores' write rules.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from decimal import Decimal

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregations.errors import StoreUnavailableError
from aggregations.memory_store import MemoryStore
from aggregations.partials import merge_partials
from consumer.dlq.memory import MemoryDeadLetterQueue
from consumer.errors import FatalError, ZombieError
from consumer.pipeline import Record
from consumer.worker import Cadence, Outputs, ShardWorker, Stores
from streamkpi.config import parse_config

CONFIG = parse_config(
    """
[[resolutions]]
name = "1m"
dynamodb_retention = "48h"
redis_retention = "6h"
[[resolutions]]
name = "1h"
dynamodb_retention = "90d"
redis_retention = "7d"
[metrics.amount]
agg = "sum"
field = "data.amount"
types = ["donation.*"]
by = ["data.currency"]
[metrics.biggest]
agg = "max"
field = "data.amount"
types = ["donation.*"]
""",
    "test",
)
BASE_MS = 1_700_000_000_000
TYPES = ["click", "page.view", "donation.made"]


class FlakyStore(MemoryStore):
    """A store that dies after `budget` more item writes (a crash in the middle of a flush)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.budget: int | None = None

    def write(self, partials):  # type: ignore[no-untyped-def]
        if self.budget is not None and len(partials) > self.budget:
            head = list(partials)[: self.budget]
            super().write(head)
            self.budget = 0
            raise StoreUnavailableError(f"{self.name} died mid-flush")
        return super().write(partials)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def event_strategy() -> st.SearchStrategy[dict]:
    return st.builds(
        lambda t, offset, amount, currency: {
            "eventType": t,
            "timestamp": BASE_MS + offset,
            "data": {"amount": amount, "currency": currency},
        },
        st.sampled_from(TYPES),
        st.integers(0, 3 * 3_600_000),
        st.decimals(min_value=0, max_value=1000, places=2).map(float),
        st.sampled_from(["GBP", "USD"]),
    )


def make_records(shard_events: list[list[dict]]) -> list[Record]:
    records = []
    for n, events in enumerate(shard_events):
        data = orjson.dumps(events[0] if len(events) == 1 else events)
        records.append((data, str(10**20 + n * 7), 0, "pk", BASE_MS + 3 * 3_600_000))
    return records


def expected_values(all_events: list[dict]) -> dict:
    """Independent truth: {(resolution, window, metric): {group: value}}."""
    out: dict = defaultdict(dict)
    for resolution, size in (("1m", 60_000), ("1h", 3_600_000)):
        counts: dict = defaultdict(Counter)
        sums: dict = defaultdict(lambda: defaultdict(Decimal))
        maxima: dict = {}
        for e in all_events:
            window = e["timestamp"] // size * size
            counts[window][e["eventType"]] += 1
            if e["eventType"].startswith("donation."):
                amount = Decimal(repr(e["data"]["amount"]))
                sums[window][e["data"]["currency"]] += amount
                maxima[window] = max(maxima.get(window, amount), amount)
        for window, c in counts.items():
            out[(resolution, window, "events")] = dict(c)
        for window, s in sums.items():
            out[(resolution, window, "amount")] = dict(s)
            out[(resolution, window, "biggest")] = {"all": maxima[window]}
    return dict(out)


def stored_values(store: MemoryStore) -> dict:
    by_window: dict = defaultdict(list)
    for (resolution, start, _shard), partial in store.items.items():
        by_window[(resolution, start)].append(partial)
    out = {}
    for (resolution, start), partials in by_window.items():
        for metric, groups in merge_partials(partials).items():
            if groups:
                out[(resolution, start, metric)] = groups
    return out


def run_shard(shard_id: str, records: list[Record], data: st.DataObject, durable, hot, dlq) -> int:
    """Deliver a shard's records like KCL does, crashing at random; returns the number of crashes."""
    checkpoint = 0  # index of the first record not covered by the checkpoint
    crashes = 0
    while True:
        clock = Clock()
        # The wall clock near the events, so Redis still keeps their windows (it skips expired ones).
        cadence = Cadence(
            redis_flush_seconds=1, dynamodb_flush_seconds=5, checkpoint_seconds=5, store_retry_seconds=0,
            clock=clock, sleep=clock.sleep, wall_ms=lambda: BASE_MS,
        )  # fmt: skip
        worker = ShardWorker(shard_id, "s", CONFIG.pipeline, Stores(durable, hot), Outputs(dlq), cadence)
        position = checkpoint
        crashed = False
        while position < len(records):
            size = data.draw(st.integers(1, 5), label="batch size")
            batch = records[position : position + size]
            worker.process(batch)
            position += len(batch)
            clock.now += data.draw(st.sampled_from([0.3, 1.5, 6.0]), label="time passes")
            action = data.draw(st.sampled_from(["go", "go", "hot", "durable", "crash", "crash-mid-flush"]))
            if action == "crash":
                crashed = True
                break
            try:
                if action == "crash-mid-flush":
                    durable.budget = data.draw(st.integers(0, 3), label="writes before death")
                if action in ("durable", "crash-mid-flush") or worker.durable_due():
                    worker.flush_durable()
                    checkpoint = position
                    worker.mark_checkpointed()
                elif action == "hot" or worker.hot_due():
                    worker.flush_hot()
            except FatalError:
                crashed = True
                break
            finally:
                durable.budget = None
        if crashed:
            crashes += 1
            continue
        worker.flush_durable()
        return crashes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shards=st.lists(st.lists(st.lists(event_strategy(), min_size=1, max_size=3), max_size=25), min_size=1, max_size=2),
    data=st.data(),
)
def test_stored_values_equal_the_distinct_events_whatever_crashes(shards, data) -> None:
    durable, hot, dlq = FlakyStore("dynamodb"), MemoryStore("redis"), MemoryDeadLetterQueue()
    all_events = []
    for n, shard_events in enumerate(shards):
        run_shard(f"shardId-{n:012d}", make_records(shard_events), data, durable, hot, dlq)
        all_events += [e for record in shard_events for e in record]
    expected = expected_values(all_events)
    assert stored_values(durable) == expected
    assert stored_values(hot) == expected
    assert dlq.letters == []


def test_a_crash_mid_flush_then_replay_counts_once() -> None:
    """Deterministic companion to the property: the 1h window was written, the 1m window was not."""
    events = [{"eventType": "click", "timestamp": BASE_MS + i * 1000} for i in range(10)]
    records = make_records([[e] for e in events])
    durable, hot, dlq = FlakyStore("dynamodb"), MemoryStore("redis"), MemoryDeadLetterQueue()
    clock = Clock()
    cadence = Cadence(store_retry_seconds=0, clock=clock, sleep=clock.sleep)
    first = ShardWorker("shardId-0", "s", CONFIG.pipeline, Stores(durable, hot), Outputs(dlq), cadence)
    first.process(records)
    durable.budget = 1  # one window lands, the crash loses the other
    with pytest.raises(FatalError):
        first.flush_durable()
    durable.budget = None
    second = ShardWorker("shardId-0", "s", CONFIG.pipeline, Stores(durable, hot), Outputs(dlq), cadence)
    second.process(records)  # redelivered from the (never advanced) checkpoint
    second.flush_durable()
    values = stored_values(durable)
    assert {k[0]: v for k, v in values.items() if k[2] == "events"} == {"1m": {"click": 10}, "1h": {"click": 10}}
    assert second.stats.dynamodb_writes == 1  # only the window the crash lost was written again


def test_a_zombie_behind_the_new_owner_cannot_overwrite() -> None:
    events = [{"eventType": "click", "timestamp": BASE_MS + i} for i in range(6)]
    records = make_records([[e] for e in events])
    durable, hot, dlq = MemoryStore("dynamodb"), MemoryStore("redis"), MemoryDeadLetterQueue()
    zombie = ShardWorker("shardId-0", "s", CONFIG.pipeline, Stores(durable, hot), Outputs(dlq))
    owner = ShardWorker("shardId-0", "s", CONFIG.pipeline, Stores(durable, hot), Outputs(dlq))
    zombie.process(records[:3])
    owner.process(records)
    owner.flush_durable()
    with pytest.raises(ZombieError):
        zombie.flush_durable()
    assert stored_values(durable)[("1m", BASE_MS // 60_000 * 60_000, "events")] == {"click": 6}
