"""Exponential backoff with full jitter, the one formula every retry here uses.

After failed attempt n (1, 2, ...) wait a random time between 0 and min(max_s, base_s * 2**(n-1)).
Full jitter spreads clients that failed together (every shard's worker during one throttling spell)
over the whole interval, so they do not come back together ("Exponential Backoff And Jitter", AWS
Architecture Blog). Sleeping is the caller's: it injects its own sleep, as tests inject `random`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

_MAX_DOUBLINGS = 62  # 2**62 * any sane base is past every cap; keeps the power from growing without end


@dataclass(frozen=True, slots=True)
class Backoff:
    base_s: float = 0.1
    max_s: float = 5.0
    random: Callable[[], float] = random.random  # uniform in [0, 1)

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.max_s:
            raise ValueError(f"backoff: need 0 < base_s <= max_s, got {self.base_s}, {self.max_s}")

    def ceiling_s(self, attempt: int) -> float:
        """The longest wait after failed attempt `attempt` (1, 2, ...)."""
        return min(self.max_s, self.base_s * 2 ** min(max(attempt, 1) - 1, _MAX_DOUBLINGS))

    def delay_s(self, attempt: int) -> float:
        """How long to wait after failed attempt `attempt` (1, 2, ...): uniform in [0, ceiling]."""
        return self.ceiling_s(attempt) * self.random()


DEFAULT_BACKOFF = Backoff()
