"""Time ranges and the config's panels, shaped for one range's snapshot file. Pure: no I/O, no clock.

    range   windows        file               rewritten   a stat is compared with
    1h      60 x 1m        snapshot-1h.json   every tick  the same 60 minutes a day earlier
    24h     24 x 1h        snapshot-24h.json  every 30 s  the same 24 hours a day earlier
    7d      168 x 1h       snapshot-7d.json   every 5 min the same 7 days a week earlier
    30d     30 x 1d        snapshot-30d.json  every 5 min the 30 days before

The last window of a range is the current one (still filling); the comparison period is the same windows
moved back, so its last window is whole: early in a window the change reads low (the page says so).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aggregations.metrics import AGGREGATORS, OTHER_GROUP
from aggregations.partials import StoredPartial, merge_partials
from aggregations.query import regroup
from dashboard.panels import Panel

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
OTHER_SERIES = "other"


@dataclass(frozen=True)
class Range:
    id: str
    label: str
    resolution: str  # the config's resolution name whose windows the range reads
    size_ms: int
    windows: int
    compare_ms: int  # how far back the comparison period lies
    compare_label: str
    every_seconds: float  # how often its file is rewritten (0: every tick)

    @property
    def file(self) -> str:
        return f"snapshot-{self.id}.json"

    def starts(self, now_ms: int) -> list[int]:
        current = now_ms - now_ms % self.size_ms
        return [current - i * self.size_ms for i in range(self.windows - 1, -1, -1)]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "file": self.file, "resolution": self.resolution}


RANGES: tuple[Range, ...] = (
    Range("1h", "last 60 minutes", "1m", MINUTE_MS, 60, DAY_MS, "vs the same hour yesterday", 0),
    Range("24h", "last 24 hours", "1h", HOUR_MS, 24, DAY_MS, "vs the 24 hours a day earlier", 30),
    Range("7d", "last 7 days", "1h", HOUR_MS, 168, 7 * DAY_MS, "vs the same 7 days a week earlier", 300),
    Range("30d", "last 30 days", "1d", DAY_MS, 30, 30 * DAY_MS, "vs the 30 days before", 300),
)
RANGE_BY_ID = {r.id: r for r in RANGES}

Found = Mapping[int, Sequence[StoredPartial]]


@dataclass(frozen=True)
class RangeReadings:
    """What the publisher read for one range: the partials of its windows, of the comparison windows, and
    of today's 1-day window (for panels with period = "today"). None: could not be read."""

    range: Range
    now_ms: int
    dims: Mapping[str, Sequence[str]]  # metric -> its `by` dimensions
    found: Found | None = None
    previous: Found | None = None
    today: Found | None = None
    today_start_ms: int = 0
    notes: Mapping[str, str] = field(default_factory=dict)  # why a read is missing ("found", "previous", "today")


class _Windows:
    """Each window's shard partials merged once, however many panels read it (decoding is the cost)."""

    def __init__(self, found: Found) -> None:
        self.found = found
        self.merged: dict[int, Mapping[str, Any]] = {}

    def groups(self, start: int, metric: str) -> Mapping[str, Any]:
        window = self.merged.get(start)
        if window is None:
            window = self.merged[start] = merge_partials(self.found.get(start, ()))
        return window.get(metric, {})


def build_panels(panels: Sequence[Panel], r: RangeReadings, snapshot: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each panel as the page draws it. `snapshot` is the pipeline snapshot of the same tick (rate, health, DLQ)."""
    cache = {
        key: _Windows(found)
        for key, found in (("found", r.found), ("previous", r.previous), ("today", r.today))
        if found is not None
    }
    return [shape_panel(p, r, snapshot, cache) for p in panels]


def today_in(p_period: str | None, r: RangeReadings) -> bool:
    """period = "today" reads the current UTC day in the 60-minute view; the longer ranges (a day or more,
    today included) read the range itself, so switching the range changes every panel."""
    return p_period == "today" and r.range.id == RANGES[0].id


WINDOW_WORDS = {"1m": "minute", "1h": "hour", "1d": "day"}


def words(text: str, r: RangeReadings, today: bool) -> str:
    """A panel's text with {range}, {period}, {Period} and {window} filled in."""
    period = "today" if today else f"in the {r.range.label}"
    named = "Today" if today else r.range.label[:1].upper() + r.range.label[1:]
    return (
        text.replace("{range}", r.range.label)
        .replace("{period}", period)
        .replace("{Period}", named)
        .replace("{window}", WINDOW_WORDS.get(r.range.resolution, r.range.resolution))
    )


def range_document(rng: Range, snapshot: Mapping[str, Any], panels: list[dict[str, Any]]) -> dict[str, Any]:
    """One range's file: the snapshot of the tick (pipeline health, DLQ, rate) and the shaped panels."""
    return {
        **snapshot,
        "staleAfterSeconds": snapshot["staleAfterSeconds"] + rng.every_seconds,
        "range": {**rng.as_json(), "compareLabel": rng.compare_label, "everySeconds": rng.every_seconds},
        "ranges": [r.as_json() for r in RANGES],
        "panels": panels,
    }


def shape_panel(
    p: Panel, r: RangeReadings, snapshot: Mapping[str, Any], cache: Mapping[str, _Windows] | None = None
) -> dict[str, Any]:
    today = today_in(p.period, r)
    out: dict[str, Any] = {
        "id": p.id,
        "kind": p.kind,
        "view": p.view,
        "title": words(p.title, r, today),
        "unit": p.unit,
        "currency": p.currency,
        "period": "today" if today else "range",
        "emptyText": words(p.empty_text, r, today) if p.empty_text else None,
        "byLabel": p.by_label,
        "valueLabel": p.value_label,
        "otherLabel": p.other_label,
        "thresholds": p.thresholds.as_json() if p.thresholds else None,
    }
    if p.kind == "health":
        if p.view == "rate":
            out["value"] = snapshot["rate"]["eventsPerSecond"]
            out["valueLabel"] = "events per second now"
        else:
            rows = snapshot["shards"]["rows"]
            troubled = sum(row["status"] in ("warning", "stale") for row in rows)  # an ended parent is fine
            out["value"] = troubled if snapshot["shards"]["note"] is None else None
            out["valueLabel"] = "shards not ok"
    elif p.kind == "dlq":
        out["value"] = snapshot["invalid"]["lastHour"]
        out["valueLabel"] = "dead letters in the last 60 minutes"
    else:
        out.update(_metric_panel(p, r, cache if cache is not None else {}, today))
        d = p.detail
        if d is not None and not (  # in a longer range, the same number as the panel's: left out
            d.metric == p.metric
            and d.where == p.where
            and (today if d.period is None else today_in(d.period, r)) == today
        ):
            out["detail"] = _detail(p, r, cache if cache is not None else {}, today)
    out["state"] = p.thresholds.state(out["value"]) if p.thresholds else "none"
    return out


def _readings(r: RangeReadings, today: bool, cache: Mapping[str, _Windows]) -> tuple[list[int], str, _Windows | None]:
    starts = [r.today_start_ms] if today else r.range.starts(r.now_ms)
    key = "today" if today else "found"
    found = r.today if today else r.found
    if found is None:
        return starts, key, None
    return starts, key, cache.get(key) or _Windows(found)


def _detail(p: Panel, r: RangeReadings, cache: Mapping[str, _Windows], panel_today: bool) -> dict[str, Any]:
    d = p.detail
    assert d is not None
    today = panel_today if d.period is None else today_in(d.period, r)
    out: dict[str, Any] = {
        "text": words(d.text, r, today),
        "empty": words(d.empty, r, today) if d.empty else None,
        "value": None,
        "note": None,
    }
    starts, key, windows = _readings(r, today, cache)
    if windows is None:
        out["note"] = r.notes.get(key, "the aggregates could not be read")
        return out
    dims = list(r.dims.get(d.metric, ()))
    agg_name = _agg_name(d.metric, windows.found)
    probe = Panel(0, "detail", "stat", "detail", metric=d.metric, where=d.where)
    merged = _merge_groups([_select(windows.groups(s, d.metric), probe, dims, agg_name) for s in starts], agg_name)
    out["agg"] = agg_name
    if d.currency is not None:
        out["amounts"] = _amounts(merged, dims, d.currency, agg_name)
    else:
        out["value"] = _present(agg_name, _merge_values(agg_name, list(merged.values())))
    return out


def _metric_panel(p: Panel, r: RangeReadings, cache: Mapping[str, _Windows], today: bool) -> dict[str, Any]:
    assert p.metric is not None
    dims = list(r.dims.get(p.metric, ()))
    starts, key, windows = _readings(r, today, cache)
    if windows is None:
        note = r.notes.get(key, "the aggregates could not be read")
        return {"value": None, "note": note, "agg": None}
    agg_name = _agg_name(p.metric, windows.found)
    per_window = [_select(windows.groups(s, p.metric), p, dims, agg_name) for s in starts]
    merged = _merge_groups(per_window, agg_name)
    total = _present(agg_name, _merge_values(agg_name, list(merged.values())))
    out: dict[str, Any] = {"agg": agg_name, "value": total, "note": None}
    if p.kind == "stat":
        out.update(_stat(p, r, dims, agg_name, merged, per_window, starts, total, cache.get("previous"), today))
    elif p.kind == "timeseries":
        out.update(_timeseries(p, agg_name, merged, per_window, starts, r))
    else:
        out.update(_table(p, agg_name, merged, total))
        if p.join is not None:
            out["join"] = _join(p, r, starts, windows)
    return out


def _join(p: Panel, r: RangeReadings, starts: list[int], windows: _Windows) -> dict[str, Any]:
    """The second column of a top table: the joined metric per row group (per currency: never added up)."""
    j = p.join
    assert j is not None and p.by is not None
    dims = list(r.dims.get(j.metric, ()))
    agg_name = _agg_name(j.metric, windows.found)
    merged = _merge_groups([dict(windows.groups(s, j.metric)) for s in starts], agg_name)
    by_i = dims.index(p.by)
    cur_i = dims.index(j.currency) if j.currency is not None else None
    per_row: dict[str, dict[str, Any]] = {}
    for group, value in merged.items():
        parts = group.split("|") if len(dims) > 1 else [group]
        if group == OTHER_GROUP or len(parts) != len(dims):
            continue
        currency = parts[cur_i] if cur_i is not None else ""
        row = per_row.setdefault(parts[by_i], {})
        row[currency] = value if currency not in row else AGGREGATORS[agg_name].merge(row[currency], value)
    values = {
        name: sorted(
            ({"currency": c, "amount": _present(agg_name, v)} for c, v in amounts.items()),
            key=lambda a: (-(a["amount"] or 0), a["currency"]),
        )
        for name, amounts in per_row.items()
    }
    return {"label": j.label or j.metric, "currency": j.currency is not None, "values": values}


def _stat(
    p: Panel,
    r: RangeReadings,
    dims: list[str],
    agg_name: str,
    merged: Mapping[str, Any],
    per_window: list[dict[str, Any]],
    starts: list[int],
    total: Any,
    previous: _Windows | None,
    today: bool,
) -> dict[str, Any]:
    assert p.metric is not None
    out: dict[str, Any] = {}
    if p.currency is not None:
        out["amounts"] = _amounts(merged, dims, p.currency, agg_name)
        out["value"] = None
    else:
        out["spark"] = [_present(agg_name, _merge_values(agg_name, list(w.values()))) for w in per_window]
        out["sparkStartMs"] = starts
    if today:
        out["compare"] = None
        out.pop("spark", None)  # one window: no trend to draw
        return out
    compare: dict[str, Any] = {"label": r.range.compare_label, "value": None, "change": None}
    if r.previous is None:
        compare["note"] = r.notes.get("previous", "the earlier windows could not be read")
    else:
        back = [s - r.range.compare_ms for s in starts]
        earlier = previous or _Windows(r.previous)
        windows = [_select(earlier.groups(s, p.metric), p, dims, agg_name) for s in back]
        merged_before = _merge_groups(windows, agg_name)
        if p.currency is not None:  # per currency, never added up
            compare["amounts"] = _amounts(merged_before, dims, p.currency, agg_name)
            out["compare"] = compare
            return out
        before = _present(agg_name, _merge_values(agg_name, list(merged_before.values())))
        compare["value"] = before
        if isinstance(total, int | float) and isinstance(before, int | float) and before:
            compare["change"] = round((total - before) / before, 4)
    out["compare"] = compare
    return out


def _amounts(merged: Mapping[str, Any], dims: list[str], currency: str, agg_name: str) -> list[dict[str, Any]]:
    amounts = _fold_onto(merged, agg_name, currency, dims)
    return sorted(
        ({"currency": c, "amount": _present(agg_name, v)} for c, v in amounts.items() if c != OTHER_GROUP),
        key=lambda a: (-(a["amount"] or 0), a["currency"]),
    )


def _timeseries(
    p: Panel,
    agg_name: str,
    merged: Mapping[str, Any],
    per_window: list[dict[str, Any]],
    starts: list[int],
    r: RangeReadings,
) -> dict[str, Any]:
    if p.by is None:
        series = ["total"]
        points = [{"total": _merge_values(agg_name, list(w.values()))} for w in per_window]
    elif p.bands:
        series = [b.id for b in p.bands]
        points = [_banded(p, w, agg_name) for w in per_window]
    else:
        ranked = sorted(merged.items(), key=lambda kv: (kv[0] == OTHER_GROUP, -_sortable(agg_name, kv[1]), kv[0]))
        keep = [g for g, _ in ranked if g != OTHER_GROUP][: p.top or 5]
        rest = len(ranked) > len(keep)
        series = keep + ([OTHER_SERIES] if rest else [])
        points = []
        for w in per_window:
            values: dict[str, Any] = {}
            for group, value in w.items():
                name = group if group in keep else OTHER_SERIES
                values[name] = value if name not in values else AGGREGATORS[agg_name].merge(values[name], value)
            points.append(values)
    current = r.now_ms - r.now_ms % r.range.size_ms
    return {
        "style": p.style,
        "resolution": r.range.resolution,
        "series": [b.as_json() for b in p.bands]
        if p.bands
        else [{"id": s, "label": (p.other_label or "all other") if s == OTHER_SERIES and p.by else s} for s in series],
        "points": [
            {
                "startMs": start,
                "partial": start >= current,
                "values": {s: _present(agg_name, v) for s, v in point.items()},
                "total": _present(agg_name, _merge_values(agg_name, list(point.values()))),
            }
            for start, point in zip(starts, points, strict=True)
        ],
    }


def band_of(p: Panel, group: str) -> str | None:
    """The band a group falls in (the last band takes the rest when it has no types); None: no band."""
    for band in p.bands:
        if not band.types or any(fnmatch.fnmatchcase(group, pattern) for pattern in band.types):
            return band.id
    return None


def _banded(p: Panel, groups: Mapping[str, Any], agg_name: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for group, value in groups.items():
        band = band_of(p, group)
        if band is not None:
            out[band] = value if band not in out else AGGREGATORS[agg_name].merge(out[band], value)
    return out


def _table(p: Panel, agg_name: str, merged: Mapping[str, Any], total: Any) -> dict[str, Any]:
    additive = agg_name in ("count", "sum")
    ranked = sorted(
        ((g, _present(agg_name, v)) for g, v in merged.items()),
        key=lambda gv: (gv[0] == OTHER_GROUP, -(gv[1] or 0), gv[0]),
    )
    base = {"dimension": p.by, "valueLabel": p.value_label or p.unit or p.metric, "additive": additive}
    if p.bands:  # a row per band (zeros included), each with its groups under it
        rows = []
        for band in p.bands:
            members = [(g, v) for g, v in ranked if band_of(p, g) == band.id]
            value = _present(agg_name, _merge_values(agg_name, [merged[g] for g, _ in members]))
            children = [
                {"name": p.other_label if g == OTHER_GROUP and p.other_label else g, "value": v} for g, v in members
            ]
            rows.append({"name": band.label, "band": band.id, "value": value, "share": None, "children": children})
        return {**base, "rows": rows, "other": None, "bands": True}
    named = [(g, v) for g, v in ranked if g != OTHER_GROUP]
    shown = named[: p.top or 10]
    other = None
    if additive:
        rest = [v or 0 for g, v in ranked if g == OTHER_GROUP] + [v or 0 for _, v in named[len(shown) :]]
        other = sum(rest) if rest else 0
    rows = [
        {"name": g, "value": v, "share": round(v / total, 4) if additive and total and v is not None else None}
        for g, v in shown
    ]
    return {**base, "rows": rows, "other": other, "otherName": OTHER_GROUP}


# -- merging --------------------------------------------------------------------------------------


def _agg_name(metric: str, found: Found) -> str:
    return next((q.metrics[metric]["agg"] for ps in found.values() for q in ps if metric in q.metrics), "count")


def _select(groups: Mapping[str, Any], p: Panel, dims: Sequence[str], agg_name: str) -> dict[str, Any]:
    """The groups of one window kept by the panel's `where`, folded onto its `by` dimension."""
    if p.where:
        index = {d: i for i, d in enumerate(dims)}
        kept = {}
        for group, value in groups.items():
            parts = group.split("|") if len(dims) > 1 else [group]
            if len(parts) == len(dims) and all(parts[index[d]] == v for d, v in p.where):
                kept[group] = value
        groups = kept
    target = p.by if p.kind != "stat" else None
    return _fold_onto(groups, agg_name, target, dims)


def _fold_onto(groups: Mapping[str, Any], agg_name: str, by: str | None, dims: Sequence[str]) -> dict[str, Any]:
    """The query API's regroup; a metric of one dimension (or none) is already what a panel shows."""
    return regroup(groups, agg_name, by, dims) if by is not None and len(dims) > 1 else dict(groups)


def _merge_groups(windows: Sequence[Mapping[str, Any]], agg_name: str) -> dict[str, Any]:
    values: dict[str, list[Any]] = {}
    for window in windows:
        for group, value in window.items():
            values.setdefault(group, []).append(value)
    return {group: _merge_values(agg_name, found) for group, found in values.items()}


def _merge_values(agg_name: str, values: Sequence[Any]) -> Any:
    """One aggregate of many. HyperLogLog registers merge in one pass (the register-wise maximum of all of
    them: 168 hourly windows cost one pass, not 167)."""
    if agg_name == "distinct" and len(values) > 1:
        return bytearray(map(max, *values))
    if len(values) == 1:
        return values[0]
    agg = AGGREGATORS[agg_name]
    total = agg.initial()
    for value in values:
        total = agg.merge(total, value)
    return total


def _present(agg_name: str, value: Any) -> Any:
    return AGGREGATORS[agg_name].present(value)


def _sortable(agg_name: str, value: Any) -> float:
    shown = _present(agg_name, value)
    return float(shown) if isinstance(shown, int | float) else 0.0
