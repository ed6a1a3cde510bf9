"""The fast hot path gives exactly what the plain one gave (issue 4, `make bench`).

Decoding, validation, the metric fold and the worker loop were rewritten for speed. Each fast version is
checked here against the straightforward implementation it replaced, kept below as the reference, on
generated inputs: same values, same reasons and details, same order of groups and dead letters.
"""

from __future__ import annotations

import base64
import gc
import gzip
import tracemalloc
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fnmatch import fnmatchcase
from hashlib import blake2b
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import consumer.worker as worker_module
from aggregations import hll
from aggregations.errors import StoreUnavailableError
from aggregations.memory_store import MemoryStore
from aggregations.metrics import _MISSING, OTHER_GROUP, MetricDef
from aggregations.partials import Position, ShardAggregates, StoredPartial, WindowKey
from consumer import protocol
from consumer.bounds import to_json_bytes
from consumer.decode import Decoded, Rejection, _classify_parse_failure, _kind, decode_parts, decode_record, inflate
from consumer.dlq.memory import MemoryDeadLetterQueue
from consumer.errors import TimestampError
from consumer.pipeline import Record
from consumer.reasons import Reason
from consumer.sinks.memory import MemorySink
from consumer.validate import EVENT_TYPE, Invalid, Rules, Valid, parse_timestamp_ms, validate_event
from consumer.worker import Cadence, Outputs, ShardWorker, Stores
from devstack.generator import EventGenerator
from streamkpi.config import default_config_text, load_config, parse_config

# -- the references: the plain implementations the fast paths replaced ---------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_SECONDS_LIMIT = 100_000_000_000


def reference_parse_timestamp_ms(value: Any) -> int:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            # A leap second (hh:mm:60) is the last millisecond of its minute (issue 11).
            head, sep, tail = value.partition(":60")
            if sep and (tail[:1] in ("Z", "+", "-", ".")):
                return reference_parse_timestamp_ms(f"{head}:59{tail.lstrip('.0123456789')}") // 1000 * 1000 + 999
            raise TimestampError(f"{value[:64]!r} is not ISO-8601") from None
        if parsed.tzinfo is None:
            raise TimestampError(f"{value[:64]!r} has no UTC offset (add Z or +hh:mm)")
        return (parsed - _EPOCH) // _MS
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TimestampError(f"timestamp is a {type(value).__name__}, not a string or number")
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise TimestampError("timestamp is not a finite number")
        exact = Decimal(repr(value))
        return int((exact * 1000 if abs(exact) < _SECONDS_LIMIT else exact).to_integral_value("ROUND_FLOOR"))
    return value * 1000 if abs(value) < _SECONDS_LIMIT else value


def reference_validate_event(event: Mapping[str, Any], arrival_ms: int, rules: Rules) -> Valid | Invalid:
    event_type = event.get("eventType")
    if event_type is None:
        return Invalid(Reason.MISSING_FIELD, "eventType is missing")
    if not isinstance(event_type, str) or not EVENT_TYPE.fullmatch(event_type):
        return Invalid(Reason.WRONG_TYPE, "eventType must be a string of 1-128 letters, digits and ._:- characters")
    if "timestamp" not in event:
        return Invalid(Reason.MISSING_FIELD, "timestamp is missing")
    try:
        event_ms = reference_parse_timestamp_ms(event["timestamp"])
    except TimestampError as exc:
        return Invalid(Reason.BAD_TIMESTAMP, str(exc))
    for name in ("eventId", "userId", "sessionId"):
        value = event.get(name)
        if value is not None and not isinstance(value, str):
            return Invalid(Reason.WRONG_TYPE, f"{name} must be a string")
    data = event.get("data")
    if data is not None and not isinstance(data, dict):
        return Invalid(Reason.WRONG_TYPE, "data must be an object")
    if event_ms < arrival_ms - rules.max_age_ms:
        return Invalid(Reason.TOO_OLD, f"event time is {(arrival_ms - event_ms) // 1000}s before arrival")
    if event_ms > arrival_ms + rules.future_skew_ms:
        return Invalid(Reason.IN_FUTURE, f"event time is {(event_ms - arrival_ms) // 1000}s after arrival")
    schema = rules.schemas.get(event_type)
    if schema is not None:
        try:
            schema(event)
        except Exception as exc:
            return Invalid(Reason.SCHEMA, str(exc))
    elif rules.strict_types and not (
        event_type in rules.known_types or any(fnmatchcase(event_type, p) for p in rules.known_patterns)
    ):
        return Invalid(Reason.UNKNOWN_TYPE, f"event type {event_type!r} is not configured")
    return Valid(event_type, event_ms)


def reference_decode_record(data: bytes) -> Decoded:
    inflated = inflate(data)
    if isinstance(inflated, Rejection):
        return Decoded([], [inflated])
    try:
        parsed = orjson.loads(inflated)
    except orjson.JSONDecodeError:
        return _reference_ndjson(inflated)
    if isinstance(parsed, dict):
        return Decoded([(0, parsed)], [])
    if isinstance(parsed, list):
        objects, rejections = [], []
        for index, item in enumerate(parsed):
            if isinstance(item, dict):
                objects.append((index, item))
            else:
                try:
                    payload = orjson.dumps(item)
                except orjson.JSONEncodeError:
                    payload = inflated
                rejections.append(Rejection(index, Reason.NOT_OBJECT, f"array element is {_kind(item)}", payload))
        return Decoded(objects, rejections)
    return Decoded([], [Rejection(0, Reason.NOT_OBJECT, f"record is {_kind(parsed)}", inflated)])


def _reference_ndjson(text: bytes) -> Decoded:
    lines = [line for line in text.split(b"\n") if line.strip()]
    if len(lines) <= 1:
        reason, detail = _classify_parse_failure(text)
        return Decoded([], [Rejection(0, reason, detail, text)])
    objects, rejections = [], []
    for index, line in enumerate(lines):
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            reason, detail = _classify_parse_failure(line)
            rejections.append(Rejection(index, reason, f"line {index + 1}: {detail}", line))
            continue
        if isinstance(item, dict):
            objects.append((index, item))
        else:
            rejections.append(Rejection(index, Reason.NOT_OBJECT, f"line {index + 1} is {_kind(item)}", line))
    if not objects and all(r.reason is not Reason.NOT_OBJECT for r in rejections):
        reason, detail = _classify_parse_failure(text)
        return Decoded([], [Rejection(0, reason, detail, text)])
    return Decoded(objects, rejections)


def _reference_lookup(event: Any, path: tuple[str, ...]) -> Any:
    value = event
    for part in path:
        if not isinstance(value, Mapping):
            return _MISSING
        value = value.get(part, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def _reference_group_part(value: Any) -> str:
    if value is _MISSING or value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def reference_group_and_value(metric: MetricDef, event: Mapping[str, Any]) -> tuple[str, Any] | None:
    from aggregations.metrics import ALL_GROUP, to_decimal

    for path, expected in metric._where_paths:
        if _reference_lookup(event, path) != expected:
            return None
    value: Any = None
    if metric._field_path:
        raw = _reference_lookup(event, metric._field_path)
        value = raw if metric.agg == "distinct" else to_decimal(raw)
        if value is None or value is _MISSING:
            return None
    if not metric._by_paths:
        return ALL_GROUP, value
    parts = [_reference_group_part(_reference_lookup(event, p)) for p in metric._by_paths]
    return (parts[0] if len(parts) == 1 else "|".join(parts)), value


def reference_locate(value: object) -> tuple[int, int]:
    text = value if isinstance(value, str) else repr(value)
    h = int.from_bytes(blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")
    return h >> (64 - hll.P), (64 - hll.P) - (h & ((1 << (64 - hll.P)) - 1)).bit_length() + 1


def reference_add(aggs: ShardAggregates, event: Mapping[str, Any], event_type: str, ms: int, pos: Position) -> bool:
    """ShardAggregates.add as it was: every metric, every resolution, one event at a time."""
    contributions = []
    for metric in aggs.metrics.for_type(event_type):
        found = reference_group_and_value(metric, event)
        if found is not None:
            contributions.append((metric, found[0], found[1]))
    aggs._tick += 1
    applied = False
    for resolution in aggs.resolutions:
        partial = aggs._partials[(resolution.name, ms - ms % resolution.size_ms)]
        if partial.skip_until is not None and pos <= partial.skip_until:
            continue
        for metric, group, value in contributions:
            groups = partial.groups.setdefault(metric.name, {})
            agg = metric.aggregator
            if group not in groups and len(groups) >= metric.max_groups:
                group = OTHER_GROUP
            current = groups.get(group)
            if metric.agg == "distinct":  # hll.add, with the reference hash
                registers = agg.initial() if current is None else current
                index, rank = reference_locate(value)
                if registers[index] < rank:
                    registers[index] = rank
                groups[group] = registers
            else:
                groups[group] = agg.add(agg.initial() if current is None else current, value)
        partial.position = pos
        partial.dirty = {"dynamodb", "redis"}
        partial.touched = aggs._tick
        applied = True
    return applied


# -- timestamps and validation -------------------------------------------------------------------------

iso_texts = st.builds(
    lambda ms, sep, frac, zone: (_EPOCH + timedelta(milliseconds=ms)).replace(tzinfo=None).isoformat(sep, frac) + zone,
    st.integers(-(10**12), 10**13),
    st.sampled_from(["T", " ", "x"]),
    st.sampled_from(["seconds", "milliseconds", "microseconds", "minutes"]),
    st.sampled_from(["Z", "+01:00", "-05:30", "+00:00", "", "+24:00", "z"]),
)
timestamps = st.one_of(
    iso_texts,
    st.sampled_from(["2026-13-45T00:00:00Z", "yesterday", "", "2019-11-15 18:05:00Z", "2019-11-15T18:05:60Z"]),
    st.text(max_size=30),
    st.integers(-(10**15), 10**15),
    st.integers(-(10**11) - 5, -(10**11) + 5) | st.integers(10**11 - 5, 10**11 + 5),
    st.floats(),
    st.floats(min_value=-2e11, max_value=2e11),
    st.integers(-(10**14), 10**14).map(lambda ms: ms / 1000),
    st.integers(-(10**14), 10**14).map(lambda us: us / 1_000_000),
    st.sampled_from([0.0, -0.0, 1e11, -1e11, 99999999999.999, 1e-7, 0.0005, -0.0005, True, False, None]),
)


def _outcome(function: Any, value: Any) -> tuple[str, Any]:
    try:
        return "ok", function(value)
    except TimestampError as exc:
        return "error", str(exc)


@settings(max_examples=1000, deadline=None)
@given(timestamps)
def test_parse_timestamp_ms_gives_what_the_plain_version_gave(value: Any) -> None:
    assert _outcome(parse_timestamp_ms, value) == _outcome(reference_parse_timestamp_ms, value)


def test_epoch_seconds_with_three_decimals_are_exact_over_a_wide_range() -> None:
    for ms in [*range(1_763_337_600_000, 1_763_337_700_000, 7), *range(-50_000, 50_000, 3)]:
        value = ms / 1000
        assert parse_timestamp_ms(value) == reference_parse_timestamp_ms(value) == ms


fields = st.one_of(st.none(), st.text(max_size=4), st.integers(0, 9), st.booleans(), st.just({"a": 1}), st.just([1]))
events = st.fixed_dictionaries(
    {},
    optional={
        "eventType": st.sampled_from(["click", "page.view", "donation.made", "user.created", "a b", "", 42, None]),
        "timestamp": timestamps,
        "eventId": fields,
        "userId": fields,
        "sessionId": fields,
        "data": st.one_of(fields, st.fixed_dictionaries({}, optional={"amount": fields, "currency": fields})),
    },
)
CONFIG = load_config(None)
STRICT = parse_config(default_config_text().replace("strict_types = false", "strict_types = true"), "strict")


@settings(max_examples=600, deadline=None)
@given(events, st.integers(-(10**12), 10**13), st.booleans())
def test_validate_event_gives_what_the_plain_version_gave(event: dict, arrival_ms: int, strict: bool) -> None:
    rules = (STRICT if strict else CONFIG).rules
    assert validate_event(event, arrival_ms, rules) == reference_validate_event(event, arrival_ms, rules)


# -- decoding ------------------------------------------------------------------------------------------


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_record_data_decodes_as_the_standard_library_decodes_it(data: bytes) -> None:
    text = base64.b64encode(data).decode()  # what the daemon sends (canonical base64)
    assert protocol.b64decode(text) == base64.b64decode(text) == data


@settings(max_examples=2_000)
@given(st.text(alphabet="ABCxyz019+/=\n -_!é", max_size=24))
def test_any_other_text_decodes_or_fails_as_in_the_standard_library(text: str) -> None:
    outcomes = []
    for decode in (base64.b64decode, protocol.b64decode):
        try:
            outcomes.append(decode(text))
        except ValueError as exc:  # binascii.Error, or non-ASCII text
            outcomes.append(type(exc))
    assert outcomes[0] == outcomes[1]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
lines = st.one_of(
    json_values.map(orjson.dumps),
    st.sampled_from([b"", b"  ", b"\r", b"{", b"}", b'{"a":1}', b"[1,2]", b"1", b"\xff", b"{'a': 1}"]),
)
payloads = st.one_of(
    st.binary(max_size=60),
    json_values.map(orjson.dumps),
    st.lists(lines, max_size=5).map(b"\n".join),
    st.lists(lines, max_size=4).map(b"\r\n".join),
    json_values.map(lambda v: orjson.dumps(v, option=orjson.OPT_INDENT_2)),
    st.lists(json_values, max_size=3).map(lambda v: gzip.compress(orjson.dumps(v))),
)


@settings(max_examples=600, deadline=None)
@given(payloads)
def test_decode_gives_what_the_plain_version_gave(data: bytes) -> None:
    expected = reference_decode_record(data)
    assert decode_record(data) == expected
    objects, rejections = decode_parts(data)
    assert ([(index, obj) for index, obj, _ in objects], rejections) == (expected.objects, expected.rejections)
    for _, obj, text in objects:
        # An object's own text, when given, is one line of the record that reads back as the object.
        if text is not None:
            assert b"\n" not in text and text == text.strip() and orjson.loads(text) == obj
            assert text in (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)


# -- the metric fold -----------------------------------------------------------------------------------

FOLD_CONFIG = parse_config(
    default_config_text()
    + """
[sinks.fanout]
type = "kinesis"
stream = "clicks"

[[routes]]
types = ["click", "page.*", "donation.made"]
sinks = ["fanout"]

[metrics.by_two]
agg = "count"
by = ["browser", "data.kind"]
max_groups = 3

[metrics.few_paths]
agg = "count"
by = ["path"]
max_groups = 2

[metrics.left_clicks]
agg = "count"
where = { "data.kind" = "left" }

[metrics.least]
agg = "min"
field = "data.n"
by = ["browser"]
max_groups = 2

[metrics.total]
agg = "sum"
field = "data.n"
by = ["path"]
max_groups = 2

[metrics.sessions]
agg = "distinct"
field = "sessionId"
by = ["browser"]
max_groups = 2

[metrics.nested]
agg = "count"
by = ["data.kind"]
""",
    "fold test",
)
BASE_MS = 1_763_337_600_000
fold_events = st.lists(
    st.tuples(
        st.fixed_dictionaries(
            {"eventType": st.sampled_from(["click", "page.view", "donation.made", "user.created", "scroll"])},
            optional={
                "userId": st.sampled_from(["u1", "u2", "u3", "u4"]),
                "sessionId": st.sampled_from(["s1", "s2", "s3"]),
                "browser": st.sampled_from(["A", "B", "C", "D"]) | st.none() | st.booleans() | st.integers(0, 2),
                "path": st.sampled_from(["/", "/a", "/b", "/c"]),
                "data": st.fixed_dictionaries(
                    {},
                    optional={
                        "kind": st.sampled_from(["left", "right"]) | st.integers(0, 1),
                        "n": st.integers(-5, 5) | st.floats(-10, 10),
                        "charityId": st.sampled_from(["1", "2", "3"]),
                        "amount": st.integers(0, 100),
                        "currency": st.sampled_from(["GBP", "EUR"]),
                    },
                ),
            },
        ),
        st.sampled_from([0, 1_000, 59_999, 60_000, 61_000, 3_600_000, 3_659_999, 86_400_000, -1]),
        st.integers(0, 2),  # how far the position moves on: 0 repeats the position (a duplicate delivery)
    ),
    max_size=40,
)


def _state(aggs: ShardAggregates) -> list:
    """Everything observable of a ShardAggregates, with the order of metrics and groups."""
    out = []
    for key, partial in aggs._partials.items():
        groups = {
            name: {g: (bytes(v) if isinstance(v, bytearray) else v) for g, v in gs.items()}
            for name, gs in partial.groups.items()
        }
        out.append((key, repr(groups), partial.position, partial.skip_until, sorted(partial.dirty), partial.touched))
    return [aggs._tick, out, [orjson.dumps(p.metrics) for p in aggs.dirty("dynamodb")]]


def _fresh(stored: dict[WindowKey, StoredPartial], keys: set[WindowKey]) -> ShardAggregates:
    aggs = ShardAggregates("shard-0", FOLD_CONFIG.metric_set, FOLD_CONFIG.resolutions)
    for key in aggs.missing(keys):
        aggs.install(key, stored.get(key))
    return aggs


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fold_events, fold_events, st.lists(st.integers(1, 12), min_size=1, max_size=5))
def test_fold_gives_what_adding_event_by_event_gave(earlier: list, batch: list, chunks: list[int]) -> None:
    # Stored partials from earlier events: the batch replays some positions at or below them.
    setup = ShardAggregates("shard-0", FOLD_CONFIG.metric_set, FOLD_CONFIG.resolutions)
    items = []
    seq = 100
    for n, (event, offset, step) in enumerate(earlier + batch):
        seq += step
        items.append((event, event["eventType"], BASE_MS + offset, (seq, 0, n % 3)))
    stored_items = items[: len(earlier)]
    for key in setup.missing({k for _, _, ms, _ in stored_items for k in setup.keys_for(ms)}):
        setup.install(key, None)
    for event, event_type, ms, pos in stored_items:
        reference_add(setup, event, event_type, ms, pos)
    stored = {p.key: p for p in setup.dirty("dynamodb")}
    replay = items[len(earlier) // 2 :]
    keys = {k for _, _, ms, _ in replay for k in setup.keys_for(ms)}

    plain, one_by_one, folded = _fresh(stored, keys), _fresh(stored, keys), _fresh(stored, keys)
    expected = [reference_add(plain, *item) for item in replay]
    assert [one_by_one.add(*item) for item in replay] == expected
    included: list[int] = []
    start = 0
    for n in range(len(replay)):
        size = chunks[n % len(chunks)]
        if start >= len(replay):
            break
        included += [start + i for i in folded.fold(replay[start : start + size])]
        start += size
    assert included == [i for i, applied in enumerate(expected) if not applied]
    assert _state(one_by_one) == _state(plain)
    assert _state(folded) == _state(plain)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-(10**10), 10**10), max_size=30), st.lists(st.integers(-(10**10), 10**10), max_size=10))
def test_span_agrees_with_keys_for(times: list[int], present: list[int]) -> None:
    aggs = ShardAggregates("s", CONFIG.metric_set, CONFIG.resolutions)
    for t in present:
        for key in aggs.keys_for(t):
            aggs.install(key, None)
    for t in times:
        low, high, absent = aggs.span(t)
        assert low <= t < high
        assert aggs.keys_for(low) == aggs.keys_for(high - 1) == aggs.keys_for(t)
        assert aggs.keys_for(low - 1) != aggs.keys_for(t) != aggs.keys_for(high)
        assert absent == [k for k in aggs.keys_for(t) if k not in aggs._partials]


@given(st.lists(st.text(max_size=6) | st.integers() | st.floats(allow_nan=False) | st.none(), max_size=40))
def test_locate_with_its_cache_gives_the_plain_hash(values: list) -> None:
    for value in values + values:
        assert hll.locate(value) == reference_locate(value)


def test_the_locate_cache_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hll, "_LOCATED_MAX", 10)
    for n in range(100):
        assert hll.locate(f"user-{n}") == reference_locate(f"user-{n}")
        assert len(hll._located) <= 10


# -- the worker loop -----------------------------------------------------------------------------------


def _run(records: list[Record], chunk: int, monkeypatch: pytest.MonkeyPatch, batch: int) -> tuple:
    monkeypatch.setattr(worker_module, "_FOLD_CHUNK", chunk)
    durable, hot, dlq = MemoryStore("dynamodb"), MemoryStore("redis"), MemoryDeadLetterQueue()
    sink, fanout = MemorySink("archive"), MemorySink("fanout")
    eager = Cadence(redis_flush_seconds=0, dynamodb_flush_seconds=0, checkpoint_seconds=0, max_cached_windows=3)
    config = FOLD_CONFIG
    for first, last in ((0, len(records) * 2 // 3), (len(records) // 3, len(records))):  # then a restart
        sinks = {"archive": sink, "fanout": fanout}
        worker = ShardWorker("shard-0", "s", config.pipeline, Stores(durable, hot), Outputs(dlq, sinks), eager)
        for start in range(first, last, batch):
            worker.process(records[start : min(start + batch, last)])
            if start % (3 * batch) == 0:
                worker.flush_durable()
        worker.flush_durable()
    stored = [(k, p.position, orjson.dumps(p.metrics)) for k, p in sorted(durable.items.items())]
    hot_items = [(k, p.position, orjson.dumps(p.metrics)) for k, p in sorted(hot.items.items())]
    return stored, hot_items, dlq.letters, sink.events, worker.stats, fanout.events


def test_folding_in_chunks_and_loading_windows_early_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = EventGenerator(7, BASE_MS, 40.0, invalid_fraction=0.05)
    records = [
        (r.data, str(10**20 + 11 * n), 0, r.partition_key, r.send_ms) for n, r in enumerate(generator.records(3_000))
    ]
    monkeypatch.setattr(worker_module, "_EAGER_LOADS", 0)
    whole = _run(records, 10**9, monkeypatch, batch=200)  # one load per batch, one fold per batch
    assert whole[4].duplicates > 0  # the restart replayed events already stored
    archive, fanout = whole[3], whole[5]
    # Events already stored were not forwarded again, to either sink (each event has its own eventId).
    assert len(archive) == len(set(archive))
    assert 0 < len(fanout) == len(set(fanout)) < len(archive) and set(fanout) <= set(archive)
    for eager in (0, 1, 4, 10**9):
        monkeypatch.setattr(worker_module, "_EAGER_LOADS", eager)
        for chunk, batch in ((1, 200), (7, 200), (50, 37), (1_000, 500)):
            assert _run(records, chunk, monkeypatch, batch) == whole


def test_an_empty_batch_changes_nothing_but_the_time_of_the_last_batch() -> None:
    # KCL sends empty batches on idle polls (callProcessRecordsEvenForEmptyRecordList).
    stores, outputs = Stores(MemoryStore(), MemoryStore()), Outputs(MemoryDeadLetterQueue())
    worker = ShardWorker("s", "s", CONFIG.pipeline, stores, outputs, Cadence(wall_ms=lambda: 42))
    worker.process([])
    assert (worker.last_record, worker.stats.records, worker.stats.events, worker.last_batch_ms) == (None, 0, 0, 42)
    assert not worker.checkpoint_due() and worker.pending_forwards == {}


def test_the_garbage_collector_runs_again_after_a_batch() -> None:
    worker = ShardWorker(
        "s", "s", CONFIG.pipeline, Stores(MemoryStore(), MemoryStore()), Outputs(MemoryDeadLetterQueue())
    )
    record = (b'{"eventType": "click", "timestamp": 1763337600000}', "1", 0, "pk", BASE_MS)
    assert gc.isenabled()
    worker.process([record])
    assert gc.isenabled()
    gc.disable()
    try:
        worker.process([record])
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()
    worker.stores = Stores(None, worker.stores.hot)  # type: ignore[arg-type]  # loading a new window now fails
    with pytest.raises(AttributeError):
        worker.process([(b'{"eventType": "click", "timestamp": 1}', "2", 0, "pk", 1000)])
    assert gc.isenabled()


def test_forwarded_json_does_not_keep_orjson_buffers() -> None:
    event = {"eventType": "click", "timestamp": 1, "data": {"x": 1}}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [to_json_bytes(event) for _ in range(200)]
        per_item = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert kept[0] == orjson.dumps(event)
    assert per_item < 256  # orjson's own result holds a buffer of 4 KiB or more


class FlakyLoads(MemoryStore):
    """A durable store whose loads after the first fail `failures` times (an outage mid-batch)."""

    def __init__(self, failures: int) -> None:
        super().__init__("dynamodb")
        self.failures = failures
        self.loads = 0

    def load(self, shard_id: str, keys: Any) -> Any:
        self.loads += 1
        if self.loads > 1 and self.failures:
            self.failures -= 1
            raise StoreUnavailableError("dynamodb is unavailable (test outage)")
        return super().load(shard_id, keys)


@pytest.mark.parametrize("failures", [1, 3])
def test_a_load_that_fails_in_the_middle_of_a_batch_is_retried_and_changes_nothing(failures: int) -> None:
    generator = EventGenerator(11, BASE_MS, 10.0, invalid_fraction=0.05)  # 150 s: new minutes mid-batch
    records = [
        (r.data, str(10**20 + 11 * n), 0, r.partition_key, r.send_ms) for n, r in enumerate(generator.records(1_500))
    ]
    results = []
    for store in (FlakyLoads(0), FlakyLoads(failures)):
        sleeps: list[float] = []
        sinks = {"archive": MemorySink("a"), "fanout": MemorySink("f")}
        hot, dlq = MemoryStore("redis"), MemoryDeadLetterQueue()
        outputs, cadence = Outputs(dlq, sinks), Cadence(sleep=sleeps.append)
        worker = ShardWorker("s", "s", FOLD_CONFIG.pipeline, Stores(store, hot), outputs, cadence)
        worker.process(records)
        worker.flush_durable()
        stored = [(k, p.position, orjson.dumps(p.metrics)) for k, p in sorted(store.items.items())]
        results.append((stored, sinks["archive"].events, sleeps, store.loads))
    assert results[0][3] > 1  # windows were loaded in the middle of the batch
    assert results[1][:2] == results[0][:2]
    assert len(results[1][2]) == failures and results[0][2] == []  # one back-off per failed load
