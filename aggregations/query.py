"""Query shaping over the store protocol: every window in a range, zeros filled, groups sorted.

`read_metric` is the only function here that touches a store; `shape` is pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from aggregations.errors import QueryError
from aggregations.metrics import AGGREGATORS, OTHER_GROUP
from aggregations.partials import StoredPartial, merge_partials
from aggregations.store import AggregateStore
from aggregations.windows import Resolution


def to_json(value: Any, indent: bool = False) -> bytes:
    """JSON of query results. Sums are exact: a whole number past 64 bits, which orjson refuses to write,
    is written by the standard library instead, digit for digit."""
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0)
    except TypeError:  # orjson.JSONEncodeError: "Integer exceeds 64-bit range"
        return json.dumps(value, indent=2 if indent else None, separators=None if indent else (",", ":")).encode()


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def read_metric(
    store: AggregateStore,
    resolution: Resolution,
    metric: str,
    from_ms: int,
    to_ms: int,
    top: int | None = None,
    by: str | None = None,
    dims: Sequence[str] = (),
) -> dict[str, Any]:
    starts = list(resolution.starts_between(from_ms, to_ms))
    found = store.read(resolution.name, starts) if starts else {}
    return shape(resolution, metric, starts, found, top, by, dims)


def read_rolling(
    store: AggregateStore,
    resolution: Resolution,
    metric: str,
    end_ms: int,
    span_ms: int,
    top: int | None = None,
    by: str | None = None,
    dims: Sequence[str] = (),
) -> dict[str, Any]:
    """A rolling value ("last 5 minutes") merged at read time from the windows of the finest resolution.

    The span covers the `span_ms // size` whole windows that end with the window holding `end_ms`
    (which is still filling up: a rolling value is live).
    """
    if span_ms < resolution.size_ms or span_ms % resolution.size_ms:
        raise QueryError(f"a rolling span must be a whole number of {resolution.name} windows")
    last = resolution.start(end_ms)
    starts = list(range(last - span_ms + resolution.size_ms, last + resolution.size_ms, resolution.size_ms))
    found = store.read(resolution.name, starts)
    merged_windows = [merge_partials(found.get(start, ())).get(metric, {}) for start in starts]
    agg_name = _agg_name(metric, found)
    agg = AGGREGATORS[agg_name]
    groups: dict[str, Any] = {}
    for window in merged_windows:
        for group, value in regroup(window, agg_name, by, dims).items():
            groups[group] = value if group not in groups else agg.merge(groups[group], value)
    kept = _top_groups(groups, agg_name, top)
    return {
        "metric": metric,
        "resolution": resolution.name,
        "agg": agg_name,
        "from": iso(starts[0]),
        "to": iso(starts[-1] + resolution.size_ms),
        "groups": {g: agg.present(v) for g, v in kept.items()},
        "total": agg.present(_total(agg_name, list(groups.values()))),
    }


def _agg_name(metric: str, partials: Mapping[int, Sequence[StoredPartial]]) -> str:
    return next((p.metrics[metric]["agg"] for ps in partials.values() for p in ps if metric in p.metrics), "count")


def regroup(groups: Mapping[str, Any], agg_name: str, by: str | None, dims: Sequence[str]) -> dict[str, Any]:
    """Groups of a multi-dimension metric (keys "a|b") folded onto one of its dimensions."""
    if by is None:
        return dict(groups)
    if by not in dims:
        raise QueryError(f"--by {by!r}: the metric is grouped by {', '.join(dims) or 'nothing'}")
    if len(dims) == 1:
        return dict(groups)
    index = list(dims).index(by)
    agg = AGGREGATORS[agg_name]
    out: dict[str, Any] = {}
    for group, value in groups.items():
        parts = group.split("|")
        key = parts[index] if len(parts) == len(dims) else group  # __other__ stays itself
        out[key] = value if key not in out else agg.merge(out[key], value)
    return out


def shape(
    resolution: Resolution,
    metric: str,
    starts: Sequence[int],
    partials: Mapping[int, Sequence[StoredPartial]],
    top: int | None = None,
    by: str | None = None,
    dims: Sequence[str] = (),
) -> dict[str, Any]:
    """A JSON-able result: {"metric", "resolution", "agg", "windows": [{"start", "groups", "total"}]}."""
    agg_name = _agg_name(metric, partials)
    agg = AGGREGATORS[agg_name]
    windows = []
    for start in starts:
        merged = merge_partials(partials.get(start, ())).get(metric, {})
        groups = _top_groups(regroup(merged, agg_name, by, dims), agg_name, top)
        windows.append(
            {
                "start": iso(start),
                "start_ms": start,
                "groups": {g: agg.present(v) for g, v in groups.items()},
                "total": agg.present(_total(agg_name, list(merged.values()))),
            }
        )
    return {"metric": metric, "resolution": resolution.name, "agg": agg_name, "windows": windows}


def _total(agg_name: str, values: list[Any]) -> Any:
    agg = AGGREGATORS[agg_name]
    total = agg.initial()
    for value in values:
        total = agg.merge(total, value)
    return total


def _top_groups(groups: Mapping[str, Any], agg_name: str, top: int | None) -> dict[str, Any]:
    """Groups sorted by value (largest first, then name); beyond `top`, folded into __other__."""
    agg = AGGREGATORS[agg_name]
    ordered = sorted(groups.items(), key=lambda kv: (kv[0] == OTHER_GROUP, _neg(agg.present(kv[1])), kv[0]))
    if top is None or len(ordered) <= top:
        return dict(ordered)
    kept = dict(ordered[:top])
    rest = [v for g, v in ordered[top:]]
    other = kept.pop(OTHER_GROUP, agg.initial())
    for value in rest:
        other = agg.merge(other, value)
    kept[OTHER_GROUP] = other
    return kept


def _neg(value: Any) -> Any:
    return 0 if value is None else -value
