#!/usr/bin/env python3
"""`make bench` (issue 12): capacity per worker, end to end through the real KCL MultiLangDaemon.

The processor's own rate (scripts/bench.py) leaves out the daemon: GetRecords, the JVM's JSON and base64
of every record, the pipe to the child, checkpoints through DynamoDB, and the stores. This script
measures events/s through all of it, on a local stack of its own (moto over hypercorn and a real
redis-server on free ports, its own state folder, started by `devstack.local_stack.up`; kinesis-local
for Kinesis instead when it serves records faster):

0. emulator: the seeded generator's first records are put into a one-shard stream of moto and of the
   tests' pinned kinesis-local, then read back with signed GetRecords calls (Limit 10,000) over cleartext
   HTTP/2, as the KCL's Netty client makes them, and over HTTP/1.1; only the calls are timed. The faster
   over HTTP/2 serves the runs; every rate is reported.
1. input: N generated events (fixed seed, default mix of single objects, arrays, NDJSON and gzip, 2 %
   invalid) put into a fresh 2-shard stream BEFORE the daemon starts: what is measured is a catch-up.
2. run A: `streamkpi consume` as a user runs it (the record processor; DynamoDB, the SQS DLQ and the
   default config's Firehose archive sink on moto; the real redis-server);
   run B: the same daemon with the same properties (rendered by `streamkpi.kcl_daemon`, compared with A's
   line by line), except that `executableName` is `scripts/checkpoint_only_processor.py`: the KCL
   sample's shape, which only checkpoints at the end of each batch. Same stream contents (a fresh stream
   per run, filled with the same records), same KCL settings (maxRecords 10,000, idle 200 ms).
3. time: from the daemon's first non-empty processRecords message (its INFO log, "Writing
   ProcessRecordsMessage" before the first "Message size" above 1 KiB) to the moment the lease table
   shows every shard checkpointed at its last sequence number (polled every 0.1 s); events/s = N / that.
   The KCL fetches ahead, so two other windows are reported: from the first GetRecords ("Initializing
   shard ... with TRIM_HORIZON"), and the steady state between each shard's first and last checkpoint.
4. CPU: utime + stime from /proc of the JVM, of its children (the Python processors), of moto and of
   redis-server, sampled during the run and read at the window's ends; peak RSS (VmHWM) of the JVM and
   of the larger child. Then the round trips of the calls A's children make at a flush, one at a time.

moto is patched for the runs (scripts/bench_moto_patches.py, `--no-moto-patches` to serve it as is).
The figures go to stdout and into docs/benchmarks.md between the bench-capacity markers, with the
command, date, machine, tree and load average.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import http.client
import itertools
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from benchdoc import cpu_model, write_block  # noqa: E402

from devstack import local_stack, resources  # noqa: E402
from devstack.generator import EventGenerator  # noqa: E402
from streamkpi import kcl_daemon  # noqa: E402
from streamkpi.settings import Settings  # noqa: E402

MARK_START, MARK_END = "<!-- bench-capacity:start -->", "<!-- bench-capacity:end -->"
HEADING = "## Capacity per worker (end to end, issue 12)"
SEED = 20_241_117  # scripts/bench.py's
INVALID_FRACTION = 0.02
EVENT_RATE = 1_000.0  # events/s of event time (scripts/bench.py's), so N events span N / 1,000 s
SHARD_WRITE_RECORDS = 1_000  # Kinesis per shard: 1,000 records/s or 1 MiB/s of writes
SHARD_WRITE_BYTES = 1_048_576
SHARD_READ_BYTES = 2 * 1_048_576  # and 2 MiB/s of reads (GetRecords: 10 MiB or 10,000 records a call)
KCL_MAX_RECORDS = 10_000
KCL_IDLE_MILLIS = 200
CHECKPOINT_ONLY = ROOT / "scripts" / "checkpoint_only_processor.py"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
POLL_SECONDS = 0.1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WORKER_ID = "bench-capacity"


# -- input ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    data: bytes
    partition_key: str
    events: int


@dataclass
class Input:
    entries: list[Entry]
    events: int
    invalid: int

    @property
    def entry_bytes(self) -> int:
        return sum(len(e.data) + len(e.partition_key.encode()) for e in self.entries)


def generate(events: int, start_ms: int) -> Input:
    entries: list[Entry] = []
    invalid = 0
    for record in EventGenerator(SEED, start_ms, EVENT_RATE, INVALID_FRACTION).records(events):
        entries.append(Entry(record.data, record.partition_key, len(record.events)))
        invalid += sum(1 for e in record.events if e.reason is not None)
    return Input(entries, events, invalid)


@dataclass
class Fill:
    """What one put left in a stream: per shard, its last sequence number, records and events."""

    last: dict[str, int] = field(default_factory=dict)
    records: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    marks: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # (sequence number, events)

    def events_through(self, shard: str, sequence_number: int) -> int:
        """Events in the shard's records up to and including that sequence number."""
        marks = self.marks[shard]
        return marks[bisect.bisect_right(marks, (sequence_number, sys.maxsize)) - 1][1] if marks else 0


def put_all(kinesis: Any, stream: str, entries: list[Entry]) -> Fill:
    """PutRecords in batches of up to 500 records and 5 MiB; refused entries are sent again."""
    fill = Fill()
    started = time.perf_counter()
    batch: list[Entry] = []
    size = 0
    for entry in entries:
        entry_size = len(entry.data) + len(entry.partition_key.encode())
        if len(batch) == 500 or size + entry_size > 5 * 1024 * 1024:
            _put_batch(kinesis, stream, batch, fill)
            batch, size = [], 0
        batch.append(entry)
        size += entry_size
    if batch:
        _put_batch(kinesis, stream, batch, fill)
    fill.seconds = time.perf_counter() - started
    for shard, marks in fill.marks.items():  # (seq, events of the record) -> (seq, events through it)
        marks.sort()
        fill.marks[shard] = list(zip([seq for seq, _ in marks], itertools.accumulate(n for _, n in marks), strict=True))
    return fill


def _put_batch(kinesis: Any, stream: str, batch: list[Entry], fill: Fill) -> None:
    pending = batch
    for attempt in range(20):
        response = kinesis.put_records(
            StreamName=stream, Records=[{"Data": e.data, "PartitionKey": e.partition_key} for e in pending]
        )
        refused = []
        for entry, result in zip(pending, response["Records"], strict=True):
            if result.get("ErrorCode"):
                refused.append(entry)
                continue
            shard, seq = result["ShardId"], int(result["SequenceNumber"])
            fill.last[shard] = max(fill.last.get(shard, 0), seq)
            fill.records[shard] = fill.records.get(shard, 0) + 1
            fill.events[shard] = fill.events.get(shard, 0) + entry.events
            fill.marks.setdefault(shard, []).append((seq, entry.events))
        if not refused:
            return
        pending = refused
        time.sleep(min(2.0, 0.1 * 2**attempt))
    raise SystemExit(f"put_records into {stream}: {len(pending)} entries still refused")


# -- the emulators ---------------------------------------------------------------------------------------


def kinesis_client(endpoint: str, region: str) -> Any:
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name=region,
        config=Config(retries={"max_attempts": 3}, read_timeout=300),
        **{k.lower(): v for k, v in CREDENTIALS.items()},
    )


def _signed(endpoint: str, region: str, target: str, body: bytes) -> dict[str, str]:
    request = AWSRequest(
        method="POST",
        url=endpoint + "/",
        data=body,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"Kinesis_20131202.{target}"},
    )
    credentials = Credentials(CREDENTIALS["AWS_ACCESS_KEY_ID"], CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    SigV4Auth(credentials, "kinesis", region).add_auth(request)
    return dict(request.headers.items())


class Http1Kinesis:
    """Kinesis JSON calls over one HTTP/1.1 connection (what boto3 speaks), answers as bytes."""

    protocol = "HTTP/1.1"

    def __init__(self, endpoint: str, region: str) -> None:
        self.endpoint, self.region = endpoint.rstrip("/"), region
        parts = urlsplit(endpoint)
        self.connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=300)

    def call(self, target: str, payload: dict[str, Any]) -> bytes:
        body = orjson.dumps(payload)
        self.connection.request("POST", "/", body=body, headers=_signed(self.endpoint, self.region, target, body))
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise SystemExit(f"{target} at {self.endpoint}: HTTP {response.status}: {data[:500]!r}")
        return data

    def close(self) -> None:
        self.connection.close()


class Http2Kinesis:
    """Kinesis JSON calls over one cleartext HTTP/2 connection with prior knowledge (h2c), as the KCL's
    Netty client makes them, with its 1 MiB initial flow-control window; answers as bytes."""

    protocol = "HTTP/2"
    WINDOW = 1 << 20

    def __init__(self, endpoint: str, region: str) -> None:
        import h2.config
        import h2.connection
        import h2.settings

        self.endpoint, self.region = endpoint.rstrip("/"), region
        parts = urlsplit(endpoint)
        self.authority = parts.netloc
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=300)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.h2.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.WINDOW}
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(self.WINDOW)
        self.sock.sendall(self.h2.data_to_send())

    def call(self, target: str, payload: dict[str, Any]) -> bytes:
        import h2.events

        body = orjson.dumps(payload)
        stream = self.h2.get_next_available_stream_id()
        signed = _signed(self.endpoint, self.region, target, body)
        headers = [(":method", "POST"), (":scheme", "http"), (":authority", self.authority), (":path", "/")]
        headers += [(k.lower(), v) for k, v in signed.items() if k.lower() != "host"]
        self.h2.send_headers(stream, [*headers, ("content-length", str(len(body)))])
        self.h2.send_data(stream, body, end_stream=True)
        self.sock.sendall(self.h2.data_to_send())
        chunks: list[bytes] = []
        status = b""
        while True:
            received = self.sock.recv(1 << 20)
            if not received:
                raise SystemExit(f"{target} at {self.endpoint}: the HTTP/2 connection closed")
            for event in self.h2.receive_data(received):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers).get(b":status", b"")
                elif isinstance(event, h2.events.DataReceived):
                    chunks.append(event.data)
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                    self.sock.sendall(self.h2.data_to_send())
                    data = b"".join(chunks)
                    if status != b"200":
                        raise SystemExit(f"{target} at {self.endpoint}: HTTP {status!r}: {data[:500]!r}")
                    return data
            self.sock.sendall(self.h2.data_to_send())

    def close(self) -> None:
        self.sock.close()


@dataclass
class ReadRate:
    records: int
    events: int
    data_bytes: int
    seconds: float
    calls: int

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def megabytes_per_s(self) -> float:
        return self.data_bytes / self.seconds / 1e6


def raw_read(
    transport: type[Http1Kinesis] | type[Http2Kinesis],
    endpoint: str,
    region: str,
    stream: str,
    fill: Fill,
    min_seconds: float,
    max_passes: int,
) -> ReadRate:
    """Read every shard of the stream from TRIM_HORIZON with GetRecords (Limit 10,000), again until
    `min_seconds` have passed (at most `max_passes` passes). Only the GetRecords calls are timed."""
    raw = transport(endpoint, region)
    total = ReadRate(0, 0, 0, 0.0, 0)
    try:
        for _ in range(max_passes):
            for shard, expected in fill.records.items():
                request = {"StreamName": stream, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"}
                iterator = orjson.loads(raw.call("GetShardIterator", request))["ShardIterator"]
                read = calls = 0
                while read < expected:
                    started = time.perf_counter()
                    answer = raw.call("GetRecords", {"ShardIterator": iterator, "Limit": KCL_MAX_RECORDS})
                    total.seconds += time.perf_counter() - started
                    calls += 1
                    parsed = orjson.loads(answer)
                    read += len(parsed["Records"])
                    total.data_bytes += len(answer)
                    iterator = parsed["NextShardIterator"]
                    if calls > 1_000:
                        raise SystemExit(f"GetRecords on {endpoint}: {shard} stopped at {read} of {expected}")
                total.calls += calls
                total.records += read
                total.events += fill.events[shard]
            if total.seconds >= min_seconds:
                break
    finally:
        raw.close()
    return total


@dataclass
class EmulatorProbe:
    name: str
    put_records_per_s: float
    http1: ReadRate
    http2: ReadRate


def probe(name: str, endpoint: str, region: str, entries: list[Entry], min_seconds: float) -> EmulatorProbe:
    kinesis = kinesis_client(endpoint, region)
    stream = f"probe-{uuid.uuid4().hex[:8]}"
    resources.ensure_stream(kinesis, stream, 1)
    fill = put_all(kinesis, stream, entries)
    http2 = raw_read(Http2Kinesis, endpoint, region, stream, fill, min_seconds, max_passes=5)
    http1 = raw_read(Http1Kinesis, endpoint, region, stream, fill, min_seconds, max_passes=5)
    with contextlib.suppress(Exception):
        kinesis.delete_stream(StreamName=stream, EnforceConsumerDeletion=True)
    return EmulatorProbe(name, len(entries) / fill.seconds, http1, http2)


# -- /proc -----------------------------------------------------------------------------------------------


def proc_stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, comm, utime + stime in clock ticks), or None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    close = text.rindex(")")
    fields = text[close + 2 :].split()
    return int(fields[1]), text[text.index("(") + 1 : close], int(fields[11]) + int(fields[12])


def children_of(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = proc_stat(int(name))
            if stat is not None and stat[0] == pid:
                found.append(int(name))
    return found


def peak_rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Sample:
    at: float  # time.time()
    ticks: dict[int, int]


class Sampler:
    """CPU ticks of the JVM, its children and the emulator processes, sampled in the run's loop."""

    def __init__(self, others: dict[str, int]) -> None:
        self.others = others  # name -> pid (moto, redis-server, kinesis-local)
        self.jvm: int | None = None
        self.children: list[int] = []
        self.samples: list[Sample] = []
        self.peak_rss: dict[int, int] = {}
        self._scanned = 0.0

    def sample(self, daemon_pid: int, jvm_is_daemon: bool, expected_children: int) -> None:
        now = time.time()
        if self.jvm is None:
            if jvm_is_daemon:
                self.jvm = daemon_pid
            else:
                javas = [p for p in children_of(daemon_pid) if (proc_stat(p) or (0, "", 0))[1] == "java"]
                self.jvm = javas[0] if javas else None
        if self.jvm is not None and (len(self.children) < expected_children and now - self._scanned > 0.5):
            self._scanned = now
            self.children = sorted(set(self.children) | set(children_of(self.jvm)))
        ticks = {}
        for pid in [*([self.jvm] if self.jvm else []), *self.children, *self.others.values()]:
            stat = proc_stat(pid)
            if stat is not None:
                ticks[pid] = stat[2]
        self.samples.append(Sample(now, ticks))

    def read_peaks(self) -> None:
        for pid in [*([self.jvm] if self.jvm else []), *self.children]:
            self.peak_rss[pid] = max(self.peak_rss.get(pid, 0), peak_rss_kib(pid))

    def cpu_seconds(self, pids: list[int], start: float, end: float) -> float:
        """CPU seconds of `pids` between the last sample at or before `start` (the first after it when
        there is none) and the first sample at or after `end`."""
        before = [s for s in self.samples if s.at <= start] or self.samples[:1]
        after = [s for s in self.samples if s.at >= end] or self.samples[-1:]
        first, last = before[-1], after[0]
        return sum(last.ticks.get(p, 0) - first.ticks.get(p, 0) for p in pids) / CLOCK_TICKS


# -- the daemon's log ------------------------------------------------------------------------------------

_TS = r'"ts":"(?P<ts>[^"]+)"'
WRITE_LINE = re.compile(_TS + r'.*"msg":"Writing ProcessRecordsMessage to child process for shard (?P<shard>[^"]+)"')
FETCH_LINE = re.compile(_TS + r'.*"msg":"Initializing shard (?P<shard>[^"]+) with ')
SIZE_LINE = re.compile(_TS + r'.*"msg":"Message size == (?P<size>\d+) bytes for shard (?P<shard>[^"]+)"')
NON_EMPTY_BYTES = 1024  # an empty processRecords message is about 60 bytes; one record makes it larger


def _epoch(ts: str) -> float:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


@dataclass
class Batches:
    first_start: float  # "Writing ProcessRecordsMessage" of the first non-empty batch (any shard)
    first_fetch: float  # "Initializing shard ... with TRIM_HORIZON": the first shard's fetcher starts
    non_empty: int
    largest_message: int


def read_batches(log: Path) -> Batches:
    """Non-empty processRecords messages, from the KCL's INFO lines (software.amazon.kinesis.multilang)."""
    last_write: dict[str, float] = {}
    first_start: float | None = None
    first_fetch: float | None = None
    count = largest = 0
    for line in log.read_text(errors="replace").splitlines():
        if first_fetch is None and "Initializing shard" in line and (m := FETCH_LINE.search(line)):
            first_fetch = _epoch(m["ts"])
        elif "ProcessRecordsMessage" in line and (m := WRITE_LINE.search(line)):
            last_write[m["shard"]] = _epoch(m["ts"])
        elif "Message size" in line and (m := SIZE_LINE.search(line)):
            size = int(m["size"])
            if size > NON_EMPTY_BYTES and m["shard"] in last_write:
                count += 1
                largest = max(largest, size)
                started = last_write[m["shard"]]
                first_start = started if first_start is None else min(first_start, started)
    if first_start is None or first_fetch is None:
        raise SystemExit(f"no non-empty processRecords message in the daemon's log {log} (KCL INFO lines missing?)")
    return Batches(first_start, first_fetch, count, largest)


# -- one run ---------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    label: str
    seconds: float  # first processRecords -> every shard checkpointed at its last record
    from_fetch_seconds: float  # the first shard's fetcher starting -> the same end
    steady: float | None  # events/s between each shard's first and last checkpoint, summed over shards
    checkpoints: int  # checkpoints seen in the lease table (polled), all shards
    batches: Batches
    jvm_cpu: float
    children_cpu: float
    child_cpu: list[float]
    others_cpu: dict[str, float]
    jvm_peak_kib: int
    child_peak_kib: int
    load: tuple[float, float]  # 1-minute load average at the start and at the end of the window
    dead_letters: int | None = None


def _checkpoints(dynamodb: Any, table: str) -> dict[str, str]:
    items = dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    return {i["leaseKey"]["S"]: i.get("checkpoint", {}).get("S", "") for i in items}


def _reached(checkpoints: dict[str, str], fill: Fill) -> bool:
    return all(
        checkpoints.get(shard, "").isdigit() and int(checkpoints[shard]) >= last for shard, last in fill.last.items()
    )


def run_daemon(
    label: str,
    command: list[str],
    env: dict[str, str],
    log: Path,
    dynamodb: Any,
    lease_table: str,
    fill: Fill,
    others: dict[str, int],
    timeout: float,
    jvm_is_daemon: bool,
) -> RunResult:
    sampler = Sampler(others)
    loads: list[float] = []
    progress: dict[str, list[tuple[float, int]]] = {}  # shard -> (time, checkpointed sequence number)
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        end: float | None = None
        while end is None:
            if process.poll() is not None:
                raise SystemExit(f"{label}: the daemon exited with {process.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{label}: not every shard checkpointed within {timeout:.0f}s:\n{_tail(log)}")
            sampler.sample(process.pid, jvm_is_daemon, len(fill.last))
            if sampler.children and not loads:
                loads.append(os.getloadavg()[0])
            try:
                now = time.time()
                checkpoints = _checkpoints(dynamodb, lease_table)
            except dynamodb.exceptions.ResourceNotFoundException:
                checkpoints = {}
            for shard, checkpoint in checkpoints.items():
                seen = progress.setdefault(shard, [])
                if checkpoint.isdigit() and (not seen or seen[-1][1] != int(checkpoint)):
                    seen.append((now, int(checkpoint)))
            if _reached(checkpoints, fill):
                end = now
            time.sleep(POLL_SECONDS)
        sampler.sample(process.pid, jvm_is_daemon, len(fill.last))
        sampler.read_peaks()
        loads.append(os.getloadavg()[0])
    finally:
        # Nothing of the run is needed after it: no graceful shutdown, the whole process group goes.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    batches = read_batches(log)
    start = batches.first_start
    rates = []
    for shard, seen in progress.items():
        if len(seen) >= 2 and shard in fill.marks:
            (t0, seq0), (t1, seq1) = seen[0], seen[-1]
            rates.append((fill.events_through(shard, seq1) - fill.events_through(shard, seq0)) / (t1 - t0))
    jvm = [sampler.jvm] if sampler.jvm else []
    return RunResult(
        label=label,
        seconds=end - start,
        from_fetch_seconds=end - batches.first_fetch,
        steady=sum(rates) if len(rates) == len(fill.last) else None,
        checkpoints=sum(len(seen) for seen in progress.values()),
        batches=batches,
        jvm_cpu=sampler.cpu_seconds(jvm, start, end),
        children_cpu=sampler.cpu_seconds(sampler.children, start, end),
        child_cpu=[sampler.cpu_seconds([c], start, end) for c in sampler.children],
        others_cpu={name: sampler.cpu_seconds([pid], start, end) for name, pid in others.items()},
        jvm_peak_kib=sampler.peak_rss.get(jvm[0], 0) if jvm else 0,
        child_peak_kib=max((sampler.peak_rss.get(c, 0) for c in sampler.children), default=0),
        load=(loads[0] if loads else 0.0, loads[-1]),
    )


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# -- the stack -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    moto: str
    kinesis_endpoint: str
    others: dict[str, int]  # name -> pid of the emulator processes

    def client(self, service: str) -> Any:
        endpoint = self.kinesis_endpoint if service == "kinesis" else self.moto
        return boto3.client(
            service, endpoint_url=endpoint, region_name=self.settings.region,
            **{k.lower(): v for k, v in CREDENTIALS.items()},
        )  # fmt: skip

    def fresh(self, shards: int) -> tuple[Settings, dict[str, str]]:
        tag = uuid.uuid4().hex[:8]
        names = {
            "STREAMKPI_STREAM": f"cap-{tag}",
            "STREAMKPI_APP_NAME": f"cap-{tag}",
            "STREAMKPI_METRICS_TABLE": f"cap-metrics-{tag}",
            "STREAMKPI_DLQ_QUEUE": f"cap-dlq-{tag}",
            "STREAMKPI_ARCHIVE_BUCKET": f"cap-archive-{tag}",
            "STREAMKPI_FIREHOSE_STREAM": f"cap-archive-{tag}",
            "STREAMKPI_SHARDS": str(shards),
        }
        env = {**self.env, **names}
        settings = Settings.load(env)
        resources.create_all(settings, self.client)
        return settings, env


def moto_patch_site(state: Path) -> Path:
    """A folder whose sitecustomize.py applies scripts/bench_moto_patches.py and leaves a marker file."""
    site = state / "moto-site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(ROOT / 'scripts')!r})\n"
        "import bench_moto_patches\n"
        "bench_moto_patches.apply()\n"
        f"open(os.path.join({str(site)!r}, 'applied'), 'w').write(str(os.getpid()))\n"
    )
    return site


@contextlib.contextmanager
def local_stack_of_its_own(state: Path, site: Path | None) -> Iterator[tuple[Settings, dict[str, str]]]:
    env = {
        **os.environ,
        **CREDENTIALS,
        "STREAMKPI_STATE_DIR": str(state),
        "STREAMKPI_LOCAL_PORT": str(free_port()),
        "STREAMKPI_REDIS_PORT": str(free_port()),
        "STREAMKPI_WORKER_ID": WORKER_ID,
        "STREAMKPI_KCL_MAX_RECORDS": str(KCL_MAX_RECORDS),
        "STREAMKPI_KCL_IDLE_MILLIS": str(KCL_IDLE_MILLIS),
    }
    for key in ("AWS_ENDPOINT_URL", "REDIS_URL", "AWS_PROFILE", "STREAMKPI_KINESIS_ENDPOINT_URL", "STREAMKPI_CONFIG"):
        env.pop(key, None)
    settings = Settings.load(env)
    saved = os.environ.get("PYTHONPATH")
    if site is not None:  # only the processes `up` starts (moto, redis-server) see it
        os.environ["PYTHONPATH"] = os.pathsep.join([str(site), *([saved] if saved else [])])
    try:
        values = local_stack.up(settings)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    if site is not None and not (site / "applied").exists():
        local_stack.down(settings)
        raise SystemExit(f"the moto server did not load {site}/sitecustomize.py (see {state}/logs/moto.log)")
    if site is not None:
        (site / "applied").unlink()
    try:
        yield settings, {**env, **values}
    finally:
        local_stack.down(settings)


def round_trips(stack: Stack, settings: Settings, calls: int = 10) -> dict[str, float]:
    """Milliseconds per call (median of `calls`) of what run A's child sends to moto at a durable flush."""

    def median_ms(action: Callable[[int], Any]) -> float:
        times = []
        for i in range(calls):
            started = time.perf_counter()
            action(i)
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)

    sqs, firehose, dynamodb = stack.client("sqs"), stack.client("firehose"), stack.client("dynamodb")
    url = sqs.create_queue(QueueName=f"{settings.dlq_queue}-rtt")["QueueUrl"]
    letter = "x" * 2_000
    line = b'{"eventType":"page.view"}' * 40 + b"\n"  # about 1 KB
    record = line * 1_000  # the archive sink packs lines into records of up to 1,000 KiB
    item = {"pk": {"S": "bench#rtt"}, "sk": {"S": ""}, "blob": {"S": "x" * 2_000}}
    return {
        "SQS SendMessageBatch, 10 messages of 2 KB": median_ms(
            lambda i: sqs.send_message_batch(
                QueueUrl=url, Entries=[{"Id": str(j), "MessageBody": letter} for j in range(10)]
            )
        ),
        "Firehose PutRecordBatch, 4 records of 1 MB": median_ms(
            lambda i: firehose.put_record_batch(
                DeliveryStreamName=settings.firehose_stream, Records=[{"Data": record}] * 4
            )
        ),
        "DynamoDB PutItem, 2 KB": median_ms(
            lambda i: dynamodb.put_item(TableName=settings.metrics_table, Item={**item, "sk": {"S": str(i)}})
        ),
    }


@contextlib.contextmanager
def moto_of_its_own(log: Path, site: Path | None) -> Iterator[tuple[str, int]]:
    """A second moto server (the same `devstack.moto_server`) that serves Kinesis only: (endpoint, pid)."""
    port = free_port()
    env = {**os.environ}
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    command = [sys.executable, "-m", "devstack.moto_server", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                kinesis_client(endpoint, "us-east-1").list_streams()
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the Kinesis moto server did not start:\n{_tail(log)}") from None
                time.sleep(0.2)
        if site is not None and not (site / "applied").exists():
            raise SystemExit(f"the Kinesis moto server did not load {site}/sitecustomize.py")
        yield endpoint, process.pid
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# -- report ----------------------------------------------------------------------------------------------


def _mib(kib: int) -> str:
    return f"{kib / 1024:,.0f} MiB"


def _per_k(cpu: float, events: int) -> str:
    return f"{cpu * 1000 / events * 1000:,.1f} ms"


def report(args: argparse.Namespace, data: Input, m: Measured, load_before: float) -> list[str]:
    a, b, fill = m.a, m.b, m.fill
    n = data.events
    shards = len(fill.last)
    rate_a, rate_b = n / a.seconds, n / b.seconds
    records = len(data.entries)
    events_per_record = n / records
    entry_bytes = data.entry_bytes / records
    shard_records = min(SHARD_WRITE_RECORDS, SHARD_WRITE_BYTES / entry_bytes)
    shard_events = shard_records * events_per_record
    bound = "1 MiB/s" if shard_records < SHARD_WRITE_RECORDS else "1,000 records/s"
    worker_cpu_a = (a.jvm_cpu + a.children_cpu) / n  # CPU seconds per event
    cores = os.cpu_count() or 1

    def row(measure: str, va: str, vb: str, ratio: str = "") -> str:
        return f"| {measure} | {va} | {vb} | {ratio} |"

    def busy(r: RunResult) -> str:
        return f"{r.children_cpu / (r.seconds * shards):.0%}"

    table = [
        "| measure | A: `streamkpi consume` | B: checkpoint-only processor | A / B |",
        "| --- | ---: | ---: | ---: |",
        row(
            "**events/s**, first processRecords → every shard checkpointed at its last record",
            f"**{rate_a:,.0f}**",
            f"**{rate_b:,.0f}**",
            f"**{rate_a / rate_b:.0%}**",
        ),
        row("seconds", f"{a.seconds:.1f}", f"{b.seconds:.1f}"),
        row(
            "events/s from the first GetRecords (the KCL's fetcher starting; the children's start inside)",
            f"{n / a.from_fetch_seconds:,.0f}",
            f"{n / b.from_fetch_seconds:,.0f}",
            f"{b.from_fetch_seconds / a.from_fetch_seconds:.0%}",
        ),
        row(
            "events/s between each shard's first and last checkpoint, summed over the shards (steady state)",
            f"{a.steady:,.0f}" if a.steady else "?",
            f"{b.steady:,.0f}" if b.steady else "?",
            f"{a.steady / b.steady:.0%}" if a.steady and b.steady else "",
        ),
        row("checkpoints (lease table, polled every 0.1 s)", f"{a.checkpoints}", f"{b.checkpoints}"),
        row(
            "non-empty processRecords messages (the largest)",
            f"{a.batches.non_empty} ({a.batches.largest_message / 2**20:.1f} MiB)",
            f"{b.batches.non_empty} ({b.batches.largest_message / 2**20:.1f} MiB)",
        ),
        row("CPU of the JVM in that time", f"{a.jvm_cpu:.1f} s", f"{b.jvm_cpu:.1f} s", f"{a.jvm_cpu / b.jvm_cpu:.1f}x"),
        row(
            f"CPU of the {shards} Python children (each)",
            f"{a.children_cpu:.1f} s ({' + '.join(f'{c:.1f}' for c in a.child_cpu)})",
            f"{b.children_cpu:.1f} s ({' + '.join(f'{c:.1f}' for c in b.child_cpu)})",
            f"{a.children_cpu / b.children_cpu:.1f}x",
        ),
        row("children busy (their CPU / the time, per child)", busy(a), busy(b)),
        row("JVM CPU per 1,000 events", _per_k(a.jvm_cpu, n), _per_k(b.jvm_cpu, n)),
        row("children's CPU per 1,000 events", _per_k(a.children_cpu, n), _per_k(b.children_cpu, n)),
        row(
            "JVM + children CPU per 1,000 events",
            _per_k(a.jvm_cpu + a.children_cpu, n),
            _per_k(b.jvm_cpu + b.children_cpu, n),
            f"{worker_cpu_a * n / (b.jvm_cpu + b.children_cpu):.1f}x",
        ),
        *(
            row(f"CPU of {name} in that time (same machine)", f"{a.others_cpu[name]:.1f} s", f"{cpu_b:.1f} s")
            for name, cpu_b in b.others_cpu.items()
        ),
        row("peak RSS of the JVM", _mib(a.jvm_peak_kib), _mib(b.jvm_peak_kib)),
        row("peak RSS of one child (the larger)", _mib(a.child_peak_kib), _mib(b.child_peak_kib)),
        row("dead letters in the SQS DLQ", f"{a.dead_letters:,}" if a.dead_letters is not None else "?", "–"),
        row(
            "1-minute load average, window start → end (this run's processes included)",
            f"{a.load[0]:.2f} → {a.load[1]:.2f}",
            f"{b.load[0]:.2f} → {b.load[1]:.2f}",
        ),
    ]
    probe_table = [
        "| emulator | PutRecords (boto3, 500 a call) | GetRecords over HTTP/2: records/s | events/s | MB/s "
        "| over HTTP/1.1: records/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {p.name}{' (chosen)' if p.name == m.chosen else ''} | {p.put_records_per_s:,.0f} records/s "
            f"| {p.http2.records_per_s:,.0f} | {p.http2.events_per_s:,.0f} | {p.http2.megabytes_per_s:,.1f} "
            f"| {p.http1.records_per_s:,.0f} |"
            for p in m.probes
        ),
        f"| {m.chosen}, run B's stream after the runs ({records:,} records, {m.after.calls} calls) | "
        f"| {m.after.records_per_s:,.0f} | {m.after.events_per_s:,.0f} | {m.after.megabytes_per_s:,.1f} | |",
    ]
    per_shard = ", ".join(f"{fill.records[s]:,} records / {fill.events[s]:,} events" for s in sorted(fill.records))
    shown = [a for i, a in enumerate(sys.argv[1:]) if a != "--keep" and (i == 0 or sys.argv[i] != "--keep")]
    command = "python scripts/bench_capacity.py " + " ".join(a for a in shown if not a.startswith("--keep="))
    patches = (
        "moto runs with `scripts/bench_moto_patches.py` (its SQS recounts the whole queue at every message "
        "sent, which makes a filling DLQ quadratic: counts at most once a second; Kinesis puts O(1))."
        if m.patched
        else "moto runs unpatched (`--no-moto-patches`): its SQS sends slow down as the DLQ fills."
    )
    moto_busy = a.others_cpu.get("moto", 0.0) / a.seconds
    read_records = SHARD_READ_BYTES / entry_bytes
    sizing = (
        f"**Shards per worker.** A shard takes up to 1,000 records/s or 1 MiB/s of writes. These records "
        f"average {entry_bytes:,.0f} bytes (data and partition key) and {events_per_record:.2f} events, so a "
        f"shard written at its full rate is bound by {bound}: {shard_records:,.0f} records/s, "
        f"{shard_events:,.0f} events/s. At run A's {rate_a:,.0f} events/s, one worker on this machine "
        f"({cores} cores, shared with moto and redis-server) carries **{rate_a / shard_events:.1f} shards "
        f"written at full rate** (or {rate_a / 1000:,.1f} shards of 1,000 events/s). Each shard's child got "
        f"through {rate_a / shards:,.0f} events/s, {rate_a / shards / shard_events:.1f}x a full shard, and was "
        f"busy {busy(a)} of the time; the rest it waited for the stores' answers, one call at a time (moto, "
        f"one process for every service, was busy {moto_busy:.0%} of a core), and for its next batch. The JVM "
        f"and the children spent {worker_cpu_a * 1e6:,.0f} µs of CPU per event: {cores} cores doing nothing "
        f"else would carry about {cores / worker_cpu_a:,.0f} events/s "
        f"({cores / worker_cpu_a / shard_events:.1f} shards at full rate), with enough shards in parallel to "
        f"hide the round trips; each shard also costs a child ({_mib(a.child_peak_kib)} peak here)."
    )
    limits = (
        f"moto answers GetRecords with up to {KCL_MAX_RECORDS:,} records whatever their size (messages of "
        f"{a.batches.largest_message / 2**20:.0f} MiB to the child here, hence the JVM's RSS); Kinesis returns "
        f"at most 10 MiB a call and 2 MiB/s a shard, so a real catch-up comes in smaller batches and, per "
        f"shard, at most about {read_records:,.0f} of these records ({read_records * events_per_record:,.0f} "
        "events) a second."
    )
    where = ""
    if m.chosen == "moto":
        where = (
            " (a second moto server, Kinesis only)"
            if args.kinesis_moto == "own"
            else " (the local stack's, which serves the stores too)"
        )
    trips = "; ".join(f"{name}: {ms:,.0f} ms" for name, ms in m.trips.items())
    sqs_ms = next((ms for name, ms in m.trips.items() if name.startswith("SQS")), 0.0)
    firehose_ms = next((ms for name, ms in m.trips.items() if name.startswith("Firehose")), 0.0)
    letters = a.dead_letters or 0
    archive_calls = data.entry_bytes / (4 * 1_024_000)
    waits = (
        f"Round trips to moto after the runs (median of 10, one at a time): {trips}. Run A's children make "
        f"such calls one after the other at each durable flush: {letters:,} dead letters in about "
        f"{letters / 10:,.0f} SendMessageBatch calls and about {archive_calls:,.0f} PutRecordBatch calls for "
        f"the archive come to about {(letters / 10 * sqs_ms + archive_calls * firehose_ms) / 1000:,.0f} s at "
        "these latencies, shared by the children."
    )
    return [
        f"Run: `{command.strip()}` (in `make bench`), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {cpu_model()}, "
        f"{cores} cores, {platform.system()} {platform.release()}; Python {platform.python_version()}, "
        f"{java_version()}, KCL 3.1.3 MultiLangDaemon; {tree()}. 1-minute load average before the runs: "
        f"{load_before:.2f}.",
        "",
        f"Kinesis for the runs: **{m.chosen}{where}**, the faster of the two at serving GetRecords here: a "
        f"one-shard stream of the first {args.probe_records:,} generated records, read from TRIM_HORIZON with "
        "signed GetRecords calls (Limit 10,000) over cleartext HTTP/2 as the KCL's client makes them, and over "
        "HTTP/1.1 for comparison; only the calls are timed. DynamoDB (leases, metrics), SQS, S3 and Firehose "
        f"are moto over hypercorn in every case; {patches}",
        "",
        *probe_table,
        "",
        f"Input: {n:,} events ({data.invalid / n:.1%} invalid; generator seed {SEED}, default mix, event "
        f"time {EVENT_RATE:,.0f} events/s) in {records:,} records of {entry_bytes:,.0f} bytes on average, "
        f"{data.entry_bytes / 1e6:,.1f} MB, put into a fresh {shards}-shard stream before each run "
        f"({per_shard}). KCL: maxRecords {KCL_MAX_RECORDS:,}, idleTimeBetweenReadsInMillis "
        f"{KCL_IDLE_MILLIS}, POLLING; B's properties are A's (as `streamkpi consume` renders them) but for "
        "`executableName`. Run A with the default config and cadence (Redis 1 s, DynamoDB and checkpoint 5 s).",
        "",
        *table,
        "",
        waits,
        "",
        limits,
        "",
        sizing,
    ]


def tree() -> str:
    """The commit the processor's code is from, and whether it has uncommitted changes (read-only git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "consumer", "aggregations", "streamkpi"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "tree unknown"
    return f"tree {head}" + (" with uncommitted changes in consumer/, aggregations/ or streamkpi/" if dirty else "")


def java_version() -> str:
    java = shutil.which("java")
    if not java:
        return "Java ?"
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr.splitlines()
    return out[0].replace('"', "") if out else "Java ?"


# -- main ------------------------------------------------------------------------------------------------


def choose(probes: list[EmulatorProbe], forced: str) -> str:
    if forced != "auto":
        return forced
    return max(probes, key=lambda p: p.http2.records_per_s).name


def start_kinesis_local(log: Path) -> Any:
    """The pinned npm kinesis-local of the integration tests, or None (with a note) when it cannot start."""
    import pytest

    from tests.integration.kinesis_local import start_kinesis_local as start

    try:
        return start(log)
    except (Exception, pytest.fail.Exception) as exc:
        print(f"kinesis-local is not available, moto alone is measured: {exc}", file=sys.stderr)
        return None


def preflight() -> None:
    missing = [name for name in ("java", "redis-server") if shutil.which(name) is None]
    try:
        kcl_daemon.jars_dir()
    except kcl_daemon.DaemonError:
        missing.append("the KCL jars (amazon_kclpy)")
    if missing:
        raise SystemExit(f"scripts/bench_capacity.py needs {', '.join(missing)}: run `make setup`.")


def same_properties(a: str, b: str, names_a: list[str], names_b: list[str]) -> list[str]:
    """The lines in which two rendered property files differ, once each run's names are blanked out."""

    def lines(text: str, names: list[str]) -> set[str]:
        for name in sorted(names, key=len, reverse=True):
            text = text.replace(name, "<name>")
        return {line for line in text.splitlines() if line.strip() and not line.startswith("#")}

    return sorted(lines(a, names_a) ^ lines(b, names_b))


def names_of(settings: Settings) -> list[str]:
    return [settings.stream, settings.app_name]


@dataclass
class Measured:
    probes: list[EmulatorProbe]
    chosen: str
    fill: Fill
    a: RunResult
    b: RunResult
    after: ReadRate  # raw GetRecords of run B's stream, after the runs
    trips: dict[str, float]  # ms per call to moto of what A's child sends at a flush
    patched: bool


def measure(args: argparse.Namespace, data: Input, state: Path) -> Measured:
    site = None if args.no_moto_patches else moto_patch_site(state)
    with contextlib.ExitStack() as running:
        settings, env = running.enter_context(local_stack_of_its_own(state / "state", site))
        moto = env["AWS_ENDPOINT_URL"]
        kinesis_moto, kinesis_moto_pid = moto, 0
        if args.kinesis_moto == "own":
            kinesis_moto, kinesis_moto_pid = running.enter_context(moto_of_its_own(state / "moto-kinesis.log", site))
        kinesis_local = start_kinesis_local(state / "kinesis-local.log")
        try:
            endpoints = {"moto": kinesis_moto}
            if kinesis_local is not None:
                endpoints["kinesis-local"] = kinesis_local.endpoint_url
            probes = []
            for name, endpoint in endpoints.items():
                print(f"probing {name}: GetRecords of {args.probe_records:,} records ...", file=sys.stderr)
                entries = data.entries[: args.probe_records]
                probes.append(probe(name, endpoint, settings.region, entries, args.probe_seconds))
                print(f"  {probes[-1].http2.records_per_s:,.0f} records/s over HTTP/2", file=sys.stderr)
            chosen = choose(probes, args.emulator)
            pids = {r.name: r.pid for r in local_stack.status(settings) if r.pid}
            others = {"moto": pids["moto"], "redis-server": pids["redis"]}
            if kinesis_moto_pid:
                others["moto (Kinesis)"] = kinesis_moto_pid
                env["STREAMKPI_KINESIS_ENDPOINT_URL"] = kinesis_moto
            if kinesis_local is not None and chosen == "kinesis-local":
                env["STREAMKPI_KINESIS_ENDPOINT_URL"] = kinesis_local.endpoint_url
                others["kinesis-local"] = kinesis_local.process.pid
            elif kinesis_local is not None:
                kinesis_local.stop()  # not to take CPU from the runs
            stack = Stack(settings, env, moto, endpoints[chosen], others)
            dynamodb = stack.client("dynamodb")

            # A: `streamkpi consume`, exactly as a user runs it.
            settings_a, env_a = stack.fresh(args.shards)
            print(f"run A: filling {settings_a.stream} ...", file=sys.stderr)
            fill_a = put_all(stack.client("kinesis"), settings_a.stream, data.entries)
            command_a = [str(Path(sys.executable).parent / "streamkpi"), "consume"]
            print("run A: `streamkpi consume` catching up ...", file=sys.stderr)
            a = run_daemon(
                "A", command_a, env_a, state / "run-A.log", dynamodb, settings_a.app_name, fill_a, others,
                args.timeout, jvm_is_daemon=False,
            )  # fmt: skip
            time.sleep(1.1)  # the patched moto refreshes its approximate queue counts once a second
            sqs = stack.client("sqs")
            url = sqs.get_queue_url(QueueName=settings_a.dlq_queue)["QueueUrl"]
            count = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
            a.dead_letters = int(count["Attributes"]["ApproximateNumberOfMessages"])
            print(f"run A: {data.events / a.seconds:,.0f} events/s", file=sys.stderr)
            rendered_a = kcl_daemon.properties_path(Path(settings_a.state_dir), settings_a.app_name, WORKER_ID)

            # B: the same daemon and properties, the checkpoint-only processor as its executable.
            settings_b, env_b = stack.fresh(args.shards)
            print(f"run B: filling {settings_b.stream} ...", file=sys.stderr)
            fill_b = put_all(stack.client("kinesis"), settings_b.stream, data.entries)
            if sorted(fill_b.events.values()) != sorted(fill_a.events.values()):
                raise SystemExit(f"the two streams differ: {fill_a.events} / {fill_b.events}")
            executable = f"{sys.executable} {CHECKPOINT_ONLY}"
            properties = kcl_daemon.properties_path(state, settings_b.app_name, WORKER_ID)
            properties.write_text(kcl_daemon.render_properties(settings_b, executable, WORKER_ID))
            differ = same_properties(
                rendered_a.read_text(), properties.read_text(), names_of(settings_a), names_of(settings_b)
            )
            if any(not line.startswith("executableName") for line in differ):
                raise SystemExit(f"the properties of A and B differ beyond executableName: {differ}")
            print("run B: the checkpoint-only processor catching up ...", file=sys.stderr)
            b = run_daemon(
                "B", kcl_daemon.java_command(settings_b, properties), env_b, state / "run-B.log", dynamodb,
                settings_b.app_name, fill_b, others, args.timeout, jvm_is_daemon=True,
            )  # fmt: skip
            print(f"run B: {data.events / b.seconds:,.0f} events/s", file=sys.stderr)
            print("raw GetRecords of run B's stream ...", file=sys.stderr)
            after = raw_read(
                Http2Kinesis, endpoints[chosen], settings.region, settings_b.stream, fill_b, 0.0, max_passes=1
            )
            trips = round_trips(stack, settings_a)
        finally:
            if kinesis_local is not None:
                kinesis_local.stop()
    return Measured(probes, chosen, fill_a, a, b, after, trips, not args.no_moto_patches)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=300_000, help="events in the stream of each run (300000)")
    parser.add_argument("--shards", type=int, default=2, help="shards of the stream (2)")
    parser.add_argument("--probe-records", type=int, default=1_500, help="records of the emulator probe (1500)")
    parser.add_argument("--probe-seconds", type=float, default=3.0, help="least GetRecords time per probe (3)")
    parser.add_argument("--emulator", choices=("auto", "moto", "kinesis-local"), default="auto")
    parser.add_argument(
        "--kinesis-moto",
        choices=("shared", "own"),
        default="shared",
        help="moto for Kinesis: the local stack's (shared with the stores) or a second moto server (shared)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="longest wait for a run's checkpoints (600)")
    parser.add_argument("--no-docs", action="store_true", help="do not refresh docs/benchmarks.md")
    parser.add_argument(
        "--no-moto-patches", action="store_true", help="serve moto as is (see scripts/bench_moto_patches.py)"
    )
    parser.add_argument("--keep", type=Path, help="keep state and logs (the daemons' too) in this new folder")
    args = parser.parse_args(argv)
    preflight()
    if " " in sys.executable or " " in str(CHECKPOINT_ONLY):
        raise SystemExit("the KCL daemon splits executableName on spaces: run from a path without spaces")

    load_before = os.getloadavg()[0]
    # Event time ends a minute before the puts: no event is ahead of its record's arrival.
    start_ms = int(time.time() * 1000) - int(args.events / EVENT_RATE * 1000) - 60_000
    print(f"generating {args.events:,} events ...", file=sys.stderr)
    data = generate(args.events, start_ms)
    with contextlib.ExitStack() as cleanup:
        if args.keep:
            args.keep.mkdir(parents=True)
            state = args.keep.resolve()
        else:
            state = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bench-capacity-")))
        measured = measure(args, data, state)
    section = report(args, data, measured, load_before)
    print("\n".join(section))
    if not args.no_docs:
        write_block(section, MARK_START, MARK_END, HEADING)
    return 0


if __name__ == "__main__":
    sys.exit(main())
