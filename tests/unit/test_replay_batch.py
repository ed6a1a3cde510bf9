"""Batches that keep order per partition key, whatever the stream refuses; the resume bookkeeping."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replay import progress
from replay.batch import MAX_RECORDS, take_batch
from replay.progress import ACKED, NEW, OLD, RECOUNT, ObjectMark, ObjectTracker, Progress, ProgressError


def key(entry: tuple[str, int, int]) -> str:
    return entry[0]


def size(entry: tuple[str, int, int]) -> int:
    return entry[2]


@given(
    keys=st.lists(st.sampled_from("abcdefgh"), max_size=400),
    seed=st.integers(0, 2**32),
    refuse=st.floats(0, 0.9),
    max_records=st.integers(1, 20),
)
def test_sending_batches_until_acknowledged_keeps_order_per_key_and_sends_each_once(
    keys: list[str], seed: int, refuse: float, max_records: int
) -> None:
    rng = random.Random(seed)
    queue = [(k, n, 1) for n, k in enumerate(keys)]
    stream: list[tuple[str, int, int]] = []  # what the stream stored, in order
    while queue:
        taken = take_batch(queue, key, size, max_records=max_records, max_bytes=10**9)
        assert taken and len(taken) <= max_records
        batch = [queue[i] for i in taken]
        assert len({key(e) for e in batch}) == len(batch), "one entry per key per call"
        queue = [e for i, e in enumerate(queue) if i not in set(taken)]
        pending = batch
        while pending:  # like the runner: refused entries again, before anything else
            accepted = [e for e in pending if rng.random() >= refuse]
            stream += accepted
            pending = [e for e in pending if e not in accepted]
    assert sorted(stream, key=lambda e: e[1]) == [(k, n, 1) for n, k in enumerate(keys)]  # each exactly once
    for k in set(keys):
        sequence = [n for kk, n, _ in stream if kk == k]
        assert sequence == sorted(sequence), f"order of key {k} kept"


def test_batches_respect_the_limits() -> None:
    queue = [(f"k{n}", n, 1) for n in range(1200)]
    assert len(take_batch(queue, key, size)) == MAX_RECORDS
    heavy = [(f"k{n}", n, 2 * 1024 * 1024) for n in range(5)]
    assert take_batch(heavy, key, size) == [0, 1]  # 4 MiB of 5
    with pytest.raises(ValueError):
        take_batch([("a", 0, 6 * 1024 * 1024)], key, size)
    assert take_batch([("a", 0, 1), ("a", 1, 1), ("b", 2, 1)], key, size) == [0, 2]


def test_tracker_marks_what_is_finished_even_when_acks_come_out_of_file_order() -> None:
    t = ObjectTracker(0, "k")
    for offset in (0, 10, 20, 30):
        t.counted(offset)
        t.queued(offset)
    t.counted(40)  # a filtered piece
    t.acknowledged(20)
    t.acknowledged(0)
    assert t.mark() == ObjectMark(low=10, read=40, acked={20})
    t.acknowledged(10)
    t.acknowledged(30)
    t.reading = False
    assert t.done and t.mark() == ObjectMark(low=41, read=40, acked=set())
    resumed = ObjectTracker(0, "k", ObjectMark(low=10, read=40, acked={20}))
    assert [resumed.classify(o) for o in (0, 10, 20, 30, 40, 50)] == [OLD, RECOUNT, ACKED, RECOUNT, RECOUNT, NEW]


def test_progress_round_trip_is_atomic_and_refuses_other_parameters(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    state = Progress({"stream": "s", "from_ms": 1}, done={0, 1, 2, 7}, partial={3: ObjectMark(5, 9, {7})})
    state.totals = {"events_delivered": 4}
    progress.save(path, state)
    assert progress.load(path) == state
    assert progress.to_ranges({0, 1, 2, 7}) == [[0, 3], [7, 8]]
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]  # no temporary file left
    with pytest.raises(ProgressError, match="stream"):
        state.check_params({"stream": "other", "from_ms": 1}, path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ProgressError):
        progress.load(tmp_path / "bad.json")
    assert progress.load(tmp_path / "missing.json") is None
    progress.save_listing(path, [("a", 1), ("b", 2)])
    assert progress.load_listing(path) == [("a", 1), ("b", 2)]
    progress.remove(path)
    assert list(tmp_path.iterdir()) == [tmp_path / "bad.json"]
