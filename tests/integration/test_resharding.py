"""Resharding with the real KCL: split a shard mid-stream; the parent reaches SHARD_END, both children
are processed, and the counts are exact.

moto gets resharding wrong (it keeps writing to the closed parent and never ends it), so Kinesis here is
kinesis-local (kinesis-mock, see kinesis_local.py); the KCL leases, the metrics table, the DLQ and the
archive stay on the session's moto, Redis is the session's redis-server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Stack, wait_for
from tests.integration.kinesis_local import KinesisLocal, kinesis_local  # noqa: F401  (fixture)
from tests.integration.test_kcl_end_to_end import cli, dlq_ids
from tests.integration.verify import assert_counts_in_both_stores

pytestmark = pytest.mark.integration

# Redis keys are not named after the metrics table, so every fresh stack of a session shares them; a
# database of its own keeps this test's shard partials (its shard ids repeat moto's) apart from others'.
REDIS_DB = 7
# KCL 2.5.8's graceful shutdown also waits for a shutdown notification for the ended parent's lease,
# which this worker still holds (until lease cleanup removes it, minutes later) but no longer runs a
# processor for: SIGTERM then always takes the whole grace. The children's shutdown checkpoints take
# well under a second, so a short grace keeps the test quick without cutting them off.
SHUTDOWN_GRACE_MILLIS = 5000


def fresh_on_kinesis_local(stack: Stack, kinesis: KinesisLocal, shards: int) -> Stack:
    """`stack.fresh`, with the stream (and the leases seeded from its shards) on kinesis-local."""

    def client(service: str) -> Any:
        return kinesis.client(stack.settings.region) if service == "kinesis" else stack.client(service)

    return stack.fresh(
        shards=shards,
        client=client,
        STREAMKPI_KINESIS_ENDPOINT_URL=kinesis.endpoint_url,
        REDIS_URL=f"redis://127.0.0.1:{stack.settings.redis_port}/{REDIS_DB}",
        STREAMKPI_KCL_SHUTDOWN_GRACE_MILLIS=str(SHUTDOWN_GRACE_MILLIS),
    )


def shard_records(kinesis: Any, stream: str, shard_id: str) -> list[dict[str, Any]]:
    """Every record of a shard, open or closed, from TRIM_HORIZON to its current end."""
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON")[
        "ShardIterator"
    ]
    records: list[dict[str, Any]] = []
    while iterator:
        page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
        records += page["Records"]
        if not page["Records"]:
            break
        iterator = page.get("NextShardIterator")
    return records


def leases(stack: Stack) -> dict[str, dict[str, Any]]:
    items = stack.client("dynamodb").scan(TableName=stack.settings.app_name, ConsistentRead=True)["Items"]
    return {item["leaseKey"]["S"]: item for item in items}


def checkpoints(stack: Stack) -> dict[str, str]:
    return {key: item["checkpoint"]["S"] for key, item in leases(stack).items()}


def generate(stack: Stack, truth: Path, seed: int) -> dict[str, Any]:
    cli(stack, "generate", "--rate", "500", "--duration", "2", "--invalid-fraction", "0.05", "--seed", str(seed),
        "--truth", str(truth))  # fmt: skip
    return dict(json.loads(truth.read_text()))


def test_split_shard_mid_stream_parent_ends_children_processed_counts_exact(
    stack: Stack,
    kinesis_local: KinesisLocal,  # noqa: F811
    start_worker: Any,
    tmp_path: Path,
) -> None:
    s = fresh_on_kinesis_local(stack, kinesis_local, shards=1)
    kinesis = kinesis_local.client(s.settings.region)
    stream = s.settings.stream
    (parent,) = kinesis.list_shards(StreamName=stream)["Shards"]
    parent_id = parent["ShardId"]
    assert set(checkpoints(s)) == {parent_id}, "the lease table is seeded from kinesis-local's shard"

    # Before the split: 1,000 events into the one shard, consumed by the real KCL daemon.
    truth1 = generate(s, tmp_path / "truth-1.json", seed=101)
    before_split = shard_records(kinesis, stream, parent_id)
    assert before_split and truth1["events_sent"] == 1000
    worker = start_worker(s)
    wait_for(
        lambda: checkpoints(s).get(parent_id) == before_split[-1]["SequenceNumber"],
        120,
        "the parent shard checkpointed at its last record before the split",
    )

    # Split at the middle of the parent's hash key range while the worker runs.
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
    shards = kinesis.list_shards(StreamName=stream)["Shards"]
    children = sorted(sh["ShardId"] for sh in shards if sh.get("ParentShardId") == parent_id)
    assert len(children) == 2 and len(shards) == 3

    # After the split: 1,000 more events, which land on the children only.
    truth2 = generate(s, tmp_path / "truth-2.json", seed=202)
    assert truth2["events_sent"] == 1000
    assert shard_records(kinesis, stream, parent_id) == before_split, "nothing is written to the closed parent"
    last = {child: shard_records(kinesis, stream, child) for child in children}
    assert all(last.values()), "the generator's partition keys spread records over both children"

    # The parent reaches SHARD_END; the KCL creates a lease per child and processes both to their end.
    wait_for(lambda: checkpoints(s).get(parent_id) == "SHARD_END", 120, "the parent lease reached SHARD_END")
    expected_checkpoints = {child: records[-1]["SequenceNumber"] for child, records in last.items()}
    wait_for(
        lambda: {c: checkpoints(s).get(c) for c in children} == expected_checkpoints,
        180,
        "each child lease checkpointed at its last record",
    )
    child_leases = leases(s)
    for child in children:
        assert child_leases[child]["parentShardId"]["SS"] == [parent_id]
    assert worker.process.poll() is None, worker.logs()[-3000:]

    assert_counts_in_both_stores(s, truth1, truth2)

    # Every invalid event, before and after the split, reached the DLQ once with its reason.
    invalid = truth1["invalid"] + truth2["invalid"]
    assert dlq_ids(s) == {entry["id"]: entry["reason"] for entry in invalid}
    assert {entry["id"].split("/")[0] for entry in truth2["invalid"]} <= set(children)

    # SIGTERM: both children checkpoint on the shutdown request, and the worker exits 0.
    assert worker.stop() == 0
    logs = [json.loads(line) for line in worker.logs().splitlines() if line.startswith("{")]
    shut_down = {line.get("shard") for line in logs if line.get("msg") == "shutdown requested; checkpointed"}
    assert shut_down == set(children), worker.logs()[-3000:]
