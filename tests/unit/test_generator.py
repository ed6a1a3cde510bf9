"""The traffic generator: reproducible bytes, and plans that match what the consumer really derives."""

from __future__ import annotations

import gzip
import io
import re
from collections import Counter
from pathlib import Path

import orjson
import pytest

from aggregations.windows import window_start
from consumer.decode import decode_record
from consumer.reasons import Reason
from consumer.validate import Invalid, Rules, parse_timestamp_ms, validate_event
from devstack.generator import (
    EVENT_TYPES,
    INVALID_REASONS,
    TIMESTAMP_STYLES,
    EventGenerator,
    PlannedRecord,
    Truth,
    event_count,
    format_timestamp,
)
from devstack.producer import run_generate
from streamkpi.config import default_config_text, parse_config

START_MS = 1_764_000_000_000  # 2025-11-24T16:00:00Z
EVENTS = 5_000


def plan_of(record: PlannedRecord) -> list[tuple]:
    return sorted(
        (e.index, e.reason) if e.reason is not None else (e.index, e.event_type, e.event_ms) for e in record.events
    )


def consumer_view(record: PlannedRecord) -> list[tuple]:
    """What the consumer makes of the record, judged at the record's send time as its arrival time."""
    decoded = decode_record(record.data)
    seen: list[tuple] = [(r.index, r.reason.value) for r in decoded.rejections]
    for index, obj in decoded.objects:
        verdict = validate_event(obj, arrival_ms=record.send_ms, rules=Rules())
        if isinstance(verdict, Invalid):
            seen.append((index, verdict.reason.value))
        else:
            seen.append((index, verdict.event_type, verdict.event_ms))
    return sorted(seen)


@pytest.fixture(scope="module")
def records() -> list[PlannedRecord]:
    return list(EventGenerator(seed=7, start_ms=START_MS, rate=250.0, invalid_fraction=0.1).records(EVENTS))


def test_same_seed_and_start_give_identical_bytes() -> None:
    def stream(seed: int, start_ms: int) -> list[tuple[str, bytes]]:
        generator = EventGenerator(seed, start_ms, rate=100.0, invalid_fraction=0.2)
        return [(r.partition_key, r.data) for r in generator.records(1_000)]

    assert stream(42, START_MS) == stream(42, START_MS)
    assert stream(42, START_MS) != stream(43, START_MS)
    assert stream(42, START_MS) != stream(42, START_MS + 1)


def test_one_generator_replays_its_stream_and_an_unseeded_one_keeps_its_seed() -> None:
    generator = EventGenerator(None, START_MS, rate=50.0, invalid_fraction=0.1)
    first = [r.data for r in generator.records(300)]
    assert [r.data for r in generator.records(300)] == first
    again = EventGenerator(generator.seed, START_MS, rate=50.0, invalid_fraction=0.1)
    assert [r.data for r in again.records(300)] == first


def test_event_numbers_are_contiguous_and_timed_by_rate(records: list[PlannedRecord]) -> None:
    assert sum(len(r.events) for r in records) == EVENTS
    # Valid events carry their time: event number i is at START_MS + floor(i * 1000 / rate).
    number = 0
    for record in records:
        for planned in record.events:
            if planned.event_ms is not None:
                assert planned.event_ms == START_MS + (number * 1000) // 250
            number += 1
        assert record.send_ms == START_MS + ((number - 1) * 1000) // 250
    assert [r.send_ms for r in records] == sorted(r.send_ms for r in records)


def test_invalid_fraction_is_close_to_the_request_and_every_reason_appears(records: list[PlannedRecord]) -> None:
    reasons = Counter(e.reason for r in records for e in r.events if e.reason is not None)
    assert 0.085 < sum(reasons.values()) / EVENTS < 0.115
    assert set(reasons) == set(INVALID_REASONS)
    assert set(INVALID_REASONS) == {
        "not_json",
        "not_utf8",
        "missing_field",
        "bad_timestamp",
        "wrong_type",
        "in_future",
        "too_old",
    }
    assert set(INVALID_REASONS) <= {reason.value for reason in Reason}


def test_no_invalid_events_when_none_are_asked_for() -> None:
    generator = EventGenerator(3, START_MS, rate=100.0, invalid_fraction=0.0)
    assert all(e.reason is None for r in generator.records(2_000) for e in r.events)


def test_the_plan_is_exactly_what_the_consumer_derives(records: list[PlannedRecord]) -> None:
    for record in records:
        assert consumer_view(record) == plan_of(record), record.data[:200]


def test_record_level_invalids_travel_alone(records: list[PlannedRecord]) -> None:
    broken = [r for r in records if any(e.reason in ("not_json", "not_utf8") for e in r.events)]
    assert broken
    for record in broken:
        assert len(record.events) == 1 and record.events[0].index == 0


def test_every_record_form_and_event_type_occurs(records: list[PlannedRecord]) -> None:
    forms: Counter[str] = Counter()
    for record in records:
        if record.data[:2] == b"\x1f\x8b":
            forms["gzip"] += 1
            assert isinstance(orjson.loads(gzip.decompress(record.data)), list)
        elif record.data[:1] == b"[" and len(record.events) > 1:
            forms["array"] += 1
        elif b"\n" in record.data.strip():
            forms["ndjson"] += 1
        elif len(record.events) == 1:
            forms["single"] += 1
    share = {form: n / len(records) for form, n in forms.items()}
    assert 0.4 < share["single"] < 0.6 and 0.2 < share["array"] < 0.4
    assert 0.08 < share["ndjson"] < 0.22 and 0.02 < share["gzip"] < 0.1
    types = Counter(e.event_type for r in records for e in r.events if e.event_type)
    assert set(types) == set(EVENT_TYPES)
    assert types.most_common(1)[0][0] in ("mouse.move", "click", "scroll")
    assert max(len(r.events) for r in records) <= 20


def test_partition_key_is_the_user_of_the_events(records: list[PlannedRecord]) -> None:
    users = set()
    for record in records:
        users.add(record.partition_key)
        for _index, obj in decode_record(record.data).objects:
            if isinstance(obj.get("userId"), str):
                assert obj["userId"] == record.partition_key
    assert 200 < len(users) <= 500


def test_event_shapes(records: list[PlannedRecord]) -> None:
    donations = []
    for record in records:
        for index, obj in decode_record(record.data).objects:
            planned = record.events[[e.index for e in record.events].index(index)]
            if planned.reason is not None:
                continue
            assert {"eventType", "eventId", "userId", "sessionId", "browser", "timestamp", "path", "data"} <= set(obj)
            if obj["eventType"] == "page.view":
                assert obj["path"].startswith("/")
            if obj["eventType"] == "search":
                assert obj["data"]["query"]
            if obj["eventType"] == "donation.made":
                donations.append((record, obj))
    assert donations
    for _record, obj in donations:
        data = obj["data"]
        assert data["currency"] in ("GBP", "USD", "EUR")
        assert isinstance(data["giftAid"], bool) and isinstance(data["charityId"], str)
        assert isinstance(data["amount"], float) and round(data["amount"], 2) == data["amount"]
    # Amounts are spelled with two decimals in the raw bytes.
    distinct = {id(r): r.data for r, _ in donations}.values()
    raw = b"".join(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data for data in distinct)
    amounts = re.findall(rb'"amount":([^,}]+)', raw)
    assert len(amounts) >= len(donations)
    assert all(re.fullmatch(rb"[1-9][0-9]*\.[0-9]{2}", amount) for amount in amounts)


def test_every_timestamp_style_occurs_and_parses_back(records: list[PlannedRecord]) -> None:
    kinds: Counter[str] = Counter()
    for record in records:
        for index, obj in decode_record(record.data).objects:
            planned = next(e for e in record.events if e.index == index)
            if planned.reason is not None:
                continue
            stamp = obj["timestamp"]
            assert parse_timestamp_ms(stamp) == planned.event_ms
            if isinstance(stamp, float):
                kinds["epoch_s_float"] += 1
            elif isinstance(stamp, int):
                kinds["epoch_s_int" if stamp < 10**11 else "epoch_ms"] += 1
            elif stamp.endswith("+01:00"):
                kinds["iso_offset"] += 1
            elif "T" in stamp:
                kinds["iso_t_z"] += 1
            else:
                kinds["iso_space_z"] += 1
    assert set(kinds) == {"epoch_s_float", "epoch_s_int", "epoch_ms", "iso_offset", "iso_t_z", "iso_space_z"}


@pytest.mark.parametrize("style", [name for name, _ in TIMESTAMP_STYLES])
def test_each_timestamp_style_round_trips_through_the_consumer(style: str) -> None:
    samples = [START_MS, START_MS + 1, START_MS + 999, START_MS + 100, 1_573_841_100_123, 4_102_444_799_999]
    samples += [START_MS + n * 7_919 for n in range(2_000)]
    for event_ms in samples:
        value = format_timestamp(event_ms, style)
        assert parse_timestamp_ms(orjson.loads(orjson.dumps(value))) == event_ms, (style, value)
    # Before 1973 epoch milliseconds would read as seconds: the generator spells those times as ISO.
    assert parse_timestamp_ms(format_timestamp(1, style)) == 1
    assert parse_timestamp_ms(format_timestamp(-86_400_001, style)) == -86_400_001
    if style == "epoch_s":
        assert format_timestamp(START_MS, style) == START_MS // 1000
        assert isinstance(format_timestamp(START_MS + 5, style), float)
    if style == "iso_offset":
        assert format_timestamp(1_573_841_100_000, style) == "2019-11-15T19:05:00+01:00"
    if style == "iso_space_z":
        assert format_timestamp(1_573_841_100_000, style) == "2019-11-15 18:05:00Z"


def test_truth_counts_equal_what_the_consumer_counts(records: list[PlannedRecord]) -> None:
    truth = Truth(seed=7, start_ms=START_MS)
    expected_counts: dict[str, Counter[str]] = {}
    expected_invalid = []
    for n, record in enumerate(records):
        shard, seq = f"shardId-00000000000{n % 2}", str(49_000_000_000_000_000_000 + n)
        truth.add(record, shard, seq)
        decoded = decode_record(record.data)
        for rejection in decoded.rejections:
            expected_invalid.append({"id": f"{shard}/{seq}/0/{rejection.index}", "reason": rejection.reason.value})
        for index, obj in decoded.objects:
            verdict = validate_event(obj, arrival_ms=record.send_ms, rules=Rules())
            if isinstance(verdict, Invalid):
                expected_invalid.append({"id": f"{shard}/{seq}/0/{index}", "reason": verdict.reason.value})
            else:
                window = str(window_start(verdict.event_ms, 60_000))
                expected_counts.setdefault(window, Counter())[verdict.event_type] += 1
    result = orjson.loads(orjson.dumps(truth.to_dict()))
    assert result["seed"] == 7 and result["start_ms"] == START_MS
    assert result["events_sent"] == EVENTS
    assert result["counts"]["events"]["1m"] == {w: dict(c) for w, c in expected_counts.items()}
    assert sorted(result["invalid"], key=lambda x: x["id"]) == sorted(expected_invalid, key=lambda x: x["id"])
    assert result["valid"] == sum(sum(c.values()) for c in expected_counts.values())
    assert result["invalid_by_reason"] == dict(Counter(x["reason"] for x in expected_invalid))
    assert result["valid"] + len(result["invalid"]) == EVENTS


def test_batches_stop_at_the_requested_count() -> None:
    generator = EventGenerator(11, START_MS, rate=3.0, invalid_fraction=0.05)
    for count in (1, 2, 19, 20, 21, 333):
        assert sum(len(r.events) for r in generator.records(count)) == count


def test_event_count_and_argument_checks() -> None:
    assert event_count(200.0, 10.0) == 2_000
    assert event_count(30.0, 0.1) == 3
    assert event_count(3.0, 1.0) == 3
    assert event_count(0.5, 3.0) == 2  # events at 0 s and 2 s
    with pytest.raises(ValueError, match="rate"):
        EventGenerator(1, START_MS, rate=0, invalid_fraction=0)
    with pytest.raises(ValueError, match="invalid_fraction"):
        EventGenerator(1, START_MS, rate=1, invalid_fraction=1.5)


@pytest.mark.parametrize(
    ("seed", "rate", "fraction"),
    [(1, 0.1, 0.3), (2, 3.0, 1.0), (3, 1_000.0, 0.5), (4, 7.3, 0.02)],
)
def test_the_plan_matches_the_consumer_at_other_rates_and_fractions(seed: int, rate: float, fraction: float) -> None:
    generator = EventGenerator(seed, START_MS + 17, rate=rate, invalid_fraction=fraction)
    planned = list(generator.records(1_500))
    assert sum(len(r.events) for r in planned) == 1_500
    for record in planned:
        assert consumer_view(record) == plan_of(record), record.data[:200]


# -- late events, time-based invalid kinds, the valid-events file -------------------------------------

CONFIG_RULES = parse_config(default_config_text(), "default").rules


def consumer_view_at(record: PlannedRecord, arrival_ms: int, rules: Rules) -> list[tuple]:
    decoded = decode_record(record.data)
    seen: list[tuple] = [(r.index, r.reason.value) for r in decoded.rejections]
    for index, obj in decoded.objects:
        verdict = validate_event(obj, arrival_ms=arrival_ms, rules=rules)
        seen.append(
            (index, verdict.reason.value)
            if isinstance(verdict, Invalid)
            else (index, verdict.event_type, verdict.event_ms)
        )
    return sorted(seen)


@pytest.fixture(scope="module")
def late_records() -> list[PlannedRecord]:
    generator = EventGenerator(seed=8, start_ms=START_MS, rate=300.0, invalid_fraction=0.2, late_fraction=0.1)
    return list(generator.records(EVENTS))


def test_late_events_are_valid_and_stamped_1_to_120_minutes_before_their_send_time(
    late_records: list[PlannedRecord],
) -> None:
    number, late, valid = 0, 0, 0
    for record in late_records:
        for planned in record.events:
            send_ms = START_MS + (number * 1000) // 300
            number += 1
            if planned.reason is not None:
                assert not planned.late
                continue
            assert planned.event_ms is not None
            valid += 1
            if planned.late:
                late += 1
                assert send_ms - 120 * 60_000 <= planned.event_ms <= send_ms - 60_000
            else:
                assert planned.event_ms == send_ms
    assert 0.08 < late / valid < 0.12
    # Some land several 1m windows (and hours) back.
    assert any(
        p.late and p.event_ms is not None and p.event_ms < START_MS - 60 * 60_000
        for r in late_records
        for p in r.events
    )


def test_in_future_and_too_old_appear_and_keep_their_verdict_far_from_the_thresholds(
    late_records: list[PlannedRecord],
) -> None:
    reasons = Counter(e.reason for r in late_records for e in r.events if e.reason is not None)
    assert reasons["in_future"] > 50 and reasons["too_old"] > 30
    assert set(reasons) == set(INVALID_REASONS)
    for record in late_records:
        plan = plan_of(record)
        # The default config's rules (3 years and a day of age, 5 min of skew, the donation schema), and
        # an arrival anywhere from a minute before to ten minutes after the send time: the same verdicts.
        for shift_ms in (-60_000, 0, 1_000, 10 * 60_000):
            assert consumer_view_at(record, record.send_ms + shift_ms, CONFIG_RULES) == plan, record.data[:200]
        assert consumer_view(record) == plan


def test_multi_event_records_mix_valid_late_and_time_invalid_events(late_records: list[PlannedRecord]) -> None:
    mixed = [
        r
        for r in late_records
        if any(e.late for e in r.events) and any(e.reason in ("in_future", "too_old") for e in r.events)
    ]
    assert mixed and all(len(r.events) > 1 for r in mixed)


def test_late_fraction_zero_keeps_the_stream_of_a_seed_and_a_late_one_is_reproducible() -> None:
    def stream(late_fraction: float) -> list[bytes]:
        generator = EventGenerator(5, START_MS, rate=100.0, invalid_fraction=0.1, late_fraction=late_fraction)
        return [r.data for r in generator.records(800)]

    assert stream(0.0) == [r.data for r in EventGenerator(5, START_MS, rate=100.0, invalid_fraction=0.1).records(800)]
    assert stream(0.3) == stream(0.3) != stream(0.0)
    with pytest.raises(ValueError, match="late_fraction"):
        EventGenerator(1, START_MS, rate=1, late_fraction=-0.1)


def test_truth_counts_late_events_in_their_own_windows_and_writes_the_valid_events(
    late_records: list[PlannedRecord],
) -> None:
    out = io.BytesIO()
    truth = Truth(seed=8, start_ms=START_MS, events_out=out)
    expected_lines = {}
    expected_counts: dict[str, Counter[str]] = {}
    for n, record in enumerate(late_records):
        shard, seq = f"shardId-00000000000{n % 2}", str(49_000_000_000_000_000_000 + n)
        truth.add(record, shard, seq)
        for index, obj in decode_record(record.data).objects:
            verdict = validate_event(obj, arrival_ms=record.send_ms, rules=CONFIG_RULES)
            if isinstance(verdict, Invalid):
                continue
            expected_lines[f"{shard}/{seq}/0/{index}"] = (verdict.event_ms, obj)
            window = str(window_start(verdict.event_ms, 60_000))
            expected_counts.setdefault(window, Counter())[verdict.event_type] += 1
    result = orjson.loads(orjson.dumps(truth.to_dict()))
    assert result["counts"]["events"]["1m"] == {w: dict(c) for w, c in expected_counts.items()}
    assert result["late"] == sum(e.late for r in late_records for e in r.events) > 0
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == result["valid"] == len(expected_lines)
    assert {line["id"]: (line["event_ms"], line["event"]) for line in lines} == expected_lines
    # The event is the exact text that was sent: amounts keep their two decimals.
    raw = out.getvalue()
    assert re.search(rb'"amount":[1-9][0-9]*\.[0-9]{2}[,}]', raw) and b'"amount":25.0,' not in raw


class _FakeKinesis:
    """put_records that acknowledges every entry, alternating two shards."""

    def __init__(self) -> None:
        self.sequence = 49_000_000_000_000_000_000

    def put_records(self, StreamName: str, Records: list[dict]) -> dict:
        results = []
        for n, _entry in enumerate(Records):
            self.sequence += 1
            results.append({"ShardId": f"shardId-00000000000{n % 2}", "SequenceNumber": str(self.sequence)})
        return {"Records": results, "FailedRecordCount": 0}


def test_run_generate_writes_the_events_file_atomically_next_to_the_truth(tmp_path: Path) -> None:
    clock = [START_MS]

    def sleep(seconds: float) -> None:
        clock[0] += int(seconds * 1000) + 1

    events_path, truth_path = tmp_path / "events.ndjson", tmp_path / "truth.json"
    stats = run_generate(
        _FakeKinesis(),
        "s",
        rate=500.0,
        duration=2.0,
        invalid_fraction=0.1,
        late_fraction=0.2,
        seed=4,
        truth_path=truth_path,
        events_path=events_path,
        now_ms=lambda: clock[0],
        sleep=sleep,
    )
    truth = orjson.loads(truth_path.read_bytes())
    lines = [orjson.loads(line) for line in events_path.read_bytes().splitlines()]
    assert stats.events == truth["events_sent"] == 1_000
    assert len(lines) == truth["valid"] == stats.valid and truth["late"] > 0
    assert len({line["id"] for line in lines}) == len(lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.ndjson", "truth.json"]
