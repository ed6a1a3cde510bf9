"""`streamkpi reset` refuses while workers renew their KCL leases, as `rebuild` does (moto's DynamoDB):
a running worker keeps the windows it touched in memory and would write the old counts back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner

from streamkpi.cli import app

APP = "reset-app"
RANGE = ["--from", "2026-11-25T10:00:00Z", "--to", "2026-11-25T11:00:00Z", "--yes"]


@pytest.fixture
def env(moto: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A lease table with two leases of one worker; reset_range replaced by a recorder of the stores reset."""
    monkeypatch.setenv("STREAMKPI_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("STREAMKPI_APP_NAME", APP)
    monkeypatch.setenv("STREAMKPI_KCL_FAILOVER_MILLIS", "1000")  # the check watches the table for 1 s
    monkeypatch.delenv("STREAMKPI_CONFIG", raising=False)
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    dynamodb.create_table(
        TableName=APP,
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for shard in ("shardId-000000000000", "shardId-000000000001"):
        item = {"leaseKey": {"S": shard}, "leaseOwner": {"S": "worker-1"}, "leaseCounter": {"N": "1"}}
        dynamodb.put_item(TableName=APP, Item=item)
    reset: list[str] = []

    def recorder(store: Any, *args: Any) -> int:
        reset.append(store.name)
        return 0

    monkeypatch.setattr("aggregations.repair.reset_range", recorder)
    yield reset


@pytest.fixture
def renewing() -> Iterator[None]:
    """A live worker: it renews the lease of shard 0 every 50 ms."""
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    stop = threading.Event()

    def renew() -> None:
        counter = 1
        while not stop.wait(0.05):
            counter += 1
            dynamodb.update_item(
                TableName=APP,
                Key={"leaseKey": {"S": "shardId-000000000000"}},
                UpdateExpression="SET leaseCounter = :c",
                ExpressionAttributeValues={":c": {"N": str(counter)}},
            )

    thread = threading.Thread(target=renew, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(5)


def test_reset_refuses_while_a_worker_renews_its_leases(env: list[str], renewing: None) -> None:
    result = CliRunner().invoke(app, ["reset", *RANGE])
    assert result.exit_code == 1, result.output
    assert "workers are running: the leases of shardId-000000000000 in 'reset-app'" in result.output
    assert "Stop every `streamkpi consume`" in result.output and "--force" in result.output
    assert env == [], "nothing may be deleted"


def test_reset_force_skips_the_check(env: list[str], renewing: None) -> None:
    result = CliRunner().invoke(app, ["reset", *RANGE, "--force"])
    assert result.exit_code == 0, result.output
    assert "checking lease table" not in result.output
    assert env == ["dynamodb", "redis"]


def test_reset_goes_on_when_the_workers_are_stopped(env: list[str]) -> None:
    result = CliRunner().invoke(app, ["reset", *RANGE])
    assert result.exit_code == 0, result.output
    assert "checking lease table 'reset-app' for running workers" in result.output
    assert env == ["dynamodb", "redis"] and "to rebuild, replay the archive" in result.output


def test_reset_help_says_it_checks_the_leases() -> None:
    assert "--force" in CliRunner().invoke(app, ["reset", "--help"]).output
