"""`make bench`: throughput, store writes and memory of the record processor (issue 4).

A benchmark script, not a timed test. On one core (`make bench` pins it with `taskset -c 0`) and the
built-in default config, it measures on records from the seeded traffic generator (the default mix:
single objects, arrays, NDJSON and gzip; 2 % invalid), rendered as the MultiLangDaemon's
`processRecords` JSON lines:

  floor      `amazon_kclpy`'s parse of the lines (json.loads with its object hook), base64 and orjson of
             every record's data (gzip inflated, NDJSON line by line): what any processor pays with the
             library and the standard library (the issue's reference); also measured with the processor's
             own primitives for that work (orjson parse of the lines, pybase64), for comparison;
  processor  the same lines read as in production (`consumer.protocol`: orjson parse, amazon_kclpy's
             message classes and dispatch) into `RecordProcessor` / `ShardWorker` with in-memory stores,
             DLQ and archive sink (everything but real I/O), default cadence on the real clock, one final
             durable flush and checkpoint;
  writes     1,000 s of event time at 1,000 events/s over 2 shards, delivered every 200 ms per shard
             (the KCL polling interval) with the default cadence on a fake clock: DynamoDB and Redis writes
             per million events;
  memory     tracemalloc peak of one processor pass, and the process's peak RSS.

Events/s count every event of the input (valid or not) per second of the process's CPU time, best of
several repetitions that alternate floor and processor, so that other load on the machine distorts them
less; the wall-clock figures are printed too. The figures go to stdout and into docs/benchmarks.md
(between the bench markers), with the command, date, CPU model and Python version. `--check` prints a
digest of everything the processor produced (stored partials, dead letters, forwarded events) so that
an optimisation can be shown to change no result.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import hashlib
import json
import os
import platform
import resource
import shutil
import sys
import time
import tracemalloc
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import orjson
from amazon_kclpy import dispatch, messages

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aggregations.memory_store import MemoryStore  # noqa: E402
from consumer.dlq import DeadLetter  # noqa: E402
from consumer.dlq.memory import MemoryDeadLetterQueue  # noqa: E402
from consumer.pipeline import Record  # noqa: E402
from consumer.processor import RecordProcessor  # noqa: E402
from consumer.protocol import load_action  # noqa: E402
from consumer.sinks import ForwardPair  # noqa: E402
from consumer.sinks.memory import MemorySink  # noqa: E402
from consumer.worker import Cadence, Outputs, ShardWorker, Stores  # noqa: E402
from devstack.generator import EventGenerator, PlannedRecord  # noqa: E402
from streamkpi.config import AppConfig, load_config  # noqa: E402

SEED = 20_241_117
START_MS = 1_763_337_600_000  # 2025-11-17T00:00:00Z
INVALID_FRACTION = 0.02
STREAM = "streamkpi-events"
# A real Kinesis sequence number (56 digits); the records of a shard count up from it.
SEQ_BASE = 49_590_338_271_490_256_608_559_692_538_361_571_095_921_575_989_136_588_898
KCL_MAX_RECORDS = 10_000  # STREAMKPI_KCL_MAX_RECORDS: records per processRecords line
KCL_POLL_MS = 200  # STREAMKPI_KCL_IDLE_MILLIS: one GetRecords per shard this often
from benchdoc import DOCS, cpu_model, write_block  # noqa: E402 - scripts/ is on sys.path when run

MARK_START, MARK_END = "<!-- bench:start -->", "<!-- bench:end -->"
TARGET_EVENTS_PER_S = 150_000
TARGET_FLOOR_RATIO = 0.40
TARGET_DYNAMODB_PER_MILLION = 5_000


# -- inputs -------------------------------------------------------------------------------------------


def kcl_record(data: bytes, seq: int, partition_key: str, arrival_ms: int) -> dict[str, Any]:
    """One record as the MultiLangDaemon writes it inside a processRecords message."""
    return {
        "action": "record",
        "data": base64.b64encode(data).decode(),
        "partitionKey": partition_key,
        "sequenceNumber": str(seq),
        "subSequenceNumber": 0,
        "approximateArrivalTimestamp": arrival_ms,
    }


def kcl_lines(records: Iterable[PlannedRecord], per_line: int = KCL_MAX_RECORDS) -> list[str]:
    """The records of one shard as processRecords JSON lines of up to `per_line` records each."""
    lines = []
    chunk: list[dict[str, Any]] = []
    for n, r in enumerate(records):  # each record is dropped once rendered: only the lines stay
        chunk.append(kcl_record(r.data, SEQ_BASE + n, r.partition_key, r.send_ms))
        if len(chunk) == per_line:
            lines.append(json.dumps({"action": "processRecords", "records": chunk, "millisBehindLatest": 60_000}))
            chunk = []
    if chunk:
        lines.append(json.dumps({"action": "processRecords", "records": chunk, "millisBehindLatest": 60_000}))
    return lines


# -- the in-memory world a processor runs in ------------------------------------------------------------


class NullCheckpointer:
    """Accepts every checkpoint (what the daemon answers when all is well)."""

    def __init__(self) -> None:
        self.calls = 0

    def checkpoint(self, sequence_number: str | None = None, sub_sequence_number: int | None = None) -> None:
        self.calls += 1


# --check: the fakes below hash what they are sent (off when timing: hashing is no work of the processor).
DIGESTS = False


def json_value(data: bytes) -> Any:
    """What JSON bytes mean (their text when they are no JSON): equal for two spellings of one value."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return data.decode("latin-1")


class DigestSink(MemorySink):
    """The archive route's MemorySink, keeping a count (and with --check digests) instead of every event:
    `hash` of the bytes forwarded, `values` of the JSON values they hold."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.hash = hashlib.sha256()
        self.values = hashlib.sha256()
        self.count = 0

    def send(self, events: Sequence[ForwardPair]) -> None:
        super().send(events)
        for key, data in self.events if DIGESTS else ():
            self.hash.update(key.encode() + b"\0" + data + b"\0")
            self.values.update(orjson.dumps([key, json_value(data)]))
        self.count += len(self.events)
        self.events.clear()


class DigestDeadLetters(MemoryDeadLetterQueue):
    """The in-memory DLQ, keeping a count (and with --check digests, as DigestSink) instead of every letter."""

    def __init__(self) -> None:
        super().__init__()
        self.hash = hashlib.sha256()
        self.values = hashlib.sha256()
        self.count = 0

    def send(self, letters: Sequence[DeadLetter]) -> None:
        super().send(letters)
        for letter in self.letters if DIGESTS else ():
            about = orjson.dumps([letter.identity, letter.reason, letter.detail, letter.arrival_ms])
            self.hash.update(about)
            self.hash.update(letter.payload)
            self.values.update(about)
            self.values.update(orjson.dumps(json_value(letter.payload)))
        self.count += len(self.letters)
        self.letters.clear()


def _exit(code: int) -> NoReturn:
    raise SystemExit(f"the record processor exited with {code}; see the log above")


@dataclass
class World:
    """Stores, DLQ and archive sink shared by the shards of one run, and how to make their processors."""

    config: AppConfig
    cadence: Cadence = field(default_factory=Cadence)
    clock: Any = time.monotonic
    wall_ms: Any = None
    durable: MemoryStore = field(default_factory=lambda: MemoryStore("dynamodb"))
    hot: MemoryStore = field(default_factory=lambda: MemoryStore("redis"))
    dlq: DigestDeadLetters = field(default_factory=DigestDeadLetters)
    archive: DigestSink = field(default_factory=lambda: DigestSink("archive"))
    checkpointer: NullCheckpointer = field(default_factory=NullCheckpointer)
    workers: list[ShardWorker] = field(default_factory=list)

    def worker(self, shard_id: str) -> ShardWorker:
        cadence = replace(self.cadence, clock=self.clock, wall_ms=self.wall_ms or self.cadence.wall_ms)
        stores, outputs = Stores(self.durable, self.hot), Outputs(self.dlq, {"archive": self.archive})
        worker = ShardWorker(shard_id, STREAM, self.config.pipeline, stores, outputs, cadence)
        self.workers.append(worker)
        return worker

    def processor(self, shard_id: str) -> RecordProcessor:
        processor = RecordProcessor(self.worker, exit=_exit)
        messages.InitializeInput(
            {"action": "initialize", "shardId": shard_id, "sequenceNumber": "TRIM_HORIZON", "subSequenceNumber": 0}
        ).dispatch(self.checkpointer, processor)
        return processor

    def shutdown(self, processor: RecordProcessor) -> None:
        messages.ShutdownRequestedInput({"action": "shutdownRequested"}).dispatch(self.checkpointer, processor)

    def digest(self, values: bool = False) -> str:
        """Everything the processors produced, hashed: equal digests mean equal results. With `values`,
        forwarded and dead-lettered bytes count by the JSON values they hold (so another spelling of the
        same event, e.g. the producer's own `20.00` where orjson writes `20.0`, gives the same digest)."""
        h = hashlib.sha256()
        for store in (self.durable, self.hot):
            for key in sorted(store.items):
                p = store.items[key]
                h.update(orjson.dumps([p.resolution, p.start_ms, p.shard_id, p.position], option=orjson.OPT_SORT_KEYS))
                h.update(orjson.dumps(p.metrics))  # in stored order: the order of groups counts too
        for sent in (self.dlq, self.archive):
            h.update((sent.values if values else sent.hash).digest())
        return h.hexdigest()[:16]


# -- (a) floor and (b) processor -----------------------------------------------------------------------


def floor_pass(lines: list[str], fast: bool = False) -> int:
    """What the protocol alone costs: amazon_kclpy's parse, base64 and orjson of every record.

    With `fast`, the same work with the primitives the processor itself uses for it (consumer.protocol's
    orjson parse of the lines and pybase64 of the data, into the pipeline's records): the floor a processor
    built like ours pays."""
    parse = load_action if fast else (lambda line: json.loads(line, object_hook=dispatch.message_decode))
    parsed = 0
    for line in lines:
        action = parse(line)
        for record in action.records:
            data = record[0] if fast else base64.b64decode(record.data)
            if data[:2] == b"\x1f\x8b":
                data = zlib.decompress(data, 16 + zlib.MAX_WBITS)
            try:
                value = orjson.loads(data)
                parsed += len(value) if isinstance(value, list) else 1
            except orjson.JSONDecodeError:
                for part in data.split(b"\n"):
                    if part.strip():
                        try:
                            orjson.loads(part)
                            parsed += 1
                        except orjson.JSONDecodeError:
                            pass
    return parsed


def processor_pass(lines: list[str], config: AppConfig) -> World:
    """The lines through the production parse (consumer.protocol, as KCLReader reads them) and amazon_kclpy's
    dispatch into the record processor, then a final flush."""
    world = World(config)
    processor = world.processor("shardId-000000000000")
    for line in lines:
        action = load_action(line)
        action.dispatch(world.checkpointer, processor)
    world.shutdown(processor)
    return world


@dataclass
class Timing:
    """Best (smallest) CPU and wall-clock seconds over the repetitions of one measurement."""

    cpu: float = float("inf")
    wall: float = float("inf")

    def measure(self, run: Any) -> Any:
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        result = run()
        self.cpu = min(self.cpu, time.process_time() - cpu)
        self.wall = min(self.wall, time.perf_counter() - wall)
        return result


def interleaved(repeat: int, *runs: Any) -> tuple[list[Timing], list[Any]]:
    """Each run `repeat` times, taking turns, so that a busy spell of the machine hits all of them."""
    timings = [Timing() for _ in runs]
    results: list[Any] = [None] * len(runs)
    for _ in range(repeat):
        for i, run in enumerate(runs):
            results[i] = timings[i].measure(run)
    return timings, results


def traced_peak(run: Any) -> int:
    """Peak bytes allocated by `run` above what was allocated before it (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        run()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def reset_peak_rss() -> None:
    """Start a new peak-RSS measurement (Linux: clear VmHWM); elsewhere the peak is the process's."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float:
    """Peak resident memory since reset_peak_rss (Linux VmHWM), else since the process started."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- (c) store writes at a steady 1,000 events/s --------------------------------------------------------


class FakeClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def monotonic(self) -> float:
        return self.ms / 1000

    def wall_ms(self) -> int:
        return self.ms


def shard_of(partition_key: str, shards: int) -> int:
    """Kinesis: the MD5 of the partition key as a 128-bit number, in evenly split hash key ranges."""
    hash_key = int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")
    return hash_key * shards >> 128


@dataclass
class WriteFigures:
    events: int
    records: int
    dynamodb_writes: int
    redis_writes: int
    checkpoints: int
    durable_flushes: int
    peak_rss_mib: float

    def per_million(self, count: int) -> float:
        return count * 1_000_000 / self.events


def writes_pass(config: AppConfig, seconds: int, rate: float, shards: int = 2) -> tuple[WriteFigures, World]:
    """`seconds` of event time at `rate` events/s; each shard gets its new records every KCL_POLL_MS."""
    clock = FakeClock(START_MS)
    world = World(config, clock=clock.monotonic, wall_ms=clock.wall_ms)
    shard_ids = [f"shardId-{n:012d}" for n in range(shards)]
    processors = [world.processor(s) for s in shard_ids]
    pending: list[list[Record]] = [[] for _ in shard_ids]
    next_seq = [SEQ_BASE] * shards
    events = records = 0

    def poll(now_ms: int) -> None:
        clock.ms = now_ms
        for shard, batch in enumerate(pending):
            if batch:  # KCL calls processRecords only for non-empty batches (the default)
                message = messages.ProcessRecordsInput(
                    {"action": "processRecords", "records": batch, "millisBehindLatest": 0}
                )
                message.dispatch(world.checkpointer, processors[shard])
                pending[shard] = []

    generator = EventGenerator(SEED, START_MS, rate, INVALID_FRACTION)
    next_poll = START_MS + KCL_POLL_MS
    count = round(seconds * rate)
    for record in generator.records(count):
        while record.send_ms >= next_poll:
            poll(next_poll)
            next_poll += KCL_POLL_MS
        shard = shard_of(record.partition_key, shards)
        pending[shard].append((record.data, str(next_seq[shard]), 0, record.partition_key, record.send_ms))
        next_seq[shard] += 1
        events += len(record.events)
        records += 1
    poll(next_poll)
    for processor in processors:
        world.shutdown(processor)
    figures = WriteFigures(
        events=events,
        records=records,
        dynamodb_writes=world.durable.writes,
        redis_writes=world.hot.writes,
        checkpoints=world.checkpointer.calls,
        durable_flushes=sum(w.stats.durable_flushes for w in world.workers),
        peak_rss_mib=peak_rss_mib(),
    )
    return figures, world


# -- report ---------------------------------------------------------------------------------------------


def affinity() -> str:
    try:
        cores = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return f"{os.cpu_count()} cores"
    return f"{os.cpu_count()} cores, this process on {len(cores)}: {','.join(map(str, cores))}"


def table(rows: Iterable[tuple[str, str, str]]) -> list[str]:
    rows = list(rows)
    out = ["| measure | value | target |", "| --- | ---: | --- |"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return out


def _pass_fail(ok: bool) -> str:
    return "met" if ok else "NOT met"


def generated(count: int, rate: float) -> Iterator[PlannedRecord]:
    return EventGenerator(SEED, START_MS, rate, INVALID_FRACTION).records(count)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=200_000, help="events for the throughput runs (200000)")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions; the best counts (5)")
    parser.add_argument("--write-seconds", type=int, default=1_000, help="event time of the writes run (1000)")
    parser.add_argument("--no-docs", action="store_true", help="do not refresh docs/benchmarks.md")
    parser.add_argument("--check", action="store_true", help="print digests of the results (for optimisations)")
    args = parser.parse_args(argv)
    global DIGESTS
    DIGESTS = args.check

    config = load_config(None)
    rate = 1_000.0

    # (c) first; it streams its records, so its peak RSS is the processors' own (and the interpreter's).
    print(f"writes: {args.write_seconds} s of event time at {rate:,.0f} events/s over 2 shards ...", file=sys.stderr)
    reset_peak_rss()
    writes, writes_world = writes_pass(config, args.write_seconds, rate)

    print(f"throughput: {args.events:,} events, best of {args.repeat} ...", file=sys.stderr)
    planned = {"events": 0, "invalid": 0}

    def counted(records: Iterator[PlannedRecord]) -> Iterator[PlannedRecord]:
        for record in records:  # streamed: only the lines stay in memory
            planned["events"] += len(record.events)
            planned["invalid"] += sum(1 for e in record.events if e.reason is not None)
            yield record

    lines = kcl_lines(counted(generated(args.events, rate)))
    events, invalid = planned["events"], planned["invalid"]
    DIGESTS = False
    gc.collect()
    reset_peak_rss()
    (floor_t, fast_t, proc_t), (_, _, world) = interleaved(
        args.repeat,
        lambda: floor_pass(lines),
        lambda: floor_pass(lines, fast=True),
        lambda: processor_pass(lines, config),
    )
    max_rss = peak_rss_mib()  # before tracemalloc adds its own
    DIGESTS = args.check
    if args.check:
        world = processor_pass(lines, config)
    peak = traced_peak(lambda: processor_pass(lines, config))

    floor_rate, proc_rate, fast_rate = events / floor_t.cpu, events / proc_t.cpu, events / fast_t.cpu
    ratio = proc_rate / floor_rate
    wall_floor, wall_proc = events / floor_t.wall, events / proc_t.wall
    ddb_pm = writes.per_million(writes.dynamodb_writes)
    redis_pm = writes.per_million(writes.redis_writes)
    stats = world.workers[0].stats
    if (stats.events, stats.rejected) != (events - invalid, invalid):
        raise SystemExit(
            f"the processor counted {stats.events} valid and {stats.rejected} rejected events, "
            f"the generator planned {events - invalid} and {invalid}"
        )

    rows = [
        ("floor: amazon_kclpy parse + base64 + orjson", f"{floor_rate:,.0f} events/s", "(reference)"),
        (
            "processor: parse, decode, validate, route, aggregate",
            f"{proc_rate:,.0f} events/s",
            f"≥ {TARGET_EVENTS_PER_S:,}: {_pass_fail(proc_rate >= TARGET_EVENTS_PER_S)}",
        ),
        ("processor / floor", f"{ratio:.0%}", f"≥ {TARGET_FLOOR_RATIO:.0%}: {_pass_fail(ratio >= TARGET_FLOOR_RATIO)}"),
        (
            "floor with the processor's own primitives: orjson parse of the lines, pybase64",
            f"{fast_rate:,.0f} events/s",
            f"(processor / this floor: {proc_rate / fast_rate:.0%})",
        ),
        (
            "the same by wall clock: floor, processor, ratio",
            f"{wall_floor:,.0f} / {wall_proc:,.0f} events/s, {wall_proc / wall_floor:.0%}",
            "(the rows above count CPU time)",
        ),
        (
            "DynamoDB writes per million events at 1,000 events/s",
            f"{ddb_pm:,.0f}",
            f"≤ {TARGET_DYNAMODB_PER_MILLION:,}: {_pass_fail(ddb_pm <= TARGET_DYNAMODB_PER_MILLION)}"
            " (one update per event per resolution: 3,000,000)",
        ),
        ("Redis writes per million events at 1,000 events/s", f"{redis_pm:,.0f}", "(1 s flush)"),
        ("checkpoints per million events at 1,000 events/s", f"{writes.per_million(writes.checkpoints):,.0f}", ""),
        (
            "peak allocated in one throughput pass (tracemalloc)",
            f"{peak / 2**20:,.1f} MiB",
            "(forwards wait for the flush; orjson reserves about 12x a line while reading it, "
            "mostly never touched: see RSS)",
        ),
        ("peak RSS of the writes run (2 shards)", f"{writes.peak_rss_mib:,.1f} MiB", ""),
        (
            "peak RSS of the throughput runs",
            f"{max_rss:,.1f} MiB",
            f"(with their input: {sum(map(len, lines)) / 2**20:,.0f} MiB of JSON lines)",
        ),
    ]
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    pinned = shutil.which("taskset") is not None
    command = "make bench" + ("  (taskset -c 0 .venv/bin/python scripts/bench.py)" if pinned else "")
    valid_pct = 100 * (events - invalid) / events
    about = [
        f"- command: `{command}`",
        f"- date: {now}",
        f"- machine: {cpu_model()}, {affinity()}; {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), orjson {orjson.__version__}",
        f"- throughput input: {events:,} events ({valid_pct:.1f} % valid) in {len(lines)} processRecords "
        f"lines of up to {KCL_MAX_RECORDS:,} records (generator seed {SEED}, default mix), best of {args.repeat}",
        f"- writes input: {writes.events:,} events in {writes.records:,} records, {args.write_seconds:,} s of event "
        f"time, 2 shards polled every {KCL_POLL_MS} ms, default cadence (Redis 1 s, DynamoDB 5 s, checkpoint 5 s) "
        f"on a fake clock; {writes.durable_flushes} durable flushes",
    ]
    report = [*table(rows), "", *about]
    print("\n".join(report))
    if args.check:
        print(f"digest: throughput {world.digest()} writes {writes_world.digest()}")
        print(f"values digest: throughput {world.digest(values=True)} writes {writes_world.digest(values=True)}")
    if not args.no_docs:
        write_block(["", *report, ""], MARK_START, MARK_END)
        print(f"(written to {DOCS.relative_to(ROOT)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
