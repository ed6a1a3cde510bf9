"""The least-privilege IAM policies in docs/iam/ are exactly what each role calls.

A moto server of this module's own records every AWS request (`devstack/moto_server.py`, the call log), from
both runtimes of the worker: the KCL daemon (AWS SDK for Java v2) and the Python processor (boto3,
pynamodb). Each role runs its commands with an access key id of its own, with traffic that takes every
path: the worker (`streamkpi consume`, the real KCL daemon) creates the leases of a new stream, reads valid
and invalid events and one too large for SQS (its DLQ payload goes to S3), forwards to Firehose, Kinesis and
SQS, sends KCL metrics to CloudWatch, runs until the leader lock's heartbeat and the leader's shard sync were
seen, and checkpoints on SIGTERM; then it runs again with enhanced fan-out until it subscribes to a shard.
The DLQ admin runs stats, peek and redrive (one letter left pending by an interrupted run, so redrive
searches the stream); the publisher writes snapshots to S3 from Redis and from DynamoDB; replay and rebuild
run query, rebuild-cache, reset, replay and rebuild. Resources are created with an admin key (IaC's job).

Then, per role: every (action, resource) a call needed is granted by a statement of its policies (an ARN
typo fails), and every action of every statement was needed on one of its resources (an unused grant
fails), except the few in UNEXERCISED, each with its reason. (botocore's event hooks would see the Python
calls only; the server-side log sees both runtimes alike, so it is the one source.)
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from deadletters.ledger import new_entry
from deadletters.ledger_dynamodb import _item
from devstack import resources
from devstack.moto_server import describe_call
from streamkpi.config import default_config_text
from streamkpi.settings import Settings
from tests.integration.conftest import STREAMKPI, free_port, own_redis_server, wait_for
from tests.integration.iam_calls import (
    POLICY_DIR,
    Call,
    Grant,
    compare,
    grants,
    load_statements,
    read_call_log,
    summary,
)

pytestmark = pytest.mark.integration

ACCOUNT = "123456789012"  # moto's account for any access key
REGION = "us-east-1"
DASHBOARD_BUCKET = "streamkpi-dashboard"
FORWARD = "streamkpi-forward"  # the stream and the queue the test config's kinesis and sqs sinks forward to
PLACEHOLDERS = {
    "Region": REGION,
    "Account": ACCOUNT,
    "DashboardBucket": DASHBOARD_BUCKET,
    "ForwardStream": FORWARD,
    "ForwardQueue": FORWARD,
}
KEYS = {
    "admin": "AKIAIAMTESTADMIN0000",
    "worker": "AKIAIAMTESTWORKER000",
    "worker-fanout": "AKIAIAMTESTWORKERFAN",
    "dlq-admin": "AKIAIAMTESTDLQADMIN0",
    "publisher": "AKIAIAMTESTPUBLISHER",
    "replay-rebuild": "AKIAIAMTESTREPLAY000",
}
# role -> (the keys its runs used, its policies). The worker runs twice: polling, then enhanced fan-out.
ROLES = {
    "worker": (
        ("worker", "worker-fanout"),
        ["worker.json", "worker-forward-sinks.json", "worker-cloudwatch-metrics.json", "worker-enhanced-fanout.json"],
    ),
    "dlq-admin": (("dlq-admin",), ["dlq-admin.json"]),
    "publisher": (("publisher",), ["publisher.json"]),
    "replay-rebuild": (("replay-rebuild",), ["replay-rebuild.json"]),
}
# Granted, needed in production, not reachable here (docs/iam/README.md lists the same): (Sid, action) -> why.
UNEXERCISED: dict[tuple[str, str], str] = {
    ("KclLeaseTable", "dynamodb:DeleteItem"): "the KCL deletes the lease of a shard that ended (after resharding) "
    "once its children started; moto never ends a shard (see test_resharding.py, run on kinesis-local)",
    ("KclWorkerMetricStatsTable", "dynamodb:DeleteItem"): "the leader deletes the metrics row of a worker that "
    "stopped reporting (KCL 3.1.3 LeaseAssignmentManager.deleteStaleWorkerMetricsEntries); one worker never goes stale",
    ("RedriveLedgerInTheMetricsTable", "dynamodb:DeleteItem"): "redrive drops its pending ledger entry when Kinesis "
    "refuses the put, and moto never refuses one; tests/unit/test_redrive_ledger.py covers the call",
}
# Donations above 20 are refused by the worker's config, so the DLQ holds letters a redrive can put back.
TOO_STRICT = default_config_text().replace(
    'amount = { type = "number", minimum = 0 }', 'amount = { type = "number", minimum = 0, maximum = 20 }'
)
# ... and forwards donations to a Kinesis stream and an SQS queue as well as to the Firehose archive.
FORWARD_SINKS = f"""
[sinks.copy]
type = "kinesis"
stream = "{FORWARD}"

[sinks.audit]
type = "sqs"
queue = "{FORWARD}"

[[routes]]
types = ["donation.*"]
sinks = ["copy", "audit"]
"""


@dataclass
class Recorded:
    calls: list[Call]
    settings: Settings


def admin_client(settings: Settings, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=settings.endpoint_url,
        region_name=REGION,
        aws_access_key_id=KEYS["admin"],
        aws_secret_access_key="testing",
    )


def run(env: dict[str, str], role: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [STREAMKPI, *args],
        env={**env, "AWS_ACCESS_KEY_ID": KEYS[role]},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-3000:])
    return result


def stop_moto(moto: subprocess.Popen[bytes]) -> None:
    moto.terminate()
    moto.wait(20)


def moto_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def last_sequences(settings: Settings) -> dict[str, str]:
    kinesis = admin_client(settings, "kinesis")
    last: dict[str, str] = {}
    for shard in kinesis.list_shards(StreamName=settings.stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=settings.stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            if not page["Records"]:
                break
            last[shard["ShardId"]] = page["Records"][-1]["SequenceNumber"]
            iterator = page.get("NextShardIterator")
    return last


def checkpoints(settings: Settings) -> dict[str, str]:
    items = admin_client(settings, "dynamodb").scan(TableName=settings.app_name, ConsistentRead=True)["Items"]
    return {item["leaseKey"]["S"]: item["checkpoint"]["S"] for item in items}


def calls_by(log: Path, role: str) -> list[Call]:
    return [call for call in read_call_log(log, REGION, ACCOUNT) if call.access_key == KEYS[role]]


def iso(ms: int) -> str:
    from aggregations.query import iso as to_iso

    return to_iso(ms)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    tmp = tmp_path_factory.mktemp("iam")
    log = tmp / "calls.jsonl"
    port = free_port()
    with ExitStack() as stack:
        moto_log = (tmp / "moto.log").open("wb")
        stack.callback(moto_log.close)
        moto = subprocess.Popen(
            [sys.executable, "-m", "devstack.moto_server", "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, "STREAMKPI_MOTO_CALL_LOG": str(log)},
            stdout=moto_log,
            stderr=subprocess.STDOUT,
        )
        stack.callback(stop_moto, moto)
        endpoint = f"http://127.0.0.1:{port}"
        wait_for(lambda: moto_ready(endpoint), 60, "moto answers", interval=0.1)
        redis_client = stack.enter_context(own_redis_server(tmp))
        redis_port = redis_client.connection_pool.connection_kwargs["port"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STREAMKPI_", "REDIS_"))}
        # The resource names are the defaults, which the policies name.
        env |= {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_REGION": REGION,
            "AWS_SECRET_ACCESS_KEY": "testing",
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "STREAMKPI_STATE_DIR": str(tmp / "state"),
            "STREAMKPI_WORKER_ID": "iam-worker",
        }
        settings = Settings.load(env)
        assert (settings.stream, settings.app_name) == ("streamkpi-events", "streamkpi")
        resources.create_all(settings, lambda service: admin_client(settings, service))
        resources.ensure_bucket(admin_client(settings, "s3"), DASHBOARD_BUCKET, REGION)
        resources.ensure_stream(admin_client(settings, "kinesis"), FORWARD, 1)
        resources.ensure_queue(admin_client(settings, "sqs"), FORWARD)
        # No seeded leases: the KCL creates them itself, as on a stream it meets for the first time.
        dynamodb = admin_client(settings, "dynamodb")
        for lease in dynamodb.scan(TableName=settings.app_name)["Items"]:
            dynamodb.delete_item(TableName=settings.app_name, Key={"leaseKey": lease["leaseKey"]})

        run_worker(env, settings, tmp, log)
        run_fanout_worker(env, settings, tmp, log)
        run_dlq_admin(env, settings)
        run_publisher(env)
        run_replay_rebuild(env, settings)
        yield Recorded(read_call_log(log, REGION, ACCOUNT), settings)


def worker_env(env: dict[str, str], role: str, tmp: Path, **overrides: str) -> dict[str, str]:
    return {
        **env,
        "AWS_ACCESS_KEY_ID": KEYS[role],
        "STREAMKPI_CONFIG": str(tmp / "worker.toml"),
        "STREAMKPI_DYNAMODB_FLUSH_SECONDS": "1",
        "STREAMKPI_CHECKPOINT_SECONDS": "1",
        "STREAMKPI_KCL_FAILOVER_MILLIS": "5000",
        "STREAMKPI_KCL_LEASE_ASSIGNMENT_MILLIS": "2000",
        "STREAMKPI_KCL_WORKER_METRICS_MILLIS": "1000",
        **overrides,
    }


def stop(worker: subprocess.Popen[bytes], log: Path) -> str:
    """SIGTERM, wait for a graceful exit; the worker's log."""
    try:
        worker.terminate()
        assert worker.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    return log.read_text()


def run_worker(env: dict[str, str], settings: Settings, tmp: Path, call_log: Path) -> None:
    """Traffic for every path of the worker, then `streamkpi consume` until it checkpointed all and the KCL's
    periodic tasks ran (the leader lock's heartbeat, the leader's shard sync), then SIGTERM."""
    (tmp / "worker.toml").write_text(TOO_STRICT + FORWARD_SINKS)
    truth = tmp / "truth.json"
    run(env, "admin", "generate", "--rate", "500", "--duration", "2", "--invalid-fraction", "0.05", "--seed", "14",
        "--truth", str(truth))  # fmt: skip
    # One event too large for an event (64 KiB) and for an SQS message (256 KiB): its payload goes to S3.
    big = json.dumps({"eventType": "page.view", "timestamp": "2026-12-03T06:00:00Z", "pad": "x" * 300_000})
    admin_client(settings, "kinesis").put_record(StreamName=settings.stream, PartitionKey="big", Data=big.encode())
    last = last_sequences(settings)
    worker_log = tmp / "worker.log"
    with worker_log.open("wb") as out:
        worker = subprocess.Popen(
            [STREAMKPI, "consume"],
            env=worker_env(env, "worker", tmp, STREAMKPI_KCL_METRICS_LEVEL="SUMMARY"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: checkpoints(settings) == last, 180, "every shard checkpointed at its last record")

        def periodic_tasks_ran() -> bool:
            heartbeat = any(
                grant
                == Grant("dynamodb:UpdateItem", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/streamkpi-CoordinatorState")
                for call in calls_by(call_log, "worker")
                for grant in call.grants
            )
            return heartbeat and "running the periodic shard sync task" in worker_log.read_text()

        wait_for(periodic_tasks_ran, 120, "the leader lock's heartbeat and the leader's shard sync")
    finally:
        logs = stop(worker, worker_log)
    assert logs.count("shutdown requested; checkpointed") == 2, logs[-3000:]


def run_fanout_worker(env: dict[str, str], settings: Settings, tmp: Path, call_log: Path) -> None:
    """`streamkpi consume` with enhanced fan-out until it subscribed to a shard. (moto registers the consumer
    but answers SubscribeToShard with HTTP 500, so no record is read: test_fanout.py reads them on
    kinesis-local; here the calls and their ARNs are what counts.)"""
    log = tmp / "worker-fanout.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [STREAMKPI, "consume"],
            env=worker_env(env, "worker-fanout", tmp, STREAMKPI_KCL_RETRIEVAL_MODE="FANOUT"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: any(call.operation == "SubscribeToShard" for call in calls_by(call_log, "worker-fanout")),
            180,
            "the fan-out worker subscribed to a shard",
        )
    finally:
        stop(worker, log)


def run_dlq_admin(env: dict[str, str], settings: Settings) -> None:
    run(env, "dlq-admin", "dlq", "stats")
    peeked = json.loads(run(env, "dlq-admin", "dlq", "peek", "-n", "1000").stdout)
    assert any(row["payloadS3"] for row in peeked), "the large letter's payload is in S3"
    schema = [row for row in peeked if row["reason"] == "schema"]
    assert schema, "the strict config refused donations"
    # An interrupted run left one letter pending, long enough ago that this run searches the stream for it.
    letter = schema[0]
    now_ms = int(time.time() * 1000)
    entry = new_entry(settings.stream, letter["id"], "crashed-run", now_ms - 200_000, letter["partitionKey"], b"")
    admin_client(settings, "dynamodb").put_item(TableName=settings.metrics_table, Item=_item(entry))
    fixed = Path(settings.state_dir) / "fixed.toml"
    fixed.parent.mkdir(parents=True, exist_ok=True)
    fixed.write_text(default_config_text())
    result = json.loads(
        run({**env, "STREAMKPI_CONFIG": str(fixed)}, "dlq-admin", "dlq", "redrive", "--format", "json").stdout
    )
    assert result["redriven"] == len(schema), result


def run_publisher(env: dict[str, str]) -> None:
    target = f"s3://{DASHBOARD_BUCKET}/site"
    run(env, "publisher", "dashboard", "publish", "--to", target, "--once", "--static")
    run(env, "publisher", "dashboard", "publish", "--to", target, "--once", "--store", "dynamodb")


def run_replay_rebuild(env: dict[str, str], settings: Settings) -> None:
    now_ms = int(time.time() * 1000)
    span = ["--from", iso(now_ms - 3_600_000), "--to", iso(now_ms + 60_000)]
    run(env, "replay-rebuild", "query", "--from", "now-1h", "--to", "now")
    run(env, "replay-rebuild", "rebuild-cache", *span)
    run(env, "replay-rebuild", "reset", *span, "--yes")
    replayed = json.loads(run(env, "replay-rebuild", "replay", *span, "--format", "json").stdout)
    assert replayed["events"]["delivered"] > 0, replayed
    run(env, "replay-rebuild", "rebuild", *span, "--yes", "--format", "json")


@pytest.mark.parametrize("role", sorted(ROLES))
def test_policy_grants_exactly_what_the_role_calls(recorded: Recorded, role: str) -> None:
    keys, policies = ROLES[role]
    calls = [call for call in recorded.calls if call.access_key in {KEYS[k] for k in keys}]
    assert {call.access_key for call in calls} == {KEYS[k] for k in keys}, f"a run of {role} made no AWS call"
    statements = load_statements(policies, PLACEHOLDERS)
    problems = compare(calls, statements, UNEXERCISED)
    assert not problems, "\n".join(problems) + "\n\ncalls: " + json.dumps(summary(calls), indent=1)


def test_every_key_is_a_role_and_moto_served_every_call_but_subscribe_to_shard(recorded: Recorded) -> None:
    keys = {call.access_key for call in recorded.calls}
    assert keys == set(KEYS.values())
    failed = {(call.operation, call.status) for call in recorded.calls if call.status >= 500}
    assert failed == {("SubscribeToShard", 500)}, failed


def test_the_kcl_metrics_stay_in_the_namespace_the_policy_allows(recorded: Recorded) -> None:
    namespaces = {call.params.get("Namespace") for call in recorded.calls if call.operation == "PutMetricData"}
    assert namespaces == {recorded.settings.app_name}
    policy = json.loads((POLICY_DIR / "worker-cloudwatch-metrics.json").read_text())
    assert policy["Statement"][0]["Condition"] == {"StringEquals": {"cloudwatch:namespace": "streamkpi"}}


def request(method: str, path: str, query: str = "", body: bytes = b"", **headers: str) -> dict[str, Any]:
    auth = f"AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20261203/{REGION}/{headers.pop('service', 's3')}/aws4_request, x"
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "HTTP_AUTHORIZATION": auth}
    return environ | {f"HTTP_{name.upper()}": value for name, value in headers.items()} | {"body": body}


def described(environ: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    line = describe_call(environ, environ.pop("body"))
    assert line is not None and line["accessKey"] == "AKIAEXAMPLE"
    return line["service"], line["operation"], line["params"]


def test_the_call_log_reads_each_protocol_and_the_shape_of_s3_requests() -> None:
    assert described(request("GET", "/archive", "list-type=2&prefix=2026%2F")) == (
        "s3", "ListObjectsV2", {"Bucket": "archive"})  # fmt: skip
    assert described(request("HEAD", "/archive/dlq/a%2Fb")) == (
        "s3", "HeadObject", {"Bucket": "archive", "Key": "dlq/a/b"})  # fmt: skip
    assert described(request("PUT", "/site/snapshot.json"))[1] == "PutObject"
    assert described(request("GET", "/archive", "lifecycle="))[1] == "GetBucketLifecycleConfiguration"
    target = request("POST", "/", body=b'{"StreamName": "s", "Records": []}', service="kinesis",
                     x_amz_target="Kinesis_20131202.PutRecords")  # fmt: skip
    assert described(target) == ("kinesis", "PutRecords", {"StreamName": "s"})
    form = gzip.compress(b"Action=PutMetricData&Namespace=streamkpi&Version=2010-08-01")
    query = request("POST", "/", body=form, service="monitoring", content_encoding="gzip")
    assert described(query) == ("monitoring", "PutMetricData", {"Namespace": "streamkpi"})
    assert describe_call({"REQUEST_METHOD": "GET", "PATH_INFO": "/moto-api/"}, b"") is None


def test_iam_names_the_permission_a_call_needs_not_the_operation() -> None:
    def needed(service: str, operation: str, params: dict[str, Any]) -> set[Grant]:
        return set(grants({"service": service, "operation": operation, "params": params}, REGION, ACCOUNT))

    arn = f"arn:aws:%s:{REGION}:{ACCOUNT}:"
    queue = {"QueueUrl": f"http://127.0.0.1:1/{ACCOUNT}/streamkpi-dlq"}
    assert needed("sqs", "SendMessageBatch", queue) == {Grant("sqs:SendMessage", arn % "sqs" + "streamkpi-dlq")}
    transaction = {"TransactItems": [["Put", "a"], ["ConditionCheck", "b"]]}
    assert needed("dynamodb", "TransactWriteItems", transaction) == {
        Grant("dynamodb:PutItem", arn % "dynamodb" + "table/a"),
        Grant("dynamodb:ConditionCheckItem", arn % "dynamodb" + "table/b"),
    }
    index = {"TableName": "streamkpi", "IndexName": "LeaseOwnerToLeaseKeyIndex"}
    assert needed("dynamodb", "Query", index) == {
        Grant("dynamodb:Query", arn % "dynamodb" + "table/streamkpi/index/LeaseOwnerToLeaseKeyIndex")
    }
    assert needed("s3", "ListObjectsV2", {"Bucket": "b"}) == {Grant("s3:ListBucket", "arn:aws:s3:::b")}
    assert needed("s3", "HeadObject", {"Bucket": "b", "Key": "k"}) == {Grant("s3:GetObject", "arn:aws:s3:::b/k")}
    assert needed("kinesis", "GetRecords", {}) == {Grant("kinesis:GetRecords", None)}
    assert needed("monitoring", "PutMetricData", {}) == {Grant("cloudwatch:PutMetricData", "*")}
