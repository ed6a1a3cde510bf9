"""Redis loss after a reshard (issue 11 item 6), with the real KCL daemon and kinesis-local.

A shard is split; the parent reaches SHARD_END, so no worker writes its partials again, and the children
are processed. Then Redis restarts empty (no persistence). The children's workers notice at their next
hot flush, and every window's partials in Redis equal DynamoDB's again, the ended parent's included.
Redis here is a server of this test's own, so restarting it touches no other test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from streamkpi.app import Services
from tests.integration.conftest import Stack, free_port, wait_for
from tests.integration.kinesis_local import KinesisLocal, kinesis_local  # noqa: F401  (fixture)
from tests.integration.test_kcl_end_to_end import stored_counts
from tests.integration.test_resharding import SHUTDOWN_GRACE_MILLIS, checkpoints, generate, shard_records
from tests.integration.verify import merged_counts

pytestmark = pytest.mark.integration


class RedisServer:
    """A redis-server without persistence on a free port: a restart comes back empty."""

    def __init__(self, data: Path) -> None:
        self.port = free_port()
        self.command = [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port",
                        str(self.port), "--dir", str(data), "--save", "", "--appendonly", "no"]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._pings, 20, "redis-server up", interval=0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)

    def _pings(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    data = tmp_path / "redis"
    data.mkdir()
    server = RedisServer(data)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def partials_by_window(store: Any, services: Services, span: tuple[int, int]) -> dict[tuple[str, int, str], Any]:
    """Every shard's partial of every window of every resolution overlapping the span: position and value."""
    out = {}
    for resolution in services.config.resolutions:
        starts = list(resolution.starts_between(*span))
        for start, partials in store.read(resolution.name, starts).items():
            for p in partials:
                out[(resolution.name, start, p.shard_id)] = (p.position, p.metrics)
    return out


def test_redis_restarted_empty_after_a_split_gets_every_shards_partials_back_the_ended_parents_too(
    stack: Stack,
    kinesis_local: KinesisLocal,  # noqa: F811
    redis_server: RedisServer,
    start_worker: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def client(service: str) -> Any:
        return kinesis_local.client(stack.settings.region) if service == "kinesis" else stack.client(service)

    s = stack.fresh(
        shards=1,
        client=client,
        STREAMKPI_KINESIS_ENDPOINT_URL=kinesis_local.endpoint_url,
        REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/0",
        STREAMKPI_KCL_SHUTDOWN_GRACE_MILLIS=str(SHUTDOWN_GRACE_MILLIS),
    )
    kinesis = kinesis_local.client(s.settings.region)
    stream = s.settings.stream
    (parent,) = kinesis.list_shards(StreamName=stream)["Shards"]
    parent_id = parent["ShardId"]

    truth1 = generate(s, tmp_path / "truth-1.json", seed=303)
    before_split = shard_records(kinesis, stream, parent_id)
    worker = start_worker(s)
    wait_for(lambda: checkpoints(s).get(parent_id) == before_split[-1]["SequenceNumber"], 120, "parent processed")

    low, high = (int(parent["HashKeyRange"][k]) for k in ("StartingHashKey", "EndingHashKey"))
    kinesis.split_shard(StreamName=stream, ShardToSplit=parent_id, NewStartingHashKey=str(low + (high - low + 1) // 2))
    wait_for(
        lambda: (
            kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"
        ),
        30,
        "the stream is ACTIVE again after the split",
        interval=0.1,
    )
    children = sorted(
        sh["ShardId"] for sh in kinesis.list_shards(StreamName=stream)["Shards"] if sh.get("ParentShardId")
    )
    truth2 = generate(s, tmp_path / "truth-2.json", seed=404)
    wait_for(lambda: checkpoints(s).get(parent_id) == "SHARD_END", 120, "the parent lease reached SHARD_END")
    last = {child: shard_records(kinesis, stream, child)[-1]["SequenceNumber"] for child in children}
    wait_for(lambda: {c: checkpoints(s).get(c) for c in children} == last, 180, "both children processed")

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(key, s.env[key])
    services = Services(s.settings)
    expected = merged_counts(truth1, truth2)
    starts = sorted(int(k) for k in expected)
    span = (starts[0], starts[-1] + 60_000)
    durable = partials_by_window(services.dynamodb_store, services, span)
    assert {key[2] for key in durable} == {parent_id, *children}, "the parent's partials are in DynamoDB"
    parent_windows = {key for key in durable if key[2] == parent_id}
    wait_for(lambda: partials_by_window(services.redis_store, services, span) == durable, 30, "Redis as DynamoDB")

    # Redis restarts empty. Nobody runs the parent any more; the children's workers repair all of it.
    redis_server.stop()
    redis_server.start()
    assert redis_server.client.dbsize() == 0
    hot = wait_for(
        lambda: (found := partials_by_window(services.redis_store, services, span)) == durable and found,
        60,
        "every window's partials in Redis equal DynamoDB's again, the parent's included",
    )
    assert parent_windows <= set(hot)
    assert stored_counts(s, "redis", *span) == expected == stored_counts(s, "dynamodb", *span)
    logs = [json.loads(line) for line in worker.logs().splitlines() if line.startswith("{")]
    repairs = [line for line in logs if line.get("msg") == "hot store repaired from DynamoDB"]
    assert any(line.get("allShards") and line.get("shard") in children for line in repairs), repairs
    assert worker.process.poll() is None, worker.logs()[-3000:]
    assert worker.stop() == 0
