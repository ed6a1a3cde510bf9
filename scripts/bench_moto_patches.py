"""Stand-in fixes for two of moto's O(n)-per-call paths, for the moto server of scripts/bench_capacity.py.

Without them a long run measures moto's bookkeeping, not the worker:
- SQS: every SendMessage (each entry of a SendMessageBatch) builds all the queue's attributes, among them
  the three ApproximateNumberOfMessages* counts, each a pass over every message in the queue with two
  clock reads per message; a dead-letter queue that fills during the run makes sending quadratic (6,000
  letters: minutes). Here each count is computed at most once a second per queue: SQS documents them
  as approximate and eventually consistent, so a one-second-old count is within what the API promises.
- Kinesis: every put copies all the shard's sequence numbers into a list to find the last one (O(records
  in the shard)); here the last key of the ordered dict (O(1)), as `scripts/bench_replay.py` patches it.

`apply()` runs inside the moto server: bench_capacity.py starts the local stack with PYTHONPATH set to
a folder whose `sitecustomize.py` calls it (and only for that start, so no other process loads it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

COUNT_TTL_SECONDS = 1.0
APPROXIMATE_COUNTS = (
    "approximate_number_of_messages",
    "approximate_number_of_messages_delayed",
    "approximate_number_of_messages_not_visible",
)


def _at_most_once_a_second(name: str, compute: Callable[[Any], int]) -> property:
    def getter(queue: Any) -> int:
        cache = queue.__dict__.setdefault("_bench_counts", {})
        now = time.monotonic()
        hit = cache.get(name)
        if hit is not None and now - hit[0] < COUNT_TTL_SECONDS:
            return int(hit[1])
        value = compute(queue)
        cache[name] = (now, value)
        return value

    return property(getter)


def apply() -> None:
    from moto.kinesis.models import Shard
    from moto.sqs.models import Queue

    def last_sequence_number(shard: Any) -> int:
        return next(reversed(shard.records)) if shard.records else 0

    Shard.get_max_sequence_number = last_sequence_number  # type: ignore[method-assign,assignment]
    for name in APPROXIMATE_COUNTS:
        setattr(Queue, name, _at_most_once_a_second(name, getattr(Queue, name).fget))
