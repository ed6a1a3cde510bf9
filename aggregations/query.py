"""Query shaping over the store protocol: every window in a range, zeros filled, groups sorted.

`read_metric` is the only function here that touches a store; `shape` is pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from aggregations.metrics import AGGREGATORS, OTHER_GROUP
from aggregations.partials import StoredPartial, merge_partials
from aggregations.store import AggregateStore
from aggregations.windows import Resolution


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def read_metric(
    store: AggregateStore,
    resolution: Resolution,
    metric: str,
    from_ms: int,
    to_ms: int,
    top: int | None = None,
) -> dict[str, Any]:
    starts = list(resolution.starts_between(from_ms, to_ms))
    found = store.read(resolution.name, starts) if starts else {}
    return shape(resolution, metric, starts, found, top)


def shape(
    resolution: Resolution,
    metric: str,
    starts: Sequence[int],
    partials: Mapping[int, Sequence[StoredPartial]],
    top: int | None = None,
) -> dict[str, Any]:
    """A JSON-able result: {"metric", "resolution", "agg", "windows": [{"start", "groups", "total"}]}."""
    agg_name = next((p.metrics[metric]["agg"] for ps in partials.values() for p in ps if metric in p.metrics), "count")
    agg = AGGREGATORS[agg_name]
    windows = []
    for start in starts:
        merged = merge_partials(partials.get(start, ())).get(metric, {})
        groups = _top_groups(merged, agg_name, top)
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
    ordered = sorted(groups.items(), key=lambda kv: (kv[0] == OTHER_GROUP, _neg(kv[1]), kv[0]))
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
