"""The replay runner against moto's S3 and Kinesis (in process): every layout and format, filters,
malformed data, refused entries, pace, and interrupted runs resumed from the progress file."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from replay.runner import Replayer, ReplayError, ReplayOptions, Summary
from tests.functional.moto_aws import read_stream
from tests.functional.replay_fakes import (
    FORMATS,
    HOUR,
    LAYOUTS,
    T0,
    Clock,
    FlakyKinesis,
    Interrupted,
    archive_and_stream,
    assert_delivered_once_in_order,
    event_ms,
    make_events,
    source_prefix,
    write_archive,
)

BUCKET = "archive-bucket"
STREAM = "replayed"


@pytest.fixture
def aws(moto: None) -> tuple[Any, Any]:
    return archive_and_stream(BUCKET, STREAM)


def options(**overrides: Any) -> ReplayOptions:
    values: dict[str, Any] = {"bucket": BUCKET, "prefix": "", "stream": STREAM, "from_ms": T0, "to_ms": T0 + HOUR}
    return ReplayOptions(**(values | overrides))


def run(s3: Any, kinesis: Any, clock: Clock | None = None, **overrides: Any) -> Summary:
    clock = clock or Clock()
    return Replayer(s3, kinesis, options(**overrides), clock=clock, sleep=clock.sleep).run()


def in_range(events: list[dict[str, Any]], from_ms: int = T0, to_ms: int = T0 + HOUR) -> list[dict[str, Any]]:
    return [e for e in events if from_ms <= event_ms(e) < to_ms]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_and_format_replays_exactly_the_events_of_the_range(aws: Any, layout: str, fmt: str) -> None:
    s3, kinesis = aws
    events = make_events(1000, start_ms=T0 - 2 * HOUR, span_ms=5 * HOUR)  # 08:00 .. 13:00; the range 10:00 .. 11:00
    write_archive(s3, BUCKET, events, layout, fmt)
    s3.put_object(Bucket=BUCKET, Key="dlq/2026/11/25/10/payload-1", Body=b"not an event")  # skipped
    summary = run(s3, kinesis, prefix=source_prefix(layout))
    expected = in_range(events)
    assert summary.ok, summary.as_dict()
    assert summary.events_delivered == len(expected) == 200
    assert summary.skipped["before_range"] + summary.skipped["after_range"] > 0
    assert_delivered_once_in_order(read_stream(kinesis, STREAM), expected)
    # Time folders: only 09:00 .. 11:59 were read (one hour of slack); a plain prefix is read whole.
    filtered = summary.skipped["before_range"] + summary.skipped["after_range"]
    assert filtered == (800 if layout == "plain" else 400)


def test_the_bytes_of_each_event_are_put_as_they_were_archived(aws: Any) -> None:
    s3, kinesis = aws
    raw = b'{"eventType":"a.b","timestamp":"2026-11-25T10:00:01Z",  "userId":"u1","x":[1, 2]}\n'
    s3.put_object(Bucket=BUCKET, Key="2026/11/25/10/obj", Body=raw)
    assert run(s3, kinesis).ok
    (record,) = read_stream(kinesis, STREAM)
    assert record["data"] == raw.strip() and record["key"] == "u1"


def test_type_globs_partition_key_path_and_dry_run(aws: Any) -> None:
    s3, kinesis = aws
    events = make_events(300)
    write_archive(s3, BUCKET, events, "firehose", "ndjson")
    dry = run(s3, kinesis, types=("donation.*", "user.created"), dry_run=True)
    wanted = [e for e in in_range(events) if e["eventType"] != "page.view"]
    assert dry.ok and dry.dry_run and dry.events_delivered == len(wanted)
    assert read_stream(kinesis, STREAM) == [], "a dry run writes nothing"
    summary = run(s3, kinesis, types=("donation.*", "user.created"), partition_key="data.note")
    assert summary.events_delivered == len(wanted)
    records = read_stream(kinesis, STREAM)
    assert_delivered_once_in_order(records, wanted)
    assert {r["key"] for r in records} <= {'}{"', "plain", "new\nline", "[]"}


def test_malformed_data_and_events_over_one_mib_are_reported_and_the_replay_goes_on(aws: Any) -> None:
    s3, kinesis = aws
    good = [{"eventType": "a", "timestamp": T0 + i, "userId": f"u{i % 3}", "n": i} for i in range(6)]
    big = {"eventType": "a", "timestamp": T0, "blob": "x" * (1024 * 1024)}
    body = orjson.dumps(good[0]) + b"\n" + b"this is not json\n" + orjson.dumps(good[1]) + orjson.dumps(good[2])
    body += b'\n{"eventType": "a", "timestamp": \n' + orjson.dumps(big) + b"\n" + orjson.dumps(good[3]) + b"\n"
    body += b'{"eventType": "a", "timestamp": "yesterday"}\n' + b'{"eventType": "a"}\n'
    s3.put_object(Bucket=BUCKET, Key="2026/11/25/10/mixed", Body=body)
    s3.put_object(Bucket=BUCKET, Key="2026/11/25/10/zipped", Body=gzip.compress(orjson.dumps(good[4]) + b"\n")[:-9])
    s3.put_object(Bucket=BUCKET, Key="2026/11/25/10/fine", Body=orjson.dumps(good[5]))
    summary = run(s3, kinesis)
    assert not summary.ok
    assert dict(summary.skipped) == {"not_json": 2, "too_large": 1, "bad_timestamp": 2, "bad_compression": 1}
    junk_at = len(orjson.dumps(good[0])) + 1
    assert f"2026/11/25/10/mixed at byte {junk_at} (16 bytes, not_json): b'this is not json'" in summary.examples
    assert any("2026/11/25/10/zipped" in e and "bad_compression" in e for e in summary.examples)
    got = sorted(orjson.loads(r["data"])["n"] for r in read_stream(kinesis, STREAM))
    assert got == [0, 1, 2, 3, 4, 5]  # what inflated before the damage of the gzip object is delivered too


def test_refused_entries_are_retried_nothing_lost_or_doubled_order_per_key_kept(aws: Any) -> None:
    s3, kinesis = aws
    events = make_events(1500, users=8)
    write_archive(s3, BUCKET, events, "firehose", "concatenated", per_object=100)
    flaky = FlakyKinesis(kinesis, refuse=0.3, throttle=0.1)
    clock = Clock()
    summary = run(s3, flaky, clock)
    expected = in_range(events)
    assert summary.ok, summary.as_dict()
    assert flaky.refused > 50 and summary.retries >= flaky.refused
    assert summary.events_delivered == len(expected)
    assert_delivered_once_in_order(read_stream(kinesis, STREAM), expected)
    assert clock.slept > 0  # backoff (and pace) through the injected sleep


def test_a_stream_that_keeps_refusing_stops_the_replay_and_a_resume_finishes_it(aws: Any, tmp_path: Path) -> None:
    s3, kinesis = aws
    events = make_events(900, users=5)
    write_archive(s3, BUCKET, events, "firehose", "ndjson", per_object=50)
    resume = tmp_path / "progress.json"
    summary = run(s3, FlakyKinesis(kinesis, refuse=0.2, refuse_all_calls=range(3, 100)), resume=resume, max_attempts=4)
    assert summary.stopped and "resume" in summary.stopped and not summary.ok
    assert summary.not_delivered > 0
    first = summary.events_delivered
    again = run(s3, FlakyKinesis(kinesis, refuse=0.2, seed=3), resume=resume)
    assert again.ok, again.as_dict()
    assert again.events_delivered == len(in_range(events)) and again.run_delivered == len(in_range(events)) - first
    assert_delivered_once_in_order(read_stream(kinesis, STREAM), in_range(events))


@pytest.mark.parametrize("crash_before_call", [2, 3, 5, 9])
@pytest.mark.parametrize("fmt", ["ndjson", "concatenated_gzip", "array"])
def test_an_interrupted_replay_resumed_delivers_every_event_exactly_once(
    aws: Any, tmp_path: Path, crash_before_call: int, fmt: str
) -> None:
    s3, kinesis = aws
    events = make_events(1200, users=6)
    write_archive(s3, BUCKET, events, "hive", fmt, per_object=150)
    resume = tmp_path / "progress.json"
    crashes = 0
    seed = 0
    while crashes < 500:  # crash again and again, each time a few calls further; refusals make acks non-prefix
        flaky = FlakyKinesis(kinesis, refuse=0.25, seed=seed, crash_before_call=crash_before_call)
        try:
            summary = run(s3, flaky, resume=resume, chunk_bytes=700)
        except Interrupted:
            crashes += 1
            seed += 1
            continue
        break
    assert crashes >= 1
    assert summary.ok and summary.events_delivered == len(in_range(events)), summary.as_dict()
    assert_delivered_once_in_order(read_stream(kinesis, STREAM), in_range(events))


def test_an_interruption_while_reading_an_object_resumes_mid_object(aws: Any, tmp_path: Path) -> None:
    s3, kinesis = aws
    events = make_events(600)
    write_archive(s3, BUCKET, events, "firehose", "ndjson", per_object=600)  # one object
    resume = tmp_path / "progress.json"

    class BrokenBody:
        def __init__(self, body: Any, fail_after: int) -> None:
            self.body, self.fail_after = body, fail_after

        def iter_chunks(self, size: int) -> Iterator[bytes]:
            for n, chunk in enumerate(self.body.iter_chunks(size)):
                if n == self.fail_after:
                    raise KeyboardInterrupt
                yield chunk

        def close(self) -> None:
            self.body.close()

    class BrokenS3:
        def __init__(self, fail_after: int) -> None:
            self.fail_after = fail_after

        def __getattr__(self, name: str) -> Any:
            return getattr(s3, name)

        def get_object(self, **kwargs: Any) -> dict[str, Any]:
            reply = s3.get_object(**kwargs)
            return {**reply, "Body": BrokenBody(reply["Body"], self.fail_after)}

    whole: dict[str, Any] = {"from_ms": T0 - HOUR, "to_ms": T0 + 2 * HOUR, "resume": resume, "chunk_bytes": 500}
    for fail_after in (90, 115):  # of 127 chunks; a flush (about 360 events at 1,800/s) came before
        with pytest.raises(KeyboardInterrupt):
            run(BrokenS3(fail_after), kinesis, **whole)
        state = orjson.loads(resume.read_bytes())
        assert state["partial"]["0"]["low"] > 0, "the object under way is recorded with its offset"
    summary = run(s3, kinesis, **whole)
    assert summary.ok
    assert summary.events_delivered == len(events) > summary.run_delivered
    assert_delivered_once_in_order(read_stream(kinesis, STREAM), events)


def test_an_interruption_while_the_pace_waits_resumes_exactly_once(aws: Any, tmp_path: Path) -> None:
    """Ctrl-C in the pace's first wait after each PutRecords (just after the progress was saved)."""
    s3, kinesis = aws
    events = make_events(3000, users=4)  # 1,000 in the range: the pace (1,800/s) flushes every ~180
    write_archive(s3, BUCKET, events, "firehose", "ndjson", per_object=500)
    resume = tmp_path / "progress.json"

    class Tripwire(FlakyKinesis):
        armed = False

        def put_records(self, **kwargs: Any) -> dict[str, Any]:
            reply = super().put_records(**kwargs)
            Tripwire.armed = True
            return reply

    class StoppingClock(Clock):
        def sleep(self, seconds: float) -> None:
            if Tripwire.armed:
                Tripwire.armed = False
                raise KeyboardInterrupt
            super().sleep(seconds)

    runs = 0
    while True:
        runs += 1
        clock = StoppingClock()
        try:
            summary = run(s3, Tripwire(kinesis), clock, resume=resume, chunk_bytes=2000)
        except KeyboardInterrupt:
            assert runs < 100
            continue
        break
    assert runs > 2 and summary.ok
    assert_delivered_once_in_order(read_stream(kinesis, STREAM), in_range(events))


def test_a_resume_reads_the_objects_the_first_run_listed_and_refuses_other_options(aws: Any, tmp_path: Path) -> None:
    s3, kinesis = aws
    events = make_events(300)
    write_archive(s3, BUCKET, events, "firehose", "ndjson")
    resume = tmp_path / "progress.json"
    assert run(s3, kinesis, resume=resume).ok
    # Copies archived since (e.g. by the worker that consumed the replay) are not read on a resume.
    s3.put_object(Bucket=BUCKET, Key="2026/11/25/10/zz-late-copy", Body=orjson.dumps(in_range(events)[0]))
    again = run(s3, kinesis, resume=resume)
    assert again.ok and again.run_delivered == 0
    assert len(read_stream(kinesis, STREAM)) == len(in_range(events))
    with pytest.raises(ReplayError, match="another replay"):
        run(s3, kinesis, resume=resume, types=("page.*",))


def test_the_pace_holds_the_configured_rate_and_speedup_follows_event_time(aws: Any) -> None:
    s3, kinesis = aws
    events = make_events(3000, start_ms=T0, span_ms=HOUR)
    write_archive(s3, BUCKET, events, "firehose", "ndjson", per_object=500)
    clock = Clock()
    summary = run(s3, kinesis, clock, rate=500)
    assert summary.events_delivered == 3000
    # The bucket starts full (a tenth of a second of the rate), then holds the rate exactly.
    assert summary.rate == 500 and clock.now == pytest.approx((3000 - 50) / 500, rel=0.01)
    default = Clock()
    summary = run(s3, kinesis, default, stream=STREAM)
    assert summary.rate == 1800  # 90 % of 2 shards x 1,000/s
    assert default.now == pytest.approx((3000 - 180) / 1800, rel=0.01)
    fast = Clock()
    summary = run(s3, kinesis, fast, speedup=600)  # one hour of events in about 6 s
    assert summary.speedup == 600 and fast.now == pytest.approx(HOUR / 1000 / 600, rel=0.05)


def test_a_missing_stream_or_bucket_says_what_to_do(aws: Any) -> None:
    s3, kinesis = aws
    with pytest.raises(ReplayError, match="stream 'nope'"):
        run(s3, kinesis, stream="nope")
    with pytest.raises(ReplayError, match="cannot list"):
        run(s3, kinesis, bucket="no-such-bucket")
    with pytest.raises(ReplayError, match="not both"):
        run(s3, kinesis, rate=10, speedup=2)
