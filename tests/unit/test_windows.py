"""aggregations/windows.py: durations and tumbling event-time windows aligned to the epoch."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregations.windows import DEFAULT_RESOLUTIONS, Resolution, parse_duration_ms, window_start

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1s", 1_000),
        ("90s", 90_000),
        ("1m", MINUTE),
        ("48h", 48 * HOUR),
        ("90d", 90 * DAY),
        ("2w", 14 * DAY),
        ("1y", 365 * DAY),
        ("3y", 3 * 365 * DAY),
        (" 5m ", 5 * MINUTE),
        ("5 m", 5 * MINUTE),
        ("007s", 7_000),
    ],
)
def test_parse_duration_good(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize(
    "text", ["", "h", "10", "1.5h", "-1s", "+1s", "1H", "1ms", "1 hour", "1h30m", "1x", "one m", "1 d 2", "0x10s"]
)
def test_parse_duration_bad(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration") as info:
        parse_duration_ms(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("text", ["0s", "0m", "000h"])
def test_parse_duration_zero_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="longer than zero"):
        parse_duration_ms(text)


@settings(max_examples=50)
@given(n=st.integers(1, 10**6), unit=st.sampled_from([("s", 1_000), ("m", MINUTE), ("h", HOUR), ("d", DAY)]))
def test_parse_duration_any_whole_number(n: int, unit: tuple[str, int]) -> None:
    assert parse_duration_ms(f"{n}{unit[0]}") == n * unit[1]


@pytest.mark.parametrize(
    ("timestamp", "size", "start"),
    [
        (0, MINUTE, 0),
        (1, MINUTE, 0),
        (MINUTE - 1, MINUTE, 0),
        (MINUTE, MINUTE, MINUTE),
        (-1, MINUTE, -MINUTE),  # 1969-12-31 23:59:59.999 is in the minute starting at 23:59
        (-MINUTE, MINUTE, -MINUTE),
        (-MINUTE - 1, MINUTE, -2 * MINUTE),
        (1_573_841_100_123, MINUTE, 1_573_841_100_000),
        (1_573_841_100_123, HOUR, 1_573_840_800_000),
        (1_573_841_100_123, DAY, 1_573_776_000_000),  # 2019-11-15 00:00Z
    ],
)
def test_window_start_examples(timestamp: int, size: int, start: int) -> None:
    assert window_start(timestamp, size) == start
    assert Resolution("r", size, 1, 1).start(timestamp) == start


@settings(max_examples=200)
@given(timestamp=st.integers(-(2**45), 2**45), size=st.integers(1, 10 * DAY))
def test_window_start_contains_the_timestamp_and_is_aligned(timestamp: int, size: int) -> None:
    start = window_start(timestamp, size)
    assert start <= timestamp < start + size
    assert start % size == 0
    assert window_start(start, size) == start
    assert window_start(start + size - 1, size) == start
    assert Resolution("r", size, 1, 1).start(timestamp) == start


def test_starts_between_lists_every_overlapping_window() -> None:
    r = Resolution("1m", MINUTE, DAY, HOUR)
    #   |----0----|----1m---|----2m---|----3m---|
    #        [30s ------------------ 150s)
    assert list(r.starts_between(30_000, 150_000)) == [0, MINUTE, 2 * MINUTE]
    # A range ending exactly at a window start does not include that window.
    assert list(r.starts_between(0, 2 * MINUTE)) == [0, MINUTE]
    assert list(r.starts_between(0, 2 * MINUTE + 1)) == [0, MINUTE, 2 * MINUTE]
    assert list(r.starts_between(-1, 1)) == [-MINUTE, 0]
    # An empty or inverted range overlaps nothing.
    assert list(r.starts_between(5_000, 5_000)) == []
    assert list(r.starts_between(90_000, 70_000)) == []


@settings(max_examples=100)
@given(
    from_ms=st.integers(-(2**40), 2**40),
    length=st.integers(1, 5 * HOUR),
    size=st.sampled_from([1_000, MINUTE, HOUR]),
)
def test_starts_between_covers_the_range_exactly(from_ms: int, length: int, size: int) -> None:
    to_ms = from_ms + length
    starts = list(Resolution("r", size, 1, 1).starts_between(from_ms, to_ms))
    assert starts, "a non-empty range overlaps at least one window"
    assert starts[0] <= from_ms < starts[0] + size
    assert starts[-1] < to_ms <= starts[-1] + size
    assert all(b - a == size for a, b in itertools.pairwise(starts))


def test_expiry_helpers_count_from_the_window_end() -> None:
    r = Resolution("1h", HOUR, 90 * DAY, 7 * DAY)
    assert r.dynamodb_expiry_ms(10 * HOUR) == 11 * HOUR + 90 * DAY
    assert r.redis_expiry_ms(10 * HOUR) == 11 * HOUR + 7 * DAY


def test_default_resolutions() -> None:
    assert [(r.name, r.size_ms) for r in DEFAULT_RESOLUTIONS] == [("1m", MINUTE), ("1h", HOUR), ("1d", DAY)]
    assert [r.dynamodb_retention_ms for r in DEFAULT_RESOLUTIONS] == [48 * HOUR, 90 * DAY, 3 * 365 * DAY]
    assert [r.redis_retention_ms for r in DEFAULT_RESOLUTIONS] == [6 * HOUR, 7 * DAY, 90 * DAY]
    assert all(parse_duration_ms(r.name) == r.size_ms for r in DEFAULT_RESOLUTIONS)
