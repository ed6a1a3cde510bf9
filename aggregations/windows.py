"""Window math: tumbling event-time windows aligned to the epoch. Pure functions of the timestamp."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000, "y": 365 * 86_400_000}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdwy])\s*$")


def parse_duration_ms(text: str) -> int:
    """'90s', '1m', '48h', '90d', '3y' -> milliseconds (a year is 365 days)."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(
            f"{text!r} is not a duration; write a whole number and a unit s, m, h, d, w or y (e.g. '48h')."
        )
    value = int(match.group(1)) * _UNITS_MS[match.group(2)]
    if value <= 0:
        raise ValueError(f"{text!r}: a duration must be longer than zero.")
    return value


def window_start(timestamp_ms: int, size_ms: int) -> int:
    """Start of the window holding timestamp_ms. Floors towards minus infinity, so pre-1970 works too."""
    return timestamp_ms - timestamp_ms % size_ms


@dataclass(frozen=True)
class Resolution:
    """One window size with how long each store keeps its windows."""

    name: str
    size_ms: int
    dynamodb_retention_ms: int
    redis_retention_ms: int

    def start(self, timestamp_ms: int) -> int:
        return timestamp_ms - timestamp_ms % self.size_ms

    def starts_between(self, from_ms: int, to_ms: int) -> range:
        """Window starts of every window that overlaps [from_ms, to_ms)."""
        first = self.start(from_ms)
        return range(first, to_ms if to_ms > from_ms else first, self.size_ms)

    def dynamodb_expiry_ms(self, start_ms: int) -> int:
        return start_ms + self.size_ms + self.dynamodb_retention_ms

    def redis_expiry_ms(self, start_ms: int) -> int:
        return start_ms + self.size_ms + self.redis_retention_ms


DEFAULT_RESOLUTIONS: tuple[Resolution, ...] = (
    Resolution("1m", 60_000, parse_duration_ms("48h"), parse_duration_ms("6h")),
    Resolution("1h", 3_600_000, parse_duration_ms("90d"), parse_duration_ms("7d")),
    Resolution("1d", 86_400_000, parse_duration_ms("3y"), parse_duration_ms("90d")),
)
