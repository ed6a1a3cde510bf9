"""Commit order of the record processor, driven through the KCL protocol (consumer.protocol.KCLReader) against
moto's DynamoDB, SQS, S3, Firehose and Kinesis (in-process); Redis is the memory fake (its order is not at stake).

The order the code promises (consumer/worker.py `flush_durable`, consumer/processor.py `_process`): dead letters,
then the forward sinks, then DynamoDB, then Redis, and only then the checkpoint. Two consequences are pinned:
- a checkpoint that falls due while the DynamoDB flush does not still comes after it: at the moment the
  daemon receives a checkpoint, DynamoDB, the archive and the DLQ already hold every effect of the records
  it passes (the processor waits for the daemon's answer, so the stores cannot move meanwhile);
- a forward sink that is down stops the shard before DynamoDB is written and before any checkpoint, so the
  restart forwards every event. DynamoDB first would lose them for good: after a restart, events found in
  DynamoDB's partials count as already done, and their forwards are dropped as already sent
  (`ShardWorker._fold`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import boto3
import orjson
import pytest
from botocore.exceptions import ClientError

from aggregations.dynamodb_store import DynamoDBStore, make_model
from aggregations.memory_store import MemoryStore
from aggregations.partials import merge_partials
from consumer.dlq.sqs import SqsDeadLetterQueue
from consumer.processor import RecordProcessor
from consumer.sinks import EventSink
from consumer.sinks.firehose import FirehoseSink
from consumer.sinks.kinesis import KinesisStreamSink
from consumer.worker import Cadence, Outputs, ShardWorker, Stores
from devstack.resources import ensure_table
from streamkpi.config import AppConfig, default_config_text, load_config, parse_config
from tests.functional import moto_aws
from tests.functional.kcl_harness import FakeDaemon, ProcessorExited, kinesis_record, raising_exit

REGION = "us-east-1"
TABLE = "order-metrics"
BUCKET = "order-archive"
DELIVERY = "order-archive"
FORWARDED = "order-forwarded"
QUEUE = "order-dlq"
SHARD = "shardId-000000000000"
MINUTE = 60_000
ARRIVAL_MS = 1_764_000_000_000  # 2025-11-24T16:00:00Z
WINDOW = ARRIVAL_MS - MINUTE  # every event of these tests falls into this minute
CONFIG = load_config(None)
KINESIS_CONFIG = parse_config(
    default_config_text().replace(
        '[sinks.archive]\ntype = "firehose"', f'[sinks.archive]\ntype = "kinesis"\nstream = "{FORWARDED}"'
    ),
    "kinesis-sink",
)


def noop(seconds: float) -> None:
    pass


class Clock:
    """The workers' monotonic clock, moved by hand: what falls due is decided by the test alone."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Outage:
    """A real (moto) Firehose or Kinesis client; while `down`, every put answers as the service does in an
    outage (HTTP 5xx, which the sinks retry, then give up on with StoreUnavailableError)."""

    def __init__(self, client: Any, code: str, status: int) -> None:
        self.client = client
        self.code, self.status = code, status
        self.down = False
        self.refused = 0

    def _put(self, method: str, kwargs: dict[str, Any]) -> Any:
        if self.down:
            self.refused += 1
            error = {
                "Error": {"Code": self.code, "Message": "outage"},
                "ResponseMetadata": {"HTTPStatusCode": self.status},
            }
            raise ClientError(error, method)
        return getattr(self.client, method)(**kwargs)

    def put_record_batch(self, **kwargs: Any) -> Any:
        return self._put("put_record_batch", kwargs)

    def put_records(self, **kwargs: Any) -> Any:
        return self._put("put_records", kwargs)


@dataclass(frozen=True)
class Held:
    """What the stores hold: DynamoDB's event counts of the window, the ids of the forwarded events (once
    each), and how many dead letters the queue has."""

    durable: dict[str, int]
    forwarded: frozenset[str]
    letters: int


class Witness(list[tuple[str | None, int | None]]):
    """The fake daemon's list of checkpoints: on each one, notes what the stores hold at that moment."""

    def __init__(self, look: Callable[[], Held]) -> None:
        super().__init__()
        self.look = look
        self.seen: list[tuple[tuple[str | None, int | None], Held]] = []

    def append(self, checkpoint: tuple[str | None, int | None]) -> None:
        self.seen.append((checkpoint, self.look()))
        super().append(checkpoint)


class Rig:
    def __init__(self, cadence: Cadence, sink: str = "firehose") -> None:
        ensure_table(boto3.client("dynamodb", region_name=REGION), TABLE, [("pk", "S", "HASH"), ("sk", "S", "RANGE")])
        self.durable = DynamoDBStore(make_model(TABLE, REGION, None), CONFIG.resolutions)
        self.hot = MemoryStore("redis")
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.queue = self.sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
        self.dlq = SqsDeadLetterQueue(self.sqs, self.queue, sleep=noop, attempts=2)
        self.s3 = boto3.client("s3", region_name=REGION)
        self.s3.create_bucket(Bucket=BUCKET)
        self.kind = sink
        if sink == "firehose":
            firehose = boto3.client("firehose", region_name=REGION)
            firehose.create_delivery_stream(
                DeliveryStreamName=DELIVERY,
                DeliveryStreamType="DirectPut",
                ExtendedS3DestinationConfiguration={
                    "RoleARN": "arn:aws:iam::123456789012:role/firehose",
                    "BucketARN": f"arn:aws:s3:::{BUCKET}",
                    "Prefix": "raw/",
                },
            )
            self.outage = Outage(firehose, "ServiceUnavailableException", 503)
            self.config: AppConfig = CONFIG
        else:
            self.kinesis = boto3.client("kinesis", region_name=REGION)
            self.kinesis.create_stream(StreamName=FORWARDED, ShardCount=1)
            self.outage = Outage(self.kinesis, "InternalFailure", 500)
            self.config = KINESIS_CONFIG
        self.cadence = cadence
        self.clock = Clock()

    def factory(self, shard_id: str) -> ShardWorker:
        sink: EventSink
        if self.kind == "firehose":
            sink = FirehoseSink("archive", self.outage, DELIVERY, sleep=noop, attempts=3)
        else:
            sink = KinesisStreamSink("archive", self.outage, FORWARDED, sleep=noop, attempts=3)
        stores, outputs = Stores(self.durable, self.hot), Outputs(self.dlq, sinks={"archive": sink})
        cadence = replace(self.cadence, clock=self.clock, sleep=noop, wall_ms=lambda: ARRIVAL_MS + 1000)
        return ShardWorker(shard_id, "events", self.config.pipeline, stores, outputs, cadence)

    def start(self) -> tuple[FakeDaemon, Witness]:
        daemon = FakeDaemon(RecordProcessor(self.factory, sleep=noop, exit=raising_exit))
        daemon.checkpoints = witness = Witness(self.held)
        daemon.initialize(SHARD)
        return daemon, witness

    def held(self) -> Held:
        found = self.durable.read("1m", [WINDOW]).get(WINDOW, [])
        durable = merge_partials(found).get("events", {}) if found else {}
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        letters = int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )
        return Held(durable, frozenset(e["eventId"] for e in self.forwarded()), letters)

    def forwarded(self) -> list[dict[str, Any]]:
        """Every forwarded event, as many times as it was forwarded."""
        if self.kind == "kinesis":
            return [orjson.loads(r["data"]) for r in moto_aws.read_stream(self.kinesis, FORWARDED)]
        events = []
        for obj in self.s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
            body = self.s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
            events += [orjson.loads(line) for line in body.splitlines()]
        return events


def record(seq: int, *event_types: str) -> dict[str, Any]:
    """A record of one event per type, each with the id `<seq>-<n>`; no type at all: a record that is not JSON."""
    if not event_types:
        return kinesis_record(b"not json", seq, ARRIVAL_MS)
    events = [
        {"eventType": t, "eventId": f"{seq}-{n}", "timestamp": WINDOW + seq * 100 + n}
        for n, t in enumerate(event_types)
    ]
    return kinesis_record(b"\n".join(orjson.dumps(e) for e in events), seq, ARRIVAL_MS)


# -- a checkpoint that falls due while the DynamoDB flush does not --------------------------------------------------


@pytest.mark.parametrize("due", ["seconds", "records"])
def test_a_checkpoint_due_before_the_dynamodb_flush_lands_only_after_everything_it_passes_is_durable(
    moto: None, due: str
) -> None:
    # DynamoDB's own flush (and Redis's) is an hour away; the checkpoint falls due after 5 s, or after 6 records
    # (the count that makes both due: the processor must still flush before it checkpoints).
    cadence = Cadence(
        redis_flush_seconds=3600,
        dynamodb_flush_seconds=3600,
        checkpoint_seconds=5 if due == "seconds" else 3600,
        checkpoint_records=6 if due == "records" else 50_000,
        store_retry_seconds=0,
    )
    rig = Rig(cadence)
    daemon, witness = rig.start()
    daemon.records([record(1, "click", "scroll"), record(2), record(3, "click")])
    assert daemon.checkpoints == [], "nothing is due yet"
    assert rig.held() == Held({}, frozenset(), 0), "the DynamoDB flush is not due either: nothing was written"
    rig.clock.now += 5 if due == "seconds" else 1
    daemon.records([record(4, "page.view"), record(5), record(6, "click")])
    # At the moment the checkpoint reached the daemon, every effect of records 1-6 was durable.
    assert witness.seen == [
        (
            ("6", 0),
            Held(
                durable={"click": 3, "scroll": 1, "page.view": 1},
                forwarded=frozenset({"1-0", "1-1", "3-0", "4-0", "6-0"}),
                letters=2,
            ),
        )
    ]
    daemon.close()


# -- a forward sink that is down ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sink", ["firehose", "kinesis"])
def test_a_sink_outage_stops_the_shard_before_dynamodb_and_the_checkpoint_and_the_restart_forwards_everything(
    moto: None, sink: str
) -> None:
    rig = Rig(
        Cadence(redis_flush_seconds=0, dynamodb_flush_seconds=0, checkpoint_seconds=0, store_retry_seconds=0), sink
    )
    assert rig.config.sinks[0].type == sink and [s.name for s in rig.config.sinks] == ["archive"]
    daemon, _ = rig.start()
    daemon.records([record(1, "click", "scroll"), record(2)])
    assert daemon.checkpoints == [("2", 0)]

    rig.outage.down = True
    second = [record(3, "page.view"), record(4, "click", "click"), record(5)]
    with pytest.raises(ProcessorExited):
        daemon.records(second)
    assert daemon.exit_code == 2
    assert rig.outage.refused == 3, "the sink retried, then gave up"
    assert daemon.checkpoints == [("2", 0)], "no checkpoint passes events that were not forwarded"
    during_outage = rig.held()

    # KCL starts the shard again from its checkpoint: the second batch comes again, the sink is back.
    rig.outage.down = False
    restarted, witness = rig.start()
    restarted.records(second)
    everything = frozenset({"1-0", "1-1", "3-0", "4-0", "4-1"})
    # Nothing skipped: when the checkpoint landed, every valid event was forwarded and counted exactly once,
    # and both letters were in the queue (record 5's perhaps twice: the DLQ goes first and is at-least-once).
    [(checkpoint, held)] = witness.seen
    assert checkpoint == ("5", 0)
    assert held.forwarded == everything
    assert held.durable == {"click": 3, "scroll": 1, "page.view": 1}
    assert held.letters >= 2
    assert sorted(e["eventId"] for e in rig.forwarded()) == sorted(everything)
    # The order that makes it so: the outage stopped the shard before its events reached DynamoDB.
    assert during_outage.durable == {"click": 1, "scroll": 1}
    assert during_outage.forwarded == {"1-0", "1-1"}
    restarted.close()
