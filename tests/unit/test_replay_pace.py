"""Pacing with a fake clock: the token bucket holds the rate over any second, speedup follows event time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replay.pace import EventTime, Pacer, TokenBucket, stream_limits
from replay.partition import PartitionKeys, PathError, hash_key, parse_path


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_default_rate_is_ninety_percent_of_the_stream_write_limit() -> None:
    assert stream_limits(2) == (1800.0, 0.9 * 2 * 1024 * 1024)
    with pytest.raises(ValueError):
        stream_limits(0)


@given(rate=st.floats(1, 50_000), sizes=st.lists(st.integers(1, 3), min_size=1, max_size=300))
def test_a_token_bucket_never_lets_more_than_rate_plus_its_burst_through_in_any_second(
    rate: float, sizes: list[int]
) -> None:
    clock = Clock()
    bucket = TokenBucket(rate, clock)
    sent: list[float] = []
    for n in sizes:
        wait = bucket.delay(n)
        assert wait >= 0
        clock.sleep(wait)
        assert bucket.delay(n) == pytest.approx(0, abs=1e-9)
        bucket.take(n)
        sent += [clock.now] * n
    total = len(sent)
    duration = sent[-1] - sent[0]
    assert total <= rate * duration + bucket.capacity + 3  # + the last amount taken in debt


def test_the_bucket_reaches_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(1800, clock)
    start = clock.now
    for _ in range(18_000):
        clock.sleep(bucket.delay())
        bucket.take()
    assert 18_000 / (clock.now - start) == pytest.approx(1800, rel=0.02)


def test_an_amount_larger_than_the_bucket_waits_for_a_full_bucket_then_leaves_a_debt() -> None:
    clock = Clock()
    bucket = TokenBucket(100, clock)  # holds 10
    bucket.take(10)
    assert bucket.delay(50) == pytest.approx(0.1)
    clock.sleep(0.1)
    bucket.take(50)
    assert bucket.delay(1) == pytest.approx(0.41)


def test_speedup_follows_event_time_faster_and_never_waits_for_older_events() -> None:
    clock = Clock()
    pace = EventTime(10, clock)
    t0 = 1_700_000_000_000
    assert pace.delay(t0) == 0
    pace.take(t0)
    assert pace.delay(t0 + 10_000) == pytest.approx(1.0)  # 10 s of event time at 10x
    clock.sleep(1.0)
    pace.take(t0 + 10_000)
    assert pace.delay(t0 + 5_000) == 0  # older than the newest: at once
    assert pace.delay(t0 + 20_000) == pytest.approx(1.0)


def test_the_pacer_waits_for_the_slowest_limit() -> None:
    clock = Clock()
    pacer = Pacer(records=TokenBucket(1000, clock), bytes=TokenBucket(1000, clock), event_time=EventTime(1, clock))
    pacer.take(0, 100)  # the byte bucket (holds 100) is now empty
    assert pacer.delay(0, 100) == pytest.approx(0.1)
    assert pacer.delay(2000, 1) == pytest.approx(2.0)


def test_partition_key_paths() -> None:
    keys = PartitionKeys()
    assert keys.key({"userId": "u1", "sessionId": "s1"}, b"{}") == "u1"
    assert keys.key({"sessionId": "s1"}, b"{}") == "s1"
    assert keys.key({"userId": 42}, b"{}") == "42"
    assert keys.key({"userId": True}, b'{"x":1}') == hash_key(b'{"x":1}')
    assert keys.key({}, b'{"x":1}') == hash_key(b'{"x":1}')
    assert keys.key({"userId": ""}, b"{}") == hash_key(b"{}")
    long = "x" * 300
    assert keys.key({"userId": long}, b"{}") == hash_key(long.encode())
    charity = PartitionKeys("$.data.charity")
    assert charity.key({"data": {"charity": "c9"}, "userId": "u"}, b"{}") == "c9"
    assert charity.key({"userId": "u"}, b"{}") == hash_key(b"{}")  # the path only, then the hash
    assert PartitionKeys("items[1].id").key({"items": [{"id": "a"}, {"id": "b"}]}, b"{}") == "b"
    assert parse_path("a.b") == parse_path("$.a.b") == ("a", "b")
    for bad in ("", "a..b", "$."):
        with pytest.raises(PathError):
            parse_path(bad)
