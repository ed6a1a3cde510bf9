"""aggregations/query.py: every window in a range, zeros filled, groups sorted, top-N folding."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregations.memory_store import MemoryStore
from aggregations.metrics import OTHER_GROUP
from aggregations.partials import StoredPartial, encode_position
from aggregations.query import iso, read_metric, shape
from aggregations.windows import Resolution

MINUTE = 60_000
ONE_MINUTE = Resolution("1m", MINUTE, 48 * 3_600_000, 6 * 3_600_000)
ONE_HOUR = Resolution("1h", 60 * MINUTE, 90 * 86_400_000, 7 * 86_400_000)
T0 = 1_573_841_100_000  # 2019-11-15 18:05:00Z, a minute boundary


def partial(
    start: int, shard: str, metrics: dict[str, dict[str, Any]], resolution: str = "1m", seq: int = 1
) -> StoredPartial:
    return StoredPartial(resolution, start, shard, encode_position((seq, 0, 0)), metrics)


def count(groups: dict[str, int]) -> dict[str, Any]:
    return {"agg": "count", "groups": groups}


def test_iso() -> None:
    assert iso(0) == "1970-01-01T00:00:00Z"
    assert iso(T0) == "2019-11-15T18:05:00Z"


def test_missing_windows_are_filled_with_zeros() -> None:
    starts = [T0, T0 + MINUTE, T0 + 2 * MINUTE]
    found = {T0 + MINUTE: [partial(T0 + MINUTE, "shardId-0", {"events": count({"click": 3})})]}
    result = shape(ONE_MINUTE, "events", starts, found)
    assert (result["metric"], result["resolution"], result["agg"]) == ("events", "1m", "count")
    assert [w["start_ms"] for w in result["windows"]] == starts
    assert [w["start"] for w in result["windows"]] == [
        "2019-11-15T18:05:00Z",
        "2019-11-15T18:06:00Z",
        "2019-11-15T18:07:00Z",
    ]
    assert [w["total"] for w in result["windows"]] == [0, 3, 0]
    assert [w["groups"] for w in result["windows"]] == [{}, {"click": 3}, {}]


def test_a_metric_nobody_stored_is_all_zero_counts() -> None:
    result = shape(ONE_MINUTE, "nothing", [T0], {T0: [partial(T0, "s", {"events": count({"a": 1})})]})
    assert result["agg"] == "count"
    assert result["windows"][0]["total"] == 0
    assert result["windows"][0]["groups"] == {}


def test_shards_are_merged_and_groups_sorted_by_value_then_name() -> None:
    found = {
        T0: [
            partial(T0, "shardId-1", {"events": count({"b": 2, "a": 1, OTHER_GROUP: 50})}),
            partial(T0, "shardId-0", {"events": count({"c": 4, "a": 3})}),
        ]
    }
    result = shape(ONE_MINUTE, "events", [T0], found)
    [window] = result["windows"]
    assert list(window["groups"].items()) == [("a", 4), ("c", 4), ("b", 2), (OTHER_GROUP, 50)]
    assert window["total"] == 60


def test_top_folds_the_rest_into_other() -> None:
    found = {T0: [partial(T0, "s", {"events": count({"a": 5, "b": 4, "c": 3, "d": 2, OTHER_GROUP: 1})})]}
    [window] = shape(ONE_MINUTE, "events", [T0], found, top=2)["windows"]
    assert list(window["groups"].items()) == [("a", 5), ("b", 4), (OTHER_GROUP, 6)]
    assert window["total"] == 15


def test_top_larger_than_the_groups_changes_nothing() -> None:
    found = {T0: [partial(T0, "s", {"events": count({"a": 1, "b": 2})})]}
    [window] = shape(ONE_MINUTE, "events", [T0], found, top=5)["windows"]
    assert list(window["groups"].items()) == [("b", 2), ("a", 1)]


def test_sum_values_are_presented_as_numbers() -> None:
    body = {"agg": "sum", "groups": {"GBP": "10.5", "USD": "0.1"}}
    found = {
        T0: [partial(T0, "s0", {"amount": body}), partial(T0, "s1", {"amount": {**body, "groups": {"USD": "0.2"}}})]
    }
    result = shape(ONE_MINUTE, "amount", [T0, T0 + MINUTE], found)
    assert result["agg"] == "sum"
    first, second = result["windows"]
    assert first["groups"] == {"GBP": 10.5, "USD": 0.3}
    assert first["total"] == 10.8
    assert (second["groups"], second["total"]) == ({}, 0)


def test_max_total_is_the_largest_and_an_empty_window_has_none() -> None:
    body = {"agg": "max", "groups": {"GBP": "10", "USD": "25.5"}}
    found = {T0: [partial(T0, "s0", {"biggest": body})]}
    first, second = shape(ONE_MINUTE, "biggest", [T0, T0 + MINUTE], found, top=1)["windows"]
    assert first["groups"] == {"USD": 25.5, OTHER_GROUP: 10}
    assert first["total"] == 25.5
    assert second["total"] is None


@settings(max_examples=100)
@given(
    groups=st.dictionaries(st.sampled_from([*"abcdefgh", OTHER_GROUP]), st.integers(0, 1000), max_size=9),
    top=st.none() | st.integers(0, 10),
)
def test_top_keeps_the_largest_and_loses_nothing(groups: dict[str, int], top: int | None) -> None:
    [window] = shape(ONE_MINUTE, "events", [T0], {T0: [partial(T0, "s", {"events": count(groups)})]}, top)["windows"]
    shown = window["groups"]
    assert sum(shown.values()) == sum(groups.values()) == window["total"]
    named = [g for g in shown if g != OTHER_GROUP]
    if OTHER_GROUP in shown:
        assert list(shown)[-1] == OTHER_GROUP
    assert [shown[g] for g in named] == sorted((shown[g] for g in named), reverse=True)
    if top is None or len(groups) <= top:
        assert shown == groups
    else:
        assert len(named) == top
        # Every kept group is at least as large as every folded one.
        folded = [v for g, v in groups.items() if g not in named and g != OTHER_GROUP]
        assert all(shown[g] >= v for g in named for v in folded)


# -- read_metric over the in-memory store -----------------------------------------------------------


def test_read_metric_reads_every_window_of_the_range() -> None:
    store = MemoryStore()
    stale = store.write(
        [
            partial(T0, "shardId-0", {"events": count({"click": 2})}),
            partial(T0, "shardId-1", {"events": count({"click": 1, "view": 5})}),
            partial(T0 + 2 * MINUTE, "shardId-0", {"events": count({"view": 1})}),
            partial(T0 + 9 * MINUTE, "shardId-0", {"events": count({"view": 100})}),  # outside the range
            partial(T0, "shardId-0", {"events": count({"click": 1000})}, resolution="1h"),  # other resolution
        ]
    )
    assert stale == []
    result = read_metric(store, ONE_MINUTE, "events", T0 + 30_000, T0 + 3 * MINUTE)
    assert [(w["start_ms"], w["total"], w["groups"]) for w in result["windows"]] == [
        (T0, 8, {"view": 5, "click": 3}),
        (T0 + MINUTE, 0, {}),
        (T0 + 2 * MINUTE, 1, {"view": 1}),
    ]


def test_read_metric_of_an_empty_range_reads_nothing() -> None:
    store = MemoryStore()
    store.available = False  # any read would raise
    assert read_metric(store, ONE_MINUTE, "events", T0, T0)["windows"] == []


def test_read_metric_at_another_resolution() -> None:
    store = MemoryStore()
    store.write([partial(T0 - 5 * MINUTE, "s", {"events": count({"a": 7})}, resolution="1h")])
    result = read_metric(store, ONE_HOUR, "events", T0, T0 + 1)
    assert [(w["start"], w["total"]) for w in result["windows"]] == [("2019-11-15T18:00:00Z", 7)]


def test_memory_store_never_moves_a_position_backwards() -> None:
    store = MemoryStore()
    newer = partial(T0, "s", {"events": count({"a": 2})}, seq=5)
    older = partial(T0, "s", {"events": count({"a": 1})}, seq=4)
    assert store.write([newer]) == []
    assert store.write([older]) == [older]
    assert read_metric(store, ONE_MINUTE, "events", T0, T0 + 1)["windows"][0]["total"] == 2


def test_json_of_results_writes_whole_numbers_past_64_bits_exactly() -> None:
    from aggregations.query import to_json

    wide = 2**64 + 1  # a sum of integers beyond 64 bits is stored exactly; orjson refuses to write it
    assert to_json({"total": wide, "groups": {"a": 1.5}}) == b'{"total":18446744073709551617,"groups":{"a":1.5}}'
    assert b"18446744073709551617" in to_json({"total": wide}, indent=True)
    assert to_json({"total": 7}) == b'{"total":7}'
