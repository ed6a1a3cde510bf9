"""Did an interrupted redrive put a letter? Read the stream where its record would be, and nowhere else.

The record of a pending ledger entry, if it was put, is in a shard whose hash key range holds the MD5
of its partition key (`shards_for_key`: after a reshard, a parent and a child), and arrived within
`Timing.span` of the entry's time. Each such shard is read from AT_TIMESTAMP(span start) until a record
arrived after the span, the tip of the shard, or the shard's end; the entries of one search share the
reads. The answer is only trusted when every shard was read through the span; otherwise the caller
must neither put nor assume the put happened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from deadletters.ledger import DEFAULT_TIMING, LedgerEntry, Timing, record_matches, shards_for_key
from delivery.backoff import DEFAULT_BACKOFF
from delivery.retryable import THROTTLING_CODES

log = logging.getLogger("streamkpi.redrive")

# Trimming is not exact: a span this close to the retention limit may have lost records already.
RETENTION_MARGIN_MS = 10 * 60_000


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    found: tuple[str, str] | None = None  # (shard id, sequence number) of the record, claimed for the letter
    complete: bool = True  # every shard was read through the span: not found means not put
    detail: str = ""


def list_all_shards(kinesis: Any, stream: str) -> list[dict[str, Any]]:
    """Every shard the stream still has records of, open or closed."""
    shards: list[dict[str, Any]] = []
    page = kinesis.list_shards(StreamName=stream)
    while True:
        shards += page["Shards"]
        token = page.get("NextToken")
        if not token:
            return shards
        page = kinesis.list_shards(NextToken=token)


def find_puts(
    kinesis: Any,
    stream: str,
    entries: Sequence[LedgerEntry],
    claim: Callable[[LedgerEntry, str, str], bool],
    *,
    now_ms: int,
    retention_ms: int,
    timing: Timing = DEFAULT_TIMING,
    sleep: Callable[[float], None] = time.sleep,
    max_calls_per_shard: int = 2_000,
) -> dict[str, SearchOutcome]:
    """Look for the records of these pending entries, by letter id. Each shard is read once, over the
    union of the spans of the entries it may hold (one crashed run's entries share nearly one span).

    `claim(entry, shard, sequence)` takes a matching record for the entry's letter; it refuses a record
    another letter with the same bytes and key claimed already, and the search goes on."""
    out: dict[str, SearchOutcome] = {}
    searchable: list[LedgerEntry] = []
    for entry in entries:
        if timing.span(entry.pending_ms)[0] < now_ms - retention_ms + RETENTION_MARGIN_MS:
            out[entry.letter_id] = SearchOutcome(complete=False, detail="the span is older than the stream's retention")
        else:
            searchable.append(entry)
    if not searchable:
        return out
    by_shard: dict[str, list[LedgerEntry]] = {}
    shards = list_all_shards(kinesis, stream)
    for entry in searchable:
        for shard_id in shards_for_key(shards, entry.partition_key):
            by_shard.setdefault(shard_id, []).append(entry)
    unread: dict[str, str] = {}  # letter id -> why one of its shards was not read through
    for shard_id, shard_entries in by_shard.items():
        wanted = [e for e in shard_entries if e.letter_id not in out]
        if wanted and not _search_shard(
            kinesis, stream, shard_id, wanted, claim, out, sleep, timing, max_calls_per_shard
        ):
            for entry in wanted:
                if entry.letter_id not in out:
                    unread[entry.letter_id] = f"{shard_id} was not read through the span in {max_calls_per_shard} calls"
    for entry in searchable:
        if entry.letter_id not in out:
            why = unread.get(entry.letter_id)
            out[entry.letter_id] = SearchOutcome(complete=False, detail=why) if why else SearchOutcome()
    return out


def _search_shard(
    kinesis: Any,
    stream: str,
    shard_id: str,
    entries: list[LedgerEntry],
    claim: Callable[[LedgerEntry, str, str], bool],
    out: dict[str, SearchOutcome],
    sleep: Callable[[float], None],
    timing: Timing,
    max_calls: int,
) -> bool:
    """Read the shard over the entries' spans, recording what is found in `out`; False if it could not
    be read through."""
    spans = {e.letter_id: timing.span(e.pending_ms) for e in entries}
    start_ms, end_ms = min(s for s, _ in spans.values()), max(e for _, e in spans.values())
    keys = {e.partition_key for e in entries}
    iterator: str | None = kinesis.get_shard_iterator(
        StreamName=stream,
        ShardId=shard_id,
        ShardIteratorType="AT_TIMESTAMP",
        Timestamp=datetime.fromtimestamp(start_ms / 1000, UTC),
    )["ShardIterator"]
    throttled = 0
    for _ in range(max_calls):
        if iterator is None or all(e.letter_id in out for e in entries):
            return True  # the end of a closed shard, or nothing left to look for
        try:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in THROTTLING_CODES:
                raise
            throttled += 1
            sleep(DEFAULT_BACKOFF.delay_s(throttled))
            continue
        throttled = 0
        for record in page["Records"]:
            arrival_ms = int(record["ApproximateArrivalTimestamp"].timestamp() * 1000)
            if arrival_ms > end_ms:
                return True
            if record["PartitionKey"] in keys:
                _match(shard_id, record, arrival_ms, entries, spans, claim, out)
        if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
            return True  # the tip: nothing arrived after the spans yet, and they are settled
        iterator = page.get("NextShardIterator")
    log.warning("dlq redrive: search gave up", extra={"shard": shard_id, "calls": max_calls})
    return False


def _match(
    shard_id: str,
    record: dict[str, Any],
    arrival_ms: int,
    entries: list[LedgerEntry],
    spans: dict[str, tuple[int, int]],
    claim: Callable[[LedgerEntry, str, str], bool],
    out: dict[str, SearchOutcome],
) -> None:
    """Give the record to the first letter it matches that claims it (a record stands for one letter)."""
    for entry in entries:
        low, high = spans[entry.letter_id]
        if (
            entry.letter_id not in out
            and low <= arrival_ms <= high
            and record_matches(entry, shard_id, record["SequenceNumber"], record["PartitionKey"], record["Data"])
            and claim(entry, shard_id, record["SequenceNumber"])
        ):
            out[entry.letter_id] = SearchOutcome(found=(shard_id, record["SequenceNumber"]))
            return
