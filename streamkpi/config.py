"""The configuration file (TOML): windows, validation rules and metric definitions.

Parsed and checked once at start; every problem is reported with its place in the file and the fix.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from aggregations.metrics import AGGREGATORS, BUILTIN_EVENTS_METRIC, MetricDef, MetricSet
from aggregations.windows import Resolution, parse_duration_ms
from consumer.validate import Rules


class ConfigError(ValueError):
    """The configuration file has a mistake; the message names where and what to write instead."""


@dataclass(frozen=True)
class AppConfig:
    resolutions: tuple[Resolution, ...]
    metrics: tuple[MetricDef, ...]
    rules: Rules
    source: str

    @property
    def metric_set(self) -> MetricSet:
        return MetricSet(self.metrics)

    def resolution(self, name: str) -> Resolution:
        for r in self.resolutions:
            if r.name == name:
                return r
        raise ConfigError(f"unknown resolution {name!r}; configured: {', '.join(r.name for r in self.resolutions)}")


def default_config_text() -> str:
    return resources.files("streamkpi").joinpath("default_config.toml").read_text()


def load_config(path: str | None) -> AppConfig:
    if path is None:
        return parse_config(default_config_text(), "built-in default config")
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read STREAMKPI_CONFIG={path}: {exc.strerror}; fix the path or unset it.") from None
    return parse_config(text, path)


def parse_config(text: str, source: str) -> AppConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    unknown = set(doc) - {"resolutions", "validation", "metrics", "schemas", "routes"}
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {sorted(unknown)}; expected resolutions, validation, metrics")
    resolutions = _resolutions(doc.get("resolutions"), source)
    metrics = (BUILTIN_EVENTS_METRIC, *_metrics(doc.get("metrics", {}), source))
    rules = _rules(doc.get("validation", {}), resolutions, source)
    return AppConfig(resolutions, metrics, rules, source)


def _duration(value: Any, where: str) -> int:
    if not isinstance(value, str):
        raise ConfigError(f'{where}: write a duration as a string such as "48h", not {value!r}')
    try:
        return parse_duration_ms(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _resolutions(items: Any, source: str) -> tuple[Resolution, ...]:
    if items is None:
        from aggregations.windows import DEFAULT_RESOLUTIONS

        return DEFAULT_RESOLUTIONS
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{source}: [[resolutions]] must be a non-empty list of tables")
    out = []
    for i, item in enumerate(items):
        where = f"{source}: resolutions[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: must be a table (write [[resolutions]] with name and retentions)")
        missing = {"name", "dynamodb_retention", "redis_retention"} - set(item)
        if missing:
            raise ConfigError(f"{where}: missing {sorted(missing)}")
        name = item["name"]
        out.append(
            Resolution(
                name=name,
                size_ms=_duration(name, f"{where}.name"),
                dynamodb_retention_ms=_duration(item["dynamodb_retention"], f"{where}.dynamodb_retention"),
                redis_retention_ms=_duration(item["redis_retention"], f"{where}.redis_retention"),
            )
        )
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: resolution names repeat: {names}")
    return tuple(sorted(out, key=lambda r: r.size_ms))


_METRIC_KEYS = {"agg", "field", "by", "where", "types", "max_groups"}


def _metrics(table: Any, source: str) -> list[MetricDef]:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [metrics] must be a table of [metrics.<name>] tables")
    out = []
    for name, spec in table.items():
        where = f"{source}: metrics.{name}"
        if name == BUILTIN_EVENTS_METRIC.name:
            raise ConfigError(f"{where}: 'events' is built in (count by eventType); choose another name")
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: must be a table")
        unknown = set(spec) - _METRIC_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_METRIC_KEYS)}")
        agg = spec.get("agg", "count")
        if not isinstance(agg, str) or agg not in AGGREGATORS:
            raise ConfigError(f"{where}.agg: {agg!r} is not one of {', '.join(sorted(AGGREGATORS))}")
        field = spec.get("field")
        if field is not None and not isinstance(field, str):
            raise ConfigError(f'{where}.field: write a dotted path as a string such as "data.amount"')
        if AGGREGATORS[agg].needs_field and not field:
            raise ConfigError(f'{where}: agg = {agg!r} needs field = "dotted.path" of a number')
        by = spec.get("by", [])
        types = spec.get("types", ["*"])
        for key, value in (("by", by), ("types", types)):
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"{where}.{key}: must be a list of non-empty strings")
        where_filters = spec.get("where", {})
        if not isinstance(where_filters, dict):
            raise ConfigError(f'{where}.where: must be a table of "dotted.path" = value')
        max_groups = spec.get("max_groups", 1000)
        if not isinstance(max_groups, int) or isinstance(max_groups, bool) or max_groups < 1:
            raise ConfigError(f"{where}.max_groups: must be a whole number of at least 1")
        out.append(
            MetricDef(
                name=name,
                agg=agg,
                field=field,
                by=tuple(by),
                where=tuple(sorted(where_filters.items())),
                types=tuple(types),
                max_groups=max_groups,
            )
        )
    return out


def _rules(table: Any, resolutions: tuple[Resolution, ...], source: str) -> Rules:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [validation] must be a table")
    skew = _duration(table.get("future_skew", "5m"), f"{source}: validation.future_skew")
    strict = table.get("strict_types", False)
    if not isinstance(strict, bool):
        raise ConfigError(f"{source}: validation.strict_types must be true or false")
    # An event older than every resolution keeps can update nothing: it is `too_old`.
    max_age = max(r.size_ms + r.dynamodb_retention_ms for r in resolutions)
    return Rules(max_age_ms=max_age, future_skew_ms=skew, strict_types=strict)
