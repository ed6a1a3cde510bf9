"""streamkpi/config.py: the default config loads; every mistake is a ConfigError naming its place."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregations.metrics import BUILTIN_EVENTS_METRIC, MetricSet
from streamkpi.config import AppConfig, default_config_text, load_config, parse_config
from streamkpi.errors import ConfigError

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR

ONE_RESOLUTION = """
[[resolutions]]
name = "1m"
dynamodb_retention = "48h"
redis_retention = "6h"
"""


def config_error(text: str, source: str = "my.toml") -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source)
    message = str(info.value)
    assert message.startswith(f"{source}: "), message
    return message


# -- the built-in default --------------------------------------------------------------------------


def test_default_config_loads() -> None:
    config = load_config(None)
    assert isinstance(config, AppConfig)
    assert config.source == "built-in default config"
    assert [(r.name, r.size_ms) for r in config.resolutions] == [("1m", MINUTE), ("1h", HOUR), ("1d", DAY)]
    assert [r.dynamodb_retention_ms for r in config.resolutions] == [48 * HOUR, 90 * DAY, 3 * 365 * DAY]
    assert [r.redis_retention_ms for r in config.resolutions] == [6 * HOUR, 7 * DAY, 90 * DAY]


def test_default_config_metrics() -> None:
    metrics = {m.name: m for m in load_config(None).metrics}
    assert list(metrics) == [
        "events",
        "page_views",
        "donations",
        "donation_amount",
        "largest_donation",
        "distinct_users",
        "signups",
    ]
    users = metrics["distinct_users"]
    assert (users.agg, users.field, users.types, users.max_groups) == ("distinct", "userId", ("*",), 20)
    assert metrics["events"] == BUILTIN_EVENTS_METRIC
    assert (metrics["page_views"].agg, metrics["page_views"].types, metrics["page_views"].by) == (
        "count",
        ("page.view",),
        ("path",),
    )
    assert metrics["page_views"].max_groups == 500
    assert metrics["donations"].max_groups == 1000
    amount = metrics["donation_amount"]
    assert (amount.agg, amount.field, amount.by, amount.types) == (
        "sum",
        "data.amount",
        ("data.currency", "data.charityId"),
        ("donation.made",),
    )
    assert (metrics["largest_donation"].agg, metrics["largest_donation"].field) == ("max", "data.amount")
    assert metrics["signups"].types == ("user.created", "user.verified")
    assert metrics["signups"].by == ("eventType",)


def test_default_config_rules() -> None:
    rules = load_config(None).rules
    assert rules.future_skew_ms == 5 * MINUTE
    assert rules.strict_types is False
    # Older than the longest-kept window (1d windows kept 3y) can update nothing.
    assert rules.max_age_ms == DAY + 3 * 365 * DAY


def test_default_config_metric_set_routes_by_type() -> None:
    metric_set = load_config(None).metric_set
    assert isinstance(metric_set, MetricSet)
    assert [m.name for m in metric_set.for_type("donation.made")] == [
        "events",
        "donations",
        "donation_amount",
        "largest_donation",
        "distinct_users",
    ]
    assert [m.name for m in metric_set.for_type("click")] == ["events", "distinct_users"]


def test_load_config_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(default_config_text())
    config = load_config(str(path))
    assert config.source == str(path)
    assert [m.name for m in config.metrics] == [m.name for m in load_config(None).metrics]


def test_load_config_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="STREAMKPI_CONFIG=") as info:
        load_config(str(missing))
    assert str(missing) in str(info.value)


def test_resolution_lookup() -> None:
    config = load_config(None)
    assert config.resolution("1h").size_ms == HOUR
    with pytest.raises(ConfigError, match=r"'5m'.*1m, 1h, 1d"):
        config.resolution("5m")


def test_empty_config_uses_default_resolutions_and_only_the_builtin_metric() -> None:
    config = parse_config("", "empty.toml")
    assert [r.name for r in config.resolutions] == ["1m", "1h", "1d"]
    assert config.metrics == (BUILTIN_EVENTS_METRIC,)


def test_resolutions_are_sorted_by_size() -> None:
    text = """
[[resolutions]]
name = "1d"
dynamodb_retention = "1y"
redis_retention = "7d"
[[resolutions]]
name = "5m"
dynamodb_retention = "1d"
redis_retention = "1h"
"""
    config = parse_config(text, "t.toml")
    assert [(r.name, r.size_ms) for r in config.resolutions] == [("5m", 5 * MINUTE), ("1d", DAY)]
    assert config.rules.max_age_ms == DAY + 365 * DAY


def test_a_metric_with_every_key() -> None:
    text = """
[metrics.big_gbp]
agg = "min"
field = "data.amount"
by = ["data.charityId", "browser"]
where = { "data.currency" = "GBP", "data.test" = false }
types = ["donation.*"]
max_groups = 7
"""
    [_, metric] = parse_config(text, "t.toml").metrics
    assert (metric.name, metric.agg, metric.field, metric.max_groups) == ("big_gbp", "min", "data.amount", 7)
    assert metric.by == ("data.charityId", "browser")
    assert metric.where == (("data.currency", "GBP"), ("data.test", False))
    assert metric.types == ("donation.*",)


def test_strict_types_and_future_skew() -> None:
    rules = parse_config('[validation]\nstrict_types = true\nfuture_skew = "90s"\n', "t.toml").rules
    assert (rules.strict_types, rules.future_skew_ms) == (True, 90_000)


# -- every mistake names its place ---------------------------------------------------------------


def test_bad_toml() -> None:
    message = config_error('[metrics.x]\nagg = "count\n')
    assert "not valid TOML" in message
    assert "line 2" in message


def test_unknown_agg() -> None:
    message = config_error('[metrics.x]\nagg = "median"\n')
    assert "metrics.x.agg" in message
    assert "'median'" in message
    assert "count, distinct, max, min, sum" in message


@pytest.mark.parametrize("agg", ["sum", "min", "max"])
def test_missing_field_for_a_numeric_agg(agg: str) -> None:
    message = config_error(f'[metrics.total]\nagg = "{agg}"\n')
    assert "metrics.total" in message
    assert "field" in message


def test_bad_retention_duration() -> None:
    text = ONE_RESOLUTION + '[[resolutions]]\nname = "1h"\ndynamodb_retention = "90 days"\nredis_retention = "7d"\n'
    message = config_error(text)
    assert "resolutions[1].dynamodb_retention" in message
    assert "'90 days'" in message


def test_bad_resolution_name() -> None:
    message = config_error('[[resolutions]]\nname = "minute"\ndynamodb_retention = "1d"\nredis_retention = "1h"\n')
    assert "resolutions[0].name" in message


def test_duration_that_is_not_a_string() -> None:
    message = config_error('[[resolutions]]\nname = "1m"\ndynamodb_retention = 48\nredis_retention = "6h"\n')
    assert "resolutions[0].dynamodb_retention" in message
    assert "48" in message


def test_zero_duration() -> None:
    message = config_error('[validation]\nfuture_skew = "0s"\n')
    assert "validation.future_skew" in message
    assert "longer than zero" in message


def test_bad_future_skew() -> None:
    assert "validation.future_skew" in config_error('[validation]\nfuture_skew = "soon"\n')


def test_resolution_missing_keys() -> None:
    message = config_error('[[resolutions]]\nname = "1m"\n')
    assert "resolutions[0]" in message
    assert "dynamodb_retention" in message
    assert "redis_retention" in message


def test_resolution_that_is_not_a_table() -> None:
    assert "resolutions[0]" in config_error("resolutions = [1]\n")


def test_empty_resolutions() -> None:
    assert "[[resolutions]]" in config_error("resolutions = []\n")


def test_repeated_resolution_names() -> None:
    assert "repeat" in config_error(ONE_RESOLUTION + ONE_RESOLUTION)


def test_unknown_section() -> None:
    assert "'metric'" in config_error("[metric.x]\nagg = 'count'\n")


def test_the_builtin_metric_name_is_reserved() -> None:
    assert "metrics.events" in config_error('[metrics.events]\nagg = "count"\n')


def test_unknown_metric_key() -> None:
    message = config_error('[metrics.x]\nagg = "count"\ngroup_by = ["a"]\n')
    assert "metrics.x" in message
    assert "group_by" in message


@pytest.mark.parametrize(
    ("line", "place"),
    [
        ('by = "data.currency"', "metrics.x.by"),
        ("by = [1]", "metrics.x.by"),
        ('types = [""]', "metrics.x.types"),
        ('where = "x"', "metrics.x.where"),
        ("max_groups = 0", "metrics.x.max_groups"),
        ('max_groups = "10"', "metrics.x.max_groups"),
        ("max_groups = true", "metrics.x.max_groups"),
        ("field = 5", "metrics.x.field"),
        ("agg = 5", "metrics.x.agg"),
        ('agg = ["sum"]', "metrics.x.agg"),
    ],
)
def test_bad_metric_values(line: str, place: str) -> None:
    assert place in config_error(f"[metrics.x]\n{line}\n")


def test_metric_that_is_not_a_table() -> None:
    assert "metrics.x" in config_error("[metrics]\nx = 1\n")


def test_strict_types_must_be_a_boolean() -> None:
    assert "validation.strict_types" in config_error('[validation]\nstrict_types = "yes"\n')


def test_firehose_sinks_pack_events_unless_told_not_to() -> None:
    config = parse_config(
        '[sinks.archive]\ntype = "firehose"\n[sinks.raw]\ntype = "firehose"\ndelivery_stream = "raw"\npack = false\n'
        '[sinks.fanout]\ntype = "kinesis"\nstream = "s"\n',
        "my.toml",
    )
    assert {s.name: (s.type, s.target, s.pack) for s in config.sinks} == {
        "archive": ("firehose", None, True),
        "raw": ("firehose", "raw", False),
        "fanout": ("kinesis", "s", True),
    }


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('type = "firehose"\npack = "yes"', "sinks.archive.pack: must be true or false, got 'yes'"),
        ('type = "kinesis"\nstream = "s"\npack = false', "unknown key(s) ['pack']; allowed for kinesis: type, stream"),
        (
            'type = "firehose"\nstream = "s"',
            "unknown key(s) ['stream']; allowed for firehose: type, delivery_stream, pack "
            "(a firehose sink names its target with delivery_stream)",
        ),
    ],
)
def test_sink_keys_are_checked_per_type(table: str, expected: str) -> None:
    assert expected in config_error(f"[sinks.archive]\n{table}\n")
