"""From the moto call log (`devstack/moto_server.py`, STREAMKPI_MOTO_CALL_LOG) to IAM actions and ARNs, and
the comparison of what a role called with what its policies in docs/iam/ grant.

A request becomes one or more (IAM action, resource ARN) grants: usually `service:Operation` on the resource
the request names. The exceptions are IAM's: the SQS batch calls need the single call's permission, a
DynamoDB transaction needs the permission of each item's operation on that item's table, S3's REST
operations map to S3's actions (HeadObject is s3:GetObject, ListObjectsV2 and HeadBucket are
s3:ListBucket), and CloudWatch signs as `monitoring`. The ARN is None when the request does not name its
resource (GetRecords carries a shard iterator only); such a call proves the action, not the resource.
"""

from __future__ import annotations

import fnmatch
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POLICY_DIR = Path(__file__).resolve().parents[2] / "docs" / "iam"

# SigV4 signing name -> IAM service prefix, where they differ.
IAM_PREFIX = {"monitoring": "cloudwatch"}
# API operation -> IAM action, where they differ (per service prefix).
ACTION_OF = {
    ("sqs", "SendMessageBatch"): "SendMessage",
    ("sqs", "DeleteMessageBatch"): "DeleteMessage",
    ("sqs", "ChangeMessageVisibilityBatch"): "ChangeMessageVisibility",
    ("s3", "HeadObject"): "GetObject",
    ("s3", "ListObjectsV2"): "ListBucket",
    ("s3", "ListObjects"): "ListBucket",
    ("s3", "HeadBucket"): "ListBucket",
    ("s3", "CopyObject"): "PutObject",
    ("s3", "CreateMultipartUpload"): "PutObject",
    ("s3", "UploadPart"): "PutObject",
    ("s3", "CompleteMultipartUpload"): "PutObject",
    ("s3", "AbortMultipartUpload"): "AbortMultipartUpload",
    ("s3", "GetBucketLocation"): "GetBucketLocation",
}
# A DynamoDB transaction item's kind -> the IAM action it needs on its table.
TRANSACT_ACTION = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}


@dataclass(frozen=True)
class Grant:
    """One permission a call needed: an IAM action on a resource (None: the request named none)."""

    action: str
    resource: str | None


@dataclass(frozen=True)
class Call:
    access_key: str
    agent: str  # the first word of the user agent: which runtime made the call
    operation: str
    status: int
    grants: tuple[Grant, ...]
    params: Mapping[str, Any]  # the resource names the request carried, as the call log has them


def read_call_log(path: Path, region: str, account: str) -> list[Call]:
    calls = []
    for text in path.read_text().splitlines():
        line = json.loads(text)
        if "error" in line:
            raise AssertionError(f"the call log could not read a request: {line}")
        calls.append(
            Call(
                line["accessKey"],
                line["agent"],
                line["operation"],
                line["status"],
                grants(line, region, account),
                line.get("params", {}),
            )
        )
    return calls


def grants(line: Mapping[str, Any], region: str, account: str) -> tuple[Grant, ...]:
    service = IAM_PREFIX.get(line["service"], line["service"])
    operation, params = line["operation"], line.get("params", {})
    action = f"{service}:{ACTION_OF.get((service, operation), operation)}"
    arn = f"arn:aws:{service}:{region}:{account}"
    if service == "dynamodb":
        if "TransactItems" in params:
            return tuple(
                Grant(f"dynamodb:{TRANSACT_ACTION[kind]}", f"{arn}:table/{table}")
                for kind, table in params["TransactItems"]
            )
        tables = params.get("RequestItems") or ([params["TableName"]] if "TableName" in params else [])
        index = f"/index/{params['IndexName']}" if "IndexName" in params else ""
        return tuple(Grant(action, f"{arn}:table/{table}{index}") for table in tables) or (Grant(action, None),)
    if service == "kinesis":
        if operation in ("DescribeStreamConsumer", "DeregisterStreamConsumer") and "ConsumerName" in params:
            return (Grant(action, f"{params['StreamARN']}/consumer/{params['ConsumerName']}"),)
        if "ConsumerARN" in params:
            return (Grant(action, params["ConsumerARN"]),)
        if "StreamARN" in params:
            return (Grant(action, params["StreamARN"]),)
        if "StreamName" in params:
            return (Grant(action, f"{arn}:stream/{params['StreamName']}"),)
        return (Grant(action, None),)
    if service == "sqs":
        queue = params.get("QueueName") or params.get("QueueUrl", "").rstrip("/").rpartition("/")[2]
        return (Grant(action, f"{arn}:{queue}" if queue else None),)
    if service == "firehose":
        name = params.get("DeliveryStreamName")
        return (Grant(action, f"{arn}:deliverystream/{name}" if name else None),)
    if service == "s3":
        bucket, key = params.get("Bucket"), params.get("Key")
        if not bucket:
            return (Grant(action, "*"),)
        out = [Grant(action, f"arn:aws:s3:::{bucket}/{key}" if key else f"arn:aws:s3:::{bucket}")]
        if operation == "CopyObject":
            out.append(Grant("s3:GetObject", f"arn:aws:s3:::{params['CopySource']}"))
        return tuple(out)
    return (Grant(action, "*"),)  # e.g. cloudwatch:PutMetricData, which IAM scopes by namespace only


# -- policies -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    policy: str
    sid: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]

    def covers(self, grant: Grant) -> bool:
        if not any(fnmatch.fnmatchcase(grant.action, pattern) for pattern in self.actions):
            return False
        return grant.resource is None or any(fnmatch.fnmatchcase(grant.resource, r) for r in self.resources)


def render(text: str, placeholders: Mapping[str, str]) -> str:
    for name, value in placeholders.items():
        text = text.replace("${" + name + "}", value)
    if "${" in text:
        raise AssertionError(f"a placeholder was left unrendered: {text[text.index('${') :][:60]}")
    return text


def load_statements(names: Iterable[str], placeholders: Mapping[str, str]) -> list[Statement]:
    out = []
    for name in names:
        document = json.loads(render((POLICY_DIR / name).read_text(), placeholders))
        assert document["Version"] == "2012-10-17", name
        for statement in document["Statement"]:
            assert statement["Effect"] == "Allow", (name, statement)
            actions, resources = statement["Action"], statement["Resource"]
            out.append(
                Statement(
                    name,
                    statement["Sid"],
                    tuple([actions] if isinstance(actions, str) else actions),
                    tuple([resources] if isinstance(resources, str) else resources),
                )
            )
    return out


def compare(
    calls: Iterable[Call], statements: list[Statement], unexercised: Mapping[tuple[str, str], str]
) -> list[str]:
    """Problems: a needed grant no statement covers (missing action, or a resource no ARN of a statement
    granting that action matches); a statement action that no call needed on any of its resources (unused),
    unless `unexercised` names it ((Sid, action) -> why it is needed but cannot be exercised here)."""
    needed: dict[Grant, set[str]] = defaultdict(set)
    for call in calls:
        for grant in call.grants:
            needed[grant].add(f"{call.operation} by {call.agent}")
    problems = []
    for grant, by in sorted(needed.items(), key=lambda item: (item[0].action, item[0].resource or "")):
        if not any(statement.covers(grant) for statement in statements):
            granted = [s.sid for s in statements if grant.action in s.actions]
            what = (
                f"on {grant.resource} (granted only on other resources, in {granted})" if granted else "(not granted)"
            )
            problems.append(f"missing: {grant.action} {what}, needed by {', '.join(sorted(by))}")
    for statement in statements:
        for action in statement.actions:
            used = [
                g for g in needed if g.action == action and Statement("", "", (action,), statement.resources).covers(g)
            ]
            if not used and (statement.sid, action) not in unexercised:
                problems.append(
                    f"unused: {action} in {statement.policy} {statement.sid} ({', '.join(statement.resources)})"
                )
    return problems


def summary(calls: Iterable[Call]) -> dict[str, dict[str, int]]:
    """action -> {agent: calls}: what the report and the docs show."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for call in calls:
        for grant in call.grants:
            out[grant.action][call.agent] += 1
    return {action: dict(agents) for action, agents in sorted(out.items())}
