"""The redrive ledger's pure parts (deadletters/ledger.py): decisions, the search span, the shard a
partition key hashes to, and the in-memory ledger's conditions."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from deadletters.ledger import (
    DEFAULT_TIMING,
    Action,
    MemoryRedriveLedger,
    RedriveLedger,
    Timing,
    decide,
    new_entry,
    origin,
    partition_hash,
    record_matches,
    shards_for_key,
)

T0 = 1_800_000_000_000
ENTRY = new_entry("events", "shardId-0/1/0/0", "run-a", T0, "user-1", b'{"eventType":"x"}')
MAX_HASH = 2**128 - 1


def test_decide_by_entry_and_time() -> None:
    # pending at T0 ─ put window (60 s) ─ settle (120 s) ─► settled: search from here on
    #   |<------ WAIT ------------------------------------->|<- SEARCH ...
    # the search reads arrivals from T0 - skew (30 s) to the settled time
    timing = Timing(put_window_ms=60_000, settle_ms=120_000, skew_ms=30_000)
    assert decide(None, T0, timing) is Action.PUT
    assert decide(replace(ENTRY, state="done"), T0, timing) is Action.DUPLICATE
    assert decide(ENTRY, T0, timing) is Action.WAIT
    assert decide(ENTRY, T0 + 179_999, timing) is Action.WAIT
    assert decide(ENTRY, T0 + 180_000, timing) is Action.SEARCH
    assert timing.span(T0) == (T0 - 30_000, T0 + 180_000)


@given(pending=st.integers(0, 2**45), elapsed=st.integers(0, 2**30))
def test_no_search_while_the_owner_may_still_put(pending: int, elapsed: int) -> None:
    entry = replace(ENTRY, pending_ms=pending)
    now = pending + elapsed
    if now < DEFAULT_TIMING.put_deadline_ms(entry.pending_ms):  # the owner may still put
        assert decide(entry, now) is Action.WAIT
        # A put sent now lands (within settle_ms) inside the span a later search reads.
        low, high = DEFAULT_TIMING.span(pending)
        assert low <= now and now + DEFAULT_TIMING.settle_ms <= high


def test_new_entries_expire_a_day_after_the_queue_forgets() -> None:
    assert ENTRY.expires_at == T0 // 1000 + 15 * 86_400
    assert ENTRY.payload_sha256 == hashlib.sha256(b'{"eventType":"x"}').hexdigest()


def test_record_matches_only_the_same_key_and_bytes_and_never_the_letters_own_record() -> None:
    assert origin("shardId-0/1/0/0") == ("shardId-0", "1")
    assert record_matches(ENTRY, "shardId-0", "2", "user-1", b'{"eventType":"x"}')
    assert record_matches(ENTRY, "shardId-1", "1", "user-1", b'{"eventType":"x"}')
    assert not record_matches(ENTRY, "shardId-0", "1", "user-1", b'{"eventType":"x"}')  # where it came from
    assert not record_matches(ENTRY, "shardId-0", "2", "user-2", b'{"eventType":"x"}')
    assert not record_matches(ENTRY, "shardId-0", "2", "user-1", b'{"eventType":"y"}')


def test_partition_hash_is_md5_as_an_integer() -> None:
    assert partition_hash("") == 0xD41D8CD98F00B204E9800998ECF8427E
    assert partition_hash("é") == int(hashlib.md5("é".encode()).hexdigest(), 16)


def shard(shard_id: str, low: int, high: int) -> dict[str, object]:
    return {"ShardId": shard_id, "HashKeyRange": {"StartingHashKey": str(low), "EndingHashKey": str(high)}}


def test_shards_for_key_after_a_split_names_the_parent_and_the_child() -> None:
    middle = 2**127
    shards = [shard("parent", 0, MAX_HASH), shard("low", 0, middle - 1), shard("high", middle, MAX_HASH)]
    for key in (f"user-{n}" for n in range(50)):
        child = "low" if partition_hash(key) < middle else "high"
        assert shards_for_key(shards, key) == ["parent", child]
    edge = [shard("a", 0, partition_hash("k") - 1), shard("b", partition_hash("k"), partition_hash("k"))]
    assert shards_for_key(edge, "k") == ["b"]


def test_memory_ledger_conditions() -> None:
    check_ledger_conditions(MemoryRedriveLedger())


def check_ledger_conditions(ledger: RedriveLedger) -> None:
    """The contract every ledger keeps (the DynamoDB one is checked against moto with this too)."""
    assert ledger.begin(ENTRY)
    assert not ledger.begin(replace(ENTRY, run_id="run-b"))  # one run per letter
    later = replace(ENTRY, run_id="run-b", pending_ms=T0 + 200_000)
    assert not ledger.take_over(replace(ENTRY, pending_ms=T0 - 1), later)  # it changed since it was read
    assert ledger.take_over(ENTRY, later)
    assert not ledger.take_over(ENTRY, later)  # only once
    ledger.abort(ENTRY)  # run-a no longer owns it: nothing happens
    assert ledger.get("events", [ENTRY.letter_id]) == {ENTRY.letter_id: later}
    assert ledger.claim(later, "shardId-0", "7")
    assert ledger.claim(later, "shardId-0", "7")  # the same letter again
    assert not ledger.claim(replace(later, letter_id="other"), "shardId-0", "7")
    ledger.finish(later, "shardId-0", "7")
    done = ledger.get("events", [ENTRY.letter_id])[ENTRY.letter_id]
    assert done.done and (done.shard_id, done.sequence_number) == ("shardId-0", "7")
    ledger.abort(later)  # a done entry stays
    assert ledger.get("events", [ENTRY.letter_id])
    ledger.finish(replace(ENTRY, letter_id="never-begun"), "shardId-0", "8")  # never creates an entry
    assert ledger.get("events", ["never-begun"]) == {}
