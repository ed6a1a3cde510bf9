"""streamkpi/kcl_daemon.py render_properties: the endpoints the KCL daemon gets for Kinesis and DynamoDB."""

from __future__ import annotations

from streamkpi.kcl_daemon import render_properties
from streamkpi.settings import Settings


def properties(env: dict[str, str]) -> dict[str, str]:
    text = render_properties(Settings.from_mapping(env), "/venv/bin/streamkpi-processor", "worker-1")
    pairs = [line.split(" = ", 1) for line in text.splitlines() if line and not line.startswith("#")]
    return {key: value for key, value in pairs}


def test_real_aws_has_no_endpoints() -> None:
    props = properties({})
    assert "kinesisEndpoint" not in props
    assert "dynamoDBEndpoint" not in props


def test_one_endpoint_serves_kinesis_and_dynamodb() -> None:
    props = properties({"AWS_ENDPOINT_URL": "http://127.0.0.1:4566"})
    assert props["kinesisEndpoint"] == "http://127.0.0.1:4566"
    assert props["dynamoDBEndpoint"] == "http://127.0.0.1:4566"


def test_kinesis_endpoint_override_moves_only_kinesis() -> None:
    props = properties(
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:4566", "STREAMKPI_KINESIS_ENDPOINT_URL": "http://127.0.0.1:4568"}
    )
    assert props["kinesisEndpoint"] == "http://127.0.0.1:4568"
    assert props["dynamoDBEndpoint"] == "http://127.0.0.1:4566"
    assert (props["streamName"], props["workerId"]) == ("streamkpi-events", "worker-1")


def test_kinesis_endpoint_override_alone_leaves_dynamodb_on_aws() -> None:
    props = properties({"STREAMKPI_KINESIS_ENDPOINT_URL": "http://127.0.0.1:4568"})
    assert props["kinesisEndpoint"] == "http://127.0.0.1:4568"
    assert "dynamoDBEndpoint" not in props


def test_client_kwargs_follow_the_same_rule() -> None:
    both = Settings.from_mapping(
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:4566", "STREAMKPI_KINESIS_ENDPOINT_URL": "http://127.0.0.1:4568"}
    )
    assert both.kinesis_client_kwargs() == {"region_name": "us-east-1", "endpoint_url": "http://127.0.0.1:4568"}
    assert both.aws_client_kwargs() == {"region_name": "us-east-1", "endpoint_url": "http://127.0.0.1:4566"}
    shared = Settings.from_mapping({"AWS_ENDPOINT_URL": "http://127.0.0.1:4566"})
    assert shared.kinesis_client_kwargs() == shared.aws_client_kwargs()
