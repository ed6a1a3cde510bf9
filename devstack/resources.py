"""The AWS resources the worker needs, created idempotently (local stack, or a fresh AWS account).

The KCL lease table is created and seeded with one lease per shard: KCL 2.5.8 waits a random 1-30 s
before it takes an empty lease table, and a seeded one starts processing in about five seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from consumer.dlq import DEFAULT_S3_PREFIX
from streamkpi.settings import Settings

log = logging.getLogger("devstack.resources")

ClientFactory = Callable[[str], Any]
# moto accepts any role; on real AWS the delivery stream needs a role that may write the bucket.
FIREHOSE_ROLE_ARN = "arn:aws:iam::123456789012:role/streamkpi-firehose"


def _exists(exc: ClientError, *codes: str) -> bool:
    return exc.response.get("Error", {}).get("Code") in codes


def ensure_stream(kinesis: Any, name: str, shards: int) -> list[dict[str, Any]]:
    try:
        kinesis.create_stream(StreamName=name, ShardCount=shards)
        log.info("created stream", extra={"stream": name, "shards": shards})
    except ClientError as exc:
        if not _exists(exc, "ResourceInUseException"):
            raise
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    shard_list: list[dict[str, Any]] = []
    token = None
    while True:
        page = kinesis.list_shards(NextToken=token) if token else kinesis.list_shards(StreamName=name)
        shard_list += page["Shards"]
        token = page.get("NextToken")
        if not token:
            return shard_list


def ensure_table(dynamodb: Any, name: str, key: list[tuple[str, str, str]], ttl_attribute: str | None = None) -> None:
    """key: (attribute, type, HASH|RANGE) tuples. On-demand billing."""
    try:
        dynamodb.create_table(
            TableName=name,
            AttributeDefinitions=[{"AttributeName": a, "AttributeType": t} for a, t, _ in key],
            KeySchema=[{"AttributeName": a, "KeyType": k} for a, _, k in key],
            BillingMode="PAY_PER_REQUEST",
        )
        log.info("created table", extra={"table": name})
    except ClientError as exc:
        if not _exists(exc, "ResourceInUseException"):
            raise
    dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    if ttl_attribute:
        status = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if status.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            dynamodb.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl_attribute}
            )


def seed_leases(dynamodb: Any, table: str, shards: list[dict[str, Any]], initial_position: str) -> int:
    """One lease per open or unleased shard, in KCL 2.x's lease format; existing leases are kept."""
    seeded = 0
    for shard in shards:
        item: dict[str, Any] = {
            "leaseKey": {"S": shard["ShardId"]},
            "checkpoint": {"S": initial_position},
            "checkpointSubSequenceNumber": {"N": "0"},
            "leaseCounter": {"N": "0"},
            "ownerSwitchesSinceCheckpoint": {"N": "0"},
            "startingHashKey": {"S": shard["HashKeyRange"]["StartingHashKey"]},
            "endingHashKey": {"S": shard["HashKeyRange"]["EndingHashKey"]},
        }
        parents = [p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p]
        if parents:
            item["parentShardId"] = {"SS": parents}
        try:
            dynamodb.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(leaseKey)")
            seeded += 1
        except ClientError as exc:
            if not _exists(exc, "ConditionalCheckFailedException"):
                raise
    return seeded


def ensure_queue(sqs: Any, name: str) -> str:
    attributes = {"MessageRetentionPeriod": "1209600"}  # 14 days, the SQS maximum
    if name.endswith(".fifo"):
        attributes |= {"FifoQueue": "true"}
    return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])


def ensure_bucket(s3: Any, name: str, region: str) -> None:
    kwargs: dict[str, Any] = {"Bucket": name}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
    except ClientError as exc:
        if not _exists(exc, "BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


DLQ_PAYLOAD_RULE_ID = "streamkpi-dlq-payloads"
# SQS keeps a DLQ message at most 14 days (the queue's retention): a payload object the DLQ wrote to S3
# is of no use a day after that, whether or not its message was redriven.
DLQ_PAYLOAD_DAYS = 15


def ensure_dlq_payload_expiry(s3: Any, bucket: str, prefix: str = DEFAULT_S3_PREFIX) -> bool:
    """Make the bucket's lifecycle expire DLQ payload objects under `prefix`, keeping its other rules (and
    its other lifecycle settings). Returns True when the configuration was written (False: already so)."""
    wanted = {
        "ID": DLQ_PAYLOAD_RULE_ID,
        "Filter": {"Prefix": prefix},
        "Status": "Enabled",
        "Expiration": {"Days": DLQ_PAYLOAD_DAYS},
    }
    try:
        current = s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    except ClientError as exc:
        if not _exists(exc, "NoSuchLifecycleConfiguration"):
            raise
        current = {}
    rules = list(current.get("Rules", []))
    ours = [rule for rule in rules if rule.get("ID") == DLQ_PAYLOAD_RULE_ID]
    if ours and all({key: rule.get(key) for key in wanted} == wanted for rule in ours):
        return False
    # S3 refuses a configuration that mixes the legacy top-level Prefix with Filter: write theirs as the
    # equivalent Filter.
    others = [
        {**{k: v for k, v in rule.items() if k != "Prefix"}, "Filter": {"Prefix": rule["Prefix"]}}
        if "Prefix" in rule and "Filter" not in rule
        else rule
        for rule in rules
        if rule.get("ID") != DLQ_PAYLOAD_RULE_ID
    ]
    extra = {}
    if "TransitionDefaultMinimumObjectSize" in current:
        extra["TransitionDefaultMinimumObjectSize"] = current["TransitionDefaultMinimumObjectSize"]
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [*others, wanted]}, **extra)
    return True


def ensure_firehose(firehose: Any, name: str, bucket: str) -> None:
    try:
        firehose.describe_delivery_stream(DeliveryStreamName=name)
        return
    except ClientError as exc:
        if not _exists(exc, "ResourceNotFoundException"):
            raise
    firehose.create_delivery_stream(
        DeliveryStreamName=name,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": FIREHOSE_ROLE_ARN,
            "BucketARN": f"arn:aws:s3:::{bucket}",
            "BufferingHints": {"SizeInMBs": 5, "IntervalInSeconds": 60},
            "CompressionFormat": "UNCOMPRESSED",
        },
    )


def create_all(settings: Settings, client: ClientFactory) -> dict[str, Any]:
    """Create every resource the worker uses; safe to run again. Returns what exists."""
    started = time.monotonic()
    kinesis, dynamodb = client("kinesis"), client("dynamodb")
    shards = ensure_stream(kinesis, settings.stream, settings.shards)
    ensure_table(dynamodb, settings.app_name, [("leaseKey", "S", "HASH")])
    seeded = seed_leases(dynamodb, settings.app_name, shards, settings.initial_position)
    ensure_table(dynamodb, settings.metrics_table, [("pk", "S", "HASH"), ("sk", "S", "RANGE")], "expires_at")
    queue_url = ensure_queue(client("sqs"), settings.dlq_queue)
    s3 = client("s3")
    ensure_bucket(s3, settings.archive_bucket, settings.region)
    ensure_dlq_payload_expiry(s3, settings.archive_bucket)
    ensure_firehose(client("firehose"), settings.firehose_stream, settings.archive_bucket)
    summary = {
        "stream": settings.stream,
        "shards": [s["ShardId"] for s in shards],
        "leases_seeded": seeded,
        "metrics_table": settings.metrics_table,
        "dlq_url": queue_url,
        "archive_bucket": settings.archive_bucket,
        "firehose_stream": settings.firehose_stream,
    }
    log.info("resources ready", extra={**summary, "seconds": round(time.monotonic() - started, 2)})
    return summary
