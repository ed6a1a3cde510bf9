"""The delivery kit's splitters and backoff (delivery/batching.py, delivery/backoff.py), pure."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delivery.backoff import Backoff
from delivery.batching import split_batches, take_keyed_batch
from delivery.errors import OversizeEntryError
from delivery.limits import KINESIS_MAX_BATCH_BYTES, KINESIS_MAX_RECORDS, MIB


def key(entry: tuple[str, int, int]) -> str:
    return entry[0]


def size(entry: tuple[str, int, int]) -> int:
    return entry[2]


@given(
    keys=st.lists(st.sampled_from("abcdefgh"), max_size=400),
    seed=st.integers(0, 2**32),
    refuse=st.floats(0, 0.9),
    max_entries=st.integers(1, 20),
)
def test_sending_keyed_batches_until_acknowledged_keeps_order_per_key_and_sends_each_once(
    keys: list[str], seed: int, refuse: float, max_entries: int
) -> None:
    rng = random.Random(seed)
    queue = [(k, n, 1) for n, k in enumerate(keys)]
    stream: list[tuple[str, int, int]] = []  # what the service stored, in order
    while queue:
        taken = take_keyed_batch(queue, key, size, max_entries, 10**9)
        assert taken and len(taken) <= max_entries
        batch = [queue[i] for i in taken]
        assert len({key(e) for e in batch}) == len(batch), "one entry per key per call"
        queue = [e for i, e in enumerate(queue) if i not in set(taken)]
        pending = batch
        while pending:  # refused entries again, before anything else
            accepted = [e for e in pending if rng.random() >= refuse]
            stream += accepted
            pending = [e for e in pending if e not in accepted]
    assert sorted(stream, key=lambda e: e[1]) == [(k, n, 1) for n, k in enumerate(keys)]  # each exactly once
    for k in set(keys):
        sequence = [n for kk, n, _ in stream if kk == k]
        assert sequence == sorted(sequence), f"order of key {k} kept"


def test_keyed_batches_respect_the_limits() -> None:
    queue = [(f"k{n}", n, 1) for n in range(1200)]
    assert len(take_keyed_batch(queue, key, size, KINESIS_MAX_RECORDS, KINESIS_MAX_BATCH_BYTES)) == 500
    heavy = [(f"k{n}", n, 2 * MIB) for n in range(5)]
    assert take_keyed_batch(heavy, key, size, KINESIS_MAX_RECORDS, KINESIS_MAX_BATCH_BYTES) == [0, 1]  # 4 MiB of 5
    with pytest.raises(OversizeEntryError):
        take_keyed_batch([("a", 0, 6 * MIB)], key, size, KINESIS_MAX_RECORDS, KINESIS_MAX_BATCH_BYTES)
    assert take_keyed_batch([("a", 0, 1), ("a", 1, 1), ("b", 2, 1)], key, size, 500, 100) == [0, 2]
    # A key whose entry did not fit waits: its later, smaller entry must not overtake it.
    assert take_keyed_batch([("a", 0, 60), ("b", 1, 60), ("b", 2, 1), ("c", 3, 1)], key, size, 500, 100) == [0, 3]


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=100), max_size=200),
    max_entries=st.integers(min_value=1, max_value=20),
    max_bytes=st.integers(min_value=100, max_value=400),
)
def test_split_batches_every_item_once_in_order_within_limits(
    sizes: list[int], max_entries: int, max_bytes: int
) -> None:
    items = list(enumerate(sizes))
    out = list(split_batches(items, max_entries, max_bytes, lambda item: item[1]))
    assert [item for batch in out for item in batch] == items
    assert all(batch for batch in out)
    assert all(len(batch) <= max_entries for batch in out)
    assert all(sum(size for _, size in batch) <= max_bytes for batch in out)
    # Greedy: a batch was closed only because the next item would not fit.
    for batch, following in itertools.pairwise(out):
        assert len(batch) == max_entries or sum(s for _, s in batch) + following[0][1] > max_bytes


def test_split_batches_rejects_an_item_larger_than_a_batch() -> None:
    with pytest.raises(OversizeEntryError):
        list(split_batches([1, 5], 10, 4, lambda n: n))
    with pytest.raises(ValueError):
        list(split_batches([1], 0, 4, lambda n: n))


@given(attempt=st.integers(1, 10_000), draw=st.floats(0, 1, exclude_max=True))
def test_full_jitter_stays_between_zero_and_the_capped_exponential(attempt: int, draw: float) -> None:
    backoff = Backoff(base_s=0.1, max_s=5.0, random=lambda: draw)
    ceiling = min(5.0, 0.1 * 2 ** min(attempt - 1, 62))
    assert backoff.ceiling_s(attempt) == ceiling
    assert 0 <= backoff.delay_s(attempt) == ceiling * draw <= 5.0


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    top = Backoff(base_s=0.1, max_s=5.0, random=lambda: 1.0)  # the ceiling itself
    assert [round(top.delay_s(n), 3) for n in range(1, 9)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert Backoff(random=lambda: 0.0).delay_s(3) == 0.0
    draws = [Backoff().delay_s(4) for _ in range(2_000)]  # the real random: spread over the whole interval
    assert 0 <= min(draws) < 0.05 and 0.75 < max(draws) <= 0.8
    with pytest.raises(ValueError):
        Backoff(base_s=0.0)
