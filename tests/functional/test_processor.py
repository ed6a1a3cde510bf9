"""The record processor driven through amazon_kclpy's KCLProcess (as KCLReader, its production form, and as
the library ships it), with in-memory stores."""

from __future__ import annotations

import gzip
from dataclasses import replace

import orjson
import pytest
from amazon_kclpy import kcl

from aggregations.memory_store import MemoryStore
from aggregations.partials import merge_partials
from consumer.dlq.memory import MemoryDeadLetterQueue
from consumer.health.memory import MemoryHealth
from consumer.processor import RecordProcessor
from consumer.protocol import KCLReader
from consumer.reasons import Reason
from consumer.sinks.memory import MemorySink
from consumer.worker import Cadence, Outputs, ShardWorker, Stores
from streamkpi.config import default_config_text, load_config, parse_config
from tests.functional.kcl_harness import FakeDaemon, ProcessorExited, kinesis_record, raising_exit

ARRIVAL_MS = 1_764_000_000_000
EAGER = Cadence(redis_flush_seconds=0, dynamodb_flush_seconds=0, checkpoint_seconds=0, store_retry_seconds=0)
LAZY = Cadence(redis_flush_seconds=3600, dynamodb_flush_seconds=3600, checkpoint_seconds=3600, store_retry_seconds=0)


class Rig:
    def __init__(self, cadence: Cadence = EAGER) -> None:
        self.durable, self.hot, self.dlq = MemoryStore("dynamodb"), MemoryStore("redis"), MemoryDeadLetterQueue()
        self.sink, self.health = MemorySink("archive"), MemoryHealth()
        self.config = load_config(None)
        self.cadence = cadence

    def factory(self, shard_id: str) -> ShardWorker:
        stores = Stores(self.durable, self.hot)
        outputs = Outputs(self.dlq, sinks={"archive": self.sink}, health=self.health)
        cadence = replace(self.cadence, wall_ms=lambda: ARRIVAL_MS + 1000)
        return ShardWorker(shard_id, "events", self.config.pipeline, stores, outputs, cadence)

    def start(self, process_class: type[kcl.KCLProcess] = KCLReader) -> FakeDaemon:
        processor = RecordProcessor(self.factory, sleep=lambda s: None, exit=raising_exit)
        daemon = FakeDaemon(processor, process_class)
        daemon.initialize()
        return daemon

    def counts(self, store: MemoryStore, resolution: str = "1m") -> dict[str, int]:
        total: dict[str, int] = {}
        for (res, _start, _shard), partial in store.items.items():
            if res == resolution:
                for group, value in merge_partials([partial]).get("events", {}).items():
                    total[group] = total.get(group, 0) + value
        return total


def event(event_type: str = "click", offset_ms: int = 0, **extra: object) -> dict:
    return {"eventType": event_type, "timestamp": ARRIVAL_MS - 60_000 + offset_ms, **extra}


def record(payload: object, seq: int) -> dict:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return kinesis_record(data, seq, ARRIVAL_MS)


@pytest.mark.parametrize("process_class", [KCLReader, kcl.KCLProcess], ids=["KCLReader", "amazon_kclpy"])
def test_valid_events_of_every_record_form_are_counted_then_checkpointed(process_class: type[kcl.KCLProcess]) -> None:
    rig = Rig()
    daemon = rig.start(process_class)
    ndjson = b"\n".join(orjson.dumps(event("page.view")) for _ in range(3))
    daemon.records(
        [
            record(event("click"), 1),
            record([event("click"), event("scroll")], 2),
            record(ndjson, 3),
            record(
                gzip.compress(
                    orjson.dumps([event("donation.made", data={"amount": 5, "currency": "GBP", "charityId": "c1"})])
                ),
                4,
            ),
        ]
    )
    assert rig.counts(rig.durable) == {"click": 2, "scroll": 1, "page.view": 3, "donation.made": 1}
    assert rig.counts(rig.hot) == rig.counts(rig.durable)
    assert daemon.checkpoints == [("4", 0)]
    daemon.close()


def test_rejected_events_reach_the_dlq_before_the_checkpoint_passes_them() -> None:
    rig = Rig()
    daemon = rig.start()
    daemon.records(
        [
            record(b"\xff\xfenot utf8", 10),
            record(b'{"eventType": "click", ', 11),
            record([event("click"), {"timestamp": ARRIVAL_MS}, 42], 12),
            record(event("click", offset_ms=3_600_000), 13),  # an hour after arrival: in_future
        ]
    )
    reasons = {(letter.sequence_number, letter.index): letter.reason for letter in rig.dlq.letters}
    assert reasons == {
        ("10", 0): "not_utf8",
        ("11", 0): "not_json",
        ("12", 1): "missing_field",
        ("12", 2): "not_object",
        ("13", 0): "in_future",
    }
    by_id = {letter.identity: letter for letter in rig.dlq.letters}
    assert by_id["shardId-000000000000/10/0/0"].payload == b"\xff\xfenot utf8"
    assert orjson.loads(by_id["shardId-000000000000/12/0/2"].payload) == 42
    assert rig.counts(rig.durable) == {"click": 1}
    assert daemon.checkpoints == [("13", 0)]
    daemon.close()


def test_shutdown_requested_flushes_and_checkpoints_what_is_durable() -> None:
    rig = Rig(LAZY)
    daemon = rig.start()
    daemon.records([record(event(), 5), record(event(), 6)])
    assert daemon.checkpoints == [] and rig.durable.items == {}
    daemon.send({"action": "shutdownRequested"})
    assert rig.counts(rig.durable) == {"click": 2}
    assert daemon.checkpoints == [("6", 0)]
    daemon.close()


def test_shard_end_checkpoints_shard_end_after_flushing() -> None:
    rig = Rig(LAZY)
    daemon = rig.start()
    daemon.records([record(event(), 7)])
    daemon.send({"action": "shardEnded"})
    assert rig.counts(rig.durable) == {"click": 1}
    assert daemon.checkpoints == [(None, None)]  # no sequence number = SHARD_END
    daemon.close()


def test_a_shard_reports_health_as_soon_as_it_is_initialized() -> None:
    """Before any record: a processor that hangs in its first batch then goes silent, and `streamkpi health`
    (which judges the shards that reported) sees it."""
    rig = Rig(LAZY)
    daemon = rig.start()
    assert rig.health.shards["shardId-000000000000"]["events"] == 0
    daemon.close()


def test_the_last_health_report_of_an_ended_shard_says_it_ended() -> None:
    rig = Rig(LAZY)
    daemon = rig.start()
    daemon.records([record(event(), 7)])
    assert rig.health.shards.get("shardId-000000000000", {}).get("endedMs") is None
    daemon.send({"action": "shardEnded"})
    # Readers (the dashboard, /metrics, alerts) tell a resharded parent from a shard whose worker stopped.
    assert rig.health.shards["shardId-000000000000"]["endedMs"] is not None
    daemon.close()


def test_throttled_checkpoint_is_retried() -> None:
    rig = Rig()
    daemon = rig.start()
    daemon.checkpoint_errors = ["ThrottlingException", "ThrottlingException"]
    daemon.records([record(event(), 8)])
    assert daemon.checkpoints == [("8", 0)]
    daemon.close()


def test_lost_lease_on_checkpoint_stops_writing_without_exiting() -> None:
    rig = Rig()
    daemon = rig.start()
    daemon.checkpoint_errors = ["ShutdownException"]
    daemon.records([record(event(), 8)])
    writes = rig.durable.writes
    daemon.records([record(event(), 9)])  # a zombie must not write
    assert rig.durable.writes == writes and daemon.checkpoints == []
    daemon.send({"action": "leaseLost"})
    assert daemon.exit_code is None
    # amazon_kclpy swallows processor exceptions into its error stream: there must be none.
    assert "Traceback" not in daemon.errors.getvalue()
    daemon.close()


def test_invalid_state_on_checkpoint_exits_non_zero() -> None:
    rig = Rig()
    daemon = rig.start()
    daemon.checkpoint_errors = ["InvalidStateException"]
    with pytest.raises(ProcessorExited):
        daemon.records([record(event(), 8)])
    assert daemon.exit_code == 2


@pytest.mark.parametrize("outage", ["durable", "hot", "dlq", "sink"])
def test_a_store_outage_exits_without_checkpoint_and_a_restart_loses_nothing(outage: str) -> None:
    rig = Rig()
    daemon = rig.start()
    daemon.records([record(event(), 1), record(b"junk", 2)])
    assert daemon.checkpoints == [("2", 0)]
    getattr(rig, outage).available = False
    with pytest.raises(ProcessorExited):
        daemon.records([record(event("scroll"), 3), record(b"more junk", 4)])
    assert daemon.exit_code == 2 and daemon.checkpoints == [("2", 0)]
    getattr(rig, outage).available = True
    # KCL restarts the shard from the last checkpoint and delivers 3 and 4 again.
    restarted = rig.start()
    restarted.records([record(event("scroll"), 3), record(b"more junk", 4)])
    assert restarted.checkpoints == [("4", 0)]
    assert rig.counts(rig.durable) == rig.counts(rig.hot) == {"click": 1, "scroll": 1}
    assert sorted({letter.identity for letter in rig.dlq.letters}) == [
        "shardId-000000000000/2/0/0",
        "shardId-000000000000/4/0/0",
    ]
    restarted.close()


def test_redelivered_batches_count_once() -> None:
    rig = Rig()
    daemon = rig.start()
    batch = [record([event(), event("scroll")], 20), record(event("page.view"), 21)]
    daemon.records(batch)
    restarted = rig.start()  # e.g. after a lease move: same records again
    restarted.records(batch)
    assert rig.counts(rig.durable) == {"click": 1, "scroll": 1, "page.view": 1}
    assert rig.counts(rig.durable, "1d") == {"click": 1, "scroll": 1, "page.view": 1}
    daemon.close()
    restarted.close()


def test_valid_events_are_forwarded_to_the_archive_before_the_checkpoint_and_only_once() -> None:
    rig = Rig()
    daemon = rig.start()
    single = orjson.dumps(event("click", userId="u1"))
    pretty = orjson.dumps(event("search"), option=orjson.OPT_INDENT_2)
    daemon.records(
        [record(single, 1), record([event("scroll"), 7, event("page.view")], 2), record(b"junk", 3), record(pretty, 4)]
    )
    assert daemon.checkpoints == [("4", 0)]
    forwarded = [orjson.loads(data) for _, data in rig.sink.events]
    assert [e["eventType"] for e in forwarded] == ["click", "scroll", "page.view", "search"]
    assert all(b"\n" not in data for _, data in rig.sink.events)  # the archive is NDJSON
    assert rig.sink.events[0][1] == single  # a single-object record is forwarded byte for byte
    restarted = rig.start()  # redelivery after a crash: already durable, so not forwarded again
    restarted.records([record(single, 1)])
    assert len(rig.sink.events) == 4
    daemon.close()
    restarted.close()


def test_an_event_too_large_for_a_sink_goes_to_the_dlq_and_is_not_counted() -> None:
    rig = Rig()
    daemon = rig.start()
    huge = orjson.dumps(event("click", blob="x" * 1_100_000))
    daemon.records([record(gzip.compress(huge), 1)])
    assert [(letter.reason, letter.identity) for letter in rig.dlq.letters] == [
        ("too_large", "shardId-000000000000/1/0/0")
    ]
    assert rig.counts(rig.durable) == {} and rig.sink.events == []
    assert daemon.checkpoints == [("1", 0)]
    daemon.close()


def test_health_is_reported_per_shard_after_flushes_and_checkpoints() -> None:
    rig = Rig()
    daemon = rig.start()
    daemon.records([record(event(), 1), record(b"junk", 2)], millis_behind=1234)
    health = rig.health.shards["shardId-000000000000"]
    assert health["millisBehindLatest"] == 1234
    assert health["lastCheckpointSequence"] == "2" and health["lastCheckpointMs"] == ARRIVAL_MS + 1000
    assert health["dlqCount"] == 1 and health["events"] == 1 and health["records"] == 2
    assert health["eventsPerSecond"] > 0 and health["lastBatchMs"] == ARRIVAL_MS + 1000
    daemon.close()


def nested(levels: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


STRICT = parse_config(default_config_text().replace("strict_types = false", "strict_types = true"), "strict")
EVERY_REASON = {
    "not_utf8": b'{"eventType": "click", "x": "\xe9"}',
    "not_json": b"{nope",
    "not_object": b"42",
    "missing_field": orjson.dumps({"timestamp": ARRIVAL_MS}),
    "wrong_type": orjson.dumps(event("click", data=[1])),
    "bad_timestamp": orjson.dumps({"eventType": "click", "timestamp": "2026-11-29 10:00"}),
    "too_old": orjson.dumps(event("click", offset_ms=-4 * 365 * 86_400_000)),
    "in_future": orjson.dumps(event("click", offset_ms=3_600_000)),
    "schema": orjson.dumps(event("donation.made", data={"amount": -5, "currency": "GBP", "charityId": "c"})),
    "unknown_type": orjson.dumps(event("mystery.thing")),
    "too_large": gzip.compress(b" " * (9 * 1024 * 1024) + b"{}"),
    "bad_compression": gzip.compress(orjson.dumps(event()))[:-12],
    "too_deep": orjson.dumps(event("click", data=nested(140))),
    "value_too_long": orjson.dumps(event("page.view", path="/" + "p" * 600)),
    "number_out_of_range": orjson.dumps(
        event("donation.made", data={"amount": 1e22, "currency": "GBP", "charityId": "c"})
    ),
    "too_many_events": b"[" + b",".join([orjson.dumps(event("click"))] * 10_001) + b"]",
    "too_many_invalid": b"\n".join([orjson.dumps(event("click"))] + [b"1"] * 101),
}


@pytest.mark.parametrize("reason", sorted(EVERY_REASON))
def test_each_reason_code_reaches_the_dlq_with_its_payload_before_the_checkpoint(reason: str) -> None:
    assert set(EVERY_REASON) == {r.value for r in Reason}
    rig = Rig()
    rig.config = STRICT  # strict types, so unknown_type can happen; configured types (page.view) still pass
    daemon = rig.start()
    daemon.records([record(EVERY_REASON[reason], 5), record(event("page.view"), 6)])
    assert [(letter.reason, letter.identity) for letter in rig.dlq.letters] == [(reason, "shardId-000000000000/5/0/0")]
    letter = rig.dlq.letters[0]
    assert letter.payload == EVERY_REASON[reason]
    assert letter.detail
    assert rig.counts(rig.durable) == {"page.view": 1}
    assert daemon.checkpoints == [("6", 0)]
    daemon.close()


def test_an_event_nested_too_deep_goes_to_the_dlq_alone_with_its_own_json() -> None:
    rig = Rig()
    daemon = rig.start()
    # 300 levels: orjson reads it but cannot write it; the letter holds it all the same, and only it.
    deep = b'{"eventType":"click","timestamp":%d,"data":%s}' % (
        event("click")["timestamp"],
        b'{"a":' * 299 + b'{"leaf":1}' + b"}" * 299,
    )
    text = b"[%s,%s]" % (orjson.dumps(event("scroll")), deep)
    daemon.records([record(text, 1)])
    letters = [(letter.reason, letter.identity, letter.detail) for letter in rig.dlq.letters]
    assert letters == [("too_deep", "shardId-000000000000/1/0/1", "objects and arrays nest deeper than 128 levels")]
    assert rig.dlq.letters[0].payload == deep  # its own bytes, never its counted sibling
    assert rig.counts(rig.durable) == {"scroll": 1}
    assert [orjson.loads(data)["eventType"] for _, data in rig.sink.events] == ["scroll"]  # not the whole array
    assert daemon.checkpoints == [("1", 0)]
    daemon.close()


def test_a_line_over_the_event_bound_is_too_large_alone_and_its_sibling_counts() -> None:
    rig = Rig()
    daemon = rig.start()
    padded = orjson.dumps(event("click")).replace(b",", b"," + b" " * 70_000, 1)  # one line of 70 KB
    ndjson = padded + b"\n" + orjson.dumps(event("scroll"))
    daemon.records([record(ndjson, 1)])
    assert [(letter.reason, letter.identity, letter.payload) for letter in rig.dlq.letters] == [
        ("too_large", "shardId-000000000000/1/0/0", padded)
    ]
    assert rig.counts(rig.durable) == {"scroll": 1}
    assert [data for _, data in rig.sink.events] == [orjson.dumps(event("scroll"))]
    daemon.close()


def test_a_line_with_a_carriage_return_inside_is_forwarded_as_compact_json() -> None:
    rig = Rig()
    daemon = rig.start()
    spaced = orjson.dumps(event("click")).replace(b",", b",\r ", 1)  # CR inside a line: not forwarded as sent
    daemon.records([record(spaced + b"\n" + orjson.dumps(event("scroll")), 1)])
    assert rig.dlq.letters == []
    assert [data for _, data in rig.sink.events] == [orjson.dumps(orjson.loads(spaced)), orjson.dumps(event("scroll"))]
    daemon.close()
