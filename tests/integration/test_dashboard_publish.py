"""The dashboard publisher: reads through the query API, writes the snapshot atomically to a directory or
S3 (moto in-process), falls back and explains when a part cannot be read; `streamkpi dashboard publish`
against the real local stack."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from moto import mock_aws

from aggregations.memory_store import MemoryStore
from aggregations.partials import ShardAggregates, StoredPartial
from consumer.health.memory import MemoryHealth
from consumer.health.redis_health import RedisHealth
from dashboard.errors import PublishError
from dashboard.publisher import (
    DirTarget,
    DlqSampler,
    Publisher,
    S3Target,
    Source,
    parse_target,
    static_files,
)
from dashboard.snapshot import MINUTE_MS
from streamkpi.config import AppConfig, load_config, parse_config
from tests.integration.conftest import STREAMKPI, Stack

pytestmark = pytest.mark.integration

NOW = 1_764_417_125_000  # 2025-11-29T11:52:05Z
CONFIG = load_config(None)


def event(event_type: str, ms: int, **extra: Any) -> dict[str, Any]:
    return {"eventType": event_type, "timestamp": ms, **extra}


EVENTS: list[tuple[dict[str, Any], int]] = [
    (event("click", NOW - 30_000, userId="u1"), NOW - 30_000),
    (event("click", NOW - 90_000, userId="u2"), NOW - 90_000),
    (event("page.view", NOW - 5_000, path="/a", userId="u1"), NOW - 5_000),
    (event("page.view", NOW - 6_000, path="/a", userId="u3"), NOW - 6_000),
    (event("page.view", NOW - 7_000, path="/b", userId="u3"), NOW - 7_000),
    (
        event("donation.made", NOW - 8_000, data={"amount": 0.1, "currency": "GBP", "charityId": "2357"}),
        NOW - 8_000,
    ),
    (
        event("donation.made", NOW - 9_000, data={"amount": 0.2, "currency": "GBP", "charityId": "2357"}),
        NOW - 9_000,
    ),
    (
        event("donation.made", NOW - 9_500, data={"amount": 20, "currency": "USD", "charityId": "50"}),
        NOW - 9_500,
    ),
    (event("user.created", NOW - 10_000, userId="u9"), NOW - 10_000),
    (event("user.verified", NOW - 11_000, userId="u9"), NOW - 11_000),
]


def partials(config: AppConfig = CONFIG, shard: str = "shardId-000000000000") -> list[StoredPartial]:
    """The events folded exactly as the worker folds them (ShardAggregates)."""
    aggregates = ShardAggregates(shard, config.metric_set, config.resolutions)
    for seq, (body, ms) in enumerate(EVENTS, start=1):
        for key in aggregates.missing(aggregates.keys_for(ms)):
            aggregates.install(key, None)
        aggregates.add(body, body["eventType"], ms, (seq, 0, 0))
    return aggregates.dirty("dynamodb")


def memory_source(*stores: MemoryStore, health: MemoryHealth | None = None, config: AppConfig = CONFIG) -> Source:
    reader = health or MemoryHealth()
    return Source(
        stream="events",
        stores=stores,
        resolutions=config.resolutions,
        metrics=config.metric_set.by_name,
        health=lambda: {s: {k: str(v) for k, v in f.items()} for s, f in reader.shards.items()},
        config_source=config.source,
    )


def filled_store(name: str = "redis") -> MemoryStore:
    store = MemoryStore(name)
    store.write(partials())
    return store


def test_publish_to_a_directory_writes_the_numbers_atomically(tmp_path: Path) -> None:
    health = MemoryHealth()
    health.report(
        "shardId-000000000000",
        {"reportedMs": NOW - 500, "eventsPerSecond": 12.5, "millisBehindLatest": 0, "dlqCount": 2, "records": 9},
    )
    target = DirTarget(tmp_path / "site")
    publisher = Publisher(memory_source(filled_store(), health=health), [target], clock=lambda: NOW)
    publisher.publish_once()

    path = tmp_path / "site" / "snapshot.json"
    snap = orjson.loads(path.read_bytes())
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(tmp_path / "site") == ["snapshot.json"]  # no temp file left behind
    assert snap["generatedAtMs"] == NOW and snap["store"] == "redis" and snap["problems"] == []
    assert snap["today"]["events"] == len(EVENTS)
    assert snap["today"]["byLevel"] == {"low": 2, "mid": 3, "high": 5, "other": 0}
    assert snap["topPages"]["rows"] == [{"path": "/a", "views": 2}, {"path": "/b", "views": 1}]
    assert snap["donations"]["count"] == 3
    assert snap["donations"]["amounts"] == [{"currency": "USD", "amount": 20}, {"currency": "GBP", "amount": 0.3}]
    assert snap["donations"]["byCharity"][0] == {
        "charity": "2357",
        "count": 2,
        "amounts": [{"currency": "GBP", "amount": 0.3}],
    }
    assert (snap["users"]["signups"], snap["users"]["verifications"]) == (1, 1)
    assert snap["users"]["distinctToday"] == 4 and snap["users"]["distinctLastHour"] == 4
    minutes = snap["perMinute"]["minutes"]
    assert len(minutes) == 60 and minutes[-1]["partial"] and minutes[-1]["startMs"] == NOW - NOW % MINUTE_MS
    assert sum(m["total"] for m in minutes) == len(EVENTS)
    assert snap["rate"]["eventsPerSecond"] == 12.5
    assert [s["shardId"] for s in snap["shards"]["rows"]] == ["shardId-000000000000"]
    assert snap["invalid"]["observedSinceMs"] == NOW
    assert b"u1" not in path.read_bytes(), "user ids are raw event fields: never in the snapshot"


def test_readers_never_see_half_a_snapshot(tmp_path: Path) -> None:
    publisher = Publisher(memory_source(filled_store()), [DirTarget(tmp_path)])
    publisher.publish_once()
    stop = threading.Event()
    seen: list[int] = []
    errors: list[Exception] = []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(orjson.loads((tmp_path / "snapshot.json").read_bytes())["version"])
            except Exception as exc:  # a torn read would show up here
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(60):
            publisher.publish_once()
    finally:
        stop.set()
        reader.join()
    assert not errors and seen


def test_an_unavailable_store_falls_back_to_the_other_and_says_so(tmp_path: Path) -> None:
    redis_store = filled_store("redis")
    redis_store.available = False
    publisher = Publisher(
        memory_source(redis_store, filled_store("dynamodb")), [DirTarget(tmp_path)], clock=lambda: NOW
    )
    snap = publisher.publish_once()
    assert snap["store"] == "dynamodb"
    assert snap["today"]["events"] == len(EVENTS)
    assert [p["part"] for p in snap["problems"]] == ["redis", "aggregates"]
    assert "not reachable" in snap["problems"][0]["message"]


def test_when_nothing_answers_the_snapshot_still_comes_and_explains(tmp_path: Path) -> None:
    store = MemoryStore("redis")
    store.available = False

    def broken_health() -> dict[str, dict[str, str]]:
        raise ConnectionError("Connection refused")

    source = memory_source(store)
    source.health = broken_health
    snap = Publisher(source, [DirTarget(tmp_path)], clock=lambda: NOW).publish_once()
    assert snap["store"] is None
    assert snap["today"]["events"] is None and "no aggregate store answered" in snap["today"]["note"]
    assert snap["perMinute"]["minutes"] == [] and snap["perMinute"]["note"]
    assert snap["shards"]["rows"] == [] and "could not be read" in snap["shards"]["note"]
    assert {p["part"] for p in snap["problems"]} == {"redis", "health"}
    assert snap["invalid"]["lastHour"] is None and snap["invalid"]["note"]


def test_metrics_missing_from_the_config_become_empty_states() -> None:
    config = parse_config("", "mine.toml")  # default resolutions, only the built-in `events` metric
    store = MemoryStore("redis")
    store.write(partials(config))
    snap = Publisher(memory_source(store, config=config), [], clock=lambda: NOW).publish_once()
    assert snap["today"]["events"] == len(EVENTS)
    assert snap["topPages"]["note"] == "metric 'page_views' is not in mine.toml"
    assert snap["donations"]["note"] == "metric 'donations' is not in mine.toml"
    assert snap["users"]["note"] == "metric 'distinct_users' is not in mine.toml"
    assert snap["donations"]["count"] is None


def test_a_config_without_minutes_or_days_says_so() -> None:
    config = parse_config(
        '[[resolutions]]\nname = "1h"\ndynamodb_retention = "90d"\nredis_retention = "7d"\n', "hourly.toml"
    )
    snap = Publisher(memory_source(MemoryStore(), config=config), [], clock=lambda: NOW).publish_once()
    assert snap["perMinute"]["note"] == "hourly.toml has no 1-minute resolution"
    assert snap["today"]["note"] == "hourly.toml has no 1-day resolution"


def test_a_failed_write_is_an_error_that_names_the_place(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    publisher = Publisher(memory_source(filled_store()), [DirTarget(blocker / "site")])
    with pytest.raises(PublishError, match="cannot write into"):
        publisher.publish_once()
    assert publisher.failures == 1


def test_run_publishes_until_stopped(tmp_path: Path) -> None:
    publisher = Publisher(memory_source(filled_store()), [DirTarget(tmp_path)])
    stop = threading.Event()
    thread = threading.Thread(target=publisher.run, args=(0.05, stop))
    thread.start()
    deadline = time.monotonic() + 10
    while publisher.published < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(5)
    assert publisher.published >= 3 and not thread.is_alive()


# -- S3 (moto in-process) -------------------------------------------------------------------------


@pytest.fixture
def s3() -> Iterator[Any]:
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in (*env, "AWS_ENDPOINT_URL")}
    os.environ.update(env)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    try:
        with mock_aws():
            client = boto3.client("s3", region_name="us-east-1")
            client.create_bucket(Bucket="site")
            yield client
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_publish_to_s3_is_one_put_of_the_whole_snapshot(s3: Any) -> None:
    target = parse_target("s3://site/live/dash/", lambda: s3)
    assert isinstance(target, S3Target) and target.description == "s3://site/live/dash/snapshot.json"
    publisher = Publisher(memory_source(filled_store()), [target], clock=lambda: NOW)
    publisher.publish_once()
    obj = s3.get_object(Bucket="site", Key="live/dash/snapshot.json")
    assert obj["ContentType"] == "application/json"
    assert obj["CacheControl"] == "no-cache, max-age=0"
    snap = orjson.loads(obj["Body"].read())
    assert snap["generatedAtMs"] == NOW and snap["today"]["events"] == len(EVENTS)

    publisher.copy_static()
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="site", Prefix="live/dash/")["Contents"]}
    assert {"live/dash/index.html", "live/dash/app.js", "live/dash/style.css", "live/dash/snapshot.json"} <= keys
    assert s3.head_object(Bucket="site", Key="live/dash/index.html")["ContentType"] == "text/html; charset=utf-8"


def test_s3_targets_need_a_bucket_and_a_missing_bucket_is_a_clear_error(s3: Any) -> None:
    with pytest.raises(PublishError, match="name a bucket"):
        parse_target("s3://", lambda: s3)
    with pytest.raises(PublishError, match="directory or s3://"):
        parse_target("https://example.com/x", lambda: s3)
    target = parse_target("s3://no-such-bucket", lambda: s3)
    assert target.description == "s3://no-such-bucket/snapshot.json"
    with pytest.raises(PublishError, match=r"cannot put s3://no-such-bucket/snapshot\.json"):
        Publisher(memory_source(filled_store()), [target]).publish_once()


def test_static_files_are_the_page_without_a_cdn() -> None:
    files = {name: body for name, body, _ in static_files()}
    assert {"index.html", "app.js", "style.css"} <= set(files)
    for name, body in files.items():
        text = body.decode()
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", ""), name
        assert "https://" not in text, f"{name} must not load anything from the network"


def test_the_dlq_sampler_counts_reasons_and_deletes_nothing(s3: Any) -> None:
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="dlq")["QueueUrl"]
    for i, reason in enumerate(["not_json"] * 3 + ["bad_timestamp"] * 5 + ["too_old"]):
        sqs.send_message(QueueUrl=url, MessageBody=orjson.dumps({"id": f"s/{i}/0/0", "reason": reason}).decode())
    sampler = DlqSampler(lambda: sqs, "dlq", every_seconds=60, limit=100, wait_seconds=0)
    reading = sampler.read(NOW)
    assert reading.by_reason == {"bad_timestamp": 5, "not_json": 3, "too_old": 1}
    assert reading.sampled == 9 and reading.complete and reading.sampled_at_ms == NOW
    assert reading.approximate == {"visible": 9, "inFlight": 0, "delayed": 0}
    # Not due again for a minute: the next reads reuse the sample, the counts stay live.
    assert sampler.read(NOW + 2_000).sampled_at_ms == NOW
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "9"
    off = DlqSampler(lambda: sqs, "dlq", every_seconds=0).read(NOW)
    assert off.sampled_at_ms is None and off.sample_every_seconds is None and off.approximate is not None


# -- the command, against the real local stack ----------------------------------------------------


def test_publish_once_against_the_local_stack(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = stack.fresh(shards=1)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION"):
        monkeypatch.setenv(key, mine.env[key])
    from streamkpi.app import Services

    services = Services(mine.settings)
    now = int(time.time() * 1000)
    aggregates = ShardAggregates("shardId-000000000000", services.config.metric_set, services.config.resolutions)
    for seq, (kind, extra) in enumerate(
        [
            ("click", {}),
            ("page.view", {"path": "/x"}),
            ("donation.made", {"data": {"amount": 12.5, "currency": "GBP", "charityId": "7"}}),
        ],
        start=1,
    ):
        ms = now - 1_000
        for key in aggregates.missing(aggregates.keys_for(ms)):
            aggregates.install(key, None)
        aggregates.add(event(kind, ms, **extra), kind, ms, (seq, 0, 0))
    assert services.dynamodb_store.write(aggregates.dirty("dynamodb")) == []
    RedisHealth(services.redis, mine.settings.stream).report(
        "shardId-000000000000",
        {"reportedMs": now, "eventsPerSecond": 3.0, "millisBehindLatest": 0, "dlqCount": 1, "records": 3},
    )
    sqs = mine.client("sqs")
    url = sqs.get_queue_url(QueueName=mine.settings.dlq_queue)["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody='{"id": "shardId-000000000000/9/0/0", "reason": "not_json"}')

    site = tmp_path / "site"
    done = subprocess.run(
        [STREAMKPI, "dashboard", "publish", "--once", "--to", str(site), "--store", "dynamodb", "--static"],
        env=mine.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"published {site / 'snapshot.json'}" in done.stdout
    snap = orjson.loads((site / "snapshot.json").read_bytes())
    assert snap["store"] == "dynamodb" and snap["problems"] == []
    assert snap["stream"] == mine.settings.stream
    assert snap["today"]["events"] == 3
    assert snap["topPages"]["rows"] == [{"path": "/x", "views": 1}]
    assert snap["donations"]["amounts"] == [{"currency": "GBP", "amount": 12.5}]
    assert [s["shardId"] for s in snap["shards"]["rows"]] == ["shardId-000000000000"]
    assert snap["rate"]["eventsPerSecond"] == 3.0
    assert snap["invalid"]["topReasons"][0]["reason"] == "not_json"
    assert snap["invalid"]["queue"]["visible"] + snap["invalid"]["queue"]["inFlight"] == 1
    assert (site / "index.html").exists() and (site / "app.js").exists()

    bucket = mine.settings.archive_bucket
    done = subprocess.run(
        [STREAMKPI, "dashboard", "publish", "--once", "--to", f"s3://{bucket}/dash", "--dlq-every", "0"],
        env=mine.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    body = mine.client("s3").get_object(Bucket=bucket, Key="dash/snapshot.json")["Body"].read()
    assert orjson.loads(body)["stream"] == mine.settings.stream


def test_publish_refuses_bad_options_clearly(stack: Stack, tmp_path: Path) -> None:
    for args, message in (
        (["--to", str(tmp_path), "--every", "soon"], "--every 'soon'"),
        (["--to", "ftp://host/x", "--once"], "write a directory or s3://bucket/prefix"),
        (["--to", "s3://", "--once"], "name a bucket"),
    ):
        done = subprocess.run(
            [STREAMKPI, "dashboard", "publish", *args], env=stack.env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2, done.stderr
        assert message in done.stderr


def test_a_panel_mistake_stops_publish_and_serve_at_start(tmp_path: Path) -> None:
    config = tmp_path / "orders.toml"
    config.write_text(
        '[metrics.orders]\nby = ["data.status"]\n\n[[dashboard.panels]]\nkind = "stat"\ntitle = "Revenue"\n'
        'metric = "revenu"\n'
    )
    env = {**os.environ, "STREAMKPI_CONFIG": str(config)}
    expected = (
        f"error: {config}: dashboard.panels[0] ('Revenue').metric: 'revenu' is not a configured metric; "
        "configured: events, orders"
    )
    for args in (["publish", "--once", "--to", str(tmp_path / "site")], ["serve", "--port", "0"]):
        done = subprocess.run([STREAMKPI, "dashboard", *args], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == expected
    assert not (tmp_path / "site").exists(), "nothing is published with a broken panel"
    config.write_text(config.read_text().replace('"revenu"', '"orders"').replace('"stat"', '"gauge"'))
    done = subprocess.run([STREAMKPI, "dashboard", "serve", "--port", "0"], env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "kind: 'gauge' is not a panel kind; write one of stat, timeseries" in done.stderr


def test_range_files_are_written_atomically_too(tmp_path: Path) -> None:
    from tests.unit.test_snapshot_ranges import orders_publisher

    publisher = orders_publisher(targets=[DirTarget(tmp_path)])
    publisher.publish_once()
    path = tmp_path / "snapshot-1h.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    stop = threading.Event()
    seen: list[str] = []
    errors: list[Exception] = []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(orjson.loads(path.read_bytes())["range"]["id"])
            except Exception as exc:  # a torn read would show up here
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(40):
            publisher.publish_once()
    finally:
        stop.set()
        reader.join()
    assert not errors and seen and set(seen) == {"1h"}
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["snapshot.json", "snapshot-1h.json", "snapshot-24h.json", "snapshot-7d.json", "snapshot-30d.json"]
    )  # no temp file left behind
