"""`streamkpi local up/status/down` as a user runs them, and the resources they create."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from streamkpi.settings import read_env_file
from tests.integration.conftest import STREAMKPI, Stack, free_port

pytestmark = pytest.mark.integration


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STREAMKPI, *args], env=env, capture_output=True, text=True, timeout=120)


def test_up_status_down_manage_exactly_their_own_processes(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "STREAMKPI_STATE_DIR": str(tmp_path / "state"),
        "STREAMKPI_LOCAL_PORT": str(free_port()),
        "STREAMKPI_REDIS_PORT": str(free_port()),
    }
    env.pop("AWS_ENDPOINT_URL", None)
    up = run(["local", "up"], env)
    assert up.returncode == 0, up.stderr
    written = read_env_file(tmp_path / "state" / "local.env")
    assert written["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{env['STREAMKPI_LOCAL_PORT']}"
    assert written["REDIS_URL"] == f"redis://127.0.0.1:{env['STREAMKPI_REDIS_PORT']}/0"

    status = run(["local", "status"], env)
    assert status.returncode == 0
    pids = [int(word.split("=")[1]) for word in status.stdout.split() if word.startswith("pid=")]
    assert len(pids) == 2 and status.stdout.count("running") == 2
    assert all(Path(f"/proc/{pid}").exists() for pid in pids)

    again = run(["local", "up"], env)  # idempotent: nothing new starts
    assert again.returncode == 0, again.stderr
    assert [int(w.split("=")[1]) for w in run(["local", "status"], env).stdout.split() if w.startswith("pid=")] == pids

    down = run(["local", "down"], env)
    assert down.returncode == 0 and all(str(pid) in down.stdout for pid in pids)
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split(") ")[-1].startswith("Z")
    after = run(["local", "status"], env)
    assert after.returncode == 1 and after.stdout.count("stopped") == 2


def test_a_busy_port_names_the_port_and_the_setting(stack: Stack, tmp_path: Path) -> None:
    busy = stack.settings.local_port  # the session's moto holds it
    env = {**os.environ, "STREAMKPI_STATE_DIR": str(tmp_path), "STREAMKPI_LOCAL_PORT": str(busy)}
    result = run(["local", "up"], env)
    assert result.returncode == 2
    assert f"port {busy}" in result.stderr and "STREAMKPI_LOCAL_PORT" in result.stderr
    assert not (tmp_path / "pids" / "moto.pid").exists()


def test_resources_exist_and_the_lease_table_is_seeded_per_shard(stack: Stack) -> None:
    fresh = stack.fresh(shards=3)
    s = fresh.settings
    kinesis, dynamodb = fresh.client("kinesis"), fresh.client("dynamodb")
    shard_ids = sorted(sh["ShardId"] for sh in kinesis.list_shards(StreamName=s.stream)["Shards"])
    assert len(shard_ids) == 3
    leases = dynamodb.scan(TableName=s.app_name)["Items"]
    assert sorted(item["leaseKey"]["S"] for item in leases) == shard_ids
    for lease in leases:
        assert lease["checkpoint"]["S"] == "TRIM_HORIZON"
        assert lease["leaseCounter"]["N"] == "0" and "leaseOwner" not in lease
    table = dynamodb.describe_table(TableName=s.metrics_table)["Table"]
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["pk", "sk"]
    ttl = dynamodb.describe_time_to_live(TableName=s.metrics_table)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"
    assert fresh.client("sqs").get_queue_url(QueueName=s.dlq_queue)["QueueUrl"]
    fresh.client("s3").head_bucket(Bucket=s.archive_bucket)
    lifecycle = fresh.client("s3").get_bucket_lifecycle_configuration(Bucket=s.archive_bucket)["Rules"]
    assert [(r["ID"], r["Filter"], r["Expiration"]) for r in lifecycle] == [
        ("streamkpi-dlq-payloads", {"Prefix": "dlq/"}, {"Days": 15})
    ]
    firehose = fresh.client("firehose").describe_delivery_stream(DeliveryStreamName=s.firehose_stream)
    destination = firehose["DeliveryStreamDescription"]["Destinations"][0]["ExtendedS3DestinationDescription"]
    assert destination["BucketARN"] == f"arn:aws:s3:::{s.archive_bucket}"
    # Creating again changes nothing (leases keep their state).
    dynamodb.update_item(
        TableName=s.app_name,
        Key={"leaseKey": {"S": shard_ids[0]}},
        UpdateExpression="SET checkpoint = :c",
        ExpressionAttributeValues={":c": {"S": "49000"}},
    )
    stack.fresh  # noqa: B018 - the fixture stays usable
    from devstack import resources

    resources.create_all(s, fresh.client)
    item = dynamodb.get_item(TableName=s.app_name, Key={"leaseKey": {"S": shard_ids[0]}})["Item"]
    assert item["checkpoint"]["S"] == "49000"
