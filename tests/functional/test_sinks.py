"""Forward sinks against moto's Kinesis, Firehose and S3 and against recording fakes: nothing lost, nothing doubled,
Kinesis in order per partition key."""

from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Any

import boto3
import orjson
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from consumer.sinks import FIREHOSE_MAX_RECORD_BYTES, KINESIS_MAX_RECORD_BYTES, EventSink, Forward
from consumer.sinks.firehose import FirehoseSink
from consumer.sinks.kinesis import KinesisStreamSink
from consumer.sinks.memory import MemorySink
from delivery.backoff import DEFAULT_BACKOFF, Backoff
from delivery.errors import DeliveryUnavailableError
from delivery.limits import FIREHOSE_MAX_BATCH_BYTES, KINESIS_MAX_BATCH_BYTES
from tests.functional import moto_aws

REGION = "us-east-1"
STREAM = "forwarded"
DELIVERY = "archive-stream"
BUCKET = "archive-bucket"
KEYS = [f"user-{n}" for n in range(7)]
MAX_DELAY_S = DEFAULT_BACKOFF.max_s
CEILING = Backoff(random=lambda: 1.0)  # every delay at its ceiling: 0.1, 0.2, 0.4 ... 5.0


def make_events(count: int, pad: int = 0, seed: int = 7, distinct_keys: bool = False) -> list[Forward]:
    """`count` events with keys drawn from KEYS (or one key each: batches fill up to the count limit)."""
    rng = random.Random(seed)
    events = []
    for i in range(count):
        body = {"eventType": rng.choice(["click", "donation.made"]), "i": i, "pad": "x" * pad}
        key = f"user-{i}" if distinct_keys else rng.choice(KEYS)
        events.append(Forward(partition_key=key, data=orjson.dumps(body)))
    return events


def assert_order_per_key_kept(records: list[tuple[str, str, bytes]], events: list[Forward]) -> None:
    for key in {e.partition_key for e in events}:
        sent = [e.data for e in events if e.partition_key == key]
        arrived = [data for _, k, data in records if k == key]
        assert arrived == sent, f"order of partition key {key}"


def throttled(code: str = "ProvisionedThroughputExceededException", status: int = 400) -> ClientError:
    error = {"Error": {"Code": code, "Message": "Rate exceeded"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(error, "PutRecords")


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def aws(moto: None) -> None:
    """moto's AWS (the `moto` fixture); the sinks' own fixtures build on it."""


@pytest.fixture
def kinesis(aws: None) -> Any:
    client = boto3.client("kinesis", region_name=REGION)
    client.create_stream(StreamName=STREAM, ShardCount=3)
    return client


@pytest.fixture
def firehose(aws: None) -> Any:
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    client = boto3.client("firehose", region_name=REGION)
    client.create_delivery_stream(
        DeliveryStreamName=DELIVERY,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/firehose",
            "BucketARN": f"arn:aws:s3:::{BUCKET}",
            "Prefix": "raw/",
        },
    )
    return client


def read_stream(kinesis: Any) -> list[tuple[str, str, bytes]]:
    """(shard, partition key, data) of every record, shard by shard in sequence order."""
    return [(r["shard"], r["key"], r["data"]) for r in moto_aws.read_stream(kinesis, STREAM)]


def read_archive() -> list[bytes]:
    s3 = boto3.client("s3", region_name=REGION)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    return [s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys]


def assert_stream_holds_exactly(kinesis: Any, events: list[Forward]) -> None:
    records = read_stream(kinesis)
    assert Counter((key, data) for _, key, data in records) == Counter((e.partition_key, e.data) for e in events)
    assert len(records) == len(events)


def assert_archive_holds_exactly(events: list[Forward]) -> list[bytes]:
    objects = read_archive()
    expected_lines = [e.data + b"\n" for e in events]
    lines = [line + b"\n" for obj in objects for line in obj.split(b"\n")[:-1]]
    assert all(obj.endswith(b"\n") for obj in objects)
    assert Counter(lines) == Counter(expected_lines)
    assert len(lines) == len(events)
    return objects


class FlakyClient:
    """Passes calls to a real (moto) client; can fail whole calls first, then refuse every third entry."""

    def __init__(self, client: Any, whole_call_errors: list[Exception] | None = None, refuse_calls: int = 0) -> None:
        self.client = client
        self.whole_call_errors = list(whole_call_errors or [])
        self.refuse_calls = refuse_calls
        self.calls: list[list[bytes]] = []
        self.refused: list[list[bytes]] = []

    def _call(self, method: str, results_key: str, count_key: str, records: list[dict[str, Any]], **kw: Any) -> Any:
        self.calls.append([r["Data"] for r in records])
        if self.whole_call_errors:
            raise self.whole_call_errors.pop(0)
        real = getattr(self.client, method)
        if not self.refuse_calls:
            return real(Records=records, **kw)
        self.refuse_calls -= 1
        accepted = [r for n, r in enumerate(records) if n % 3 != 1]
        answers = iter(real(Records=accepted, **kw)[results_key])
        results: list[dict[str, Any]] = []
        refused = []
        for n, record in enumerate(records):
            if n % 3 == 1:
                refused.append(record["Data"])
                code = (
                    "ProvisionedThroughputExceededException"
                    if count_key == "FailedRecordCount"
                    else "ServiceUnavailableException"
                )
                results.append({"ErrorCode": code, "ErrorMessage": "Slow down"})
            else:
                results.append(next(answers))
        self.refused.append(refused)
        return {count_key: len(refused), results_key: results}

    def put_records(self, *, Records: list[dict[str, Any]], **kw: Any) -> Any:
        return self._call("put_records", "Records", "FailedRecordCount", Records, **kw)

    def put_record_batch(self, *, Records: list[dict[str, Any]], **kw: Any) -> Any:
        return self._call("put_record_batch", "RequestResponses", "FailedPutCount", Records, **kw)


class RecordingFake:
    """A client that stores nothing: notes each call's entries; `fail` = 'call', 'entries' (retryable) or
    'for good' fails them all."""

    def __init__(self, fail: str = "") -> None:
        self.fail = fail
        self.calls: list[list[dict[str, Any]]] = []

    def _answer(self, records: list[dict[str, Any]], ok: dict[str, str], results_key: str, count_key: str) -> Any:
        self.calls.append(records)
        if self.fail == "call":
            raise throttled("ServiceUnavailableException", 503)
        if self.fail in ("entries", "for good"):
            code = "InternalFailure" if self.fail == "entries" else "KMSDisabledException"
            bad = {"ErrorCode": code, "ErrorMessage": "boom"}
            return {count_key: len(records), results_key: [bad for _ in records]}
        return {count_key: 0, results_key: [ok for _ in records]}

    def put_records(self, *, StreamName: str, Records: list[dict[str, Any]]) -> Any:
        return self._answer(Records, {"SequenceNumber": "1", "ShardId": "s"}, "Records", "FailedRecordCount")

    def put_record_batch(self, *, DeliveryStreamName: str, Records: list[dict[str, Any]]) -> Any:
        return self._answer(Records, {"RecordId": "r"}, "RequestResponses", "FailedPutCount")


def kinesis_bytes(record: dict[str, Any]) -> int:
    return len(record["Data"]) + len(record["PartitionKey"].encode())


# --- moto: the happy paths --------------------------------------------------------------------------


def test_kinesis_sink_delivers_every_event_once_in_key_order(kinesis: Any) -> None:
    events = make_events(1234)
    sleeps = Sleeps()
    sink = KinesisStreamSink("fanout", kinesis, STREAM, sleep=sleeps)
    sink.send(events)

    records = read_stream(kinesis)
    assert_stream_holds_exactly(kinesis, events)
    assert_order_per_key_kept(records, events)
    for key in KEYS:
        assert len({shard for shard, k, _ in records if k == key}) == 1
    assert sleeps == []


@pytest.mark.parametrize("pack", [True, False])
def test_firehose_sink_archive_is_exactly_the_ndjson_of_the_events(firehose: Any, pack: bool) -> None:
    events = make_events(1234)
    sink = FirehoseSink("archive", firehose, DELIVERY, sleep=Sleeps(), pack=pack)
    sink.send(events)

    objects = assert_archive_holds_exactly(events)
    # One object per PutRecordBatch in moto: packed, 1,234 small events are one record in one call;
    # one record per event, 500 + 500 + 234.
    assert len(objects) == (1 if pack else 3)
    blob = b"".join(e.data + b"\n" for e in events)
    for obj in objects:  # each call's records stay in order
        at = blob.find(obj)
        assert at == 0 or blob[at - 1 : at] == b"\n"
    for obj in objects:
        for line in obj.splitlines():
            assert isinstance(orjson.loads(line), dict)


def test_empty_send_makes_no_call() -> None:
    fake = RecordingFake()
    KinesisStreamSink("k", fake, STREAM).send([])
    FirehoseSink("f", fake, DELIVERY).send([])
    assert fake.calls == []


def test_sinks_satisfy_the_protocol() -> None:
    sinks: list[EventSink] = [
        MemorySink("m"),
        KinesisStreamSink("k", RecordingFake(), STREAM),
        FirehoseSink("f", RecordingFake(), DELIVERY),
    ]
    assert [s.name for s in sinks] == ["m", "k", "f"]


# --- batch limits -----------------------------------------------------------------------------------


def test_kinesis_batches_respect_count_and_byte_limits() -> None:
    rng = random.Random(3)
    events = [
        Forward(partition_key=f"user-{i}", data=orjson.dumps({"i": i, "pad": "y" * rng.randint(15_000, 25_000)}))
        for i in range(1234)
    ]
    fake = RecordingFake()
    KinesisStreamSink("k", fake, STREAM).send(events)
    assert all(len(call) <= 500 for call in fake.calls)
    assert all(sum(kinesis_bytes(r) for r in call) <= KINESIS_MAX_BATCH_BYTES for call in fake.calls)
    assert len(fake.calls) > 3  # the byte limit, not the count, closed the batches
    assert [(r["PartitionKey"], r["Data"]) for call in fake.calls for r in call] == [
        (e.partition_key, e.data) for e in events
    ]

    fake = RecordingFake()
    KinesisStreamSink("k", fake, STREAM).send(make_events(1234, distinct_keys=True))
    assert [len(call) for call in fake.calls] == [500, 500, 234]


def test_a_kinesis_call_holds_one_record_per_partition_key() -> None:
    events = make_events(1234)
    fake = RecordingFake()
    KinesisStreamSink("k", fake, STREAM).send(events)
    assert all(len({r["PartitionKey"] for r in call}) == len(call) for call in fake.calls)
    per_key = {key: sum(e.partition_key == key for e in events) for key in KEYS}
    assert len(fake.calls) == max(per_key.values())  # every call takes the next record of every key left
    sent = [("", r["PartitionKey"], r["Data"]) for call in fake.calls for r in call]
    assert_order_per_key_kept(sent, events)


def test_firehose_batches_respect_count_and_byte_limits() -> None:
    events = make_events(1234, pad=20_000)
    fake = RecordingFake()
    FirehoseSink("f", fake, DELIVERY, pack=False).send(events)
    assert all(len(call) <= 500 for call in fake.calls)
    assert all(sum(len(r["Data"]) for r in call) <= FIREHOSE_MAX_BATCH_BYTES for call in fake.calls)
    assert len(fake.calls) > 3
    assert [r["Data"] for call in fake.calls for r in call] == [e.data + b"\n" for e in events]

    fake = RecordingFake()
    FirehoseSink("f", fake, DELIVERY, pack=False).send(make_events(1234))
    assert [len(call) for call in fake.calls] == [500, 500, 234]


@pytest.mark.parametrize(("count", "pad"), [(1, 0), (1234, 0), (1234, 20_000), (300, 400_000), (5_000, 900)])
def test_firehose_packs_consecutive_events_into_records_of_at_most_the_record_limit(count: int, pad: int) -> None:
    events = make_events(count, pad=pad)
    fake = RecordingFake()
    FirehoseSink("f", fake, DELIVERY).send(events)
    records = [r["Data"] for call in fake.calls for r in call]
    assert b"".join(records) == b"".join(e.data + b"\n" for e in events)  # the same NDJSON, in order
    assert all(r.endswith(b"\n") for r in records)  # no event is split across records
    assert all(len(r) <= FIREHOSE_MAX_RECORD_BYTES for r in records)
    assert all(len(call) <= 500 for call in fake.calls)
    assert all(sum(len(r["Data"]) for r in call) <= FIREHOSE_MAX_BATCH_BYTES for call in fake.calls)
    line = len(events[0].data) + 1
    # Greedy: a record ends only where the next line would not fit.
    assert all(len(r) + line > FIREHOSE_MAX_RECORD_BYTES for r in records[:-1])
    assert len(fake.calls) <= -(-sum(map(len, records)) // (FIREHOSE_MAX_BATCH_BYTES - FIREHOSE_MAX_RECORD_BYTES)) + 1


# --- partial failures and whole-call failures -------------------------------------------------------


def test_kinesis_partial_failure_resends_only_the_refused_entries(kinesis: Any, caplog: Any) -> None:
    events = make_events(1234, distinct_keys=True)
    flaky = FlakyClient(kinesis, refuse_calls=2)
    sleeps = Sleeps()
    with caplog.at_level(logging.WARNING, logger="streamkpi.sinks"):
        KinesisStreamSink("fanout", flaky, STREAM, sleep=sleeps).send(events)

    assert_stream_holds_exactly(kinesis, events)
    # First batch of 500: refused entries re-sent alone (and refused again in part), then the rest of them.
    assert flaky.calls[1] == flaky.refused[0]
    assert flaky.calls[2] == flaky.refused[1]
    assert [len(c) for c in flaky.calls] == [500, 167, 56, 500, 234]
    assert len(sleeps) == 2 and all(0 <= s <= MAX_DELAY_S for s in sleeps)
    warnings = [r for r in caplog.records if r.name == "streamkpi.sinks"]
    assert len(warnings) == 2
    assert warnings[0].sink == "fanout" and warnings[0].failed == 167 and warnings[0].pending == 167 + 734


def test_kinesis_sink_keeps_order_per_key_when_entries_are_refused(kinesis: Any) -> None:
    events = make_events(300)
    flaky = FlakyClient(kinesis, refuse_calls=40)  # every third entry of the first 40 calls is refused
    KinesisStreamSink("fanout", flaky, STREAM, sleep=Sleeps(), attempts=50).send(events)
    assert sum(map(len, flaky.refused)) > 30
    assert_stream_holds_exactly(kinesis, events)
    assert_order_per_key_kept(read_stream(kinesis), events)


def test_firehose_partial_failure_resends_only_the_refused_entries(firehose: Any) -> None:
    events = make_events(1234)
    flaky = FlakyClient(firehose, refuse_calls=1)
    FirehoseSink("archive", flaky, DELIVERY, sleep=Sleeps(), pack=False).send(events)

    assert_archive_holds_exactly(events)
    assert flaky.calls[1] == flaky.refused[0]
    assert [len(c) for c in flaky.calls] == [500, 167, 500, 234]


def test_firehose_partial_failure_of_packed_records_resends_only_those_records(firehose: Any, caplog: Any) -> None:
    events = make_events(1234, pad=20_000)  # about 49 events a record, 4 records a call
    flaky = FlakyClient(firehose, refuse_calls=1)
    with caplog.at_level(logging.WARNING, logger="streamkpi.sinks"):
        FirehoseSink("archive", flaky, DELIVERY, sleep=Sleeps()).send(events)

    assert_archive_holds_exactly(events)  # every event once: none lost, none doubled
    assert flaky.calls[1] == flaky.refused[0]
    first = flaky.calls[0]
    assert len(first) == 4 and len(flaky.calls[1]) == 1
    warning = next(r for r in caplog.records if r.name == "streamkpi.sinks")
    refused_events = flaky.refused[0][0].count(b"\n")
    assert warning.failed == 1 and warning.of == 4  # records
    assert warning.pending == 1234 - sum(r.count(b"\n") for r in first) + refused_events  # events


def test_kinesis_whole_call_throttling_and_connection_errors_are_retried(kinesis: Any) -> None:
    events = make_events(1234, distinct_keys=True)
    errors: list[Exception] = [
        throttled(),
        throttled("ThrottlingException"),
        EndpointConnectionError(endpoint_url="https://kinesis.us-east-1.amazonaws.com"),
    ]
    flaky = FlakyClient(kinesis, whole_call_errors=errors)
    sleeps = Sleeps()
    KinesisStreamSink("fanout", flaky, STREAM, sleep=sleeps).send(events)

    assert_stream_holds_exactly(kinesis, events)
    assert [len(c) for c in flaky.calls] == [500, 500, 500, 500, 500, 234]
    assert len(sleeps) == 3
    assert all(0 <= s <= MAX_DELAY_S for s in sleeps)


def test_firehose_whole_call_throttling_is_retried(firehose: Any) -> None:
    events = make_events(1234)
    flaky = FlakyClient(firehose, whole_call_errors=[throttled("ServiceUnavailableException", 503)])
    sleeps = Sleeps()
    FirehoseSink("archive", flaky, DELIVERY, sleep=sleeps).send(events)
    assert_archive_holds_exactly(events)
    assert len(sleeps) == 1


@pytest.mark.parametrize("fail", ["call", "entries"])
@pytest.mark.parametrize("kind", ["kinesis", "firehose"])
def test_persistent_failure_raises_delivery_unavailable_after_attempts(kind: str, fail: str) -> None:
    fake = RecordingFake(fail=fail)
    sleeps = Sleeps()
    sink: EventSink
    if kind == "kinesis":
        sink = KinesisStreamSink("fanout", fake, STREAM, sleep=sleeps, attempts=5)
        target = STREAM
    else:
        sink = FirehoseSink("archive", fake, DELIVERY, sleep=sleeps, attempts=5, pack=False)
        target = DELIVERY
    with pytest.raises(DeliveryUnavailableError) as raised:
        sink.send(make_events(1234, distinct_keys=True))
    message = str(raised.value)
    assert sink.name in message and target in message and "1234 of 1234" in message
    assert len(fake.calls) == 5 and all(len(c) == 500 for c in fake.calls)
    assert len(sleeps) == 4 and all(0 <= s <= MAX_DELAY_S for s in sleeps)


@pytest.mark.parametrize("fail", ["call", "entries"])
def test_a_packed_firehose_failure_counts_events_not_records(fail: str) -> None:
    fake = RecordingFake(fail=fail)
    sink = FirehoseSink("archive", fake, DELIVERY, sleep=Sleeps(), attempts=2)
    with pytest.raises(DeliveryUnavailableError, match="1234 of 1234 events"):
        sink.send(make_events(1234))
    assert [len(c) for c in fake.calls] == [1, 1]  # one packed record, tried twice


@pytest.mark.parametrize("kind", ["kinesis", "firehose"])
def test_entries_refused_for_good_are_not_sent_again_and_the_send_fails(kind: str) -> None:
    fake = RecordingFake(fail="for good")
    sleeps = Sleeps()
    sink: EventSink = (
        KinesisStreamSink("fanout", fake, STREAM, sleep=sleeps)
        if kind == "kinesis"
        else FirehoseSink("archive", fake, DELIVERY, sleep=sleeps, pack=False)
    )
    with pytest.raises(DeliveryUnavailableError, match=r"refused 3 of 3 events for good \(KMSDisabledException\)"):
        sink.send(make_events(3, distinct_keys=True))
    assert len(fake.calls) == 1 and sleeps == []


def test_default_attempts_and_capped_backoff() -> None:
    fake = RecordingFake(fail="call")
    sleeps = Sleeps()
    with pytest.raises(DeliveryUnavailableError, match="after 8 attempts"):
        KinesisStreamSink("fanout", fake, STREAM, sleep=sleeps, backoff=CEILING).send(make_events(3))
    assert len(fake.calls) == 8
    assert sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0])  # doubling, capped (here at the ceiling)


def test_missing_stream_is_not_retried(aws: None) -> None:
    client = boto3.client("kinesis", region_name=REGION)
    sleeps = Sleeps()
    with pytest.raises(DeliveryUnavailableError, match="ResourceNotFoundException") as raised:
        KinesisStreamSink("fanout", client, "no-such-stream", sleep=sleeps).send(make_events(10))
    assert "no-such-stream" in str(raised.value) and "10 of 10" in str(raised.value)
    assert sleeps == []


def test_failure_in_a_later_batch_counts_only_what_is_pending() -> None:
    class FailSecondCall(RecordingFake):
        def put_records(self, *, StreamName: str, Records: list[dict[str, Any]]) -> Any:
            if len(self.calls) >= 1:
                self.calls.append(Records)
                raise throttled()
            return super().put_records(StreamName=StreamName, Records=Records)

    fake = FailSecondCall()
    with pytest.raises(DeliveryUnavailableError, match="734 of 1234"):
        KinesisStreamSink("fanout", fake, STREAM, sleep=Sleeps(), attempts=2).send(
            make_events(1234, distinct_keys=True)
        )


# --- events that cannot be forwarded ----------------------------------------------------------------


def test_kinesis_oversize_event_raises_value_error_before_sending_anything() -> None:
    key = "k"
    at_limit = Forward(partition_key=key, data=b"a" * (KINESIS_MAX_RECORD_BYTES - len(key)))
    fake = RecordingFake()
    KinesisStreamSink("k", fake, STREAM).send([at_limit])
    assert len(fake.calls) == 1

    over = Forward(partition_key=key, data=b"a" * (KINESIS_MAX_RECORD_BYTES - len(key) + 1))
    fake = RecordingFake()
    with pytest.raises(ValueError, match="over the Kinesis record limit"):
        KinesisStreamSink("k", fake, STREAM).send([*make_events(600), over])
    assert fake.calls == []

    for bad_key in ("", "k" * 257):
        with pytest.raises(ValueError, match="partition key"):
            KinesisStreamSink("k", fake, STREAM).send([Forward(partition_key=bad_key, data=b"{}")])
    assert fake.calls == []


def test_firehose_oversize_or_multiline_event_raises_value_error_before_sending_anything() -> None:
    at_limit = Forward(partition_key="k", data=b"a" * (FIREHOSE_MAX_RECORD_BYTES - 1))
    fake = RecordingFake()
    FirehoseSink("f", fake, DELIVERY).send([at_limit])
    assert len(fake.calls[0][0]["Data"]) == FIREHOSE_MAX_RECORD_BYTES

    fake = RecordingFake()
    over = Forward(partition_key="k", data=b"a" * FIREHOSE_MAX_RECORD_BYTES)
    with pytest.raises(ValueError, match="over the Firehose record limit"):
        FirehoseSink("f", fake, DELIVERY).send([*make_events(600), over])
    with pytest.raises(ValueError, match="newline"):
        FirehoseSink("f", fake, DELIVERY).send([Forward(partition_key="k", data=b'{\n"a": 1}')])
    assert fake.calls == []


# --- MemorySink -------------------------------------------------------------------------------------


def test_memory_sink() -> None:
    sink = MemorySink("archive")
    events = make_events(3)
    sink.send(events)
    sink.available = False
    with pytest.raises(DeliveryUnavailableError, match="archive"):
        sink.send(events)
    assert sink.events == events and sink.calls == 2
