"""`streamkpi settings` never prints a secret: the credentials of URL-valued settings become `***`."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from streamkpi.cli import app
from streamkpi.settings import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@cache.example:6379/0", "redis://:***@cache.example:6379/0"),
        ("rediss://user:hunter2@cache.example", "rediss://user:***@cache.example"),
        ("https://hunter2@vpce.example/", "https://***@vpce.example/"),  # a lone user may be a token
        ("redis://:hun@ter2@cache.example/0", "redis://:***@cache.example/0"),  # unescaped @ in the password
        ("redis://:hun/ter#2@cache.example/0", "redis://:***@cache.example/0"),  # unescaped / and #
        ("redis://cache.example/0?password=hunter2&db=1", "redis://cache.example/0?password=***&db=1"),
        ("https://s3.example/?X-Amz-Security-Token=hunter2", "https://s3.example/?X-Amz-Security-Token=***"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("http://[::1]:4566", "http://[::1]:4566"),
        ("streamkpi-events", "streamkpi-events"),
        ("", ""),
    ],
)
def test_redact_url_hides_credentials_and_keeps_the_rest(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "hunter2" not in redact_url(url)


def test_the_settings_command_prints_no_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMKPI_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("REDIS_URL", "rediss://default:hunter2@cache.example:6380/0")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://key:hunter2@aws.example")
    monkeypatch.setenv("STREAMKPI_STREAM", "my-stream")
    result = CliRunner().invoke(app, ["settings"])
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    shown = orjson.loads(result.stdout)
    assert shown["redis_url"] == "rediss://default:***@cache.example:6380/0"
    assert shown["endpoint_url"] == "https://key:***@aws.example"
    assert shown["stream"] == "my-stream" and shown["shards"] == 2
