"""The search for an interrupted redrive's records (deadletters/search.py) over a small fake
Kinesis whose records have arrival times a test chooses."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from deadletters.ledger import DEFAULT_TIMING, MemoryRedriveLedger, new_entry
from deadletters.search import find_puts

T0 = 1_800_000_000_000
HOUR = 3_600_000
PAYLOAD = b'{"eventType":"page.view"}'
ALL_KEYS = {"ShardId": "shardId-0", "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": str(2**128 - 1)}}


class FakeKinesis:
    """One shard; GetRecords pages of `page` records; AT_TIMESTAMP as Kinesis does it."""

    def __init__(self, records: list[tuple[int, str, bytes]], page: int = 2, throttle: int = 0) -> None:
        # (arrival ms, partition key, data); sequence numbers are positions
        self.records = sorted(records)
        self.page, self.throttle, self.calls = page, throttle, 0

    def list_shards(self, **kwargs: Any) -> dict[str, Any]:
        return {"Shards": [ALL_KEYS]}

    def get_shard_iterator(self, *, ShardIteratorType: str, Timestamp: datetime, **kwargs: Any) -> dict[str, Any]:
        assert ShardIteratorType == "AT_TIMESTAMP"
        at = int(Timestamp.timestamp() * 1000)
        return {"ShardIterator": str(next((n for n, r in enumerate(self.records) if r[0] >= at), len(self.records)))}

    def get_records(self, *, ShardIterator: str, Limit: int) -> dict[str, Any]:
        self.calls += 1
        if self.throttle:
            self.throttle -= 1
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "GetRecords")
        start = int(ShardIterator)
        chunk = self.records[start : start + min(Limit, self.page)]
        end = start + len(chunk)
        return {
            "Records": [
                {
                    "SequenceNumber": str(start + n),
                    "PartitionKey": key,
                    "Data": data,
                    "ApproximateArrivalTimestamp": datetime.fromtimestamp(ms / 1000, UTC),
                }
                for n, (ms, key, data) in enumerate(chunk)
            ],
            "NextShardIterator": str(end),
            "MillisBehindLatest": 0 if end == len(self.records) else 1000,
        }


def entry(n: int, pending_ms: int, key: str = "user-1", payload: bytes = PAYLOAD) -> Any:
    return new_entry("events", f"shardId-0/{900 + n}/0/0", f"run-{n}", pending_ms, key, payload)


def search(kinesis: FakeKinesis, entries: list[Any], ledger: MemoryRedriveLedger | None = None, **kw: Any) -> Any:
    ledger = ledger or MemoryRedriveLedger()
    kw.setdefault("now_ms", T0 + HOUR)
    kw.setdefault("retention_ms", 24 * HOUR)
    return find_puts(kinesis, "events", entries, ledger.claim, sleep=lambda s: None, **kw)


def noise(start_ms: int, count: int) -> list[tuple[int, str, bytes]]:
    return [(start_ms + n * 1000, f"other-{n}", b"{}") for n in range(count)]


def test_each_record_is_found_by_the_letter_whose_span_holds_it() -> None:
    # A pending at T0, B (same bytes, same key) at T0 + 10 min; only B was put (at T0 + 10 min + 1 s).
    #   A's span  [T0-30s ........ T0+3m]
    #   B's span                          [T0+9m30s ........ T0+13m]     record of B: T0+10m1s
    a, b = entry(1, T0), entry(2, T0 + 600_000)
    kinesis = FakeKinesis([*noise(T0 - 60_000, 5), (T0 + 601_000, "user-1", PAYLOAD), *noise(T0 + 700_000, 3)])
    found = search(kinesis, [a, b])
    assert found[a.letter_id].found is None and found[a.letter_id].complete
    assert found[b.letter_id].found == ("shardId-0", "5")


def test_a_record_claimed_by_another_letter_does_not_count() -> None:
    ledger = MemoryRedriveLedger()
    a, b = entry(1, T0), entry(2, T0 + 1_000)
    kinesis = FakeKinesis([(T0 + 500, "user-1", PAYLOAD)])
    assert ledger.claim(a, "shardId-0", "0")  # a's run put it, claimed it, and died before "done"
    found = search(kinesis, [b], ledger)
    assert found[b.letter_id].found is None and found[b.letter_id].complete
    assert search(kinesis, [a], ledger)[a.letter_id].found == ("shardId-0", "0")  # its own claim


def test_the_letters_own_record_and_earlier_copies_are_not_its_put() -> None:
    # The letter came from the record at sequence 1 (one event: the same key and bytes), 1 s before it
    # was written down; a producer's copy arrived 40 s before, outside the span.
    own = replace(entry(1, T0), letter_id="shardId-0/1/0/0")
    kinesis = FakeKinesis([(T0 - 40_000, "user-1", PAYLOAD), (T0 - 1_000, "user-1", PAYLOAD)])
    found = search(kinesis, [own])
    assert found[own.letter_id].found is None and found[own.letter_id].complete


def test_a_shard_not_read_through_the_span_answers_nothing() -> None:
    e = entry(1, T0)
    kinesis = FakeKinesis(noise(T0, 20), page=2)
    outcome = search(kinesis, [e], max_calls_per_shard=3)[e.letter_id]
    assert not outcome.complete and "not read through" in outcome.detail
    assert search(FakeKinesis(noise(T0, 20), page=2), [e])[e.letter_id].complete


def test_throttled_reads_are_retried() -> None:
    e = entry(1, T0)
    kinesis = FakeKinesis([(T0 + 1_000, "user-1", PAYLOAD)], throttle=2)
    assert search(kinesis, [e])[e.letter_id].found == ("shardId-0", "0")
    assert kinesis.calls == 3


def test_a_span_past_the_stream_retention_cannot_be_searched() -> None:
    e = entry(1, T0)
    kinesis = FakeKinesis([(T0 + 1_000, "user-1", PAYLOAD)])
    outcome = search(kinesis, [e], now_ms=T0 + 24 * HOUR)[e.letter_id]
    assert not outcome.complete and "retention" in outcome.detail
    assert kinesis.calls == 0
    assert search(kinesis, [e], now_ms=T0 + DEFAULT_TIMING.settled_ms(0) + HOUR)[e.letter_id].found
