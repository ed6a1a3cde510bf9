"""The [redaction] table: checked at start, every mistake a ConfigError that names the fix; the key a setting
shown as `***`; a missing or short key stops the worker at start, naming the variable."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from consumer.redaction import RedactionKeyError, RedactionSpec
from streamkpi.app import build_worker_factory
from streamkpi.cli import app
from streamkpi.config import default_config_text, parse_config
from streamkpi.errors import ConfigError
from streamkpi.settings import Settings, settings_table_markdown

KEY = "0123456789abcdef0123456789abcdef"


def config(redaction: str, limits: object = None) -> RedactionSpec | None:
    text = default_config_text() + "\n[redaction]\n" + redaction + "\n"
    return parse_config(text, "c.toml", limits).redaction if limits else parse_config(text, "c.toml").redaction


def test_the_readme_example_parses() -> None:
    spec = config('drop = ["data.email"]\nmask = ["data.phone"]\nhash = ["userId"]')
    assert spec == RedactionSpec(("data.email",), ("data.phone",), ("userId",), "STREAMKPI_REDACTION_KEY", "drop")
    assert config('unparsed = "keep"\nkey_env = "PII_KEY"') == RedactionSpec(key_env="PII_KEY", unparsed="keep")
    assert parse_config(default_config_text(), "c.toml").redaction is None


@pytest.mark.parametrize(
    ("redaction", "says"),
    [
        ("drops = []", "unknown key(s) ['drops']"),
        ('drop = "data.email"', "redaction.drop: must be a list of dotted paths"),
        ('drop = ["data..email"]', "'data..email' is not a dotted path"),
        ('drop = ["data.email", "data.email"]', "names a path twice"),
        ('drop = ["data.email"]\nhash = ["data.email"]', "'data.email' is in both drop and hash"),
        ('drop = ["data"]\nmask = ["data.phone"]', "drop 'data' and mask 'data.phone' overlap"),
        ('hash = ["timestamp"]', "eventType and timestamp cannot be redacted"),
        ('mask = ["eventType"]', "eventType and timestamp cannot be redacted"),
        ('unparsed = "shred"', "redaction.unparsed: 'shred' is not one of 'drop', 'keep'"),
        ('key_env = "not a name"', "redaction.key_env: must name an environment variable"),
        # A metric reading a dropped or masked field would silently change its numbers.
        ('drop = ["userId"]', "metrics.distinct_users.field names 'userId', which is the dropped path 'userId'"),
        ('mask = ["data.charityId"]', "metrics.donations.by names 'data.charityId', which is the masked path"),
        ('drop = ["data.amount"]', "metrics.donation_amount.field names 'data.amount'"),
        ('drop = ["data"]', "which overlaps the dropped path 'data'"),
        # `data` masked or hashed would be no object: every redriven or replayed event would be wrong_type.
        ('mask = ["data"]', "'data' must stay an object"),
        ('hash = ["data"]', "'data' must stay an object"),
        # A hashed field a schema would refuse: a redriven or replayed event would fail validation.
        ('hash = ["data.currency"]', "does not accept 'hmac:<64 hex digits>' as data.currency"),
        ('drop = ["data.charityId"]', "metrics.donations.by"),
    ],
)
def test_mistakes_are_config_errors_that_say_what_is_wrong(redaction: str, says: str) -> None:
    with pytest.raises(ConfigError) as failure:
        config(redaction)
    assert says in str(failure.value)


def test_a_schema_requiring_a_dropped_field_or_refusing_a_mask_is_refused() -> None:
    schema = """
[schemas."user.created"]
type = "object"
required = ["data"]
[schemas."user.created".properties.data]
type = "object"
required = ["email"]
[schemas."user.created".properties.data.properties]
email = { type = "string", format = "email" }
age = { type = "integer" }
"""
    base = default_config_text() + schema + "\n[redaction]\n"
    with pytest.raises(ConfigError, match=r'schemas."user.created" requires it'):
        parse_config(base + 'drop = ["data.email"]', "c.toml")
    with pytest.raises(ConfigError, match=re.escape("does not accept '***' as data.email")):
        parse_config(base + 'mask = ["data.email"]', "c.toml")
    with pytest.raises(ConfigError, match=re.escape("does not accept 'hmac:<64 hex digits>' as data.age")):
        parse_config(base + 'hash = ["data.age"]', "c.toml")


def test_a_hashed_field_a_metric_counts_or_groups_is_allowed_but_not_in_where() -> None:
    text = (
        default_config_text()
        + '\n[metrics.by_user]\nby = ["data.contact"]\n[redaction]\nhash = ["userId", "data.contact"]\n'
    )
    assert parse_config(text, "c.toml").redaction is not None  # distinct_users counts hashes
    text = default_config_text() + '\n[metrics.vip]\nwhere = { userId = "u-1" }\n[redaction]\nhash = ["userId"]\n'
    with pytest.raises(ConfigError, match="a where filter compares with the value as sent"):
        parse_config(text, "c.toml")


def test_a_hashed_field_is_no_number_to_sum_min_or_max() -> None:
    for agg in ("sum", "min", "max"):
        text = default_config_text() + f'\n[metrics.spend]\nagg = "{agg}"\nfield = "data.spend"\n'
        with pytest.raises(ConfigError, match=f"a {agg} cannot compute on"):
            parse_config(text + '[redaction]\nhash = ["data.spend"]\n', "c.toml")
    text = default_config_text() + '\n[metrics.spenders]\nagg = "distinct"\nfield = "data.spend"\n'
    assert parse_config(text + '[redaction]\nhash = ["data.spend"]\n', "c.toml").redaction is not None


def test_hashed_values_must_fit_the_value_bound_when_a_metric_reads_them() -> None:
    from consumer.bounds import Limits

    with pytest.raises(ConfigError, match="set it to at least 69"):
        config('hash = ["userId"]', Limits(max_value_chars=64))
    assert config('hash = ["userId"]', Limits(max_value_chars=69)) is not None


def test_the_key_is_a_documented_setting_shown_as_stars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "`STREAMKPI_REDACTION_KEY` | (unset) |" in settings_table_markdown()
    monkeypatch.setenv("STREAMKPI_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("STREAMKPI_REDACTION_KEY", KEY)
    result = CliRunner().invoke(app, ["settings"])
    assert result.exit_code == 0, result.output
    assert KEY not in result.output
    assert orjson.loads(result.stdout)["redaction_key"] == "***"
    settings = Settings.load({"STREAMKPI_STATE_DIR": str(tmp_path), "STREAMKPI_REDACTION_KEY": KEY})
    assert KEY not in repr(settings) and KEY not in f"{settings.redaction_key}"
    assert settings.redaction_key is not None and settings.redaction_key.reveal() == KEY


@pytest.mark.parametrize("env", [{}, {"STREAMKPI_REDACTION_KEY": "short"}], ids=["missing", "short"])
def test_a_worker_hashing_without_a_usable_key_fails_at_start(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text(default_config_text() + '\n[redaction]\nhash = ["userId"]\n')
    settings = Settings.load({"STREAMKPI_STATE_DIR": str(tmp_path), "STREAMKPI_CONFIG": str(path), **env})
    with pytest.raises(RedactionKeyError) as failure:
        build_worker_factory(settings)  # before any client: the config and the key come first
    assert "STREAMKPI_REDACTION_KEY" in str(failure.value) and "short" not in str(failure.value)
