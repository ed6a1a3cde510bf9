"""PutRecords batches that keep the order of events per partition key, pure.

Kinesis writes the entries of one PutRecords call independently: when an entry is refused (throttled)
and a later entry with the same key is stored, the two are out of order in the shard, and sending the
refused one again cannot repair that. So a batch holds at most one entry per partition key, and an
entry is taken only if no earlier entry with its key is still waiting. The caller sends a batch until
every entry is acknowledged before it builds the next one; then the order per key is the source order,
whatever is refused and retried.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

MIB = 1024 * 1024
MAX_RECORDS = 500  # per PutRecords call
MAX_BATCH_BYTES = 5 * MIB  # data and partition keys of all entries of one call
MAX_RECORD_BYTES = MIB  # data and partition key of one entry

T = TypeVar("T")


def take_batch(
    queue: Sequence[T],
    key: Callable[[T], str],
    size: Callable[[T], int],
    max_records: int = MAX_RECORDS,
    max_bytes: int = MAX_BATCH_BYTES,
) -> list[int]:
    """Indexes (increasing) of the queue entries for the next call: at most `max_records` entries and
    `max_bytes`, one per key, none behind a waiting entry with the same key. Never empty for a non-empty
    queue whose first entry fits `max_bytes`."""
    taken: list[int] = []
    keys: set[str] = set()  # keys taken, or skipped: later entries with them must wait
    total = 0
    for index, entry in enumerate(queue):
        k = key(entry)
        if k in keys:
            continue
        n = size(entry)
        if total + n > max_bytes:
            if not taken:
                raise ValueError(f"an entry of {n} bytes cannot fit a batch of at most {max_bytes} bytes")
            keys.add(k)
            continue
        keys.add(k)
        taken.append(index)
        total += n
        if len(taken) >= max_records:
            break
    return taken
