#!/usr/bin/env python3
"""Replay benchmark: events/s of `streamkpi replay` against its configured rate and a naive loop.

Everything runs in process against moto's S3 and Kinesis (no network, no daemon): an archive of
realistic events in Firehose's layout (NDJSON objects, some gzip) is replayed
- (a) at the default pace, 90 % of the stream's write limit (open shards x 1,000 records/s): the
  replay must reach at least 90 % of that rate over the whole run (listing and reading included);
- (b) unpaced (a stream with enough shards that the pace never binds): what the replay code and moto
  manage, reading, splitting, filtering, batching and putting;
- (c) a naive loop over the same events, one `put_record` call per event, in the same run;
- (d) a dry run (read, split and filter only).
The figures go to stdout and into docs/benchmarks.md (between the replay bench markers) with the
command, date, CPU model and Python version. Exit status 1 when (a) is under 90 % of its rate.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import random
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchdoc import cpu_model, write_block  # noqa: E402 - scripts/ is on sys.path when run

MARK_START, MARK_END = "<!-- bench-replay:start -->", "<!-- bench-replay:end -->"
BUCKET = "bench-archive"
T0 = 1_795_600_800_000  # 2026-11-25T10:00:00Z
SEED = 20_261_125


def patch_moto() -> None:
    """moto's Kinesis shard finds its last sequence number by copying all its keys into a list at every
    put (O(records in the shard)), which makes any long run quadratic and would measure moto, not the
    replay. Stand-in fix for the benchmark only: the last key of the (ordered) dict, in O(1)."""
    from moto.kinesis.models import Shard

    def last(self: Any) -> int:
        return next(reversed(self.records)) if self.records else 0

    Shard.get_max_sequence_number = last  # type: ignore[method-assign]


def make_events(count: int) -> list[bytes]:
    """Browser and business events (seed 004 shape), about 300 bytes each, over one hour of event time."""
    rng = random.Random(SEED)
    types = ["page.view", "click", "scroll", "donation.made", "user.created", "user.verified"]
    out = []
    for i in range(count):
        ts = T0 + i * 3_600_000 // count
        event: dict[str, Any] = {
            "eventType": rng.choice(types),
            "eventId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "userId": f"user-{rng.randrange(5000):05d}",
            "sessionId": f"s-{rng.randrange(20000):06d}",
            "browser": rng.choice(["firefox", "chrome", "safari"]),
            "timestamp": datetime.fromtimestamp(ts / 1000, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "path": f"/charity/{rng.randrange(300)}",
            "target": f"#button-{rng.randrange(20)}",
            "data": {"amount": round(rng.uniform(1, 200), 2), "currency": "GBP"},
        }
        out.append(orjson.dumps(event))
    return out


def write_archive(s3: Any, events: list[bytes], per_object: int) -> int:
    written = 0
    for part, start in enumerate(range(0, len(events), per_object)):
        chunk = events[start : start + per_object]
        first = orjson.loads(chunk[0])["timestamp"]
        t = datetime.fromisoformat(first.replace("Z", "+00:00"))
        body = b"".join(e + b"\n" for e in chunk)
        if part % 3 == 2:
            body = gzip.compress(body)
        key = f"{t:%Y/%m/%d/%H}/archive-1-{t:%Y-%m-%d-%H-%M-%S}-{part:05d}"
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        written += len(body)
    return written


def replay_run(s3: Any, kinesis: Any, stream: str, dry_run: bool = False) -> tuple[float, Any]:
    from replay.runner import Replayer, ReplayOptions

    options = ReplayOptions(bucket=BUCKET, prefix="", stream=stream, from_ms=T0, to_ms=T0 + 3_600_000, dry_run=dry_run)
    started = time.perf_counter()
    summary = Replayer(s3, kinesis, options).run()
    seconds = time.perf_counter() - started
    if not summary.ok:
        raise SystemExit(f"replay failed: {summary.as_dict()}")
    return seconds, summary


def naive_run(s3: Any, kinesis: Any, stream: str, limit: int) -> tuple[float, int]:
    """Read the same archive, put each event with its own put_record call (no batching, no pacing)."""
    from replay.partition import PartitionKeys
    from replay.runner import iter_events

    keys = PartitionKeys()
    objects = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    started = time.perf_counter()
    sent = 0
    for event in iter_events(s3, BUCKET, sorted(objects)):
        kinesis.put_record(StreamName=stream, Data=event.data, PartitionKey=keys.key(event.obj, event.data))
        sent += 1
        if sent >= limit:
            break
    return time.perf_counter() - started, sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000, help="events in the archive (20000)")
    parser.add_argument("--shards", type=int, default=4, help="shards of the paced stream (4: 3,600 records/s)")
    parser.add_argument("--naive-events", type=int, default=3_000, help="events of the naive loop (3000)")
    parser.add_argument("--per-object", type=int, default=1_000, help="events per archive object (1000)")
    parser.add_argument("--no-docs", action="store_true", help="do not refresh docs/benchmarks.md")
    args = parser.parse_args(argv)

    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    )
    os.environ.pop("AWS_ENDPOINT_URL", None)
    import logging

    import boto3
    from moto import mock_aws

    logging.disable(logging.WARNING)
    patch_moto()
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        kinesis = boto3.client("kinesis", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        events = make_events(args.events)
        archive_bytes = write_archive(s3, events, args.per_object)
        kinesis.create_stream(StreamName="paced", ShardCount=args.shards)
        kinesis.create_stream(StreamName="unpaced", ShardCount=64)
        kinesis.create_stream(StreamName="naive", ShardCount=args.shards)

        dry_seconds, dry = replay_run(s3, kinesis, "paced", dry_run=True)
        paced_seconds, paced = replay_run(s3, kinesis, "paced")
        raw_seconds, raw = replay_run(s3, kinesis, "unpaced")
        naive_seconds, naive_sent = naive_run(s3, kinesis, "naive", args.naive_events)

    configured = float(paced.rate)
    paced_rate = paced.events_delivered / paced_seconds
    raw_rate = raw.events_delivered / raw_seconds
    naive_rate = naive_sent / naive_seconds
    dry_rate = dry.events_delivered / dry_seconds
    ratio = paced_rate / configured
    ok = ratio >= 0.9 and paced.events_delivered == args.events == raw.events_delivered
    rows = [
        ("archive", f"{args.events:,} events, {len(range(0, args.events, args.per_object))} objects, "
         f"{archive_bytes / 1e6:.1f} MB (NDJSON, every third object gzip)", ""),
        ("configured rate (a)", f"{configured:,.0f} events/s", f"90 % of {args.shards} shards x 1,000/s"),
        ("replay at the configured rate (a)", f"{paced_rate:,.0f} events/s = {ratio:.1%} of it",
         "≥ 90 %: " + ("met" if ratio >= 0.9 else "NOT met")),
        ("replay unpaced (b)", f"{raw_rate:,.0f} events/s", "64-shard stream, the pace never binds"),
        ("naive put_record loop (c)", f"{naive_rate:,.0f} events/s", f"{naive_sent:,} events"),
        ("unpaced / naive", f"{raw_rate / naive_rate:.1f}x", ""),
        ("at the configured rate / naive", f"{paced_rate / naive_rate:.1f}x", ""),
        ("dry run: read, split, filter (d)", f"{dry_rate:,.0f} events/s", ""),
    ]  # fmt: skip
    table = ["| measure | value | note |", "| --- | ---: | --- |"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    command = "python scripts/bench_replay.py " + " ".join(argv if argv is not None else sys.argv[1:])
    section = [
        f"Command: `make bench` (runs `{command.strip()}`), {datetime.now(UTC):%Y-%m-%d}, {cpu_model()}, "
        f"{os.cpu_count()} CPU(s), Python {platform.python_version()}. In process against moto's S3 and "
        "Kinesis: moto's own request handling is part of every figure (its O(n) last-sequence lookup is "
        "patched to O(1), see `patch_moto`).",
        "",
        *table,
    ]
    print("\n".join(section))
    if not args.no_docs:
        write_block(section, MARK_START, MARK_END, "## Replay")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
