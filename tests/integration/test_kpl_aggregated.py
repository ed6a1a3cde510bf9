"""KPL-aggregated records (issue 12 item 6) through the real daemon, moto and redis-server.

Producers using the KPL (aggregation is on by default) or Fluent Bit's aggregation pack many user records
into one Kinesis record. The KCL daemon deaggregates them before our processor sees them: every user record
arrives as a record of its own with the Kinesis record's sequence number and its index in the aggregated
record as the sub-sequence number. Aggregates are exactly-once per (shard, sequence number, sub-sequence
number, index in the user record); checkpoints are (sequence number, sub-sequence number).

What the KCL (3.1.3) does, read from its source and relied on here:
- `ProcessTask` deaggregates the records of one GetRecords call and hands them all to one processRecords
  call: `maxRecords` counts Kinesis records, so a batch never ends inside an aggregated record, and the
  processor (which checkpoints at the end of a batch) checkpoints at an aggregated record's last user record,
  `checkpointSubSequenceNumber` = its user records - 1.
- After a restart it reads the shard again AT the checkpoint's sequence number and drops the user records
  at or below (sequence number, sub-sequence number): a checkpoint without the sub-sequence number would have
  it deliver user records 1.. of that aggregated record again.
- A user record whose partition key (or explicit hash key) hashes outside the shard's range makes it drop
  the whole aggregated record, silently. The KPL only aggregates records bound for one shard; the producer
  here does the same (aws_kinesis_agg's RecordAggregator does not: that is the caller's job).

So "killed in the middle of an aggregated record" means: what the worker made durable ends inside one.
Dead letters and forwards are sent in the middle of a batch once they hold more than
STREAMKPI_MAX_PENDING_BYTES (1 MiB here, the least allowed), at whichever user record crosses it, and
DynamoDB is written every CADENCE_S seconds, each window's partial at the position of its last event, which
is mostly inside an aggregated record. The records are put while the worker runs; the test watches the DLQ
past each shard's checkpoint, and when new letters appear there it freezes the whole worker (SIGSTOP to its
process group), reads the DLQ and the lease table, and SIGKILLs it if the letters past the checkpoint are
exactly the invalid events up to a user record inside an aggregated record S that has invalid user records
after it, while the checkpoint sits at the last user record of an earlier aggregated record
(checkpointSubSequenceNumber > 0). Otherwise the worker goes on (SIGCONT). After the restart every aggregate
in both stores must equal the reference (tests/integration/reference.py) over the valid user events.

Run with -s to see what happened (the freezes, the cut, checkpoints, DynamoDB positions, DLQ repeats).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aws_kinesis_agg.aggregator import AggRecord, RecordAggregator

from consumer.reasons import Reason
from devstack.generator import EventGenerator, PlannedEvent, PlannedRecord
from tests.integration.conftest import Stack, Worker, wait_for
from tests.integration.dlq_drain import DlqDrain
from tests.integration.reference import DEFAULT_CONFIG, Reference, read_config, read_events
from tests.integration.verify import partial_positions, store_problems

pytestmark = pytest.mark.integration

Esn = tuple[int, int]  # (sequence number, sub-sequence number), comparable
SEED = 20_261_206
EVENTS = 28_000  # about 4,900 user records in about 16 aggregated records
AGG_BYTES = 512 * 1024  # each aggregated record: about 370 user records, 2,200 events
PENDING_BYTES = 1_048_576  # the least STREAMKPI_MAX_PENDING_BYTES allowed: mid-batch sends about every 2 records
CADENCE_S = 3  # DynamoDB flushes and checkpoints (the product's default is 5 s)
PUT_PAUSE_S = 0.4  # between two aggregated records put (about 1.3 MB/s)


def esn(sequence_number: str, sub: int) -> Esn:
    """A checkpoint or record position as a comparable pair (TRIM_HORIZON and the like come first)."""
    return (int(sequence_number) if sequence_number.isdigit() else -1, sub)


def parse_id(identity: str) -> tuple[str, Esn, int]:
    """A letter's identity `<shard>/<seq>/<sub>/<index>` as (shard, (seq, sub), index)."""
    shard, seq, sub, index = identity.split("/")
    return shard, (int(seq), int(sub)), int(index)


@dataclass
class Aggregated:
    """One aggregated Kinesis record as put: where it landed and what its user records hold."""

    shard: str
    sequence_number: str
    user_records: int
    invalid_subs: list[int]  # sub-sequence numbers of the user records holding at least one invalid event


@dataclass
class KplTruth:
    """What the consumer must make of the aggregated records that were put."""

    events_file: Path
    events: int = 0
    valid: int = 0
    invalid: dict[str, str] = field(default_factory=dict)  # letter identity -> reason
    records: dict[tuple[str, int], Aggregated] = field(default_factory=dict)  # (shard, seq) -> record
    last: dict[str, tuple[str, int]] = field(default_factory=dict)  # shard -> (seq, sub) of its last user record
    lock: threading.Lock = field(default_factory=threading.Lock)  # records are put by a thread

    def add(self, shard: str, sequence_number: str, members: list[PlannedRecord]) -> None:
        with self.lock:
            self._add(shard, sequence_number, members)

    def _add(self, shard: str, sequence_number: str, members: list[PlannedRecord]) -> None:
        invalid_subs = []
        with self.events_file.open("ab") as out:
            for sub, record in enumerate(members):
                bad = False
                for planned in record.events:
                    identity = f"{shard}/{sequence_number}/{sub}/{planned.index}"
                    self.events += 1
                    if planned.reason is not None:
                        self.invalid[identity] = planned.reason
                        bad = True
                        continue
                    self.valid += 1
                    line = {"id": identity, "event_ms": planned.event_ms, "event": orjson.Fragment(planned.body)}
                    out.write(orjson.dumps(line) + b"\n")
                if bad:
                    invalid_subs.append(sub)
        self.records[(shard, int(sequence_number))] = Aggregated(shard, sequence_number, len(members), invalid_subs)
        self.last[shard] = (sequence_number, len(members) - 1)


class KplProducer:
    """Aggregates user records per shard, as the KPL does (one aggregator per predicted shard); `send` puts the
    aggregated records in order and records what was put in a KplTruth."""

    def __init__(self, stack: Stack, truth: KplTruth, max_bytes: int = AGG_BYTES) -> None:
        self.kinesis = stack.client("kinesis")
        self.stream = stack.settings.stream
        self.truth = truth
        shards = self.kinesis.list_shards(StreamName=self.stream)["Shards"]
        self.ranges = [
            (int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]), s["ShardId"])
            for s in shards
        ]
        self.aggregators = {shard: RecordAggregator(max_bytes) for _, _, shard in self.ranges}
        self.members: dict[str, list[PlannedRecord]] = {shard: [] for _, _, shard in self.ranges}
        self.ready: list[tuple[str, AggRecord, list[PlannedRecord]]] = []  # full aggregated records, not put yet

    def shard_for(self, partition_key: str) -> str:
        key = int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")
        return next(shard for low, high, shard in self.ranges if low <= key <= high)

    def add(self, record: PlannedRecord) -> None:
        shard = self.shard_for(record.partition_key)
        full = self.aggregators[shard].add_user_record(record.partition_key, record.data)
        if full is not None:  # the record added starts the next aggregated record
            self.ready.append((shard, full, self.members[shard]))
            self.members[shard] = []
        self.members[shard].append(record)

    def flush(self) -> None:
        for shard, aggregator in self.aggregators.items():
            rest = aggregator.clear_and_get()
            if rest is not None:
                self.ready.append((shard, rest, self.members[shard]))
                self.members[shard] = []

    def send(self, pause_s: float = 0.0) -> None:
        """Put every aggregated record made so far, in order, `pause_s` apart."""
        for shard, aggregated, members in self.ready:
            self.put(shard, aggregated, members)
            time.sleep(pause_s)
        self.ready = []

    def put(self, shard: str, aggregated: AggRecord, members: list[PlannedRecord]) -> None:
        assert aggregated.get_num_user_records() == len(members)
        partition_key, explicit_hash_key, data = aggregated.get_contents()
        extra = {"ExplicitHashKey": explicit_hash_key} if explicit_hash_key else {}
        reply = self.kinesis.put_record(StreamName=self.stream, Data=data, PartitionKey=partition_key, **extra)
        assert reply["ShardId"] == shard, "an aggregated record must land on the shard of all its user records"
        self.truth.add(shard, reply["SequenceNumber"], members)

    def put_plain(self, data: bytes, partition_key: str, planned: list[PlannedEvent]) -> None:
        """A Kinesis record that is not a (valid) aggregated record: the daemon hands it over as it is."""
        reply = self.kinesis.put_record(StreamName=self.stream, Data=data, PartitionKey=partition_key)
        record = PlannedRecord(partition_key, data, planned, 0)
        self.truth.add(reply["ShardId"], reply["SequenceNumber"], [record])


def wait_checkpointed(stack: Stack, last: dict[str, tuple[str, int]], timeout: float) -> None:
    """Until every shard's lease is checkpointed at its last user record: (sequence number, sub-sequence number)."""
    try:
        wait_for(lambda: lease_positions(stack) == last, timeout, "every shard checkpointed at its last user record")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: lease table {lease_positions(stack)}, expected {last}") from None


def lease_positions(stack: Stack) -> dict[str, tuple[str, int]]:
    """Per shard, the lease's checkpoint: (checkpoint, checkpointSubSequenceNumber)."""
    items = stack.client("dynamodb").scan(TableName=stack.settings.app_name, ConsistentRead=True)["Items"]
    return {
        item["leaseKey"]["S"]: (item["checkpoint"]["S"], int(item.get("checkpointSubSequenceNumber", {"N": "0"})["N"]))
        for item in items
    }


def durable_positions(stack: Stack) -> dict[str, str]:
    """Per shard, the highest position (seq.sub.index) any of its partials in DynamoDB includes."""
    return {
        shard: ".".join(str(int(part)) for part in position.split("."))
        for shard, position in partial_positions(stack).items()
    }


class Letters(DlqDrain):
    """The DLQ's letters, every copy of every identity kept: read in the background (`start`), or when the test
    decides (`drain`, with or without a cap on receives)."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(stack)
        self.received: dict[str, list[str]] = {}  # identity -> the reason of each copy received

    def keep(self, body: dict[str, Any]) -> None:
        self.received.setdefault(body["id"], []).append(body["reason"])

    def reasons(self) -> dict[str, str]:
        out = {}
        for identity, reasons in self.received.items():
            assert len(set(reasons)) == 1, f"{identity} came with two reasons: {reasons}"
            out[identity] = reasons[0]
        return out


def past_checkpoint(letters: Letters, lease: dict[str, tuple[str, int]]) -> dict[str, list[tuple[Esn, int]]]:
    """Per shard, the dead-lettered (record position, index) beyond its lease's checkpoint."""
    out: dict[str, list[tuple[Esn, int]]] = {}
    for identity in letters.received:
        shard, position, index = parse_id(identity)
        if shard in lease and position > esn(*lease[shard]):
            out.setdefault(shard, []).append((position, index))
    return out


def mid_record_cut(truth: KplTruth, letters: Letters, lease: dict[str, tuple[str, int]]) -> dict[str, Any] | None:
    """A shard whose durable dead letters end inside an aggregated record past a checkpoint that sits at the
    last user record of an earlier aggregated record; the letters past the checkpoint must be exactly the
    invalid events up to that point (a prefix: none skipped). None when no shard is in that state."""
    with truth.lock:
        return _mid_record_cut(truth, letters, lease)


def _mid_record_cut(truth: KplTruth, letters: Letters, lease: dict[str, tuple[str, int]]) -> dict[str, Any] | None:
    for shard, past in sorted(past_checkpoint(letters, lease).items()):
        checkpoint_seq, checkpoint_sub = lease[shard]
        if not checkpoint_seq.isdigit():
            continue  # no checkpoint yet: a restart would start at TRIM_HORIZON, nothing to show
        top = max(past)  # the last letter sent, in the order of (sequence, sub-sequence, index)
        (top_seq, top_sub), _ = top
        record = truth.records[(shard, top_seq)]
        later = [sub for sub in record.invalid_subs if sub > top_sub]
        if not later:
            continue  # the letters end with the record's last invalid user record: not in the middle
        low = esn(checkpoint_seq, checkpoint_sub)
        expected = set()
        for identity in truth.invalid:
            where, position, index = parse_id(identity)
            if where == shard and low < position and (position, index) <= top:
                expected.add(identity)
        sent = {f"{shard}/{seq}/{sub}/{index}" for (seq, sub), index in past}
        assert sent == expected, (
            f"letters past the checkpoint are not the invalid events up to {top}: "
            f"missing {sorted(expected - sent)[:5]}, extra {sorted(sent - expected)[:5]}"
        )
        checkpointed = truth.records[(shard, int(checkpoint_seq))]
        return {
            "shard": shard,
            "checkpoint": {"sequence": checkpoint_seq, "sub": checkpoint_sub},
            "checkpointed_record_user_records": checkpointed.user_records,
            "cut_record": {"sequence": record.sequence_number, "user_records": record.user_records},
            "last_dead_lettered_sub": top_sub,
            "invalid_user_records_after_it": len(later),
            "letters_past_checkpoint": len(sent),
        }
    return None


def initialized_from(log: str) -> list[dict[str, Any]]:
    """What each shard of a worker started from (the daemon's initialize message, as the processor logs it)."""
    out = []
    for line in log.splitlines():
        if "shard initialized" in line:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            out.append({k: row.get(k) for k in ("shard", "from_sequence", "from_sub_sequence")})
    return out


def compare_stores(stack: Stack, reference: Reference, monkeypatch: pytest.MonkeyPatch) -> tuple[int, list[str]]:
    """Every metric at every resolution, in DynamoDB and in Redis, against the reference: (windows, problems)."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(key, stack.env[key])
    problems, compared = store_problems(stack, reference, everything=False)
    return compared, problems


# conftest's `start_worker`, flushing to DynamoDB and checkpointing every CADENCE_S seconds (not 1 s): between
# two checkpoints the worker sends dead letters and forwards several times in the middle of its batches, so
# what it made durable often ends inside a record.
KPL_CADENCE = {"STREAMKPI_DYNAMODB_FLUSH_SECONDS": str(CADENCE_S), "STREAMKPI_CHECKPOINT_SECONDS": str(CADENCE_S)}


def test_sigkill_inside_an_aggregated_record_then_restart_counts_every_user_record_once(
    stack: Stack, start_worker: Callable[..., Worker], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    began = time.monotonic()
    summary: dict[str, Any] = {}

    def mark(phase: str) -> None:
        summary.setdefault("seconds", {})[phase] = round(time.monotonic() - began, 1)

    s = stack.fresh(shards=2, STREAMKPI_MAX_PENDING_BYTES=str(PENDING_BYTES))
    assert s.settings.config_path is None, "the reference reads the built-in default config"
    truth = KplTruth(tmp_path / "events.ndjson")
    producer = KplProducer(s, truth)
    # Event times over the last minutes (several 1m windows), 5% late, 2% invalid: field-level ones inside
    # arrays and NDJSON lines, and unreadable (not_json, not_utf8) user records.
    now_ms = int(time.time() * 1000)
    generator = EventGenerator(SEED, now_ms - 260_000, EVENTS / 240, invalid_fraction=0.02, late_fraction=0.05)
    for record in generator.records(EVENTS):
        producer.add(record)
    producer.flush()
    sizes = [members for _, _, members in producer.ready]
    assert min(len(m) for m in sizes[:-2]) >= 250, "hundreds of user records per aggregated record"
    summary.update(aggregated_records=len(sizes), user_records_per_record=[min(map(len, sizes)), max(map(len, sizes))])

    # The records flow in while the worker runs (a backlog would be gone in a few batches on a fast machine).
    worker = start_worker(s, **KPL_CADENCE)
    wait_for(lambda: worker.logs().count("shard initialized") >= 2, 120, "the worker took both shards")
    mark("started")
    sender = threading.Thread(target=producer.send, args=(PUT_PAUSE_S,), daemon=True)
    sender.start()
    letters = Letters(s)
    try:
        cut = None
        freezes: list[dict[str, Any]] = []
        summary["freezes"] = freezes
        seen: dict[str, list[tuple[Esn, int]]] = {}
        deadline = time.monotonic() + 600  # only a stalled worker gets here: it ends first when it finishes
        while cut is None:
            assert time.monotonic() < deadline, f"the worker stalled: {summary}"
            assert worker.process.poll() is None, f"the worker exited:\n{worker.logs()[-3000:]}"
            lease = lease_positions(s)
            sending = sender.is_alive()
            assert sending or lease != truth.last, f"the worker finished before a kill inside a record: {summary}"
            letters.drain(calls=5)
            past = past_checkpoint(letters, lease)
            if past and past != seen:  # new letters past a checkpoint: look at the worker frozen
                frozen = time.monotonic()
                os.killpg(worker.process.pid, signal.SIGSTOP)
                time.sleep(0.5)  # requests already sent land (checked again after the kill)
                letters.drain()  # (the queue holds a few hundred letters at most: they come in batches of 10)
                lease = lease_positions(s)
                seen = past_checkpoint(letters, lease)
                cut = mid_record_cut(truth, letters, lease)
                freezes.append(
                    {
                        "at_s": round(time.monotonic() - began, 1),
                        "lease": lease,
                        "last_letter_past_checkpoint": {k: max(v)[0] for k, v in seen.items()},
                        "inside_a_record": cut is not None,
                        "frozen_s": round(time.monotonic() - frozen, 1),
                    }
                )
                if cut is not None:
                    os.killpg(worker.process.pid, signal.SIGKILL)
                    worker.process.wait(10)
                    break
                os.killpg(worker.process.pid, signal.SIGCONT)
            time.sleep(0.05)
        # What the dead worker left, once anything it had sent before it froze has landed: the same cut.
        sender.join(120)
        assert not sender.is_alive()
        summary.update(events=truth.events, valid=truth.valid, invalid=len(truth.invalid))
        assert truth.events == EVENTS and len(truth.last) == 2
        time.sleep(1.0)
        letters.drain()
        lease_at_kill = lease_positions(s)
        cut = mid_record_cut(truth, letters, lease_at_kill)
        assert cut is not None, f"requests in flight at the freeze completed the aggregated record: {summary}"
        cut.update(lease_at_kill=lease_at_kill, durable_positions=durable_positions(s))
        summary.update(cut=cut, killed_log=initialized_from(worker.logs()))
        mark("killed")
        assert cut["checkpoint"]["sub"] == cut["checkpointed_record_user_records"] - 1 > 0, (
            "the checkpoint is the last user record of an aggregated record"
        )
        # The letters the killed worker sent past its checkpoint: the restart must send these again, only these.
        past_at_kill = {i for i in letters.received if parse_id(i)[1] > esn(*lease_at_kill[parse_id(i)[0]])}

        letters.start()  # from here on read in the background as the restarted worker fills the queue
        restarted = start_worker(s, **KPL_CADENCE)
        wait_checkpointed(s, truth.last, 150)
        mark("caught_up")
        started = {row["shard"]: row for row in initialized_from(restarted.logs())}
        summary["restarted_from"] = started
        shard = cut["shard"]
        assert started[shard]["from_sequence"] == cut["checkpoint"]["sequence"]
        assert started[shard]["from_sub_sequence"] == cut["checkpoint"]["sub"] > 0, "resumed at sub-sequence level"

        # Both stores: every metric at every resolution equals the reference over the valid user events.
        reference = Reference(read_config(DEFAULT_CONFIG.read_text()), read_events(truth.events_file))
        assert reference.events == truth.valid
        compared, problems = compare_stores(s, reference, monkeypatch)
        summary["windows_compared"] = compared
        assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:60])
        mark("compared")

        # The DLQ: exactly the invalid events with their reasons. The letters the killed worker sent past its
        # checkpoint came again from the restart. Unless a worker went through a shard twice (a lease lost and
        # taken back: it starts again from the checkpoint), those are the only copies: none of a user record
        # at or before the checkpoint (a checkpoint without its sub-sequence number would have had the daemon
        # deliver the rest of the checkpointed aggregated record again).
        letters.finish()
        assert letters.reasons() == truth.invalid
        repeated = {i for i, copies in letters.received.items() if len(copies) > 1}
        assert past_at_kill <= repeated
        inits = [len(initialized_from(w.logs())) for w in (worker, restarted)]
        summary.update(
            dlq_messages=letters.messages, dlq_ids=len(letters.received), dlq_repeats=len(repeated), inits=inits
        )
        if inits == [2, 2]:
            assert repeated == past_at_kill, (sorted(repeated - past_at_kill)[:5], sorted(past_at_kill - repeated)[:5])
            assert all(len(copies) <= 2 for copies in letters.received.values())
        mark("dlq")
        assert restarted.process.poll() is None, restarted.logs()[-3000:]
    finally:
        letters.stop()
        print("kpl:", json.dumps(summary))


def test_invalid_user_records_inside_an_aggregated_record_reach_the_dlq_once_each(
    stack: Stack, start_worker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = stack.fresh(shards=1)
    truth = KplTruth(tmp_path / "events.ndjson")
    producer = KplProducer(s, truth, max_bytes=1024 * 1024)
    # A record with the KPL magic bytes and a broken checksum: the daemon hands it over whole (sub 0).
    broken = RecordAggregator()
    broken.add_user_record("user-x", b'{"eventType": "click"}')
    data = bytearray(broken.clear_and_get().get_contents()[2])
    data[-1] ^= 0xFF
    producer.put_plain(bytes(data), "user-x", [PlannedEvent(0, None, None, Reason.NOT_UTF8.value)])
    # Then one aggregated record of several hundred user records, 5% of their events invalid: field-level
    # ones inside arrays and NDJSON, and whole unreadable user records.
    now_ms = int(time.time() * 1000)
    (shard,) = producer.members
    for record in EventGenerator(SEED + 1, now_ms - 60_000, 50, invalid_fraction=0.05).records(3_000):
        producer.add(record)
        if len(producer.members[shard]) == 150:
            # User records no browser would send, in the middle of the aggregated record.
            for odd, reason in ((b"", Reason.NOT_JSON), (b"42", Reason.NOT_OBJECT), (b"\n\n", Reason.NOT_JSON)):
                producer.add(PlannedRecord("user-y", odd, [PlannedEvent(0, None, None, reason.value)], now_ms))
    producer.flush()
    producer.send()
    assert len(truth.records) == 2, "one broken and one whole aggregated record"
    sequence_number, last_sub = truth.last[shard]
    assert last_sub >= 300
    assert {Reason.NOT_JSON.value, Reason.NOT_UTF8.value, Reason.MISSING_FIELD.value} <= set(truth.invalid.values())

    letters = Letters(s)
    letters.start()  # read in the background as the worker fills the queue (moto's ReceiveMessage is O(queue))
    worker = start_worker(s)
    try:
        wait_checkpointed(s, truth.last, 120)
    finally:
        letters.finish()
    assert letters.reasons() == truth.invalid  # every invalid user event, with its own identity and reason
    assert letters.messages == len(truth.invalid), "each letter once"
    subs = {parse_id(i)[1][1] for i in truth.invalid if parse_id(i)[1][0] == int(sequence_number)}
    assert len(subs) > 50, "dead letters from many user records of one aggregated record"

    # The valid events of the aggregated record, counted once in both stores.
    reference = Reference(read_config(DEFAULT_CONFIG.read_text()), read_events(truth.events_file))
    assert reference.events == truth.valid > 1_000
    _, problems = compare_stores(s, reference, monkeypatch)
    assert not problems, "\n".join(problems[:60])
    assert worker.process.poll() is None, worker.logs()[-3000:]
