"""The configuration file (TOML): windows, validation rules, per-type JSON Schemas, metric definitions,
forward sinks and the routing table from event types to metrics and sinks.

Parsed and checked once at start; every problem is reported with its place in the file and the fix.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

from aggregations.metrics import AGGREGATORS, BUILTIN_EVENTS_METRIC, MetricDef, MetricSet
from aggregations.windows import Resolution, parse_duration_ms
from consumer.bounds import DEFAULT_LIMITS, Limits, ValueChecks
from consumer.forwarding import sink_terms
from consumer.pipeline import Pipeline
from consumer.redaction import (
    DEFAULT_KEY_ENV,
    HASH_PREFIX,
    HASHED_CHARS,
    MASK,
    PROTECTED_FIELDS,
    UNPARSED_CHOICES,
    RedactionSpec,
    conflicts,
    overlaps,
    split_path,
)
from consumer.routing import Route, Router, with_routed_types
from consumer.validate import Rules
from streamkpi.errors import ConfigError

SINK_TYPES = ("firehose", "kinesis", "sqs")
_TARGET_KEYS = {"firehose": "delivery_stream", "kinesis": "stream", "sqs": "queue"}  # what names the target
DISTINCT_MAX_GROUPS = 20


@dataclass(frozen=True)
class SinkDef:
    """A forward sink. `target` is the delivery stream / stream name / queue name or URL; None means the
    settings' default (firehose only)."""

    name: str
    type: str
    target: str | None = None
    pack: bool = True  # firehose: many events per Firehose record


@dataclass(frozen=True)
class AppConfig:
    """The config file, read and checked. `pipeline` is what the workers run by (with the settings' limits):
    built here, once, and shared, so the caches inside it (per event type: forward plan, metrics, rules) fill
    once."""

    pipeline: Pipeline
    source: str
    sinks: tuple[SinkDef, ...] = ()
    schemas: dict[str, Any] = field(default_factory=dict)  # eventType -> JSON Schema (as written)
    dashboard: dict[str, Any] = field(default_factory=dict)  # [dashboard] as written: dashboard.panels checks it
    # [redaction], checked; the composition root adds its Redactor (with the key) to the pipeline.
    redaction: RedactionSpec | None = None

    @property
    def resolutions(self) -> tuple[Resolution, ...]:
        return self.pipeline.resolutions

    @property
    def rules(self) -> Rules:
        return self.pipeline.rules

    @property
    def limits(self) -> Limits:
        """The bounds on one record's cost (the STREAMKPI_MAX_* settings)."""
        return self.pipeline.limits

    @property
    def metric_set(self) -> MetricSet:
        return self.pipeline.metrics

    @property
    def metrics(self) -> tuple[MetricDef, ...]:
        return self.pipeline.metrics.metrics

    def resolution(self, name: str) -> Resolution:
        for r in self.resolutions:
            if r.name == name:
                return r
        raise ConfigError(f"unknown resolution {name!r}; configured: {', '.join(r.name for r in self.resolutions)}")


def default_config_text() -> str:
    return resources.files("streamkpi").joinpath("default_config.toml").read_text()


def load_config(path: str | None, limits: Limits = DEFAULT_LIMITS) -> AppConfig:
    if path is None:
        return parse_config(default_config_text(), "built-in default config", limits)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read STREAMKPI_CONFIG={path}: {exc.strerror}; fix the path or unset it.") from None
    return parse_config(text, path, limits)


def parse_config(text: str, source: str, limits: Limits = DEFAULT_LIMITS) -> AppConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    sections = {"resolutions", "validation", "metrics", "schemas", "sinks", "routes", "dashboard", "redaction"}
    unknown = set(doc) - sections
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {sorted(unknown)}; expected {', '.join(sorted(sections))}")
    resolutions = _resolutions(doc.get("resolutions"), source)
    sinks = _sinks(doc.get("sinks", {}), source)
    metric_defs = _metrics(doc.get("metrics", {}), source)
    routes = _routes(doc.get("routes", []), {s.name for s in sinks}, {m.name for m in metric_defs}, source)
    metric_defs = with_routed_types(metric_defs, routes)
    metrics = (BUILTIN_EVENTS_METRIC, *metric_defs)
    schemas = _schemas(doc.get("schemas", {}), source)
    rules = _rules(doc.get("validation", {}), resolutions, source)
    # A catch-all "*" names no type in particular: it does not make every type known.
    known_patterns = ({p for r in routes for p in r.types} | {p for m in metric_defs for p in m.types}) - {"*"}
    rules = Rules(
        max_age_ms=rules.max_age_ms,
        future_skew_ms=rules.future_skew_ms,
        strict_types=rules.strict_types,
        known_types=frozenset(schemas),
        known_patterns=tuple(sorted(known_patterns)),
        schemas={t: _compile(t, schema, source) for t, schema in schemas.items()},
        values=_value_checks(metrics, limits),
        max_value_chars=limits.max_value_chars,
    )
    router = Router(routes, {sink.name: sink_terms(sink.type, sink.target) for sink in sinks})
    redaction = _redaction(doc.get("redaction"), metric_defs, schemas, limits, source)
    dashboard = doc.get("dashboard", {})
    if not isinstance(dashboard, dict):
        raise ConfigError(f"{source}: [dashboard] must be a table (with [[dashboard.panels]])")
    return AppConfig(
        Pipeline(rules, limits, MetricSet(metrics), resolutions, router), source, sinks, schemas, dashboard, redaction
    )


def _value_checks(metrics: tuple[MetricDef, ...], limits: Limits) -> ValueChecks:
    """What validation bounds, per metric: the values it groups by or counts as distinct (their length) and
    the numbers it sums, minimises or maximises (their range). `eventType` is bounded by its own rule."""
    entries = []
    for metric in metrics:
        groups = [tuple(path.split(".")) for path in metric.by]
        if metric.agg == "distinct" and metric.field:
            groups.append(tuple(metric.field.split(".")))
        if limits.max_value_chars >= 128:
            groups = [path for path in groups if path != ("eventType",)]
        numbers = [tuple(metric.field.split("."))] if metric.field and metric.agg in ("sum", "min", "max") else []
        if groups or numbers:
            entries.append((metric.types, tuple(groups), tuple(numbers)))
    return ValueChecks(tuple(entries), limits.max_value_chars)


def _sinks(table: Any, source: str) -> tuple[SinkDef, ...]:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [sinks] must be a table of [sinks.<name>] tables")
    out = []
    for name, spec in table.items():
        where = f"{source}: sinks.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: must be a table with type = {' or '.join(map(repr, SINK_TYPES))}")
        kind = spec.get("type")
        if kind not in SINK_TYPES:
            raise ConfigError(f"{where}.type: {kind!r} is not one of {', '.join(SINK_TYPES)}")
        key = _TARGET_KEYS[kind]
        allowed = ("type", key, "pack") if kind == "firehose" else ("type", key)
        unknown = set(spec) - set(allowed)
        if unknown:
            hint = f" (a {kind} sink names its target with {key})" if set(_TARGET_KEYS.values()) & unknown else ""
            raise ConfigError(
                f"{where}: unknown key(s) {sorted(unknown)}; allowed for {kind}: {', '.join(allowed)}{hint}"
            )
        pack = spec.get("pack", True)
        if not isinstance(pack, bool):
            raise ConfigError(f"{where}.pack: must be true or false, got {pack!r}")
        target = spec.get(key)
        if target is not None and (not isinstance(target, str) or not target):
            raise ConfigError(f"{where}.{key}: must be a non-empty name")
        if kind == "kinesis" and target is None:
            raise ConfigError(f'{where}: a kinesis sink needs stream = "<stream name>"')
        if kind == "sqs" and target is None:
            raise ConfigError(f'{where}: an sqs sink needs queue = "<queue name or URL>"')
        out.append(SinkDef(name, kind, target, pack))
    return tuple(out)


def _routes(items: Any, sinks: set[str], metrics: set[str], source: str) -> tuple[Route, ...]:
    if not isinstance(items, list):
        raise ConfigError(f"{source}: [[routes]] must be a list of tables")
    out = []
    for i, item in enumerate(items):
        where = f"{source}: routes[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: must be a table with types and sinks and/or metrics")
        unknown = set(item) - {"types", "metrics", "sinks"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: types, metrics, sinks")
        values = {}
        for key in ("types", "metrics", "sinks"):
            value = item.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"{where}.{key}: must be a list of non-empty strings")
            values[key] = tuple(value)
        if not values["types"]:
            raise ConfigError(f'{where}.types: name at least one event type or pattern such as "donation.*"')
        for key, known in (("sinks", sinks), ("metrics", metrics)):
            missing = set(values[key]) - known
            if missing:
                raise ConfigError(f"{where}.{key}: {sorted(missing)} not defined; defined: {sorted(known)}")
        out.append(Route(values["types"], values["metrics"], values["sinks"]))
    return tuple(out)


def _schemas(table: Any, source: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f'{source}: [schemas] must be a table of [schemas."<eventType>"] JSON Schemas')
    out = {}
    base = Path(source).parent if Path(source).exists() else Path.cwd()
    for event_type, schema in table.items():
        where = f'{source}: schemas."{event_type}"'
        if not isinstance(schema, dict):
            raise ConfigError(f'{where}: must be a table (a JSON Schema) or {{ file = "schema.json" }}')
        if set(schema) == {"file"}:
            path = base / str(schema["file"])
            try:
                schema = orjson.loads(path.read_bytes())
            except OSError as exc:
                raise ConfigError(f"{where}.file: cannot read {path}: {exc.strerror}") from None
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"{where}.file: {path} is not JSON: {exc}") from None
        out[event_type] = schema
    return out


def _compile(event_type: str, schema: Any, source: str) -> Any:
    try:
        return fastjsonschema.compile(schema)
    except fastjsonschema.JsonSchemaDefinitionException as exc:
        raise ConfigError(f'{source}: schemas."{event_type}" is not a valid JSON Schema: {exc}') from None


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
        types = spec.get("types", [])  # none given: routes decide, else every type (see with_routed_types)
        for key, value in (("by", by), ("types", types)):
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"{where}.{key}: must be a list of non-empty strings")
        where_filters = spec.get("where", {})
        if not isinstance(where_filters, dict):
            raise ConfigError(f'{where}.where: must be a table of "dotted.path" = value')
        max_groups = spec.get("max_groups", DISTINCT_MAX_GROUPS if agg == "distinct" else 1000)
        if not isinstance(max_groups, int) or isinstance(max_groups, bool) or max_groups < 1:
            raise ConfigError(f"{where}.max_groups: must be a whole number of at least 1")
        if agg == "distinct" and max_groups > DISTINCT_MAX_GROUPS:
            # Each group keeps 4 KiB of HyperLogLog registers and a DynamoDB item holds 400 KB.
            raise ConfigError(f"{where}.max_groups: a distinct metric keeps at most {DISTINCT_MAX_GROUPS} groups")
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


_REDACTION_KEYS = ("drop", "mask", "hash", "key_env", "unparsed")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _redaction(
    table: Any, metrics: Sequence[MetricDef], schemas: dict[str, Any], limits: Limits, source: str
) -> RedactionSpec | None:
    """The [redaction] table, checked against the metrics (none may read a dropped or masked field) and the
    schemas (a redriven or replayed event, redacted already, is validated again)."""
    if table is None:
        return None
    where = f"{source}: redaction"
    if not isinstance(table, dict):
        raise ConfigError(f'{source}: [redaction] must be a table such as drop = ["data.email"], hash = ["userId"]')
    unknown = set(table) - set(_REDACTION_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(_REDACTION_KEYS)}")
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("drop", "mask", "hash"):
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f'{where}.{key}: must be a list of dotted paths such as "data.email"')
        for path in value:
            if not path or not all(split_path(path)):
                raise ConfigError(f"{where}.{key}: {path!r} is not a dotted path (field names joined by dots)")
            if split_path(path)[0] in PROTECTED_FIELDS:
                raise ConfigError(
                    f"{where}.{key}: {path!r}: {' and '.join(PROTECTED_FIELDS)} cannot be redacted (validation, "
                    "routing and the windows read them, again after a redrive or a replay)"
                )
        if key != "drop" and "data" in value:
            raise ConfigError(
                f"{where}.{key}: 'data' must stay an object (validation checks it, again after a redrive or a "
                "replay): name the fields inside it, such as 'data.email', or drop it"
            )
        if len(set(value)) != len(value):
            raise ConfigError(f"{where}.{key}: names a path twice: {value}")
        lists[key] = tuple(value)
    named = [(kind, path) for kind, paths in lists.items() for path in paths]
    for i, (kind, path) in enumerate(named):
        for other_kind, other in named[i + 1 :]:
            if path == other:
                raise ConfigError(f"{where}: {path!r} is in both {kind} and {other_kind}; name it in one list")
            if overlaps(split_path(path), split_path(other)):
                raise ConfigError(
                    f"{where}: {kind} {path!r} and {other_kind} {other!r} overlap (one lies inside the other); "
                    "name one of them"
                )
    key_env = table.get("key_env", DEFAULT_KEY_ENV)
    if not isinstance(key_env, str) or not _ENV_NAME.fullmatch(key_env):
        raise ConfigError(f"{where}.key_env: must name an environment variable, such as {DEFAULT_KEY_ENV!r}")
    unparsed = table.get("unparsed", "drop")
    if unparsed not in UNPARSED_CHOICES:
        raise ConfigError(f"{where}.unparsed: {unparsed!r} is not one of {', '.join(map(repr, UNPARSED_CHOICES))}")
    spec = RedactionSpec(lists["drop"], lists["mask"], lists["hash"], key_env, unparsed)
    metric_paths = [
        (m.name, key, path)
        for m in metrics
        for key, paths in (("field", [m.field] if m.field else []), ("by", m.by), ("where", [k for k, _ in m.where]))
        for path in paths
    ]
    problems = conflicts(spec, metric_paths)
    problems += [  # a hash is no number: the metric would silently stay empty
        f"metrics.{m.name}.field names the hashed path {m.field!r}, which a {m.agg} cannot compute on (a hash is "
        "text); only a distinct metric counts hashes"
        for m in metrics
        if m.field in spec.hash and m.agg != "distinct"
    ]
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    counted = [f"metrics.{name}" for name, key, path in metric_paths if key != "where" and path in spec.hash]
    if counted and limits.max_value_chars < HASHED_CHARS:
        raise ConfigError(
            f"{where}: {', '.join(counted)} count or group hashed values of {HASHED_CHARS} characters, longer than "
            f"STREAMKPI_MAX_VALUE_CHARS={limits.max_value_chars}: a redriven or replayed event would be "
            f"value_too_long; set it to at least {HASHED_CHARS}"
        )
    for event_type, schema in schemas.items():
        for kind, path in spec.paths:
            refusal = _schema_refuses(schema, split_path(path), kind)
            if refusal:
                raise ConfigError(
                    f'{where}.{kind}: {path!r}: schemas."{event_type}" {refusal}, so a redacted event (redriven or '
                    "replayed) would fail it; loosen the schema or redact another way"
                )
    return spec


def _schema_refuses(schema: Any, path: tuple[str, ...], kind: str) -> str | None:
    """Why the JSON Schema would refuse the event with `path` redacted (`kind`), as far as its `properties`,
    `required` and `items` tell (a `$ref` or a combinator is not followed), else None."""
    node = schema
    for i, part in enumerate(path):
        while isinstance(node, dict) and "properties" not in node and isinstance(node.get("items"), dict):
            node = node["items"]  # a path passes through arrays
        if not isinstance(node, dict):
            return None
        properties = node.get("properties")
        target = properties.get(part) if isinstance(properties, dict) else None
        if i < len(path) - 1:
            node = target
            continue
        if kind == "drop":
            required = node.get("required")
            return "requires it" if isinstance(required, list) and part in required else None
        if not isinstance(target, dict):
            return None
        sample = MASK if kind == "mask" else HASH_PREFIX + "0" * 64
        try:
            check = fastjsonschema.compile(target)
        except Exception:  # a $ref to elsewhere in the schema, or such: not judged here
            return None
        try:
            check(sample)
        except fastjsonschema.JsonSchemaValueException as exc:
            shown = repr(MASK) if kind == "mask" else f"'{HASH_PREFIX}<64 hex digits>'"
            said = exc.message.removeprefix("data")  # (fastjsonschema calls the value it checks "data")
            return f"does not accept {shown} as {'.'.join(path)} ({'.'.join(path)}{said})"
    return None
