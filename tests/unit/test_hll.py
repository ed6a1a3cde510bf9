"""HyperLogLog registers: merge laws, replay idempotency, partition independence, accuracy."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregations import hll
from aggregations.metrics import AGGREGATORS

values = st.lists(st.text(max_size=6) | st.integers(-50, 50), max_size=60)


def registers(items: list[object]) -> bytearray:
    r = hll.new()
    for item in items:
        hll.add(r, item)
    return r


@given(values, values, values)
def test_merge_is_commutative_associative_and_idempotent(a: list[object], b: list[object], c: list[object]) -> None:
    ra, rb, rc = registers(a), registers(b), registers(c)
    assert hll.merge(ra, rb) == hll.merge(rb, ra)
    assert hll.merge(hll.merge(ra, rb), rc) == hll.merge(ra, hll.merge(rb, rc))
    assert hll.merge(ra, ra) == ra


@given(values, st.randoms(use_true_random=False))
def test_replays_and_any_partition_give_the_same_registers_and_estimate(items: list[object], rnd) -> None:  # type: ignore[no-untyped-def]
    once = registers(items)
    replayed = registers(items + items[: len(items) // 2])  # duplicates delivered again
    shuffled = list(items)
    rnd.shuffle(shuffled)
    cut = rnd.randint(0, len(shuffled))
    split = hll.merge(registers(shuffled[:cut]), registers(shuffled[cut:]))
    assert once == replayed == split
    assert hll.estimate(once) == hll.estimate(split)


@given(st.lists(st.text(max_size=8), max_size=40, unique=True))
def test_small_sets_are_counted_exactly(items: list[str]) -> None:
    # Linear counting is exact while no two values share a register: it counts the registers in use
    # (40 values in 4,096 registers share one now and then, which hypothesis finds).
    in_use = len({hll.locate(item)[0] for item in items})
    estimate = hll.estimate(registers(items))
    assert abs(estimate - in_use) <= 1
    if in_use == len(items):
        assert abs(estimate - len(items)) <= 1


@pytest.mark.parametrize("n", [1_000, 20_000, 200_000])
def test_large_sets_are_within_a_few_standard_errors(n: int) -> None:
    estimate = hll.estimate(registers([f"user-{i}" for i in range(n)]))
    assert abs(estimate - n) / n < 0.05  # standard error 1.6 %


@settings(max_examples=30)
@given(values)
def test_encoding_round_trips(items: list[object]) -> None:
    r = registers(items)
    assert hll.decode(hll.encode(r)) == r


def test_decoding_rejects_registers_of_the_wrong_size() -> None:
    import base64
    import zlib

    with pytest.raises(ValueError, match="4096 bytes"):
        hll.decode(base64.b64encode(zlib.compress(b"\0" * 10)).decode())


def test_the_distinct_aggregator_presents_the_estimate_and_merges_by_union() -> None:
    agg = AGGREGATORS["distinct"]
    a = agg.add(agg.add(agg.initial(), "u1"), "u2")
    b = agg.add(agg.initial(), "u2")
    assert agg.present(agg.merge(a, b)) == 2
    assert agg.present(agg.decode(agg.encode(a))) == 2
    assert agg.present(None) == 0
