"""A window partial's byte budget (aggregations/partials.py, issue 11): a window's stored item never grows
past `max_item_bytes` whatever groups arrive (the rest count under __other__), the budget gives the same
partial event by event, folded, or evicted and loaded again in the middle; late events write only the
resolutions that still keep them; `fold_into_other` keeps every total."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregations import hll
from aggregations.memory_store import MemoryStore
from aggregations.metrics import AGGREGATORS, OTHER_GROUP, to_decimal
from aggregations.partials import METRIC_COST, ShardAggregates, StoredPartial, WindowKey, group_cost, merge_partials
from consumer.dlq.memory import MemoryDeadLetterQueue
from consumer.worker import Cadence, Outputs, ShardWorker, Stores
from streamkpi.config import load_config, parse_config

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
[metrics.paths]
agg = "count"
types = ["page.view"]
by = ["path"]
max_groups = 100000
[metrics.amount]
agg = "sum"
field = "data.amount"
types = ["page.view"]
by = ["path"]
max_groups = 100000
[metrics.smallest]
agg = "min"
field = "data.amount"
types = ["page.view"]
by = ["data.currency"]
[metrics.largest]
agg = "max"
field = "data.amount"
by = ["path"]
max_groups = 100000
[metrics.users]
agg = "distinct"
field = "userId"
by = ["data.currency"]
""",
    "test",
)
BASE_MS = 1_700_000_040_000 + 10_000  # 10 s into a minute
BUDGET = 16_384
AMOUNTS = [0, 1, 12.5, 9.99e20, 1.2345678901234567e-20, 123456789.98765432, 7]


def page_view(path: str, offset_ms: int = 0, amount: Any = 1, currency: str = "GBP", user: str = "u") -> dict:
    return {
        "eventType": "page.view",
        "timestamp": BASE_MS + offset_ms,
        "path": path,
        "userId": user,
        "data": {"amount": amount, "currency": currency},
    }


def items(events: list[dict], seq: int = 1) -> list[tuple[Any, ...]]:
    """`fold` items: (event, type, event ms, position)."""
    return [(e, e["eventType"], e["timestamp"], (seq, 0, n)) for n, e in enumerate(events)]


def aggregates(max_item_bytes: int = BUDGET) -> ShardAggregates:
    return ShardAggregates("shard-0", CONFIG.metric_set, CONFIG.resolutions, max_item_bytes=max_item_bytes)


def install_all(aggs: ShardAggregates, batch: list[tuple[Any, ...]]) -> None:
    for key in aggs.missing(k for item in batch for k in aggs.keys_for(item[2])):
        aggs.install(key, None)


def by_key(partials: list[StoredPartial]) -> dict[WindowKey, StoredPartial]:
    return {p.key: p for p in partials}


def long_paths(n: int, length: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_/é€"
    return [f"/{i}/" + "".join(rng.choice(alphabet) for _ in range(length)) for i in range(n)]


def exact_sum(values: list[Any]) -> Decimal:
    """Unrounded (Decimal's default context keeps only 28 digits)."""
    total = Decimal(0)
    for value in values:
        decimal = value if isinstance(value, Decimal) else to_decimal(value)
        assert decimal is not None
        total = AGGREGATORS["sum"].add(total, decimal)
    return total


# -- the budget ------------------------------------------------------------------------------------------------


def test_many_long_distinct_groups_stay_within_the_item_budget_and_count_under_other() -> None:
    paths = long_paths(400, 300)
    events = [page_view(p, amount=AMOUNTS[n % len(AMOUNTS)]) for n, p in enumerate(paths)]
    aggs = aggregates()
    batch = items(events)
    install_all(aggs, batch)
    aggs.fold(batch)
    stored = by_key(aggs.dirty("dynamodb"))
    assert sorted(stored) == sorted({("1m", BASE_MS - BASE_MS % 60_000), ("1h", BASE_MS - BASE_MS % 3_600_000)})
    for partial in stored.values():
        assert len(orjson.dumps(partial.metrics)) <= BUDGET
        values = merge_partials([partial])
        paths_kept = set(values["paths"]) - {OTHER_GROUP}
        assert 5 < len(paths_kept) < 400
        assert values["paths"][OTHER_GROUP] == 400 - len(paths_kept)
        assert sum(values["paths"].values()) == 400  # the total is exact
        assert paths_kept == set(paths[: len(paths_kept)])  # the first groups to come keep their own
        assert exact_sum(list(values["amount"].values())) == exact_sum([e["data"]["amount"] for e in events])
        assert max(values["largest"].values()) == Decimal("9.99E+20")
        assert min(values["smallest"].values()) == Decimal(0)
        assert values["events"] == {"page.view": 400}


def test_the_budget_holds_against_groups_arriving_one_per_batch_and_reloaded_between() -> None:
    """Loads must charge what the groups charged when they were made: a window reloaded after every
    batch would otherwise grow without bound."""
    paths = long_paths(300, 250, seed=2)
    durable = MemoryStore("dynamodb")
    aggs = aggregates()
    for n, path in enumerate(paths):
        batch = items([page_view(path, offset_ms=n)], seq=n + 1)
        missing = aggs.missing(k for item in batch for k in aggs.keys_for(item[2]))
        found = durable.load("shard-0", missing)
        for key in missing:
            aggs.install(key, found.get(key))
        aggs.fold(batch)
        dirty = aggs.dirty("dynamodb")
        durable.write(dirty)
        aggs.mark_written("dynamodb", dirty)
        aggs.mark_written("redis", aggs.dirty("redis"))
        aggs.evict_clean(0)
        assert len(aggs) == 0
    for partial in durable.items.values():
        assert len(orjson.dumps(partial.metrics)) <= BUDGET
        counts = merge_partials([partial])["paths"]
        assert sum(counts.values()) == 300
        assert 0 < counts[OTHER_GROUP] < 300


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    groups=st.lists(st.text(min_size=0, max_size=120), min_size=1, max_size=250),
    amounts=st.lists(st.sampled_from(AMOUNTS), min_size=1, max_size=5),
    budget=st.integers(2_000, 40_000),
)
def test_any_groups_keep_any_window_within_its_budget(groups: list[str], amounts: list[Any], budget: int) -> None:
    events = [page_view(g, offset_ms=n, amount=amounts[n % len(amounts)], user=g) for n, g in enumerate(groups)]
    aggs = aggregates(budget)
    batch = items(events)
    install_all(aggs, batch)
    aggs.fold(batch)
    for partial in aggs.dirty("dynamodb"):
        assert len(orjson.dumps(partial.metrics)) <= budget
        values = merge_partials([partial])
        assert sum(values["paths"].values()) == len(events)
        assert values["events"] == {"page.view": len(events)}


# -- fold, add, evict and load: one answer ----------------------------------------------------------------------

event_strategy = st.builds(
    lambda path, offset, amount, currency, user: page_view(path, offset, amount, currency, user),
    st.sampled_from([*long_paths(40, 200, seed=3), "/", "/a", ""]),
    st.integers(0, 4 * 60_000),
    st.sampled_from(AMOUNTS),
    st.sampled_from(["GBP", "USD", "EUR"]),
    st.text(max_size=6),
)


def snapshot(aggs: ShardAggregates, store: MemoryStore | None = None) -> dict[WindowKey, StoredPartial]:
    """Every window's partial: what the store holds, overlaid with what is in memory."""
    out = {(k[0], k[1]): p for k, p in store.items.items()} if store is not None else {}
    out.update({key: aggs._snapshot(key, partial) for key, partial in aggs._partials.items()})
    return out


TWO_METRICS = parse_config(
    """
[metrics.first]
agg = "count"
types = ["t"]
by = ["a"]
[metrics.second]
agg = "count"
types = ["t"]
by = ["b"]
""",
    "test",
)


def test_the_budget_admits_groups_in_event_order_whatever_the_batching() -> None:
    """Two events, two metrics. Event by event the groups come a1, b1, a2, b2; folded, metric by metric. Each
    metric's share of the budget must make the same groups count under __other__ either way: the same
    records delivered in other batches (a restart, another KCL batch size) give the same partial."""
    cost = lambda group: group_cost(group, "count")  # noqa: E731
    a1, b1, a2, b2 = "a", "b" * 50, "c" * 50, "d"
    metrics = len(TWO_METRICS.metrics)
    assert metrics == 3  # events, first, second
    budget = metrics * (METRIC_COST + cost(a1) + cost(b2))  # each metric's share: two short groups
    events = [
        {"eventType": "t", "timestamp": BASE_MS, "a": a1, "b": b1},
        {"eventType": "t", "timestamp": BASE_MS, "a": a2, "b": b2},
    ]
    batch = items(events)

    def run(chunks: list[list[tuple[Any, ...]]]) -> dict[WindowKey, StoredPartial]:
        aggs = ShardAggregates("shard-0", TWO_METRICS.metric_set, TWO_METRICS.resolutions, max_item_bytes=budget)
        install_all(aggs, batch)
        for chunk in chunks:
            aggs.fold(chunk)
        return snapshot(aggs)

    one_by_one = run([[item] for item in batch])
    for partial in one_by_one.values():
        values = merge_partials([partial])
        assert values == {"events": {"t": 2}, "first": {a1: 1, OTHER_GROUP: 1}, "second": {OTHER_GROUP: 2}}
    assert run([batch]) == one_by_one


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(event_strategy, min_size=1, max_size=80),
    chunks=st.lists(st.integers(1, 30), min_size=1, max_size=10),
    budget=st.integers(2_000, 12_000),
)
def test_fold_and_event_by_event_add_give_identical_partials(
    events: list[dict], chunks: list[int], budget: int
) -> None:
    batch = items(events)
    one_by_one, folded = aggregates(budget), aggregates(budget)
    install_all(one_by_one, batch)
    install_all(folded, batch)
    for item in batch:
        assert one_by_one.add(*item)
    position = 0
    for size in chunks * (len(batch) // sum(chunks) + 1):
        if position >= len(batch):
            break
        assert folded.fold(batch[position : position + size]) == []
        position += size
    assert snapshot(folded) == snapshot(one_by_one)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(event_strategy, min_size=2, max_size=80), cut=st.floats(0, 1), budget=st.integers(2_000, 12_000))
def test_evicting_and_loading_in_the_middle_gives_the_same_partial(events: list[dict], cut: float, budget: int) -> None:
    batch = items(events)
    middle = int(len(batch) * cut)
    # Event by event on both sides (a loaded window takes its events through `add`): what this compares is
    # the budget charged at load against the budget charged as the groups were made.
    kept = aggregates(budget)
    install_all(kept, batch)
    for item in batch:
        kept.add(*item)

    durable = MemoryStore("dynamodb")
    evicted = aggregates(budget)
    install_all(evicted, batch[:middle])
    for item in batch[:middle]:
        evicted.add(*item)
    dirty = evicted.dirty("dynamodb")
    durable.write(dirty)
    evicted.mark_written("dynamodb", dirty)
    evicted.mark_written("redis", evicted.dirty("redis"))
    evicted.evict_clean(0)
    assert len(evicted) == 0
    rest = batch[middle:]
    missing = evicted.missing(k for item in rest for k in evicted.keys_for(item[2]))
    found = durable.load("shard-0", missing)
    for key in missing:
        evicted.install(key, found.get(key))
    for item in rest:
        assert evicted.add(*item)
    assert snapshot(evicted, durable) == snapshot(kept)


# -- late events and the resolutions that keep them ---------------------------------------------------------------

DEFAULT = load_config(None)  # 1m kept 48 h, 1h 90 d, 1d 3 y in DynamoDB
DAY = 86_400_000


def test_keeping_drops_a_resolution_whose_retention_has_passed_at_arrival() -> None:
    aggs = ShardAggregates("s", DEFAULT.metric_set, DEFAULT.resolutions)
    arrival = 1_764_000_000_000
    assert [r.name for r in DEFAULT.resolutions] == ["1m", "1h", "1d"]
    assert aggs.keeping(arrival - 3 * DAY, arrival) == (1, 2)
    assert aggs.keeping(arrival - 60_000, arrival) == (0, 1, 2)
    minute = DEFAULT.resolutions[0]
    # The edge: a window is kept while its expiry is later than the arrival.
    start = minute.start(arrival - 2 * DAY - 120_000)
    expiry = minute.dynamodb_expiry_ms(start)
    assert aggs.keeping(start, expiry) == (1, 2)
    assert aggs.keeping(start + 59_999, expiry - 1) == (0, 1, 2)
    assert aggs.keeping(arrival - 100 * DAY, arrival) == (2,)


def test_the_worker_writes_no_minute_window_for_an_event_three_days_late() -> None:
    durable, hot, dlq = MemoryStore("dynamodb"), MemoryStore("redis"), MemoryDeadLetterQueue()
    arrival = 1_764_000_000_000
    cadence = Cadence(
        redis_flush_seconds=0, dynamodb_flush_seconds=0, checkpoint_seconds=0, store_retry_seconds=0,
        wall_ms=lambda: arrival,
    )  # fmt: skip
    worker = ShardWorker("shard-0", "s", DEFAULT.pipeline, Stores(durable, hot), Outputs(dlq), cadence)
    late_ms, fresh_ms = arrival - 3 * DAY, arrival - 30_000
    late = {"eventType": "click", "timestamp": late_ms}
    fresh = {"eventType": "click", "timestamp": fresh_ms}
    worker.process(
        [
            (orjson.dumps(late), "1", 0, "pk", arrival),
            (orjson.dumps([fresh, late]), "2", 0, "pk", arrival),
        ]
    )
    worker.flush_durable()
    assert dlq.letters == []
    assert worker.stats.events == 3
    for store in (durable, hot):
        windows = {(res, start): merge_partials([p])["events"] for (res, start, _), p in store.items.items()}
        assert windows == {
            ("1m", fresh_ms - fresh_ms % 60_000): {"click": 1},
            ("1h", fresh_ms - fresh_ms % 3_600_000): {"click": 1},
            ("1d", fresh_ms - fresh_ms % DAY): {"click": 1},
            ("1h", late_ms - late_ms % 3_600_000): {"click": 2},
            ("1d", late_ms - late_ms % DAY): {"click": 2},
        }


# -- fold_into_other ------------------------------------------------------------------------------------------------


def test_fold_into_other_keeps_every_metrics_total() -> None:
    paths = long_paths(30, 20, seed=4)
    currencies = ["GBP", "USD", "EUR", "JPY"]
    events = [
        page_view(p, offset_ms=n, amount=AMOUNTS[n % len(AMOUNTS)], currency=currencies[n % 4], user=f"user-{n % 17}")
        for n, p in enumerate(paths * 3)
    ]
    aggs = aggregates(10**9)
    batch = items(events)
    install_all(aggs, batch)
    aggs.fold(batch)
    before = by_key(aggs.dirty("dynamodb"))
    aggs.mark_written("dynamodb", list(before.values()))
    aggs.mark_written("redis", list(before.values()))
    key = ("1m", BASE_MS - BASE_MS % 60_000)
    aggs.fold_into_other(key)
    after = by_key(aggs.dirty("dynamodb"))
    assert list(after) == [key]  # only that window, dirty for both stores again
    assert [p.key for p in aggs.dirty("redis")] == [key]
    assert after[key].position == before[key].position
    old, new = merge_partials([before[key]]), merge_partials([after[key]])
    assert set(new) == set(old) == {"events", "paths", "amount", "smallest", "largest", "users"}
    for metric, groups in new.items():
        assert list(groups) == [OTHER_GROUP], metric
    assert new["events"][OTHER_GROUP] == sum(old["events"].values()) == 90
    assert new["paths"][OTHER_GROUP] == sum(old["paths"].values()) == 90
    assert (
        new["amount"][OTHER_GROUP]
        == exact_sum(list(old["amount"].values()))
        == exact_sum([e["data"]["amount"] for e in events])
    )
    assert new["smallest"][OTHER_GROUP] == min(old["smallest"].values()) == Decimal(0)
    assert new["largest"][OTHER_GROUP] == max(old["largest"].values()) == Decimal("9.99E+20")
    registers = hll.new()
    for value in old["users"].values():
        registers = hll.merge(registers, value)
    assert new["users"][OTHER_GROUP] == registers
    assert hll.estimate(new["users"][OTHER_GROUP]) == hll.estimate(registers) == 17
    # The window counts on after the fold, within its budget again.
    aggs.fold(items([page_view("/after", offset_ms=1)], seq=2))
    assert merge_partials([by_key(aggs.dirty("dynamodb"))[key]])["paths"] == {OTHER_GROUP: 90, "/after": 1}


def test_fold_into_other_of_an_unknown_or_untouched_window_does_nothing() -> None:
    aggs = aggregates()
    aggs.fold_into_other(("1m", 0))
    aggs.install(("1m", 60_000), None)
    aggs.fold_into_other(("1m", 60_000))
    assert aggs.dirty("dynamodb") == [] and aggs.dirty("redis") == []
