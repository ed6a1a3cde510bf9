"""Splitting entries into batch calls, pure.

`take_keyed_batch` keeps the order per key. A service writes the entries of one batch call
independently: when an entry is refused (throttled) and a later entry with the same key is stored, the
two are out of order for good, and sending the refused one again cannot repair that. So a batch holds at
most one entry per key, and an entry is taken only if no earlier entry with its key is still waiting.
Sending each batch until its entries are acknowledged before taking the next keeps the source order per
key, whatever is refused and retried (Kinesis records per partition key, SQS FIFO messages per group).

`split_batches` is the plain splitter, in order, by count and bytes (SQS standard queues, Firehose).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from delivery.errors import OversizeEntryError

T = TypeVar("T")


def take_keyed_batch(
    queue: Sequence[T],
    key: Callable[[T], str],
    size: Callable[[T], int],
    max_entries: int,
    max_bytes: int,
) -> list[int]:
    """Indexes (increasing) of the queue entries for the next call: at most `max_entries` entries and
    `max_bytes`, one per key, none behind a waiting entry with the same key. Never empty for a non-empty
    queue; raises OversizeEntryError if the first entry alone is larger than `max_bytes`."""
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
                raise OversizeEntryError(f"an entry of {n} bytes cannot fit a batch of at most {max_bytes} bytes")
            keys.add(k)
            continue
        keys.add(k)
        taken.append(index)
        total += n
        if len(taken) >= max_entries:
            break
    return taken


def split_batches(items: Iterable[T], max_entries: int, max_bytes: int, size: Callable[[T], int]) -> Iterator[list[T]]:
    """Split `items` in order into lists of at most `max_entries` items and `max_bytes` of `size`.

    Greedy: a list is closed only when the next item would break a limit. Raises OversizeEntryError for
    an item that alone is larger than `max_bytes` (when reached: check sizes first if nothing may go out).
    """
    if max_entries < 1 or max_bytes < 0:
        raise ValueError(f"split_batches: need max_entries >= 1 and max_bytes >= 0, got {max_entries}, {max_bytes}")
    batch: list[T] = []
    batch_bytes = 0
    for item in items:
        n = size(item)
        if n > max_bytes:
            raise OversizeEntryError(f"an item of {n} bytes cannot fit a batch of at most {max_bytes} bytes")
        if batch and (len(batch) >= max_entries or batch_bytes + n > max_bytes):
            yield batch
            batch, batch_bytes = [], 0
        batch.append(item)
        batch_bytes += n
    if batch:
        yield batch
