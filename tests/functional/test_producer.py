"""`run_generate` against moto's Kinesis, with a fake clock: nothing lost, nothing doubled, truth that is true."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from botocore.exceptions import ClientError

from consumer.decode import decode_record
from consumer.validate import Invalid, Rules, validate_event
from delivery.backoff import Backoff
from devstack.generator import INVALID_REASONS, EventGenerator, PlannedRecord, Truth, event_count
from devstack.producer import LINGER_MS, GenerateError, run_generate
from tests.functional import moto_aws

STREAM = "events"
START_MS = 1_764_000_000_000
WALL_START_MS = 1_800_000_000_000  # the fake wall clock is elsewhere: pacing must be relative
CEILING = Backoff(random=lambda: 1.0)  # every retry delay at its ceiling: 0.1, 0.2, 0.4 ...


class FakeClock:
    """now_ms() and sleep() over one fake timeline; sleeping just moves it on."""

    def __init__(self, now_ms: int = WALL_START_MS) -> None:
        self.now = now_ms
        self.sleeps: list[float] = []

    def now_ms(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += round(seconds * 1000)


class RecordingClient:
    """Passes put_records to moto, noting when each call happened; can refuse entries or whole calls."""

    def __init__(self, client: Any, clock: FakeClock, refuse_first: int = 0, throttle_calls: int = 0) -> None:
        self.client, self.clock = client, clock
        self.refuse_calls = refuse_first  # this many first calls refuse every third entry
        self.throttle_calls = throttle_calls  # this many first calls fail as a whole
        self.calls: list[tuple[int, list[bytes]]] = []
        self.sent: list[tuple[int, str, bytes]] = []  # (when, partition key, data) of every entry sent
        self.refused: list[bytes] = []

    def put_records(self, *, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append((self.clock.now, [entry["Data"] for entry in Records]))
        self.sent += [(self.clock.now, entry["PartitionKey"], entry["Data"]) for entry in Records]
        if self.throttle_calls:
            self.throttle_calls -= 1
            error = {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "Rate exceeded"}}
            raise ClientError(error, "PutRecords")
        if not self.refuse_calls:
            return self.client.put_records(StreamName=StreamName, Records=Records)
        self.refuse_calls -= 1
        # Like Kinesis: refused entries are not written, the others are, and the answer keeps the order.
        accepted = [entry for n, entry in enumerate(Records) if n % 3 != 1]
        real = iter(self.client.put_records(StreamName=StreamName, Records=accepted)["Records"])
        results: list[dict[str, Any]] = []
        for n, entry in enumerate(Records):
            if n % 3 == 1:
                self.refused.append(entry["Data"])
                results.append(
                    {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded for shard"}
                )
            else:
                results.append(next(real))
        return {"FailedRecordCount": len(Records) - len(accepted), "Records": results}


@pytest.fixture
def kinesis(moto: None) -> Any:
    client = boto3.client("kinesis", region_name="us-east-1")
    client.create_stream(StreamName=STREAM, ShardCount=2)
    return client


def read_stream(client: Any) -> list[tuple[str, str, str, bytes]]:
    """Every record of every shard: (shardId, sequenceNumber, partitionKey, data)."""
    return [(r["shard"], str(r["seq"]), r["key"], r["data"]) for r in moto_aws.read_stream(client, STREAM)]


def planned(seed: int, rate: float, duration: float, fraction: float, start_ms: int = START_MS) -> list[PlannedRecord]:
    return list(EventGenerator(seed, start_ms, rate, fraction).records(event_count(rate, duration)))


def assert_truth_describes_the_stream(truth: dict, stored: list[tuple[str, str, str, bytes]], plan: list) -> None:
    """The truth file is exactly the truth of the records in the stream, at their real shard and sequence."""
    # Equal bytes (e.g. two "[object Object]" records) have equal plans, so any of them will do.
    by_data = {record.data: record for record in plan}
    expected = Truth(truth["seed"], truth["start_ms"])
    for shard_id, sequence_number, _key, data in stored:
        expected.add(by_data[data], shard_id, sequence_number)
    expected_dict = orjson.loads(orjson.dumps(expected.to_dict()))
    for side in (truth, expected_dict):
        side["invalid"].sort(key=lambda entry: entry["id"])  # the file lists them in put order
    assert truth == expected_dict
    # And each invalid id names a real record whose event at that index the consumer rejects for that reason.
    records = {(shard_id, seq): data for shard_id, seq, _key, data in stored}
    for entry in truth["invalid"]:
        shard_id, seq, sub, index = entry["id"].split("/")
        assert sub == "0"
        data = records[(shard_id, seq)]
        decoded = decode_record(data)
        reasons = {r.index: r.reason.value for r in decoded.rejections}
        for i, obj in decoded.objects:
            verdict = validate_event(obj, arrival_ms=by_data[data].send_ms, rules=Rules())
            if isinstance(verdict, Invalid):
                reasons[i] = verdict.reason.value
        assert reasons[int(index)] == entry["reason"]


def test_every_planned_record_lands_once_paced_by_event_time(kinesis: Any, tmp_path: Path) -> None:
    clock = FakeClock()
    client = RecordingClient(kinesis, clock)
    truth_path = tmp_path / "out" / "truth.json"
    stats = run_generate(
        client,
        STREAM,
        rate=200.0,
        duration=5.0,
        invalid_fraction=0.1,
        seed=5,
        truth_path=truth_path,
        start_ms=START_MS,
        now_ms=clock.now_ms,
        sleep=clock.sleep,
    )
    plan = planned(5, 200.0, 5.0, 0.1)
    stored = read_stream(kinesis)
    assert sorted((key, data) for _s, _q, key, data in stored) == sorted((r.partition_key, r.data) for r in plan)
    assert len({shard_id for shard_id, *_ in stored}) == 2

    assert stats.records == len(plan) and stats.events == 1_000 and stats.retries == 0
    assert stats.valid + stats.invalid == 1_000 and 60 < stats.invalid < 140
    assert stats.as_dict()["events_per_second"] == pytest.approx(200, rel=0.05)
    assert set(stats.as_dict()) == {"records", "events", "valid", "invalid", "seconds", "events_per_second", "retries"}

    # Paced by event time relative to the start: never early, never much late, batched meanwhile.
    assert len(client.sent) == len(plan)
    for key in {r.partition_key for r in plan}:  # in order per partition key
        sent = [(sent_at, data) for sent_at, k, data in client.sent if k == key]
        mine = [r for r in plan if r.partition_key == key]
        assert [data for _, data in sent] == [r.data for r in mine]
        for (sent_at, _data), record in zip(sent, mine, strict=True):
            due = WALL_START_MS + record.send_ms - START_MS
            assert due <= sent_at <= due + LINGER_MS + 50
    assert 10 < len(client.calls) < len(plan) / 3
    assert clock.now - WALL_START_MS == pytest.approx(5_000, abs=LINGER_MS + 10)

    truth = orjson.loads(truth_path.read_bytes())
    assert truth["seed"] == 5 and truth["start_ms"] == START_MS and truth["events_sent"] == 1_000
    assert set(truth["invalid_by_reason"]) == set(INVALID_REASONS)
    assert_truth_describes_the_stream(truth, stored, plan)
    assert [p.name for p in truth_path.parent.iterdir()] == ["truth.json"]  # no temporary file left


def test_refused_entries_are_retried_alone_nothing_lost_nothing_doubled(kinesis: Any, tmp_path: Path) -> None:
    clock = FakeClock()
    client = RecordingClient(kinesis, clock, refuse_first=1)
    stats = run_generate(
        client,
        STREAM,
        rate=1_000.0,
        duration=2.0,
        invalid_fraction=0.05,
        seed=9,
        truth_path=tmp_path / "truth.json",
        start_ms=START_MS,
        now_ms=clock.now_ms,
        sleep=clock.sleep,
        backoff=CEILING,
    )
    plan = planned(9, 1_000.0, 2.0, 0.05)
    stored = read_stream(kinesis)
    assert len(client.refused) > 0
    assert stats.retries == len(client.refused)
    assert sorted(data for *_, data in stored) == sorted(r.data for r in plan)  # each exactly once
    # The retry call carries exactly the refused entries, after the first backoff.
    assert client.calls[1][1] == client.refused
    assert 0.1 in clock.sleeps
    assert_truth_describes_the_stream(orjson.loads((tmp_path / "truth.json").read_bytes()), stored, plan)


def test_a_throttled_call_is_sent_again_whole(kinesis: Any, tmp_path: Path) -> None:
    clock = FakeClock()
    client = RecordingClient(kinesis, clock, throttle_calls=2)
    stats = run_generate(
        client,
        STREAM,
        rate=50.0,
        duration=1.0,
        seed=3,
        start_ms=None,
        now_ms=clock.now_ms,
        sleep=clock.sleep,
        truth_path=tmp_path / "truth.json",
        backoff=CEILING,
    )
    plan = planned(3, 50.0, 1.0, 0.0, start_ms=WALL_START_MS)  # no start: event time starts now
    stored = read_stream(kinesis)
    assert sorted(data for *_, data in stored) == sorted(r.data for r in plan)
    assert client.calls[0][1] == client.calls[1][1] == client.calls[2][1]
    assert stats.retries == 2 * len(client.calls[0][1])
    assert [s for s in clock.sleeps if s in (0.1, 0.2)][:2] == [0.1, 0.2]
    truth = orjson.loads((tmp_path / "truth.json").read_bytes())
    assert truth["start_ms"] == WALL_START_MS and truth["invalid"] == []
    assert_truth_describes_the_stream(truth, stored, plan)


def test_giving_up_after_max_attempts_says_why_and_keeps_the_truth_of_what_was_sent(
    kinesis: Any, tmp_path: Path
) -> None:
    clock = FakeClock()
    client = RecordingClient(kinesis, clock, throttle_calls=1_000)
    with pytest.raises(GenerateError, match="lower --rate or add shards"):
        run_generate(
            client,
            STREAM,
            rate=10.0,
            duration=1.0,
            seed=1,
            start_ms=START_MS,
            now_ms=clock.now_ms,
            sleep=clock.sleep,
            truth_path=tmp_path / "truth.json",
            max_attempts=3,
            backoff=CEILING,
        )
    assert len(client.calls) == 3 and clock.sleeps[-2:] == [0.1, 0.2]
    truth = orjson.loads((tmp_path / "truth.json").read_bytes())
    assert truth["events_sent"] == 0 and truth["counts"] == {"events": {"1m": {}}}


def test_a_missing_stream_fails_at_once_with_advice(kinesis: Any) -> None:
    clock = FakeClock()
    with pytest.raises(GenerateError, match="Check that the stream exists"):
        run_generate(
            kinesis,
            "no-such-stream",
            rate=10.0,
            duration=1.0,
            seed=1,
            start_ms=START_MS,
            now_ms=clock.now_ms,
            sleep=clock.sleep,
        )
    assert all(s < 0.5 for s in clock.sleeps)  # pacing only, no retry backoff
