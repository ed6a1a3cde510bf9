"""An independent reference for every metric, from the valid events as sent and the config file.

The chaos test compares what the worker stored with this. Nothing here comes from the product's
aggregation code: the TOML file is read with tomllib, window math, grouping, filtering and the exact
Decimal arithmetic are written out again below. The one shared piece is `aggregations.hll`, which *defines*
the distinct estimator (registers of a 64-bit hash, the classic estimate): the registers of a window and
group are built here from the distinct values seen, and `hll.estimate` turns them into the number.

Input: the NDJSON file `streamkpi generate --events-out FILE` writes, one line per valid event,
`{"id": "<shard>/<seq>/0/<index>", "event_ms": <event time>, "event": <the object as sent>}`. Numbers are
read as Decimals straight from the JSON text (`25.00` stays 25.00), so no float rounding is involved.

Output: `Reference.query(metric, resolution, from_ms, to_ms)` has the shape of
`streamkpi query --format json` (and `aggregations.query.read_metric`): every window of the range, zeros
filled, with its groups and total (for `distinct`, the estimate of the union of every group's values).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from aggregations import hll

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "streamkpi" / "default_config.toml"
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000, "y": 365 * 86_400_000}
_MISSING = object()
_WIDE = Context(prec=10_000)  # far more digits than any sum here needs: additions are exact
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def duration_ms(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([smhdwy])\s*", text)
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


@dataclass(frozen=True)
class Metric:
    name: str
    agg: str  # count | sum | min | max | distinct
    field: str | None
    by: tuple[str, ...]
    where: tuple[tuple[str, Any], ...]
    types: tuple[str, ...]
    max_groups: int


EVENTS_METRIC = Metric("events", "count", None, ("eventType",), (), ("*",), 1000)


@dataclass(frozen=True)
class Config:
    resolutions: dict[str, int]  # name -> window size in ms
    metrics: dict[str, Metric]


def read_config(text: str) -> Config:
    """The parts of the config file that decide the numbers: resolutions, metrics, routes naming metrics."""
    doc = tomllib.loads(text)
    resolutions = {r["name"]: duration_ms(r["name"]) for r in doc.get("resolutions", [])} or {
        "1m": 60_000,
        "1h": 3_600_000,
        "1d": 86_400_000,
    }
    routed: dict[str, list[str]] = {}
    for route in doc.get("routes", []):
        for name in route.get("metrics", []):
            routed.setdefault(name, []).extend(route["types"])
    metrics = {EVENTS_METRIC.name: EVENTS_METRIC}
    for name, spec in doc.get("metrics", {}).items():
        agg = spec.get("agg", "count")
        types = tuple(dict.fromkeys([*spec.get("types", []), *routed.get(name, [])])) or ("*",)
        metrics[name] = Metric(
            name=name,
            agg=agg,
            field=spec.get("field"),
            by=tuple(spec.get("by", [])),
            where=tuple(sorted(spec.get("where", {}).items())),
            types=types,
            max_groups=spec.get("max_groups", 20 if agg == "distinct" else 1000),
        )
    return Config(resolutions, metrics)


def _at(event: Mapping[str, Any], dotted: str) -> Any:
    value: Any = event
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _json_value(value: Any) -> Any:
    """A value as a JSON parser with binary floats reads it (as the worker does): Decimal -> float."""
    return float(value) if isinstance(value, Decimal) else value


def _group_name(value: Any) -> str:
    if value is _MISSING or value is None:
        return "(none)"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return str(float(value))  # a JSON float prints as a float would
    return str(value)


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    return None


def _present(value: Decimal | None) -> int | float | None:
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else float(value)


def timestamp_ms(value: Any) -> int:
    """The event time a timestamp spells (ISO-8601 with an offset, epoch seconds or milliseconds)."""
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        assert parsed.tzinfo is not None, value
        return (parsed - _EPOCH) // timedelta(milliseconds=1)
    number = _number(value)
    assert number is not None, value
    millis = number * 1000 if abs(number) < 100_000_000_000 else number
    return int(millis.to_integral_value("ROUND_FLOOR"))


@dataclass
class _Cell:
    """One (metric, resolution, window, group)."""

    count: int = 0
    total: Decimal = Decimal(0)
    low: Decimal | None = None
    high: Decimal | None = None
    values: set[Any] = field(default_factory=set)


def _registers(values: Iterable[Any]) -> bytearray:
    registers = hll.new()
    for value in values:
        hll.add(registers, value)
    return registers


@dataclass(frozen=True)
class ValidEvent:
    id: str
    event_ms: int
    event: dict[str, Any]


def read_events(path: Path) -> list[ValidEvent]:
    """The `--events-out` file; checks that ids are unique and each timestamp spells its event time."""
    out = []
    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line, parse_float=Decimal)
            event = row["event"]
            assert timestamp_ms(event["timestamp"]) == row["event_ms"], row
            out.append(ValidEvent(row["id"], row["event_ms"], event))
    assert len({e.id for e in out}) == len(out), "an identity repeats in the events file"
    return out


class Reference:
    def __init__(self, config: Config, events: Iterable[ValidEvent]) -> None:
        self.config = config
        # (metric, resolution) -> window start -> group -> cell
        self.cells: dict[tuple[str, str], dict[int, dict[str, _Cell]]] = {}
        self.events = 0
        for valid in events:
            self._add(valid)
        for (metric, resolution), windows in self.cells.items():
            limit = config.metrics[metric].max_groups
            for start, groups in windows.items():
                # Overflow into __other__ is not emulated: the test's volume must stay below every limit.
                assert len(groups) <= limit, f"{metric} {resolution} {start}: {len(groups)} groups > {limit}"

    def _add(self, valid: ValidEvent) -> None:
        self.events += 1
        event = valid.event
        event_type = event["eventType"]
        for metric in self.config.metrics.values():
            if not any(fnmatchcase(event_type, pattern) for pattern in metric.types):
                continue
            if any(_json_value(_at(event, path)) != expected for path, expected in metric.where):
                continue
            value: Any = None
            if metric.field is not None:
                raw = _at(event, metric.field)
                if metric.agg == "distinct":
                    if raw is _MISSING or raw is None:
                        continue
                    value = _json_value(raw)
                else:
                    value = _number(raw)
                    if value is None:
                        continue
            group = "|".join(_group_name(_at(event, path)) for path in metric.by) if metric.by else "all"
            for resolution, size in self.config.resolutions.items():
                start = valid.event_ms - valid.event_ms % size
                windows = self.cells.setdefault((metric.name, resolution), {})
                cell = windows.setdefault(start, {}).setdefault(group, _Cell())
                cell.count += 1
                if metric.agg == "sum":
                    cell.total = _WIDE.add(cell.total, value)
                elif metric.agg in ("min", "max"):
                    cell.low = value if cell.low is None else min(cell.low, value)
                    cell.high = value if cell.high is None else max(cell.high, value)
                elif metric.agg == "distinct":
                    cell.values.add(value)

    # -- reading --------------------------------------------------------------------------------------

    def starts(self, metric: str, resolution: str) -> list[int]:
        """The windows that hold at least one event of the metric."""
        return sorted(self.cells.get((metric, resolution), {}))

    def span(self, resolution: str) -> tuple[int, int]:
        """[first window start, last window end) over every metric at this resolution."""
        size = self.config.resolutions[resolution]
        starts = [s for (_m, r), windows in self.cells.items() if r == resolution for s in windows]
        return min(starts), max(starts) + size

    def _value(self, agg: str, cells: list[_Cell]) -> Any:
        if agg == "count":
            return sum(c.count for c in cells)
        if agg == "sum":
            total = Decimal(0)
            for cell in cells:
                total = _WIDE.add(total, cell.total)
            return _present(total)
        if agg == "min":
            lows = [c.low for c in cells if c.low is not None]
            return _present(min(lows)) if lows else None
        if agg == "max":
            highs = [c.high for c in cells if c.high is not None]
            return _present(max(highs)) if highs else None
        if agg == "distinct":
            return hll.estimate(_registers(v for c in cells for v in c.values))
        raise ValueError(f"unknown agg {agg!r}")

    def window(self, metric: str, resolution: str, start: int, agg: str | None = None) -> dict[str, Any]:
        agg = agg or self.config.metrics[metric].agg
        groups = self.cells.get((metric, resolution), {}).get(start, {})
        return {
            "start": datetime.fromtimestamp(start / 1000, UTC).isoformat().replace("+00:00", "Z"),
            "start_ms": start,
            "groups": {group: self._value(agg, [cell]) for group, cell in groups.items()},
            "total": self._value(agg, list(groups.values())),
        }

    def query(self, metric: str, resolution: str, from_ms: int, to_ms: int) -> dict[str, Any]:
        """Like `streamkpi query --format json`: every window overlapping [from_ms, to_ms), zeros filled.

        As the query does, a metric with no value anywhere in the range reports agg "count".
        """
        size = self.config.resolutions[resolution]
        first = from_ms - from_ms % size
        starts = range(first, to_ms, size)
        held = self.cells.get((metric, resolution), {})
        agg = self.config.metrics[metric].agg if any(start in held for start in starts) else "count"
        windows = [self.window(metric, resolution, start, agg) for start in starts]
        return {"metric": metric, "resolution": resolution, "agg": agg, "windows": windows}

    def pairs(self) -> Iterator[tuple[str, str]]:
        for metric in self.config.metrics:
            for resolution in self.config.resolutions:
                yield metric, resolution
