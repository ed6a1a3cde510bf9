"""Which prefixes a replay lists: Firehose and Hive time folders pruned to the range with one hour of
slack, plain prefixes listed whole, the DLQ's folder skipped."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replay.layout import (
    FIREHOSE,
    HIVE,
    HOUR_MS,
    PLAIN,
    MemoryLister,
    interval_ms,
    plan,
    root_state,
    time_part,
)


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def firehose_archive(days: range = range(24, 27), prefix: str = "") -> dict[str, int]:
    return {
        f"{prefix}2026/11/{d:02d}/{h:02d}/archive-1-2026-11-{d:02d}-{h:02d}-{m:02d}-00-{d}{h}{m}": 100
        for d in days
        for h in range(24)
        for m in (0, 30)
    }


def hive_archive(days: range = range(24, 27), prefix: str = "") -> dict[str, int]:
    return {
        f"{prefix}year=2026/month=11/day={d:02d}/hour={h:02d}/part-{m}.json.gz": 50
        for d in days
        for h in range(24)
        for m in (0, 1)
    }


def hours_of(keys: list[str]) -> set[str]:
    return {"/".join(k.split("/")[:4]) for k in keys}


def test_firehose_layout_keeps_the_range_plus_one_hour_each_side() -> None:
    lister = MemoryLister(firehose_archive())
    result = plan(lister, "", ms("2026-11-25T10:30:00"), ms("2026-11-25T12:00:00"))
    assert hours_of([o.key for o in result.objects]) == {f"2026/11/25/{h:02d}" for h in (9, 10, 11, 12)}
    assert result.layouts == {FIREHOSE}
    assert [o.key for o in result.objects] == sorted(o.key for o in result.objects)
    # Only the edges are walked: no listing of the other days' hours.
    assert ("level", "2026/11/24/") not in lister.calls and ("level", "2026/11/26/") not in lister.calls


def test_firehose_layout_under_a_prefix_and_across_midnight() -> None:
    lister = MemoryLister(firehose_archive(prefix="events/") | {"other/readme.txt": 1})
    result = plan(lister, "events", ms("2026-11-25T23:30:00"), ms("2026-11-26T00:10:00"))
    assert hours_of([o.key[len("events/") :] for o in result.objects]) == {
        "2026/11/25/22",
        "2026/11/25/23",
        "2026/11/26/00",
        "2026/11/26/01",
    }


def test_a_whole_day_inside_the_range_is_listed_in_one_call() -> None:
    lister = MemoryLister(firehose_archive())
    result = plan(lister, "", ms("2026-11-24T12:00:00"), ms("2026-11-26T12:00:00"))
    assert ("everything", "2026/11/25/") in lister.calls
    assert len(result.objects) == 2 * (12 + 1 + 24 + 12 + 1)


def test_hive_layout_also_below_other_partition_keys() -> None:
    objects = hive_archive() | hive_archive(prefix="eventType=donation.made/")
    lister = MemoryLister(objects)
    result = plan(lister, "", ms("2026-11-25T10:30:00"), ms("2026-11-25T11:00:00"))
    assert result.layouts == {HIVE}
    hours = sorted({k.key.rsplit("/", 1)[0] for k in result.objects})
    assert hours == sorted(
        f"{p}year=2026/month=11/day=25/hour={h:02d}" for p in ("", "eventType=donation.made/") for h in (9, 10, 11)
    )


def test_hive_without_padding_and_with_day_as_the_last_level() -> None:
    objects = {f"year=2026/month=1/day={d}/part.json": 1 for d in range(1, 32)}
    result = plan(MemoryLister(objects), "", ms("2026-01-10T23:30:00"), ms("2026-01-11T01:00:00"))
    assert [o.key for o in result.objects] == [
        "year=2026/month=1/day=10/part.json",
        "year=2026/month=1/day=11/part.json",
    ]


def test_plain_prefixes_are_listed_whole_and_the_dlq_folder_is_skipped() -> None:
    objects = {"dlq/2026/11/25/big-payload": 9, "loose.ndjson": 3, "backfill/part-0001.json": 4, "backfill/x/y": 5}
    objects |= firehose_archive(days=range(25, 26))
    result = plan(MemoryLister(objects), "", ms("2026-11-25T10:00:00"), ms("2026-11-25T10:01:00"))
    keys = [o.key for o in result.objects]
    assert "dlq/2026/11/25/big-payload" not in keys
    assert {"loose.ndjson", "backfill/part-0001.json", "backfill/x/y"} <= set(keys)
    assert result.layouts == {FIREHOSE, PLAIN}
    # Named explicitly, dlq/ is listed (the user asked for it).
    named = plan(MemoryLister(objects), "dlq/", ms("2026-11-25T10:00:00"), ms("2026-11-25T10:01:00"))
    assert [o.key for o in named.objects] == ["dlq/2026/11/25/big-payload"]


def test_a_source_prefix_inside_the_time_folders_is_understood() -> None:
    lister = MemoryLister(firehose_archive())
    result = plan(lister, "2026/11/25/", ms("2026-11-25T10:30:00"), ms("2026-11-25T11:00:00"))
    assert hours_of([o.key for o in result.objects]) == {"2026/11/25/09", "2026/11/25/10", "2026/11/25/11"}
    assert root_state("2026/11/25/") == (FIREHOSE, (2026, 11, 25))
    assert root_state("archive/year=2026/month=02/") == (HIVE, (2026, 2))
    assert root_state("2026/13/") == (None, ())


def test_slack_is_configurable() -> None:
    lister = MemoryLister(firehose_archive())
    result = plan(lister, "", ms("2026-11-25T10:00:00"), ms("2026-11-25T11:00:00"), slack_ms=3 * HOUR_MS)
    assert len(hours_of([o.key for o in result.objects])) == 1 + 6
    result = plan(lister, "", ms("2026-11-25T10:00:00"), ms("2026-11-25T11:00:00"), slack_ms=0)
    assert hours_of([o.key for o in result.objects]) == {"2026/11/25/10"}


@pytest.mark.parametrize(
    ("name", "style", "depth", "expected"),
    [
        ("2026", None, 0, (FIREHOSE, 2026)),
        ("year=2026", None, 0, (HIVE, 2026)),
        ("13", FIREHOSE, 1, None),
        ("12", FIREHOSE, 1, (FIREHOSE, 12)),
        ("hour=23", HIVE, 3, (HIVE, 23)),
        ("hour=24", HIVE, 3, None),
        ("month=1", FIREHOSE, 1, None),
        ("07", None, 1, None),
    ],
)
def test_time_part(name: str, style: str | None, depth: int, expected: tuple[str, int] | None) -> None:
    assert time_part(name, style, depth) == expected


@given(
    moment=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)),
    span_min=st.integers(1, 5 * 24 * 60),
    slack_h=st.integers(0, 3),
)
def test_every_hour_folder_that_overlaps_the_widened_range_is_kept_and_no_other(
    moment: datetime, span_min: int, slack_h: int
) -> None:
    from_ms = int(moment.replace(tzinfo=UTC).timestamp() * 1000)
    to_ms = from_ms + span_min * 60_000
    first = (from_ms - (slack_h + 30) * HOUR_MS) // HOUR_MS
    last = (to_ms + (slack_h + 30) * HOUR_MS) // HOUR_MS
    objects = {}
    for hour in range(first, last + 1):
        t = datetime.fromtimestamp(hour * 3600, UTC)
        objects[t.strftime("%Y/%m/%d/%H/") + "obj"] = 1
    kept = {o.key for o in plan(MemoryLister(objects), "", from_ms, to_ms, slack_h * HOUR_MS).objects}
    for key in objects:
        start, end = interval_ms(tuple(int(p) for p in key.split("/")[:4]))
        overlaps = end > from_ms - slack_h * HOUR_MS and start < to_ms + slack_h * HOUR_MS
        assert (key in kept) == overlaps, key
