"""Hostile traffic through the real daemon (issue 11): nothing a browser can send stops, floods or bloats it.

Normal generated traffic (3,000 events over 2 shards, with its truth and every valid event written out for
the independent reference) is put interleaved with hostile records, each at most 1 MiB: nesting 1,000
deep and one level past STREAMKPI_MAX_DEPTH (and exactly at it, counted), a 600 KB path, 500 page views
with 1.1 KB paths in one minute, a 1 KB gzip bomb, 1 MB of empty gzip members, a zlib bomb, arrays and
NDJSON mixing counted events with out-of-bounds ones, records of only invalid lines, 10,001 tiny lines,
1 MiB records (random bytes, one JSON string, 4,000 valid events), numbers out of range and integers
beyond 64 bits, leap seconds, huge strings in every field, 2,000 distinct 500-character user ids, and
1,000 distinct 400-character charity ids in one minute of another day (far past a window item's byte
budget: the groups past it must count under `__other__`).

Then:
- `streamkpi consume` never exits (polled all along), and no processor child is ever replaced;
- every metric at every resolution, in DynamoDB and in Redis, equals the independent reference
  (tests/integration/reference.py) over the generated events plus the hostile events that are valid
  (the leap seconds, the wide integers, summed exactly, the long user ids, ...), and the per-type
  per-minute counts through `streamkpi query` equal the truth file plus those events;
- the byte-budget flood counts every event (totals exact, the excess under `__other__`);
- the DLQ holds exactly the generator's invalid events and the expected letters of every hostile record
  (identity, reason, `events` of a letter standing for a record, and payload), once each: no flood;
- the peak RSS (VmHWM) of every `streamkpi-processor` child stays under PROCESSOR_RSS_BOUND_MB;
- finally, `streamkpi query --format json` prints the wide sums exactly.

Run with -s to see the summary (timings, letters, the measured peak RSS per child).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import string
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aggregations.query import shape
from consumer.bounds import Limits
from consumer.dlq import letter_payload
from devstack.generator import EventGenerator, Truth
from streamkpi.app import Services
from streamkpi.settings import Settings
from tests.integration.conftest import Stack, Worker, wait_for
from tests.integration.dlq_drain import DlqDrain
from tests.integration.reference import DEFAULT_CONFIG, Reference, ValidEvent, read_config, read_events
from tests.integration.test_kcl_end_to_end import checkpoints, cli, iso, last_sequence_per_shard, stored_counts
from tests.integration.verify import diff

pytestmark = pytest.mark.integration

SEED = 20_260_311
RATE, EVENTS = 1_000, 3_000
INVALID, LATE = 0.05, 0.05
# The bound on each processor child's peak RSS (VmHWM). Measured here (2026-12-02, KCL 2.5.8, Python 3.11):
# a child starts at 62 MB; with this traffic the peaks were 95-133 MB, whether the records came live or
# as one catch-up batch per shard (a worker started after every record was put). Before the bounds, the
# 1 KB gzip bomb alone cost 147 MB more than the start.
PROCESSOR_RSS_BOUND_MB = 200
MAX_RECORD = 1024 * 1024  # Kinesis: data plus partition key
WIDE = 2**64 + 1  # 18446744073709551617: a float would make it 18446744073709551616
FLOOD_EVENTS, FLOOD_CHARS = 1_000, 400


def dumps(value: Any) -> bytes:
    """Compact JSON (the standard library: it writes integers of any size, which orjson refuses)."""
    return json.dumps(value, separators=(",", ":")).encode()


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Parsed:
    """An expected letter payload compared as JSON (an array element is written again, not cut out)."""

    value: Any


@dataclass(frozen=True)
class Letter:
    index: int
    reason: str
    payload: bytes | Parsed
    events: int | None = None  # a letter standing for the whole record: the events it held


@dataclass
class Hostile:
    name: str
    data: bytes
    letters: list[Letter] = field(default_factory=list)
    valid: list[tuple[int, int]] = field(default_factory=list)  # (index in record, event time) of counted events
    partition_key: str = ""
    flood: bool = False  # its events count in the flood windows, checked apart from the reference

    def __post_init__(self) -> None:
        assert len(self.data) + len(self.partition_key.encode()) <= MAX_RECORD, self.name


def valid_events(hostile: Hostile, shard: str, seq: str) -> list[ValidEvent]:
    """The counted events of a hostile record as the reference reads them (numbers exactly, floats as Decimal)."""
    if not hostile.valid:
        return []
    data = gzip.decompress(hostile.data) if hostile.data[:2] == b"\x1f\x8b" else hostile.data
    lines = data.split(b"\n") if b"\n" in data.strip() else None
    parsed = None if lines else json.loads(data, parse_float=Decimal)
    out = []
    for index, event_ms in hostile.valid:
        if lines is not None:
            event = json.loads([line for line in lines if line.strip()][index], parse_float=Decimal)
        else:
            event = parsed[index] if isinstance(parsed, list) else parsed
        out.append(ValidEvent(f"{shard}/{seq}/0/{index}", event_ms, event))
    return out


def build_hostile(now_ms: int, flood_ms: int, limits: Limits) -> list[list[Hostile]]:
    """The hostile records, in sends: a send of one is a put_record, a larger one a put_records call. Sizes
    are the issue's where they cross the bounds `limits` sets (the settings' defaults), else derived."""
    depth, chars, letters = limits.max_depth, limits.max_value_chars, limits.max_letters_per_record
    events_cap, event_bytes = limits.max_events_per_record, limits.max_event_bytes
    assert depth < 1000 and letters < 5_000 and chars < 1_100 and event_bytes < 600_000
    rng = random.Random(SEED)
    ts = iso_ms(now_ms)
    minute = now_ms - now_ms % 60_000

    def key() -> str:
        return f"hostile-{rng.getrandbits(64):016x}"

    def one(name: str, data: bytes, *letters: Letter, valid: list[tuple[int, int]] | None = None) -> list[Hostile]:
        return [Hostile(name, data, list(letters), valid or [], key())]

    def record_letter(data: bytes, reason: str, events: int | None = None) -> Letter:
        return Letter(0, reason, data, events)

    def event(event_type: str = "click", **fields: Any) -> dict[str, Any]:
        return {"eventType": event_type, "timestamp": ts, **fields}

    def donation(amount: Any, currency: str = "GBP", charity: str = "hostile") -> dict[str, Any]:
        return event("donation.made", data={"amount": amount, "currency": currency, "charityId": charity})

    def nested(levels: int, leaf: Any = 1) -> Any:
        value = leaf
        for _ in range(levels):
            value = {"a": value}
        return value

    sends: list[list[Hostile]] = []

    def add(name: str, data: bytes, *letters: Letter, valid: list[tuple[int, int]] | None = None) -> None:
        sends.append(one(name, data, *letters, valid=valid))

    def alone(name: str, data: bytes, reason: str, events: int | None = None) -> None:
        add(name, data, record_letter(data, reason, events))

    # Nesting. One line: the event as sent must never reach the fold (it once crashed it, RecursionError).
    deep_path = b'{"eventType":"page.view","timestamp":"%s","path":%s}' % (ts.encode(), b"[" * 1000 + b"]" * 1000)
    alone("page view, path a list nested 1,000 deep", deep_path, "too_deep")
    # nested(n) under `data` makes an event n + 1 levels deep.
    alone("object one level deeper than max_depth", dumps(event(data=nested(depth))), "too_deep")
    add("object exactly max_depth deep, counted", dumps(event("scroll", data=nested(depth - 1))), valid=[(0, now_ms)])
    add("an array nested 1,000 deep", b"[" * 1000 + b"]" * 1000, Letter(0, "not_object", b"[" * 999 + b"]" * 999))
    deep_element = event(data=nested(depth + 10))
    siblings = [event("click"), deep_element, event("scroll")]
    add("array: one element too deep, siblings counted", dumps(siblings),
        Letter(1, "too_deep", Parsed(deep_element)), valid=[(0, now_ms), (2, now_ms)])  # fmt: skip
    gz_brackets = b"[" * 60_000  # within the inflation floor; orjson refuses past 1,024 levels
    add("gzip of 60,000 open brackets", gzip.compress(gz_brackets), Letter(0, "not_json", gz_brackets))

    # Size.
    alone("page view with a 600 KB path", dumps(event("page.view", path="/" + "x" * 600_000)), "too_large")
    alpha = string.ascii_letters + string.digits
    long_paths = [dumps(event("page.view", path="/t/" + "".join(rng.choices(alpha, k=1_100)))) for _ in range(500)]
    sends.append([Hostile(f"page view {i} with a 1.1 KB path", data, [record_letter(data, "value_too_long")], [], key())
                  for i, data in enumerate(long_paths)])  # fmt: skip
    big = event_bytes - 5_000  # a string that keeps its event within max_event_bytes
    huge_fields = {
        "eventType": (dumps({"eventType": "e" * big, "timestamp": ts}), "wrong_type"),
        "timestamp": (dumps({"eventType": "click", "timestamp": "1" * big}), "bad_timestamp"),
        "userId": (dumps(event(userId="u" * big)), "value_too_long"),
        # The schema's pattern (^[A-Z]{3}$) refuses it first.
        "data.currency": (dumps(donation(1, currency="G" * 1_000)), "schema"),
        "data.charityId": (dumps(donation(1, charity="c" * 1_000)), "value_too_long"),
        "data": (dumps(event(data={"k" * big: 1})), None),  # valid: nothing bounds an unused field's size
        "sessionId": (dumps(event(sessionId="s" * big)), None),
        "browser": (dumps(event(browser="b" * (event_bytes + 5_000))), "too_large"),  # over max_event_bytes
    }
    for name, (data, reason) in huge_fields.items():
        if reason is None:
            add(f"huge {name}, counted", data, valid=[(0, now_ms)])
        else:
            alone(f"huge {name}", data, reason)
    padding = "p" * 200
    lines, total = [], 0
    while True:
        line = dumps(event(userId=f"user-1mib-{len(lines) % 50}", pad=padding))
        if total + len(line) + 1 > MAX_RECORD - 64:
            break
        lines.append(line)
        total += len(line) + 1
    valid_1mib = b"\n".join(lines)
    valid_1mib += b" " * (MAX_RECORD - 64 - len(valid_1mib))  # exactly 1 MiB with its 64-byte key
    sends.append([Hostile("1 MiB of valid NDJSON, counted", valid_1mib, [], [(i, now_ms) for i in range(len(lines))],
                          "k" * 64)])  # fmt: skip
    random_1mib = b"\xff" + rng.randbytes(MAX_RECORD - 65).replace(b"\n", b" ")  # one line, not UTF-8
    alone("1 MiB of random bytes", random_1mib, "not_utf8")
    json_string = dumps("s" * (MAX_RECORD - 100))
    alone("1 MiB JSON string", json_string, "not_object")

    # Compression.
    bomb = gzip.compress(b"1\n" * (MAX_RECORD // 2), 9)
    assert len(bomb) < 2_000
    alone("gzip bomb: 1 KB of gzip, 1 MiB of '1' lines", bomb, "too_large")
    empty_member = gzip.compress(b"", mtime=0)
    alone("1 MB of empty gzip members", empty_member * (1_000_000 // len(empty_member)), "bad_compression")
    zlib_bomb = zlib.compress(dumps(event(pad="a" * (16 << 20))), 9)
    alone("zlib bomb: 16 MiB in 16 KB", zlib_bomb, "too_large")
    alone("gzip with trailing bytes", gzip.compress(dumps(event())) + b"junk", "bad_compression")
    alone("truncated gzip", gzip.compress(dumps(event()))[:-6], "bad_compression")
    valid_gzip = [event("search") for _ in range(5)]
    add("gzip of an array, counted", gzip.compress(dumps(valid_gzip)), valid=[(i, now_ms) for i in range(5)])

    # Many events, many letters.
    n = 2 * letters  # 200 lines by default
    missing = [dumps({"eventType": "click", "n": i}) for i in range(n)]
    alone("200 lines, all missing their timestamp", b"\n".join(missing), "too_many_invalid", n)
    alone("200 lines of '1'", b"1\n" * n, "too_many_invalid", n)
    mixed = [dumps(event(n=i)) if i % 4 == 0 else dumps({"eventType": "click", "n": i}) for i in range(n)]
    alone("200 lines, 150 invalid and 50 valid: none counted", b"\n".join(mixed), "too_many_invalid", n)
    at_bound = [dumps(event(n=i)) if i % 2 else dumps({"eventType": "click", "n": i}) for i in range(n)]
    add("200 lines, exactly max_letters_per_record invalid: a letter each, the rest counted", b"\n".join(at_bound),
        *(Letter(i, "missing_field", at_bound[i]) for i in range(0, n, 2)),
        valid=[(i, now_ms) for i in range(1, n, 2)])  # fmt: skip
    over = events_cap + 1
    alone("10,001 tiny lines", b"\n".join([b"{}"] * over), "too_many_events", over)
    alone("an array of 10,001 objects", b"[" + b",".join([b"{}"] * over) + b"]", "too_many_events", over)
    alone("an array of 5,000 numbers", dumps([1] * 5_000), "too_many_invalid", 5_000)
    tiny = [dumps({"eventType": "t", "timestamp": now_ms}) for _ in range(events_cap)]
    add("exactly 10,000 tiny valid lines, counted", b"\n".join(tiny), valid=[(i, now_ms) for i in range(events_cap)])

    # Numbers. Out of range: a letter each; beyond 64 bits but in range: summed exactly.
    alone("amount 1e300", dumps(donation(1e300)), "number_out_of_range")
    alone("amount 1e-300", dumps(donation(1e-300)), "number_out_of_range")
    alone("amount 10**22", dumps(donation(10**22)), "number_out_of_range")
    out_of_range = donation(1e300)
    add("array: amount 1e300 beside a counted donation", dumps([out_of_range, donation(7)]),
        Letter(0, "number_out_of_range", Parsed(out_of_range)), valid=[(1, now_ms)])  # fmt: skip
    wide = donation(WIDE, "XTS", "hostile-wide")
    add("amount 2**64+1, one object", dumps(wide), valid=[(0, now_ms)])
    add("amount 2**64+1 and 3, NDJSON", dumps(wide) + b"\n" + dumps(donation(3, "XTS", "hostile-wide")),
        valid=[(0, now_ms), (1, now_ms)])  # fmt: skip
    add("amount 2**64+1 in an array", dumps([wide, event("scroll")]), valid=[(0, now_ms), (1, now_ms)])

    # Time: a leap second is the last millisecond of its minute.
    leap_ms = minute + 59_999
    add("leap second, Z", dumps({"eventType": "click", "timestamp": iso_ms(minute)[:17] + "60Z"}), valid=[(0, leap_ms)])
    local = datetime.fromtimestamp(minute / 1000, timezone(timedelta(hours=1))).strftime("%Y-%m-%d %H:%M")
    add("leap second, +01:00", dumps({"eventType": "page.view", "timestamp": f"{local}:60.5+01:00", "path": "/leap"}),
        valid=[(0, leap_ms)])  # fmt: skip

    # Many distinct long user ids (distinct values: HyperLogLog, a hash cache that must not keep them).
    users = [dumps(event(userId="".join(rng.choices(alpha, k=min(500, chars))))) for _ in range(2_000)]
    sends.append([Hostile(f"100 distinct 500-char user ids ({i})", b"\n".join(users[i : i + 100]), [],
                          [(j, now_ms) for j in range(100)], key()) for i in range(0, 2_000, 100)])  # fmt: skip
    too_long = [
        dumps(event(userId="".join(rng.choices(alpha, k=5_000)))) if i % 2 else dumps(event()) for i in range(20)
    ]
    add("10 user ids of 5,000 chars beside 10 counted events", b"\n".join(too_long),
        *(Letter(i, "value_too_long", too_long[i]) for i in range(1, 20, 2)),
        valid=[(i, now_ms) for i in range(0, 20, 2)])  # fmt: skip

    # Groups: 1,000 distinct 400-char charity ids in one minute, on one shard, another day (its windows are
    # compared apart: the groups past the item's byte budget count under __other__).
    flood_ts = iso_ms(flood_ms)
    flood = [
        dumps({"eventType": "donation.made", "timestamp": flood_ts,
               "data": {"amount": 1, "currency": "GBP", "charityId": f"{i:04d}" + "c" * (min(FLOOD_CHARS, chars) - 4)}})
        for i in range(FLOOD_EVENTS)
    ]  # fmt: skip
    sends.append([Hostile(f"charity flood {i}", b"\n".join(flood[i : i + 100]), [], [(j, flood_ms) for j in range(100)],
                          "hostile-flood", flood=True) for i in range(0, FLOOD_EVENTS, 100)])  # fmt: skip
    return sends


# -- the worker's processes --------------------------------------------------------------------------


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _descends_from(pid: int, root: int) -> bool:
    for _ in range(64):
        parent = _parent(pid)
        if parent is None or parent <= 1:
            return False
        if parent == root:
            return True
        pid = parent
    return False


def processor_children(root: int) -> list[int]:
    """The `streamkpi-processor` processes below the worker's process (the daemon's children)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
        except OSError:
            continue
        if b"streamkpi-processor" in cmdline and _descends_from(int(entry.name), root):
            found.append(int(entry.name))
    return found


def peak_rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Watch:
    """Polls the worker all along: did `streamkpi consume` exit, which processor children ran, and the peak
    RSS (VmHWM, the kernel's own high-water mark) of each."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.exit_code: int | None = None
        self.peaks_kb: dict[int, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def sample(self) -> None:
        code = self.worker.process.poll()
        if code is not None and self.exit_code is None:
            self.exit_code = code
        for pid in processor_children(self.worker.process.pid):
            peak = peak_rss_kb(pid)
            if peak is not None:
                self.peaks_kb[pid] = max(self.peaks_kb.get(pid, 0), peak)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.sample()

    def alive(self) -> bool:
        assert self.exit_code is None and self.worker.process.poll() is None, (
            f"streamkpi consume exited ({self.worker.process.poll()}):\n{self.worker.logs()[-4000:]}"
        )
        return True


class DlqBodies(DlqDrain):
    """Keeps every DLQ body by identity, and the identities that came more than once."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(stack)
        self.bodies: dict[str, dict[str, Any]] = {}
        self.repeated: list[str] = []

    def keep(self, body: dict[str, Any]) -> None:
        if body["id"] in self.bodies:
            self.repeated.append(body["id"])
        self.bodies[body["id"]] = body

    def finish(self) -> dict[str, dict[str, Any]]:  # type: ignore[override]
        super().finish()
        return self.bodies


# -- the test ----------------------------------------------------------------------------------------


def test_hostile_records_become_bounded_dead_letters_while_normal_traffic_counts_exactly(
    stack: Stack, start_worker: Callable[[Stack], Worker], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    began = time.monotonic()
    summary: dict[str, Any] = {"seconds": {}}

    def mark(phase: str) -> None:
        summary["seconds"][phase] = round(time.monotonic() - began, 1)

    s = stack.fresh(shards=2)
    assert s.settings.config_path is None, "the reference reads the built-in default config"
    worker = start_worker(s)
    watch = Watch(worker)
    watch.start()
    dlq = DlqBodies(s)
    dlq.start()
    try:
        wait_for(lambda: watch.alive() and worker.logs().count("shard initialized") >= 2, 90, "worker started")
        mark("worker_started")
        watch.sample()
        summary["processor_start_rss_mb"] = sorted(round(kb / 1024, 1) for kb in watch.peaks_kb.values())

        # Build everything first, then send from this one thread: generated records in put_records
        # batches, each followed by the next hostile send.
        now_ms = int(time.time() * 1000)
        flood_ms = now_ms - 30 * 3_600_000  # another day and hour than every other event here
        sends = build_hostile(now_ms, flood_ms, s.settings.limits())
        generator = EventGenerator(SEED, now_ms, RATE, INVALID, late_fraction=LATE)
        generated = list(generator.records(EVENTS))
        events_file = tmp_path / "events.ndjson"
        kinesis = s.client("kinesis")
        stream = s.settings.stream
        hostile_ids: list[tuple[Hostile, str, str]] = []  # (record, shard, sequence number)
        chunk = max(1, len(generated) // (len(sends) + 1))
        with events_file.open("wb") as events_out:
            truth = Truth(generator.seed, now_ms, events_out=events_out)
            pending = list(sends)
            for start in range(0, len(generated), chunk):
                batch = generated[start : start + chunk]
                reply = kinesis.put_records(
                    StreamName=stream, Records=[{"Data": r.data, "PartitionKey": r.partition_key} for r in batch]
                )
                assert not reply.get("FailedRecordCount"), reply
                for record, result in zip(batch, reply["Records"], strict=True):
                    truth.add(record, result["ShardId"], result["SequenceNumber"])
                if pending:
                    hostile_ids += put_hostile(kinesis, stream, pending.pop(0))
            for send in pending:
                hostile_ids += put_hostile(kinesis, stream, send)
        mark("sent")
        summary["hostile_records"] = len(hostile_ids)
        summary["generated"] = {"events": truth.events_sent, "valid": truth.valid, "invalid": len(truth.invalid)}

        last = last_sequence_per_shard(s)
        assert len(last) == 2
        wait_for(lambda: watch.alive() and checkpoints(s) == last, 150, "every shard checkpointed at its last record")
        mark("caught_up")
        watch.sample()
        assert len(watch.peaks_kb) == 2, f"processor children seen: {sorted(watch.peaks_kb)} (one replaced?)"

        # -- the stores: every metric, resolution and store against the reference -------------------------
        hostile_valid: list[ValidEvent] = []
        flood_valid = 0
        for hostile, shard, seq in hostile_ids:
            if hostile.flood:
                flood_valid += len(hostile.valid)
            else:
                hostile_valid += valid_events(hostile, shard, seq)
        reference = Reference(read_config(DEFAULT_CONFIG.read_text()), read_events(events_file) + hostile_valid)
        assert reference.events == truth.valid + len(hostile_valid)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            monkeypatch.setenv(name, s.env[name])
        services = Services(s.settings)
        stores = (("dynamodb", services.dynamodb_store), ("redis", services.redis_store))
        problems: list[str] = []
        for res in reference.config.resolutions:
            resolution = services.config.resolution(res)
            from_ms, to_ms = reference.span(res)  # exactly the reference's windows: the flood's lie outside
            starts = list(resolution.starts_between(from_ms, to_ms))
            found = {name: store.read(res, starts) for name, store in stores}
            for metric in reference.config.metrics:
                expected = reference.query(metric, res, from_ms, to_ms)
                for name, _store in stores:
                    actual = json.loads(json.dumps(shape(resolution, metric, starts, found[name])))
                    problems += diff(expected, actual, f"{name} {metric} {res}")
        assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:60])
        mark("compared")

        # The wide integers, summed exactly (a float would end in ...616).
        window_1h = now_ms - now_ms % 3_600_000
        for name, store in stores:
            partials = {window_1h: store.read("1h", [window_1h]).get(window_1h, [])}
            amounts = shape(services.config.resolution("1h"), "donation_amount", [window_1h], partials)
            largest = shape(services.config.resolution("1h"), "largest_donation", [window_1h], partials)
            assert amounts["windows"][0]["groups"]["XTS|hostile-wide"] == 3 * WIDE + 3, name
            assert largest["windows"][0]["groups"]["XTS"] == WIDE, name

        # The per-type per-minute counts as the other integration tests read them: the truth file plus the
        # hostile events that count.
        expected_counts: dict[str, Counter[str]] = {}
        for start, groups in truth.to_dict()["counts"]["events"]["1m"].items():
            expected_counts.setdefault(start, Counter()).update(groups)
        for valid in hostile_valid:
            expected_counts.setdefault(str(valid.event_ms - valid.event_ms % 60_000), Counter())[
                valid.event["eventType"]
            ] += 1
        minutes = sorted(int(k) for k in expected_counts)
        from_ms, to_ms = minutes[0], minutes[-1] + 60_000
        expected_plain = {k: dict(v) for k, v in expected_counts.items()}
        assert stored_counts(s, "dynamodb", from_ms, to_ms) == expected_plain
        assert stored_counts(s, "redis", from_ms, to_ms) == expected_plain

        # The flood: every event counted, the groups past the byte budget under __other__. (Its 1m window
        # is past Redis's 6 h retention: DynamoDB only there.)
        flood_summary = {}
        for res, names in (("1m", ("dynamodb",)), ("1h", ("dynamodb", "redis")), ("1d", ("dynamodb", "redis"))):
            resolution = services.config.resolution(res)
            start = resolution.start(flood_ms)
            for name, store in stores:
                if name not in names:
                    continue
                partials = store.read(res, [start])
                donations = shape(resolution, "donations", [start], partials)["windows"][0]
                amount = shape(resolution, "donation_amount", [start], partials)["windows"][0]
                events = shape(resolution, "events", [start], partials)["windows"][0]
                where = f"{name} {res} flood window"
                assert donations["total"] == amount["total"] == events["total"] == flood_valid, where
                assert sum(donations["groups"].values()) == flood_valid, where
                assert "__other__" in donations["groups"], f"{where}: {len(donations['groups'])} groups"
                flood_summary[f"{name} {res}"] = {"named": len(donations["groups"]) - 1}
        summary["flood_groups_named"] = flood_summary
        mark("flood")

        # -- the DLQ: exactly the expected letters, once each ---------------------------------------------
        expected: dict[str, tuple[str, Letter | None]] = {
            entry["id"]: (entry["reason"], None) for entry in truth.to_dict()["invalid"]
        }
        for hostile, shard, seq in hostile_ids:
            for letter in hostile.letters:
                expected[f"{shard}/{seq}/0/{letter.index}"] = (letter.reason, letter)
        bodies = dlq.finish()
        summary["dlq"] = {"messages": dlq.messages, "expected": len(expected)}
        got = {identity: body["reason"] for identity, body in bodies.items()}
        assert got == {identity: reason for identity, (reason, _) in expected.items()}
        assert dlq.messages == len(expected), f"{dlq.messages} messages for {len(expected)} letters: {dlq.repeated[:5]}"
        s3 = s.client("s3")
        in_s3 = 0
        for identity, (_reason, letter) in expected.items():
            if letter is None:
                continue
            body = bodies[identity]
            assert body.get("events") == letter.events, (identity, body.get("events"), letter)
            in_s3 += body.get("payloadS3") is not None
            payload = letter_payload(body, s3, bucket=s.settings.archive_bucket)
            if isinstance(letter.payload, Parsed):
                assert json.loads(payload) == letter.payload.value, identity
            else:
                assert payload == letter.payload, (identity, len(payload), len(letter.payload))
        summary["dlq"]["payloads_in_s3"] = in_s3
        mark("dlq")

        # -- memory, and the worker is still there -------------------------------------------------------
        watch.stop()
        watch.alive()
        peaks_mb = {pid: round(kb / 1024, 1) for pid, kb in watch.peaks_kb.items()}
        summary["processor_peak_rss_mb"] = peaks_mb
        summary["rss_samples"] = watch.samples
        assert len(peaks_mb) == 2, peaks_mb
        assert max(peaks_mb.values()) < PROCESSOR_RSS_BOUND_MB, peaks_mb
        logs = worker.logs()
        assert "exiting without checkpoint" not in logs and "Traceback" not in logs, logs[-4000:]
        assert worker.stop(signal.SIGTERM) == 0, worker.logs()[-3000:]
        mark("stopped")

        # The wide sums as a user reads them: `streamkpi query --format json`, exact too.
        for name in ("dynamodb", "redis"):
            out = cli(s, "query", "--metric", "donation_amount", "--resolution", "1h", "--from", iso(window_1h),
                      "--to", iso(window_1h + 3_600_000), "--store", name, "--format", "json")  # fmt: skip
            assert json.loads(out.stdout)["windows"][0]["groups"]["XTS|hostile-wide"] == 3 * WIDE + 3, name
        mark("cli")
    finally:
        watch.stop()
        dlq.stop()
        print("hostile:", json.dumps(summary))


def put_hostile(kinesis: Any, stream: str, send: list[Hostile]) -> list[tuple[Hostile, str, str]]:
    if len(send) == 1:
        reply = kinesis.put_record(StreamName=stream, Data=send[0].data, PartitionKey=send[0].partition_key)
        return [(send[0], reply["ShardId"], reply["SequenceNumber"])]
    out = []
    for start in range(0, len(send), 500):
        part = send[start : start + 500]
        reply = kinesis.put_records(
            StreamName=stream, Records=[{"Data": h.data, "PartitionKey": h.partition_key} for h in part]
        )
        assert not reply.get("FailedRecordCount"), reply
        out += [(h, r["ShardId"], r["SequenceNumber"]) for h, r in zip(part, reply["Records"], strict=True)]
    return out


def test_the_hostile_records_fit_kinesis_and_the_helpers_read_proc() -> None:
    """Fast checks of the test's own pieces (no stack): records within 1 MiB, expected counts coherent."""
    now_ms = int(time.time() * 1000)
    sends = build_hostile(now_ms, now_ms - 30 * 3_600_000, Settings.load({}).limits())
    records = [h for send in sends for h in send]
    assert all(len(h.data) + len(h.partition_key) <= MAX_RECORD for h in records)
    assert max(len(h.data) + len(h.partition_key) for h in records) == MAX_RECORD
    assert all(h.letters or h.valid for h in records)
    assert peak_rss_kb(os.getpid()) is not None and _parent(os.getpid()) == os.getppid()
    for h in records:
        if h.valid and not h.flood:
            events = valid_events(h, "shardId-0", "1")
            assert all(e.event["eventType"] for e in events), h.name
