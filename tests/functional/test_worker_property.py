"""Any bytes as record data give counted events and/or dead letters: never an exception, never a loss."""

from __future__ import annotations

import gzip

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregations.memory_store import MemoryStore
from aggregations.partials import merge_partials
from consumer.decode import decode_record
from consumer.dlq.memory import MemoryDeadLetterQueue
from consumer.sinks.memory import MemorySink
from consumer.worker import Cadence, Outputs, ShardWorker, Stores
from streamkpi.config import load_config

CONFIG = load_config(None)
ARRIVAL_MS = 1_764_000_000_000
EAGER = Cadence(redis_flush_seconds=0, dynamodb_flush_seconds=0, checkpoint_seconds=0, store_retry_seconds=0)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
events = st.fixed_dictionaries(
    {
        "eventType": st.sampled_from(["click", "page.view", "donation.made", "", 42]),
        "timestamp": st.sampled_from([ARRIVAL_MS - 1000, "2025-11-24T16:00:00Z", "soon", ARRIVAL_MS + 10**9]),
    },
    optional={"data": json_values, "userId": st.text(max_size=4) | st.integers(0, 99)},
)
payloads = st.one_of(
    st.binary(max_size=200),
    events.map(orjson.dumps),
    st.lists(events | json_values, max_size=5).map(orjson.dumps),
    st.lists(events, min_size=2, max_size=5).map(lambda es: b"\n".join(orjson.dumps(e) for e in es)),
    st.lists(events, max_size=4).map(lambda es: gzip.compress(orjson.dumps(es))),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payloads, min_size=1, max_size=8))
def test_every_item_of_any_record_is_counted_or_dead_lettered_exactly_once(datas: list[bytes]) -> None:
    durable, hot, dlq, sink = (
        MemoryStore("dynamodb"),
        MemoryStore("redis"),
        MemoryDeadLetterQueue(),
        MemorySink("archive"),
    )
    worker = ShardWorker("shard-0", "s", CONFIG.pipeline, Stores(durable, hot), Outputs(dlq, {"archive": sink}), EAGER)
    records = [(data, str(100 + i), 0, "pk", ARRIVAL_MS) for i, data in enumerate(datas)]
    worker.process(records)
    worker.flush_durable()

    expected_items = set()
    for data, seq, *_ in records:
        decoded = decode_record(data)
        expected_items |= {(seq, index) for index, _ in decoded.objects}
        expected_items |= {(seq, r.index) for r in decoded.rejections}
    letters = {(letter.sequence_number, letter.index) for letter in dlq.letters}
    assert len(letters) == len(dlq.letters), "one letter per rejected item"
    counted = sum(
        sum(merge_partials([p]).get("events", {}).values()) for (res, _, _), p in durable.items.items() if res == "1m"
    )
    # Every decoded item is either a dead letter or a counted (and forwarded) event, never both, never neither.
    assert counted + len(letters) == len(expected_items)
    assert len(sink.events) == counted
    assert worker.stats.events == counted
