"""Per-shard health for operators and the dashboard: what a worker reports, and where it goes.

Each worker reports after every flush and checkpoint: last batch time, millisBehindLatest, events/s, last
checkpoint sequence and time, DLQ count, totals. `RedisHealth` (redis_health.py) keeps them in Redis for
the dashboard; `MemoryHealth` (memory.py) is the fake the tests use. Reporting is best effort: a failed
health write is logged, never a reason to stop processing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["HealthSink", "RateMeter"]


class HealthSink(Protocol):
    def report(self, shard_id: str, fields: Mapping[str, Any]) -> None: ...


class RateMeter:
    """Events per second over a sliding window of recent batches (monotonic seconds in, pure)."""

    def __init__(self, window_seconds: float = 10.0) -> None:
        self.window = window_seconds
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, count: int) -> None:
        self.samples.append((now, count))
        while self.samples and now - self.samples[0][0] > self.window:
            self.samples.popleft()

    def rate(self, now: float) -> float:
        recent = [(t, n) for t, n in self.samples if now - t <= self.window]
        if not recent:
            return 0.0
        span = max(now - recent[0][0], 1.0)
        return round(sum(n for _, n in recent) / span, 1)
