"""Hostile input through the shard worker (issue 11): a record of too many invalid events is one letter and
counts nothing; dead letters and forwards are sent mid-batch past `max_pending_bytes`; a slow first attempt
still gets its retries; an item DynamoDB refuses as too large (moto) is folded into __other__ and written,
and the shard goes on; and, for any hostile records, every event is counted or dead-lettered exactly once
with at most `max_letters_per_record` letters per record."""

from __future__ import annotations

import gzip
import random
import string
from collections import Counter
from dataclasses import replace
from typing import Any

import boto3
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregations.dynamodb_store import DynamoDBStore, make_model
from aggregations.errors import StoreUnavailableError
from aggregations.memory_store import MemoryStore
from aggregations.metrics import OTHER_GROUP
from aggregations.partials import merge_partials
from consumer.bounds import Limits, to_json_bytes
from consumer.decode import decode_record
from consumer.dlq import DeadLetter
from consumer.dlq.memory import MemoryDeadLetterQueue
from consumer.errors import FatalError
from consumer.pipeline import Record
from consumer.reasons import Reason
from consumer.sinks.memory import MemorySink
from consumer.validate import READ_AGAIN, Invalid, check_event
from consumer.worker import Cadence, Outputs, ShardWorker, Stores
from delivery.backoff import Backoff
from devstack.resources import ensure_table
from streamkpi.config import AppConfig, default_config_text, load_config, parse_config
from tests.functional.test_processor import Rig, record

CONFIG = load_config(None)
ARRIVAL_MS = 1_764_000_000_000  # 2025-11-24T16:00:00Z
DAY = 86_400_000
CEILING = Backoff(random=lambda: 1.0)  # every retry delay at its ceiling: 0.1, 0.2, 0.4 ...
EAGER = Cadence(redis_flush_seconds=0, dynamodb_flush_seconds=0, checkpoint_seconds=0, store_retry_seconds=0)
LAZY = Cadence(redis_flush_seconds=3600, dynamodb_flush_seconds=3600, checkpoint_seconds=3600, store_retry_seconds=0)


def with_limits(text: str, **limits: Any) -> AppConfig:
    return parse_config(text, "test", Limits(**limits))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Shard:
    """One ShardWorker with in-memory stores, DLQ and archive sink."""

    def __init__(self, config: AppConfig = CONFIG, cadence: Cadence = EAGER, clock: Clock | None = None) -> None:
        self.durable, self.hot, self.dlq = MemoryStore("dynamodb"), MemoryStore("redis"), MemoryDeadLetterQueue()
        self.sink = MemorySink("archive")
        self.clock = clock or Clock()
        cadence = replace(cadence, clock=self.clock, sleep=self.clock.sleep, wall_ms=lambda: ARRIVAL_MS)
        stores, outputs = Stores(self.durable, self.hot), Outputs(self.dlq, sinks={"archive": self.sink})
        self.worker = ShardWorker("shard-0", "events", config.pipeline, stores, outputs, cadence)

    def counts(self, store: MemoryStore | None = None, resolution: str = "1d") -> Counter[str]:
        total: Counter[str] = Counter()
        for (res, _, _), partial in (store or self.durable).items.items():
            if res == resolution:
                total.update(merge_partials([partial]).get("events", {}))
        return total


def deep(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def event(event_type: str = "click", offset_ms: int = -60_000, **extra: Any) -> dict[str, Any]:
    return {"eventType": event_type, "timestamp": ARRIVAL_MS + offset_ms, **extra}


def in_record(data: bytes, seq: int, key: str = "pk") -> Record:
    return (data, str(seq), 0, key, ARRIVAL_MS)


# -- letters per record -----------------------------------------------------------------------------------------

VALID_50 = [event("click")] * 30 + [event("page.view", path="/p")] * 10 + [event("scroll", -3 * DAY)] * 10  # 10 late
NEXT = [event("search"), event("search", -3 * DAY)]


def invalid_kinds() -> dict[str, list[bytes]]:
    missing = orjson.dumps({"timestamp": ARRIVAL_MS})  # validation: missing_field
    future = orjson.dumps(event(offset_ms=3_600_000))  # validation: in_future
    return {
        "validation": [missing] * 60 + [future] * 41,
        "decode": [b"1"] * 50 + [b"not json"] * 51,
        "decode+validation": [b"[]"] * 60 + [missing] * 41,
        "bounds+validation": [orjson.dumps(event(data=deep(CONFIG.limits.max_depth)))] * 50 + [future] * 51,
    }


@pytest.mark.parametrize("kind", list(invalid_kinds()))
@pytest.mark.parametrize("form", ["ndjson", "gzip-ndjson", "array"])
def test_50_valid_and_101_invalid_events_are_one_letter_and_count_nothing(kind: str, form: str) -> None:
    lines = [orjson.dumps(e) for e in VALID_50] + invalid_kinds()[kind]
    random.Random(kind + form).shuffle(lines)
    if form == "array":
        data = b"[" + b",".join(lines).replace(b"not json", b'"not json"') + b"]"
    else:
        data = b"\n".join(lines) + b"\n"
        data = gzip.compress(data) if form == "gzip-ndjson" else data
    shard = Shard(cadence=LAZY)
    shard.worker.process([in_record(data, 7, "hostile"), in_record(orjson.dumps(NEXT), 8, "next")])
    shard.worker.flush_durable()

    [letter] = shard.dlq.letters
    assert (letter.reason, letter.index, letter.sequence_number, letter.events) == (
        Reason.TOO_MANY_INVALID,
        0,
        "7",
        151,
    )
    assert letter.payload == data
    assert letter.detail.startswith("101 of the record's 151 events are invalid, more than 100 letters per record")
    # Nothing of record 7 is counted or forwarded; record 8 is, in full (its late event too).
    assert shard.counts() == {"search": 2}
    assert shard.counts(shard.hot) == {"search": 2}
    assert shard.counts(resolution="1m") == {"search": 1}
    assert [key for key, _ in shard.sink.events] == ["next", "next"]
    stats = shard.worker.stats
    assert (stats.events, stats.rejected, stats.dead_letters_sent, stats.forwarded) == (2, 1, 1, 2)
    assert shard.worker.pending_bytes == 0


def test_100_invalid_events_are_100_letters_and_the_valid_ones_count() -> None:
    missing = orjson.dumps({"timestamp": ARRIVAL_MS})
    data = b"\n".join([orjson.dumps(e) for e in VALID_50] + [missing] * 60 + [b"7"] * 40)
    shard = Shard()
    shard.worker.process([in_record(data, 7)])
    shard.worker.flush_durable()
    assert len(shard.dlq.letters) == 100
    assert Counter(letter.reason for letter in shard.dlq.letters) == {"missing_field": 60, "not_object": 40}
    assert all(letter.events is None for letter in shard.dlq.letters)
    assert sorted(letter.index for letter in shard.dlq.letters) == list(range(50, 150))
    assert {letter.payload for letter in shard.dlq.letters} == {missing, b"7"}  # each its own line only
    assert shard.counts() == {"click": 30, "page.view": 10, "scroll": 10}
    assert len(shard.sink.events) == 50


def test_a_record_letter_in_the_middle_of_a_batch_leaves_its_neighbours_intact() -> None:
    missing = orjson.dumps({"timestamp": ARRIVAL_MS})
    bad = b"\n".join([orjson.dumps(event("bad"))] * 300 + [missing] * 101)  # 300 valid: past the fold chunk
    shard = Shard(cadence=LAZY)
    before = [in_record(orjson.dumps([event("a")] * 250), 1, "a")]
    after = [in_record(orjson.dumps([event("b")] * 3), 3, "b"), in_record(b"junk", 4, "c")]
    shard.worker.process([*before, in_record(bad, 2, "bad"), *after])
    shard.worker.flush_durable()
    assert [(x.sequence_number, x.reason, x.events) for x in shard.dlq.letters] == [
        ("2", "too_many_invalid", 401),
        ("4", "not_json", None),
    ]
    assert shard.counts() == {"a": 250, "b": 3}
    assert Counter(key for key, _ in shard.sink.events) == {"a": 250, "b": 3}


# -- dead letters and forwards held in memory -----------------------------------------------------------------------


def test_letters_and_forwards_past_max_pending_bytes_are_sent_during_the_batch() -> None:
    config = with_limits(default_config_text(), max_pending_bytes=1_000)
    shard = Shard(config, LAZY)
    junk = [b"x" * 500 + str(n).encode() for n in range(6)]  # 501-byte not_json letters
    valid = orjson.dumps(event("click"))
    records = []
    for n, payload in enumerate(junk):
        records += [in_record(payload, 2 * n + 1), in_record(valid, 2 * n + 2, f"valid-{n}")]
    shard.worker.process(records[:3])
    # More than 1,000 bytes held after the third record (501 + a forward + 501): all of it is sent.
    assert [letter.payload for letter in shard.dlq.letters] == junk[:2]
    assert [key for key, _ in shard.sink.events] == ["valid-0"]
    assert shard.worker.pending_bytes == 0
    shard.worker.process(records[3:])
    assert [letter.payload for letter in shard.dlq.letters] == junk
    assert [key for key, _ in shard.sink.events] == [f"valid-{n}" for n in range(5)]
    assert shard.worker.pending_bytes == len(valid)  # the last forward, under the limit, waits
    assert not shard.worker.durable_due()
    assert shard.durable.items == {}  # DynamoDB is written at the durable flush only
    shard.worker.flush_durable()
    assert [key for key, _ in shard.sink.events] == [f"valid-{n}" for n in range(6)]
    assert shard.counts() == {"click": 6}
    stats = shard.worker.stats
    assert (stats.dead_letters_sent, stats.forwarded, stats.events) == (6, 6, 6)


def test_pending_bytes_exactly_at_the_limit_are_held() -> None:
    config = with_limits(default_config_text(), max_pending_bytes=1_000)
    shard = Shard(config, LAZY)
    shard.worker.process([in_record(b"y" * 500, 1), in_record(b"z" * 500, 2)])
    assert shard.dlq.letters == [] and shard.worker.pending_bytes == 1_000
    assert not shard.worker.durable_due()
    shard.worker.process([in_record(b"w", 3)])
    assert [letter.sequence_number for letter in shard.dlq.letters] == ["1", "2", "3"]
    assert shard.worker.pending_bytes == 0


def test_a_record_letter_releases_the_pending_bytes_of_the_letters_it_replaces() -> None:
    config = with_limits(default_config_text(), max_pending_bytes=1_000_000)
    shard = Shard(config, LAZY)
    missing = orjson.dumps({"timestamp": ARRIVAL_MS, "pad": "q" * 100})
    data = b"\n".join([orjson.dumps(event("click"))] * 5 + [missing] * 101)
    shard.worker.process([in_record(data, 1)])
    # One letter of the raw record; nothing of the 101 line letters nor of the 5 forwards is held.
    assert [(x.reason, x.events, x.payload) for x in shard.worker.pending_letters] == [("too_many_invalid", 106, data)]
    assert shard.worker.pending_bytes == len(data)
    assert shard.worker.pending_forwards == {}
    shard.worker.flush_durable()
    assert shard.sink.events == [] and shard.counts() == {}


# -- retries ----------------------------------------------------------------------------------------------------------


def test_a_slow_first_attempt_that_fails_once_is_retried() -> None:
    clock = Clock()
    shard = Shard(cadence=Cadence(store_retry_seconds=5.0, backoff=CEILING), clock=clock)
    attempts: list[float] = []

    def action() -> str:
        attempts.append(clock.now)
        if len(attempts) == 1:
            clock.now += 6.0  # longer than store_retry_seconds, then it fails
            raise StoreUnavailableError("timed out after 6 s")
        return "written"

    assert shard.worker._retry("write partials to DynamoDB", action) == "written"
    assert attempts == [0.0, 6.1]
    assert clock.sleeps == [0.1]


def test_retries_give_up_store_retry_seconds_after_the_first_failure() -> None:
    clock = Clock()
    clock.now = 100.0
    shard = Shard(cadence=Cadence(store_retry_seconds=1.0, backoff=CEILING), clock=clock)
    attempts = 0

    def action() -> None:
        nonlocal attempts
        attempts += 1
        raise StoreUnavailableError("down")

    with pytest.raises(FatalError, match="still failing after 4 attempts: down"):
        shard.worker._retry("send dead letters", action)
    assert attempts == 4
    assert clock.sleeps == [0.1, 0.2, 0.4]  # the next wait, 0.8 s, would end past 101 s


# -- an item DynamoDB refuses as too large (moto) -------------------------------------------------------------------

TABLE = "metrics"
WIDE_CONFIG_TEXT = """
[[resolutions]]
name = "1m"
dynamodb_retention = "48h"
redis_retention = "6h"
[[resolutions]]
name = "1h"
dynamodb_retention = "90d"
redis_retention = "7d"
[metrics.page_views]
agg = "count"
types = ["page.view"]
by = ["path"]
max_groups = 100000
"""


def random_paths(n: int, length: int) -> list[str]:
    rng = random.Random(400)
    alphabet = string.ascii_letters + string.digits + "-_"
    return ["/" + "".join(rng.choice(alphabet) for _ in range(length - 1)) for _ in range(n)]


def test_an_item_dynamodb_refuses_as_too_large_is_folded_into_other_and_the_shard_goes_on(moto: None) -> None:
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    ensure_table(dynamodb, TABLE, [("pk", "S", "HASH"), ("sk", "S", "RANGE")], "expires_at")
    # No byte budget to speak of, so the window's item really is over DynamoDB's 400 KB.
    config = with_limits(WIDE_CONFIG_TEXT, max_item_bytes=10**9)
    durable = DynamoDBStore(make_model(TABLE, "us-east-1", None), config.resolutions)
    hot, dlq = MemoryStore("redis"), MemoryDeadLetterQueue()
    cadence = replace(EAGER, wall_ms=lambda: ARRIVAL_MS)
    worker = ShardWorker("shard-0", "events", config.pipeline, Stores(durable, hot), Outputs(dlq), cadence)
    paths = random_paths(1_200, 500)
    lines = [orjson.dumps(event("page.view", path=p)) for p in paths]
    records = [in_record(b"\n".join(lines[n : n + 100]), 10 + n) for n in range(0, len(lines), 100)]
    worker.process(records)
    minute = ARRIVAL_MS - 60_000
    expected = {"page_views": {OTHER_GROUP: 1_200}, "events": {OTHER_GROUP: 1_200}}
    worker.flush_durable()  # refused as invalid (not an outage), folded, written again: no exception

    def stored(resolution: str, start: int) -> dict[str, Any]:
        [partial] = durable.read(resolution, [start])[start]
        return merge_partials([partial])

    assert stored("1m", minute) == expected
    assert stored("1h", minute - minute % 3_600_000) == expected
    for (_, _, _), partial in hot.items.items():
        assert merge_partials([partial]) == expected
    assert dlq.letters == []
    assert worker.stats.dynamodb_writes == 2
    # The shard goes on: more events in the same windows are counted and written.
    worker.process([in_record(orjson.dumps([event("page.view", path="/a")] * 3), 5_000)])
    worker.flush_durable()
    assert stored("1m", minute) == {
        "page_views": {OTHER_GROUP: 1_200, "/a": 3},
        "events": {OTHER_GROUP: 1_200, "page.view": 3},
    }
    assert worker.last_record == ("5000", 0)


# -- what the forward sinks take --------------------------------------------------------------------------------------

ORDERS_CONFIG_TEXT = (
    default_config_text()
    + '\n[sinks.orders]\ntype = "sqs"\nqueue = "orders.fifo"\n\n[[routes]]\ntypes = ["order.*"]\nsinks = ["orders"]\n'
)


def test_an_event_one_of_its_sinks_cannot_take_is_a_too_large_letter_and_counts_nowhere() -> None:
    config = with_limits(ORDERS_CONFIG_TEXT, max_event_bytes=400_000)
    archive, orders, dlq = MemorySink("archive"), MemorySink("orders"), MemoryDeadLetterQueue()
    stores = Stores(MemoryStore("dynamodb"), MemoryStore("redis"))
    outputs = Outputs(dlq, {"archive": archive, "orders": orders})
    cadence = replace(EAGER, wall_ms=lambda: ARRIVAL_MS)
    worker = ShardWorker("shard-0", "events", config.pipeline, stores, outputs, cadence)
    small = event("order.placed")
    big = event("order.placed", note="x" * 300_000)  # more than an SQS message takes, less than a Firehose record
    big_click = event("click", note="x" * 300_000)  # archived only
    worker.process([in_record(orjson.dumps([small, big]), 1, "pk-1"), in_record(orjson.dumps(big_click), 2, "pk-2")])
    worker.flush_durable()

    [letter] = dlq.letters
    body = orjson.dumps(big)
    assert (letter.reason, letter.sequence_number, letter.index, letter.payload) == (Reason.TOO_LARGE, "1", 1, body)
    assert letter.detail == f"event of {len(body)} bytes is larger than a forward sink accepts"
    # A FIFO queue's events carry their identity (its deduplication id); every sink gets the same bytes.
    assert orders.events == [("pk-1", orjson.dumps(small), "shard-0/1/0/0")]
    assert [(key, orjson.loads(data)) for key, data, *_ in archive.events] == [("pk-1", small), ("pk-2", big_click)]
    assert worker.stats.events == 2


def test_a_worker_does_not_start_without_every_sink_its_routes_name() -> None:
    pipeline = parse_config(ORDERS_CONFIG_TEXT, "orders").pipeline
    stores = Stores(MemoryStore("dynamodb"), MemoryStore("redis"))
    outputs = Outputs(MemoryDeadLetterQueue(), {"archive": MemorySink("archive")})
    with pytest.raises(ValueError, match=r"routes name sinks that were not built: \['orders'\]"):
        ShardWorker("shard-0", "events", pipeline, stores, outputs)


# -- through the KCL protocol ------------------------------------------------------------------------------------------


def test_hostile_records_through_the_processor_never_stop_it() -> None:
    rig = Rig()
    daemon = rig.start()
    deep_path = orjson.dumps(event("page.view", path=[])).replace(b"[]", b"[" * 1000 + b"]" * 1000)
    hostile = {
        101: (deep_path, "too_deep"),
        102: (orjson.dumps(event("page.view", path="/" + "x" * 600_000)), "too_large"),
        103: (orjson.dumps(event("page.view", path="/" + "x" * 600)), "value_too_long"),
        104: (gzip.compress(b"1\n" * (512 * 1024)), "too_large"),
        105: (gzip.compress(b"") * 50_000, "bad_compression"),
        106: (b"\n".join([b"1"] * 101), "too_many_invalid"),
        107: (orjson.dumps([event()] * 10_001), "too_many_events"),
        108: (orjson.dumps(event("click", userId="u" * 513)), "value_too_long"),
        109: (orjson.dumps(event("donation.made", data={"amount": 1e21, "currency": "GBP", "charityId": "c"})),
              "number_out_of_range"),
    }  # fmt: skip
    batch = [record(event("click"), 100)]
    batch += [record(data, seq) for seq, (data, _) in hostile.items()]
    batch += [record([event("click"), event("page.view", path="/ok")], 110)]
    daemon.records(batch)
    assert daemon.exit_code is None
    assert daemon.checkpoints == [("110", 0)]
    assert {(x.sequence_number, x.reason) for x in rig.dlq.letters} == {
        (str(seq), reason) for seq, (_, reason) in hostile.items()
    }
    assert len(rig.dlq.letters) == len(hostile)
    assert rig.counts(rig.durable) == rig.counts(rig.hot) == {"click": 2, "page.view": 1}
    assert "Traceback" not in daemon.errors.getvalue()
    daemon.close()


# -- the property --------------------------------------------------------------------------------------------------

LIMITS = Limits(
    max_depth=6,
    max_event_bytes=2_048,
    max_value_chars=40,
    max_events_per_record=30,
    max_letters_per_record=4,
    max_inflated_bytes=8_192,
    max_item_bytes=16_384,
    max_pending_bytes=3_000,
)
SMALL = parse_config(default_config_text(), "hostile", LIMITS)
WIDE_INTEGER = 18446744073709551617


amounts = st.sampled_from([0, 1, 12.5, 1e21, -1e21, 1e-21, 1e-20, 9.99e20, 10**21, WIDE_INTEGER, 2**70, -5])
# Strings around max_value_chars (40), values nested around max_depth (6), lists that group as long texts.
lengths = st.sampled_from([0, 1, 39, 40, 41, 60, 500])
strings = lengths.map(lambda n: "s" * n) | st.text(max_size=8)
group_values = strings | st.integers(0, 6).map(deep) | st.sampled_from([12, 13, 14, 30]).map(lambda n: [0] * n)
hostile_events = st.fixed_dictionaries(
    {
        "eventType": st.sampled_from(["click", "page.view", "donation.made"]),
        "timestamp": st.sampled_from(
            [ARRIVAL_MS - 1_000, ARRIVAL_MS - 3 * DAY, "2025-11-24T15:59:60Z", "soon", ARRIVAL_MS + DAY]
        ),
        "data": st.builds(
            lambda amount, depth, blob: {
                "amount": amount,
                "currency": "GBP",
                "charityId": "c",
                "x": deep(depth),
                "blob": "b" * blob,
            },
            amounts,
            st.sampled_from([1, 1, 2, 3, 4, 5]),  # within data, within the event: 4 is the deepest allowed
            st.sampled_from([0, 0, 0, 10, 1_900, 2_100]),  # around max_event_bytes (2,048)
        ),
    },
    optional={"path": group_values, "userId": strings},
)
garbage = st.sampled_from([b"1", b"nope", b"[]", b'"s"', b"\xff"])
lines = st.lists(hostile_events.map(to_json_bytes) | garbage, min_size=1, max_size=40)
payloads = st.one_of(
    st.binary(max_size=100),
    hostile_events.map(to_json_bytes),
    st.lists(hostile_events | st.integers() | st.none(), max_size=35).map(to_json_bytes),
    lines.map(b"\n".join),
    lines.map(lambda ls: gzip.compress(b"\n".join(ls))),
    st.sampled_from([2, 4, 5, 30, 31, 4_096, 4_097, 20_000]).map(lambda n: gzip.compress(b"1\n" * n)),
    st.sampled_from([1, 999, 1_000, 1_001, 1_200]).map(lambda n: gzip.compress(b"") * n),
    st.sampled_from([1, 100, 1_000]).map(lambda n: gzip.compress(orjson.dumps(event()) + b"\n") * n),
)


def expected_outcome(r: Record) -> tuple[int, int, int | None]:
    """Independently of the worker's loop: (items of the record, its invalid items, the `events` of the one
    letter standing for the whole record, or None when its invalid items are dead-lettered one by one)."""
    limits, rules = SMALL.limits, SMALL.rules
    data, _, _, _, arrival_ms = r
    decoded = decode_record(data, limits)
    items = len(decoded.objects) + len(decoded.rejections)
    if len(decoded.rejections) == 1 and decoded.rejections[0].events is not None:
        return items, 1, decoded.rejections[0].events
    verdicts = [check_event(obj, arrival_ms, rules) for _, obj in decoded.objects]
    if any(v is READ_AGAIN for v in verdicts):  # a summed integer past 64 bits: the record is read exactly
        decoded = decode_record(data, limits, exact=True)
        verdicts = [check_event(obj, arrival_ms, rules, exact=True) for _, obj in decoded.objects]
    assert READ_AGAIN not in verdicts
    invalid = len(decoded.rejections) + sum(type(v) is Invalid for v in verdicts)
    return items, invalid, items if invalid > LIMITS.max_letters_per_record else None


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(payloads, min_size=1, max_size=6), st.booleans())
def test_hostile_records_are_counted_or_dead_lettered_exactly_once_with_bounded_letters(
    datas: list[bytes], one_batch: bool
) -> None:
    shard = Shard(SMALL, LAZY)
    records = [in_record(data, 100 + n, f"pk-{100 + n}") for n, data in enumerate(datas)]
    if one_batch:
        shard.worker.process(records)
    else:
        for r in records:
            shard.worker.process([r])
    shard.worker.flush_durable()

    letters: dict[str, list[DeadLetter]] = {}
    for letter in shard.dlq.letters:
        letters.setdefault(letter.sequence_number, []).append(letter)
    forwarded = Counter(key for key, _ in shard.sink.events)
    for r in records:
        data, seq, _, partition_key, _ = r
        items, invalid, whole = expected_outcome(r)
        mine, sent = letters.get(seq, []), forwarded[partition_key]
        if whole is not None:
            [letter] = mine
            assert (letter.index, letter.events, letter.payload) == (0, whole, data), letter
            assert sent == 0
        else:
            assert len(mine) == invalid <= LIMITS.max_letters_per_record
            assert all(letter.events is None for letter in mine)
            assert len({letter.index for letter in mine}) == len(mine), "one letter per item"
            assert sent + len(mine) == items
    counted = sum(shard.counts().values())
    assert counted == len(shard.sink.events) == shard.worker.stats.events
    assert shard.counts(shard.hot) == shard.counts()
    assert shard.worker.stats.rejected == len(shard.dlq.letters) == shard.worker.stats.dead_letters_sent
    assert shard.worker.pending_bytes == 0
