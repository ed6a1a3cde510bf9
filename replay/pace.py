"""Pacing of a replay, pure (the clock is injected): a token bucket for records/s and bytes/s, and
`--speedup X` that follows the events' own timing X times faster.

Every limiter answers `delay(...)`: how long to wait before the next event may go (0 if now), and
`take(...)` once it goes. A `Pacer` combines them: the largest delay wins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

KINESIS_RECORDS_PER_SHARD = 1_000  # per second, writes
KINESIS_BYTES_PER_SHARD = 1024 * 1024  # per second, writes
DEFAULT_SHARE = 0.9  # of the stream's write limit
BURST_SECONDS = 0.1  # a bucket holds this much of its rate: over any second at most 1.1 x rate goes out


def stream_limits(open_shards: int, share: float = DEFAULT_SHARE) -> tuple[float, float]:
    """(records/s, bytes/s): `share` of the write limit of a stream with this many open shards."""
    if open_shards < 1:
        raise ValueError("the stream has no open shard to write to")
    return share * open_shards * KINESIS_RECORDS_PER_SHARD, share * open_shards * KINESIS_BYTES_PER_SHARD


class TokenBucket:
    """`rate` tokens per second, holding at most `rate * burst_seconds` (at least 1). An amount larger than
    the bucket goes when the bucket is full and leaves it in debt, so big events are slowed, not stuck."""

    def __init__(self, rate: float, clock: Callable[[], float], burst_seconds: float = BURST_SECONDS) -> None:
        if not rate > 0:
            raise ValueError(f"a rate must be positive, got {rate}")
        self.rate = float(rate)
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.clock = clock
        self.tokens = self.capacity
        self.updated = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def delay(self, amount: float = 1.0) -> float:
        self._refill()
        need = min(amount, self.capacity)
        return 0.0 if self.tokens >= need else (need - self.tokens) / self.rate

    def take(self, amount: float = 1.0) -> None:
        self._refill()
        self.tokens -= amount


class EventTime:
    """Send each event when its place in the original timeline comes, `speedup` times faster.

    The timeline starts at the first event; an event older than the newest one seen goes at once
    (archives are roughly, not strictly, in event-time order)."""

    def __init__(self, speedup: float, clock: Callable[[], float]) -> None:
        if not speedup > 0:
            raise ValueError(f"--speedup must be positive, got {speedup}")
        self.speedup = speedup
        self.clock = clock
        self.first_ms: int | None = None
        self.started = 0.0
        self.newest_ms = 0

    def delay(self, event_ms: int) -> float:
        if self.first_ms is None:
            return 0.0
        due = self.started + (max(event_ms, self.newest_ms) - self.first_ms) / 1000 / self.speedup
        return max(0.0, due - self.clock())

    def take(self, event_ms: int) -> None:
        if self.first_ms is None:
            self.first_ms, self.started, self.newest_ms = event_ms, self.clock(), event_ms
        self.newest_ms = max(self.newest_ms, event_ms)


@dataclass
class Pacer:
    """Records/s and bytes/s buckets (either may be absent) and an optional event-time schedule."""

    records: TokenBucket | None = None
    bytes: TokenBucket | None = None
    event_time: EventTime | None = None

    def delay(self, event_ms: int, size: int) -> float:
        waits = [0.0]
        if self.records is not None:
            waits.append(self.records.delay(1))
        if self.bytes is not None:
            waits.append(self.bytes.delay(size))
        if self.event_time is not None:
            waits.append(self.event_time.delay(event_ms))
        return max(waits)

    def take(self, event_ms: int, size: int) -> None:
        if self.records is not None:
            self.records.take(1)
        if self.bytes is not None:
            self.bytes.take(size)
        if self.event_time is not None:
            self.event_time.take(event_ms)
