"""aggregations/metrics.py: exact aggregators, grouping by dotted paths, type patterns, max_groups."""

from __future__ import annotations

import random
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregations.metrics import (
    AGGREGATORS,
    ALL_GROUP,
    BUILTIN_EVENTS_METRIC,
    OTHER_GROUP,
    MetricDef,
    MetricSet,
    lookup,
    to_decimal,
)
from aggregations.partials import ShardAggregates
from aggregations.windows import Resolution

COUNT, SUM, MIN, MAX = (AGGREGATORS[n] for n in ("count", "sum", "min", "max"))
numbers = st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)


def fold(agg_name: str, values: list) -> object:
    agg = AGGREGATORS[agg_name]
    current = agg.initial()
    for value in values:
        current = agg.add(current, value)
    return current


# -- to_decimal and the aggregators ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.1, Decimal("0.1")),
        (1e-7, Decimal("1E-7")),
        (12, Decimal(12)),
        (-3, Decimal(-3)),
        (2**63 - 1, Decimal(2**63 - 1)),
        (1.5e300, Decimal("1.5E+300")),
    ],
)
def test_to_decimal_uses_the_shortest_repr(value: float, expected: Decimal) -> None:
    result = to_decimal(value)
    assert result == expected
    assert isinstance(result, Decimal)


@pytest.mark.parametrize("value", [True, False, None, "1", [1], {"a": 1}, float("nan"), float("inf"), float("-inf")])
def test_to_decimal_rejects_non_numbers(value: object) -> None:
    assert to_decimal(value) is None


def test_sum_is_exact() -> None:
    assert fold("sum", [to_decimal(0.1), to_decimal(0.2)]) == Decimal("0.3")
    assert fold("sum", [to_decimal(0.1)] * 10) == Decimal(1)
    assert SUM.present(fold("sum", [to_decimal(0.1), to_decimal(0.2)])) == 0.3


def test_sum_does_not_round_to_28_digits() -> None:
    big, one = to_decimal(1e28), to_decimal(1)
    assert fold("sum", [big, one, -big]) == 1
    assert fold("sum", [big, -big, one]) == 1
    assert fold("sum", [to_decimal(1.5e300), to_decimal(5e-324), to_decimal(-1.5e300)]) == Decimal("5E-324")


@settings(max_examples=150)
@given(values=st.lists(numbers, max_size=12), seed=st.integers(0, 2**32))
def test_sum_is_exact_and_order_free(values: list, seed: int) -> None:
    decimals = [to_decimal(v) for v in values]
    total = fold("sum", decimals)
    assert Fraction(total) == sum((Fraction(d) for d in decimals), Fraction(0))
    shuffled = decimals[:]
    random.Random(seed).shuffle(shuffled)
    assert fold("sum", shuffled) == total


@settings(max_examples=150)
@given(values=st.lists(numbers, max_size=12), cut=st.integers(0, 12))
def test_merge_of_halves_equals_the_whole(values: list, cut: int) -> None:
    decimals = [to_decimal(v) for v in values]
    for name in ("count", "sum", "min", "max"):
        agg = AGGREGATORS[name]
        left, right = fold(name, decimals[:cut]), fold(name, decimals[cut:])
        assert agg.merge(left, right) == fold(name, decimals)
        assert agg.merge(right, left) == fold(name, decimals)
        assert agg.merge(agg.initial(), fold(name, decimals)) == fold(name, decimals)


@settings(max_examples=100)
@given(values=st.lists(numbers, min_size=1, max_size=12))
def test_min_max_count(values: list) -> None:
    decimals = [to_decimal(v) for v in values]
    assert fold("min", decimals) == min(decimals)
    assert fold("max", decimals) == max(decimals)
    assert fold("count", decimals) == len(values)


def test_min_max_start_empty() -> None:
    assert MIN.initial() is None
    assert MAX.initial() is None
    assert MIN.merge(None, None) is None
    assert MIN.merge(None, Decimal(3)) == Decimal(3)
    assert MAX.merge(Decimal(-3), None) == Decimal(-3)
    assert MIN.present(None) is None


@pytest.mark.parametrize("value", [Decimal("0.1"), Decimal("1E+28"), Decimal("-5"), Decimal("123.4500"), None])
def test_encode_decode_round_trip(value: Decimal | None) -> None:
    for agg in (SUM, MIN, MAX):
        encoded = agg.encode(value)
        assert encoded is None or isinstance(encoded, str)
        assert agg.decode(encoded) == value
    assert COUNT.decode(COUNT.encode(5)) == 5


def test_present_gives_json_numbers() -> None:
    assert SUM.present(Decimal("3.0")) == 3
    assert isinstance(SUM.present(Decimal("3.0")), int)
    assert SUM.present(Decimal("2.5")) == 2.5
    assert isinstance(SUM.present(Decimal("2.5")), float)
    assert COUNT.present(4) == 4


# -- lookup and grouping ----------------------------------------------------------------------------

DONATION = {
    "eventType": "donation.made",
    "browser": "Firefox",
    "data": {"amount": 12.5, "currency": "GBP", "charity": {"id": 7}, "gift_aid": True, "note": None},
}


def test_lookup_dotted_paths() -> None:
    assert lookup(DONATION, ("data", "charity", "id")) == 7
    assert lookup(DONATION, ("data", "note")) is None
    missing = lookup(DONATION, ("data", "nope"))
    assert missing is lookup(DONATION, ("data", "amount", "deeper"))  # the same "missing" marker
    assert missing is not None


def test_group_by_one_dotted_path() -> None:
    metric = MetricDef("amount", agg="sum", field="data.amount", by=("data.currency",))
    assert metric.group_and_value(DONATION) == ("GBP", Decimal("12.5"))


def test_group_by_several_paths_joins_with_a_bar() -> None:
    metric = MetricDef("n", by=("data.currency", "data.charity.id", "data.gift_aid", "data.note", "data.none"))
    assert metric.group_and_value(DONATION) == ("GBP|7|true|(none)|(none)", None)


def test_metric_without_by_uses_group_all() -> None:
    assert MetricDef("n").group_and_value(DONATION) == (ALL_GROUP, None)
    assert ALL_GROUP == "all"
    assert MetricDef("s", agg="sum", field="data.amount").group_and_value(DONATION) == ("all", Decimal("12.5"))


def test_events_without_a_numeric_field_do_not_count() -> None:
    metric = MetricDef("s", agg="sum", field="data.amount")
    assert metric.group_and_value({"data": {}}) is None
    assert metric.group_and_value({"data": {"amount": "12"}}) is None
    assert metric.group_and_value({"data": {"amount": True}}) is None
    assert metric.group_and_value({"data": {"amount": None}}) is None
    assert metric.group_and_value({"data": 5}) is None


def test_where_filters() -> None:
    metric = MetricDef("gbp", where=(("data.currency", "GBP"), ("data.gift_aid", True)))
    assert metric.group_and_value(DONATION) == ("all", None)
    assert metric.group_and_value({**DONATION, "data": {**DONATION["data"], "currency": "USD"}}) is None
    assert metric.group_and_value({"eventType": "x"}) is None


def test_type_patterns() -> None:
    metric = MetricDef("d", types=("donation.*", "user.created"))
    assert metric.applies_to_type("donation.made")
    assert metric.applies_to_type("donation.")
    assert metric.applies_to_type("user.created")
    assert not metric.applies_to_type("user.verified")
    assert not metric.applies_to_type("Donation.made")  # case-sensitive
    assert not metric.applies_to_type("donations")
    assert MetricDef("all").applies_to_type("anything:at.all")
    assert MetricDef("q", types=("page.?iew",)).applies_to_type("page.view")


def test_metric_set_for_type_keeps_config_order() -> None:
    a = MetricDef("a", types=("donation.*",))
    b = MetricDef("b", types=("page.view",))
    c = MetricDef("c")
    metric_set = MetricSet((a, b, c))
    assert metric_set.for_type("donation.made") == (a, c)
    assert metric_set.for_type("donation.made") == (a, c)  # cached answer is the same
    assert metric_set.for_type("page.view") == (b, c)
    assert metric_set.by_name["b"] is b


def test_metric_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        MetricSet((MetricDef("a"), MetricDef("a", agg="sum", field="x")))


def test_builtin_events_metric_counts_by_event_type() -> None:
    assert BUILTIN_EVENTS_METRIC.group_and_value(DONATION) == ("donation.made", None)
    assert BUILTIN_EVENTS_METRIC.applies_to_type("whatever")


# -- max_groups folding (applied where events are folded into a window) --------------------------


def test_groups_past_max_groups_fold_into_other() -> None:
    metric = MetricDef("by_path", by=("path",), max_groups=2)
    amount = MetricDef("amount", agg="sum", field="n", by=("path",), max_groups=2)
    resolution = Resolution("1m", 60_000, 3_600_000, 3_600_000)
    shard = ShardAggregates("shardId-0", MetricSet((metric, amount)), [resolution])
    shard.install(("1m", 0), None)
    for seq, path in enumerate(["/a", "/b", "/c", "/a", "/d", "/b", "/c"]):
        shard.add({"path": path, "n": seq}, "page.view", 1_000 + seq, (seq, 0, 0))
    [partial] = shard.dirty("dynamodb")
    assert partial.metrics["by_path"] == {"agg": "count", "groups": {"/a": 2, "/b": 2, OTHER_GROUP: 3}}
    # /c (2, 6) and /d (4) folded; /a (0, 3) and /b (1, 5) kept.
    assert partial.metrics["amount"] == {"agg": "sum", "groups": {"/a": "3", "/b": "6", OTHER_GROUP: "12"}}
    assert OTHER_GROUP == "__other__"
