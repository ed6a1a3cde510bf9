"""The resume bookkeeping of a replay (replay/progress.py): what is finished, and the resume file."""

from __future__ import annotations

from pathlib import Path

import pytest

from replay import progress
from replay.progress import ACKED, NEW, OLD, RECOUNT, ObjectMark, ObjectTracker, Progress, ProgressError


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
