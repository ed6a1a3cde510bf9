"""The redrive ledger: across runs and crashes, each DLQ letter goes back into a stream at most once.

Kinesis has no idempotent put, and the DLQ is at least once (a letter may be in the queue twice), so
`dlq redrive` writes down what it does before it does it. Per (stream, letter id), one entry:

    (none) ── begin ──► pending (run, time, partition key, payload digest)
                          │  PutRecords acknowledged: claim the record, then
                          └──────────► done (shard, sequence number) ── then the message is deleted

A run finding `done` deletes the message and puts nothing. A run finding `pending` cannot tell whether
the put happened (a crash after the put, before `done`), so it looks in the stream: the letter's record
is in a shard whose hash key range holds the MD5 of its partition key, arriving within `Timing.span` of
the pending time; found, the entry becomes `done`; not found, the run takes the entry over and puts.
Two letters may carry the same bytes and key (a producer's retry), so a found record counts only if no
other letter claimed it: every put record is claimed, per (stream, shard, sequence number), by one
letter. The record a letter came from (named by its id) has the same key and maybe the same bytes: it
never counts, and the span starts only `skew_ms` before the entry's time. A pending entry is searched
for only once its run can no longer put it (`Timing.settled_ms`): a run puts a letter only within
`put_window_ms` of writing its entry, and gives up otherwise.

This module is pure (decisions, the search span, the shard a key hashes to) plus the ledger protocol
and an in-memory ledger for tests; `redrive_dynamodb.py` keeps the ledger in the metrics table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol

PENDING = "pending"
DONE = "done"
LEDGER_TTL_SECONDS = 15 * 86_400  # the DLQ keeps a message at most 14 days: a day more than any duplicate


class Action(StrEnum):
    PUT = "put"  # no entry: write one (pending), then put
    DUPLICATE = "duplicate"  # done: the letter is back in the stream already; delete the message
    WAIT = "wait"  # pending, and its run may still be putting it: leave the message for a later run
    SEARCH = "search"  # pending and settled: look for its record in the stream; put it only if absent


@dataclass(frozen=True, slots=True)
class Timing:
    """How long a run may put after writing an entry, and how long after that an answer may still land.

    `settle_ms` covers a PutRecords call in flight when the window closes (connect and read timeouts,
    no client-side retries) and the difference between this machine's clock and Kinesis's; `skew_ms`
    that difference alone, before the entry's time. (Kept short: the letter's own record, and a producer's
    copies of it, arrived before the letter was written down and must stay out of the span.)
    """

    put_window_ms: int = 60_000
    settle_ms: int = 120_000
    skew_ms: int = 30_000

    def put_deadline_ms(self, pending_ms: int) -> int:
        """A run sends a letter's record only before this (else a search could miss it)."""
        return pending_ms + self.put_window_ms

    def settled_ms(self, pending_ms: int) -> int:
        """From then on, no put of the entry's run can still arrive: the stream says whether it did."""
        return pending_ms + self.put_window_ms + self.settle_ms

    def span(self, pending_ms: int) -> tuple[int, int]:
        """Arrival times (ms, inclusive) between which the entry's record is, if it was put."""
        return pending_ms - self.skew_ms, self.settled_ms(pending_ms)


DEFAULT_TIMING = Timing()


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    stream: str
    letter_id: str
    state: str  # PENDING or DONE
    run_id: str  # the run that wrote (or took over) the entry
    pending_ms: int  # when that run wrote it, by its clock
    partition_key: str
    payload_sha256: str
    shard_id: str = ""  # done: where the record is
    sequence_number: str = ""
    expires_at: int = 0  # epoch seconds (DynamoDB TTL)

    @property
    def done(self) -> bool:
        return self.state == DONE


def payload_digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def new_entry(stream: str, letter_id: str, run_id: str, now_ms: int, partition_key: str, payload: bytes) -> LedgerEntry:
    return LedgerEntry(
        stream=stream,
        letter_id=letter_id,
        state=PENDING,
        run_id=run_id,
        pending_ms=now_ms,
        partition_key=partition_key,
        payload_sha256=payload_digest(payload),
        expires_at=now_ms // 1000 + LEDGER_TTL_SECONDS,
    )


def decide(entry: LedgerEntry | None, now_ms: int, timing: Timing = DEFAULT_TIMING) -> Action:
    """What a run does with a letter, given its ledger entry."""
    if entry is None:
        return Action.PUT
    if entry.done:
        return Action.DUPLICATE
    return Action.SEARCH if now_ms >= timing.settled_ms(entry.pending_ms) else Action.WAIT


def origin(letter_id: str) -> tuple[str, str]:
    """The (shard id, sequence number) of the record a letter came from: `<shard>/<seq>/<sub>/<index>`."""
    shard_id, _, rest = letter_id.partition("/")
    return shard_id, rest.partition("/")[0]


def record_matches(entry: LedgerEntry, shard_id: str, sequence_number: str, partition_key: str, data: bytes) -> bool:
    """Is this stream record what the entry's run put? Never the record the letter came from, which has
    the same key and, for a record of one event, the same bytes."""
    return (
        partition_key == entry.partition_key
        and (shard_id, sequence_number) != origin(entry.letter_id)
        and payload_digest(data) == entry.payload_sha256
    )


def partition_hash(partition_key: str) -> int:
    """The 128-bit hash key Kinesis maps a partition key to: MD5 of its UTF-8 bytes, as an integer."""
    return int.from_bytes(hashlib.md5(partition_key.encode(), usedforsecurity=False).digest(), "big")


def shards_for_key(shards: Sequence[Mapping[str, Any]], partition_key: str) -> list[str]:
    """Every shard (ListShards entries, closed ones included) whose hash key range holds the key.

    After a reshard a key maps to a parent and its child: both may hold records of the span."""
    key = partition_hash(partition_key)
    return [
        s["ShardId"]
        for s in shards
        if int(s["HashKeyRange"]["StartingHashKey"]) <= key <= int(s["HashKeyRange"]["EndingHashKey"])
    ]


class RedriveLedger(Protocol):
    """Where the entries live. Every write is conditional, so two runs never both own a letter."""

    def get(self, stream: str, letter_ids: Sequence[str]) -> dict[str, LedgerEntry]:
        """The entries of these letters (strongly consistent); letters without one are absent."""
        ...

    def begin(self, entry: LedgerEntry) -> bool:
        """Write a pending entry if the letter has none; False if it has one."""
        ...

    def take_over(self, stale: LedgerEntry, entry: LedgerEntry) -> bool:
        """Replace a settled pending entry by this run's; False if it changed since it was read."""
        ...

    def claim(self, entry: LedgerEntry, shard_id: str, sequence_number: str) -> bool:
        """Record that this stream record is the letter's put; False if another letter claimed it."""
        ...

    def finish(self, entry: LedgerEntry, shard_id: str, sequence_number: str) -> None:
        """Mark the letter done (its record is in the stream)."""
        ...

    def abort(self, entry: LedgerEntry) -> None:
        """Remove this run's pending entry of a letter that was surely not put (Kinesis refused it)."""
        ...


class MemoryRedriveLedger:
    """In-memory ledger for tests, with the same conditions as the DynamoDB one."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], LedgerEntry] = {}
        self.claims: dict[tuple[str, str, str], str] = {}  # (stream, shard, sequence) -> letter id

    def get(self, stream: str, letter_ids: Sequence[str]) -> dict[str, LedgerEntry]:
        return {i: self.entries[(stream, i)] for i in letter_ids if (stream, i) in self.entries}

    def begin(self, entry: LedgerEntry) -> bool:
        return self.entries.setdefault((entry.stream, entry.letter_id), entry) is entry

    def take_over(self, stale: LedgerEntry, entry: LedgerEntry) -> bool:
        key = (entry.stream, entry.letter_id)
        current = self.entries.get(key)
        if current is None or current.done or (current.run_id, current.pending_ms) != (stale.run_id, stale.pending_ms):
            return False
        self.entries[key] = entry
        return True

    def claim(self, entry: LedgerEntry, shard_id: str, sequence_number: str) -> bool:
        owner = self.claims.setdefault((entry.stream, shard_id, sequence_number), entry.letter_id)
        return owner == entry.letter_id

    def finish(self, entry: LedgerEntry, shard_id: str, sequence_number: str) -> None:
        key = (entry.stream, entry.letter_id)
        if key in self.entries:
            self.entries[key] = replace(
                self.entries[key], state=DONE, shard_id=shard_id, sequence_number=sequence_number
            )

    def abort(self, entry: LedgerEntry) -> None:
        key = (entry.stream, entry.letter_id)
        current = self.entries.get(key)
        if current is not None and not current.done and current.run_id == entry.run_id:
            del self.entries[key]
