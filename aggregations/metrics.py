"""Metric definitions and aggregators: tiny pure classes (initialize / add / merge / encode).

A metric maps each event it applies to onto a group (its `by` dimensions) and folds a value into
that group's aggregate. Values are exact: sums, minima and maxima are Decimals built from the JSON
number's shortest repr, so 0.1 + 0.2 is 0.3 and the order of addition cannot change a total.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, InvalidOperation
from typing import Any

from aggregations import hll

OTHER_GROUP = "__other__"  # groups past max_groups
ALL_GROUP = "all"  # the one group of a metric without `by`
_MISSING = object()
# Unrounded addition: the default context keeps 28 digits, so 1e28 + 1 - 1e28 would depend on the order.
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


class Aggregator:
    """How one kind of aggregate starts, grows, merges and is stored (JSON-able)."""

    name = ""
    needs_field = False
    # The longest value `encode` writes, as JSON: what a window's byte budget charges per group.
    max_encoded_bytes = 256

    def initial(self) -> Any:
        raise NotImplementedError

    def add(self, current: Any, value: Any) -> Any:
        raise NotImplementedError

    def merge(self, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def encode(self, value: Any) -> Any:
        return value

    def decode(self, raw: Any) -> Any:
        return raw

    def present(self, value: Any) -> Any:
        """The value as a query shows it (a JSON number)."""
        return value


class CountAggregator(Aggregator):
    name = "count"
    max_encoded_bytes = 24

    def initial(self) -> int:
        return 0

    def add(self, current: int, value: Any) -> int:
        return current + 1

    def merge(self, a: int, b: int) -> int:
        return a + b


class _DecimalAggregator(Aggregator):
    needs_field = True
    # Validation keeps every number within ±1e21 and 0 or at least 1e-20 in size (consumer/bounds.py):
    # a sum of them has at most ~70 digits.
    max_encoded_bytes = 96

    def encode(self, value: Decimal | None) -> str | None:
        return None if value is None else str(value)

    def decode(self, raw: str | None) -> Decimal | None:
        return None if raw is None else Decimal(raw)

    def present(self, value: Decimal | None) -> int | float | None:
        if value is None:
            return None
        return int(value) if value == value.to_integral_value() else float(value)


class SumAggregator(_DecimalAggregator):
    name = "sum"

    def initial(self) -> Decimal:
        return Decimal(0)

    def add(self, current: Decimal, value: Decimal) -> Decimal:
        return _EXACT.add(current, value)

    def merge(self, a: Decimal, b: Decimal) -> Decimal:
        return _EXACT.add(a, b)


class MinAggregator(_DecimalAggregator):
    name = "min"

    def initial(self) -> None:
        return None

    def add(self, current: Decimal | None, value: Decimal) -> Decimal:
        return value if current is None or value < current else current

    def merge(self, a: Decimal | None, b: Decimal | None) -> Decimal | None:
        if a is None or b is None:
            return a if b is None else b
        return min(a, b)


class MaxAggregator(_DecimalAggregator):
    name = "max"

    def initial(self) -> None:
        return None

    def add(self, current: Decimal | None, value: Decimal) -> Decimal:
        return value if current is None or value > current else current

    def merge(self, a: Decimal | None, b: Decimal | None) -> Decimal | None:
        if a is None or b is None:
            return a if b is None else b
        return max(a, b)


class DistinctAggregator(Aggregator):
    """Approximate distinct count of a field's values (HyperLogLog registers, see hll.py)."""

    name = "distinct"
    needs_field = True
    max_encoded_bytes = 5_600  # base64 of zlib of 4,096 registers, incompressible at worst

    def initial(self) -> bytearray:
        return hll.new()

    def add(self, current: bytearray, value: Any) -> bytearray:
        return hll.add(current, value)

    def merge(self, a: bytearray, b: bytearray) -> bytearray:
        return hll.merge(a, b)

    def encode(self, value: bytearray) -> str:
        return hll.encode(value)

    def decode(self, raw: str) -> bytearray:
        return hll.decode(raw)

    def present(self, value: bytearray | None) -> int:
        return 0 if value is None else hll.estimate(value)


AGGREGATORS: dict[str, Aggregator] = {
    a.name: a for a in (CountAggregator(), SumAggregator(), MinAggregator(), MaxAggregator(), DistinctAggregator())
}


def lookup(event: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """Value at a dotted path, or _MISSING."""
    value: Any = event
    for part in path:
        if type(value) is not dict and not isinstance(value, Mapping):  # a dict, nearly always: no ABC check
            return _MISSING
        value = value.get(part, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def to_decimal(value: Any) -> Decimal | None:
    """A JSON number as an exact Decimal of its shortest repr; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        result = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        return None
    return result if result.is_finite() else None


def _group_part(value: Any) -> str:
    if type(value) is str:
        return value  # what str() gives back
    if value is _MISSING or value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class MetricDef:
    """One metric: which events it counts, how it groups them, and what it computes."""

    name: str
    agg: str = "count"
    field: str | None = None
    by: tuple[str, ...] = ()
    where: tuple[tuple[str, Any], ...] = ()
    types: tuple[str, ...] = ("*",)
    max_groups: int = 1000
    _by_paths: tuple[tuple[str, ...], ...] = dataclasses.field(init=False, repr=False, compare=False)
    _where_paths: tuple[tuple[tuple[str, ...], Any], ...] = dataclasses.field(init=False, repr=False, compare=False)
    _field_path: tuple[str, ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_paths", tuple(tuple(p.split(".")) for p in self.by))
        object.__setattr__(self, "_where_paths", tuple((tuple(k.split(".")), v) for k, v in self.where))
        object.__setattr__(self, "_field_path", tuple(self.field.split(".")) if self.field else ())

    @property
    def aggregator(self) -> Aggregator:
        return AGGREGATORS[self.agg]

    def applies_to_type(self, event_type: str) -> bool:
        return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in self.types)

    def group_and_value(self, event: Mapping[str, Any]) -> tuple[str, Any] | None:
        """(group, value to fold) for an event of a matching type, or None if the event does not count."""
        for path, expected in self._where_paths:
            if lookup(event, path) != expected:
                return None
        value: Any = None
        if self._field_path:
            raw = lookup(event, self._field_path)
            value = raw if self.agg == "distinct" else to_decimal(raw)
            if value is None or value is _MISSING:
                return None
        by_paths = self._by_paths
        if not by_paths:
            return ALL_GROUP, value
        if len(by_paths) == 1:
            return _group_part(lookup(event, by_paths[0])), value
        return "|".join([_group_part(lookup(event, p)) for p in by_paths]), value


def plain_key(metric: MetricDef) -> tuple[str, str] | None:
    """The one top-level field that alone decides a metric without `where`: ("group", key) when the
    metric has no field and groups by that key, ("value", key) for a distinct of that key without `by`.
    The hot path reads that key itself instead of calling group_and_value; None for other shapes."""
    if metric._where_paths:
        return None
    by_paths, field_path = metric._by_paths, metric._field_path
    if not field_path and len(by_paths) == 1 and len(by_paths[0]) == 1:
        return "group", by_paths[0][0]
    if metric.agg == "distinct" and not by_paths and len(field_path) == 1:
        return "value", field_path[0]
    return None


# For hot loops that inline group_and_value: the group name of a field's value, and "field absent".
group_part = _group_part
MISSING = _MISSING


BUILTIN_EVENTS_METRIC = MetricDef(name="events", agg="count", by=("eventType",), max_groups=1000)


class MetricSet:
    """The configured metrics with a per-eventType cache of which ones apply (the hot path)."""

    def __init__(self, metrics: tuple[MetricDef, ...]) -> None:
        names = [m.name for m in metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"metric names must be unique: {names}")
        self.metrics = metrics
        self.by_name = {m.name: m for m in metrics}
        self._for_type: dict[str, tuple[MetricDef, ...]] = {}

    def for_type(self, event_type: str) -> tuple[MetricDef, ...]:
        found = self._for_type.get(event_type)
        if found is None:
            found = tuple(m for m in self.metrics if m.applies_to_type(event_type))
            if len(self._for_type) < 100_000:
                self._for_type[event_type] = found
        return found
