"""Dashboard panels declared in the config (`[[dashboard.panels]]`), checked once at start. Pure.

    [[dashboard.panels]]
    kind = "stat"                 # stat | timeseries | top | breakdown | health | dlq
    title = "Revenue"
    metric = "revenue"            # a configured metric (or the built-in `events`)
    currency = "data.currency"    # a `by` dimension whose groups are currencies: never added up
    where = { status = "paid" }   # keep the groups whose dimension has this value
    unit = "orders"               # shown after the number
    thresholds = { warn = 100, critical = 50, direction = "below" }

More options for richer panels (the default config's demo page uses them): `detail` (a second number under
a stat, or a line under a table), `bands` (event types folded into named bands: a stacked chart's series,
a breakdown's rows), `join` (a top table's second column from another metric), `view` (health: "table" or
"rate"; dlq: "chart" or "stat"), `by_label` / `value_label` / `other_label` (the words the page shows).

A config without `[dashboard]` gets the default config's panels, keeping those whose metrics it has
(`parse_panels(..., fitting_only=True)`). Every mistake is a `PanelConfigError` that names the panel (index
and title), the key and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamkpi.errors import ConfigError

KINDS = ("stat", "timeseries", "top", "breakdown", "health", "dlq")
METRIC_KINDS = ("stat", "timeseries", "top", "breakdown")
STYLES = ("stacked", "lines")
PERIODS = ("range", "today")
DIRECTIONS = ("above", "below")
DEFAULT_TOP = {"top": 10, "breakdown": 12, "timeseries": 5}
MAX_PANELS = 40
VIEWS = {"health": ("table", "rate"), "dlq": ("chart", "stat")}
_KEYS = {
    "kind", "title", "id", "metric", "by", "top", "where", "unit", "currency", "style", "period", "thresholds",
    "empty_text", "view", "detail", "bands", "join", "by_label", "value_label", "other_label",
}  # fmt: skip
_DETAIL_KEYS = {"metric", "where", "currency", "period", "text", "empty"}
_JOIN_KEYS = {"metric", "currency", "label"}
_BAND_KEYS = {"id", "label", "description", "types"}
_ID = re.compile(r"[^a-z0-9]+")


class PanelConfigError(ConfigError):
    """A `[[dashboard.panels]]` entry cannot be drawn; the message names the panel, the key and the fix."""


@dataclass(frozen=True)
class Thresholds:
    """warn/critical lines; `above`: the value is bad when it rises to a line, `below`: when it falls to it."""

    warn: float | None = None
    critical: float | None = None
    direction: str = "above"

    def state(self, value: float | None) -> str:
        """ok / warning / critical (or unknown when there is no value to judge)."""
        if value is None:
            return "unknown"
        crossed = (lambda line: value >= line) if self.direction == "above" else (lambda line: value <= line)
        if self.critical is not None and crossed(self.critical):
            return "critical"
        if self.warn is not None and crossed(self.warn):
            return "warning"
        return "ok"

    def as_json(self) -> dict[str, Any]:
        return {"warn": self.warn, "critical": self.critical, "direction": self.direction}


@dataclass(frozen=True)
class Detail:
    """A second number: under a stat (its note) or under a table. `text` holds {value}."""

    metric: str
    where: tuple[tuple[str, str], ...] = ()
    currency: str | None = None
    period: str | None = None  # None: the panel's
    text: str = "{value}"
    empty: str | None = None  # shown when the amounts are none (currency) or the value is 0

    def as_json(self) -> dict[str, Any]:
        return {"text": self.text, "empty": self.empty}


@dataclass(frozen=True)
class Join:
    """A top table's second column: another metric's amounts (per currency) for each row's group."""

    metric: str
    currency: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class Band:
    """Groups (event types) folded into one series or row; a band without types takes the rest."""

    id: str
    label: str
    description: str | None
    types: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "description": self.description, "types": list(self.types)}


@dataclass(frozen=True)
class Panel:
    index: int
    id: str
    kind: str
    title: str
    metric: str | None = None
    by: str | None = None
    top: int | None = None
    where: tuple[tuple[str, str], ...] = ()
    unit: str | None = None
    currency: str | None = None
    style: str = "stacked"
    period: str = "range"
    thresholds: Thresholds | None = None
    empty_text: str | None = None
    view: str | None = None
    detail: Detail | None = None
    bands: tuple[Band, ...] = ()
    join: Join | None = None
    by_label: str | None = None
    value_label: str | None = None
    other_label: str | None = None


def parse_panels(
    table: Mapping[str, Any] | None,
    metric_dims: Mapping[str, Sequence[str]],
    source: str = "the config",
    fitting_only: bool = False,
) -> tuple[Panel, ...]:
    """The panels of a `[dashboard]` table; () when it has none.

    `metric_dims` maps each configured metric (the built-in `events` included) to its `by` dimensions.
    `fitting_only` (the default config's panels for a config without `[dashboard]`): a panel whose metric
    the config lacks is left out, and so is a `detail` or `join` whose metric it lacks; no error."""
    if not table:
        return ()
    if fitting_only:
        return _fitting(table, metric_dims, source)
    unknown = set(table) - {"panels"}
    if unknown:
        raise PanelConfigError(f"{source}: [dashboard] has unknown key(s) {sorted(unknown)}; allowed: panels")
    items = table.get("panels")
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise PanelConfigError(f"{source}: dashboard.panels must be a non-empty list of [[dashboard.panels]] tables")
    if len(items) > MAX_PANELS:
        raise PanelConfigError(f"{source}: {len(items)} dashboard panels; at most {MAX_PANELS} fit on one page")
    panels = [_panel(i, item, metric_dims, source) for i, item in enumerate(items)]
    seen: set[str] = set()
    for panel in panels:
        if panel.id in seen:
            raise PanelConfigError(
                f"{_where(source, panel.index, panel.title)}.id: {panel.id!r} is used by more than one panel; "
                'give each a distinct id = "..." (or title)'
            )
        seen.add(panel.id)
    for kind, views in VIEWS.items():
        for view in views:
            if sum(p.kind == kind and p.view == view for p in panels) > 1:
                raise PanelConfigError(f"{source}: dashboard.panels: at most one {kind} panel with view = {view!r}")
    return tuple(panels)


def _fitting(table: Mapping[str, Any], metric_dims: Mapping[str, Sequence[str]], source: str) -> tuple[Panel, ...]:
    kept: list[dict[str, Any]] = []
    for item in table.get("panels") or []:
        for candidate in (item, {k: v for k, v in item.items() if k not in ("detail", "join")}):
            try:
                _panel(0, candidate, metric_dims, source)
            except PanelConfigError:
                continue
            kept.append(candidate)
            break
    return parse_panels({"panels": kept}, metric_dims, source) if kept else ()


def _where(source: str, index: int, title: Any) -> str:
    return f"{source}: dashboard.panels[{index}]" + (f" ({title!r})" if isinstance(title, str) and title else "")


def _panel(index: int, item: Mapping[str, Any], metric_dims: Mapping[str, Sequence[str]], source: str) -> Panel:
    here = _where(source, index, item.get("title"))
    unknown = set(item) - _KEYS
    if unknown:
        raise PanelConfigError(f"{here}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(_KEYS))}")
    kind = item.get("kind")
    if kind not in KINDS:
        raise PanelConfigError(f"{here}.kind: {kind!r} is not a panel kind; write one of {', '.join(KINDS)}")
    title = item.get("title")
    if not isinstance(title, str) or not title.strip():
        raise PanelConfigError(f'{here}.title: every panel needs a title = "..." (what the page shows above it)')
    pid = item.get("id", _ID.sub("-", title.lower()).strip("-") or f"panel-{index}")
    if not isinstance(pid, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", pid):
        raise PanelConfigError(f"{here}.id: {pid!r}: write lower-case letters, digits and '-' (at most 40)")
    text = {
        key: _text(item, key, here)
        for key in ("unit", "currency", "by", "empty_text", "by_label", "value_label", "other_label")
    }
    view = item.get("view", VIEWS[kind][0] if kind in VIEWS else None)
    if kind in VIEWS and view not in VIEWS[kind]:
        raise PanelConfigError(f"{here}.view: {view!r}; a {kind} panel has view = {' or '.join(VIEWS[kind])}")
    if kind not in VIEWS and "view" in item:
        raise PanelConfigError(f"{here}.view: only health and dlq panels have views")
    style, period = item.get("style", "stacked"), item.get("period", "range")
    if style not in STYLES:
        raise PanelConfigError(f"{here}.style: {style!r}; write one of {', '.join(STYLES)}")
    if period not in PERIODS:
        raise PanelConfigError(f"{here}.period: {period!r}; write one of {', '.join(PERIODS)}")
    metric = item.get("metric")
    top = item.get("top", DEFAULT_TOP.get(kind))
    where: tuple[tuple[str, str], ...] = ()
    detail = join = None
    bands: tuple[Band, ...] = ()
    if kind in METRIC_KINDS:
        if not isinstance(metric, str) or metric not in metric_dims:
            known = ", ".join(sorted(metric_dims))
            raise PanelConfigError(f"{here}.metric: {metric!r} is not a configured metric; configured: {known}")
        dims = list(metric_dims[metric])
        for key in ("by", "currency"):
            if text[key] is not None and text[key] not in dims:
                raise PanelConfigError(
                    f"{here}.{key}: {metric!r} is grouped by {', '.join(dims) or 'nothing'}; "
                    f"{text[key]!r} is not one of them"
                )
        if kind in ("top", "breakdown") and text["by"] is None:
            if len(dims) != 1:
                raise PanelConfigError(
                    f"{here}.by: a {kind} panel needs by = one of {', '.join(dims) or '(none: the metric has no by)'}"
                )
            text["by"] = dims[0]
        where = _where_table(item.get("where"), dims, here)
        if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= 100):
            raise PanelConfigError(f"{here}.top: {top!r}; write a whole number from 1 to 100")
        if text["currency"] is not None and kind == "stat" and item.get("thresholds") is not None:
            raise PanelConfigError(f"{here}.thresholds: amounts in several currencies have no single value to judge")
        detail = _detail(item.get("detail"), metric_dims, here) if kind in ("stat", "top", "breakdown") else None
        if kind in ("timeseries", "breakdown"):
            bands = _bands(item.get("bands"), here)
            if bands and text["by"] is None:
                raise PanelConfigError(
                    f"{here}.bands: bands fold the groups of `by`: give by = one of {', '.join(dims)}"
                )
        if kind == "top":
            join = _join(item.get("join"), metric_dims, text["by"], here)
        for key in ("detail", "bands", "join"):
            if key in item and not {"detail": detail, "bands": bands, "join": join}[key]:
                raise PanelConfigError(f"{here}.{key}: a {kind} panel has no {key}")
    else:
        extra = sorted(k for k in ("metric", "by", "top", "where", "currency", "detail", "bands", "join") if k in item)
        if extra:
            raise PanelConfigError(f"{here}: a {kind} panel shows the pipeline itself; remove {', '.join(extra)}")
        top = None
    return Panel(
        index=index,
        id=pid,
        kind=kind,
        title=title.strip(),
        metric=metric if kind in METRIC_KINDS else None,
        by=text["by"],
        top=top,
        where=where,
        unit=text["unit"],
        currency=text["currency"],
        style=style,
        period=period,
        thresholds=_thresholds(item.get("thresholds"), here),
        empty_text=text["empty_text"],
        view=view,
        detail=detail,
        bands=bands,
        join=join,
        by_label=text["by_label"],
        value_label=text["value_label"],
        other_label=text["other_label"],
    )


def _metric_of(value: Mapping[str, Any], metric_dims: Mapping[str, Sequence[str]], here: str) -> tuple[str, list[str]]:
    metric = value.get("metric")
    if not isinstance(metric, str) or metric not in metric_dims:
        known = ", ".join(sorted(metric_dims))
        raise PanelConfigError(f"{here}.metric: {metric!r} is not a configured metric; configured: {known}")
    return metric, list(metric_dims[metric])


def _detail(value: Any, metric_dims: Mapping[str, Sequence[str]], here: str) -> Detail | None:
    if value is None:
        return None
    here = f"{here}.detail"
    if not isinstance(value, dict):
        raise PanelConfigError(f'{here}: write a table such as {{ metric = "signups", text = "{{value}} verified" }}')
    unknown = set(value) - _DETAIL_KEYS
    if unknown:
        raise PanelConfigError(f"{here}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(_DETAIL_KEYS))}")
    metric, dims = _metric_of(value, metric_dims, here)
    currency = _text(value, "currency", here)
    if currency is not None and currency not in dims:
        raise PanelConfigError(f"{here}.currency: {metric!r} is grouped by {', '.join(dims) or 'nothing'}")
    period = value.get("period")
    if period is not None and period not in PERIODS:
        raise PanelConfigError(f"{here}.period: {period!r}; write one of {', '.join(PERIODS)}")
    text = value.get("text", "{value}")
    if not isinstance(text, str) or "{value}" not in text:
        raise PanelConfigError(f'{here}.text: write a string holding {{value}}, e.g. "{{value}} verifications"')
    return Detail(
        metric, _where_table(value.get("where"), dims, here), currency, period, text, _text(value, "empty", here)
    )


def _join(value: Any, metric_dims: Mapping[str, Sequence[str]], by: str | None, here: str) -> Join | None:
    if value is None:
        return None
    here = f"{here}.join"
    if not isinstance(value, dict) or set(value) - _JOIN_KEYS:
        raise PanelConfigError(f"{here}: write a table of {', '.join(sorted(_JOIN_KEYS))}")
    metric, dims = _metric_of(value, metric_dims, here)
    if by not in dims:
        raise PanelConfigError(f"{here}.metric: {metric!r} is not grouped by the table's {by!r}, so rows cannot match")
    currency = _text(value, "currency", here)
    if currency is not None and currency not in dims:
        raise PanelConfigError(f"{here}.currency: {metric!r} is grouped by {', '.join(dims)}")
    return Join(metric, currency, _text(value, "label", here))


def _bands(value: Any, here: str) -> tuple[Band, ...]:
    if value is None:
        return ()
    here = f"{here}.bands"
    if not isinstance(value, list) or not value or not all(isinstance(b, dict) for b in value):
        raise PanelConfigError(f'{here}: write [[dashboard.panels.bands]] tables with label = "..." and types = [...]')
    out = []
    for i, band in enumerate(value):
        where = f"{here}[{i}]"
        unknown = set(band) - _BAND_KEYS
        if unknown:
            raise PanelConfigError(
                f"{where}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(_BAND_KEYS))}"
            )
        label = _text(band, "label", where)
        if label is None:
            raise PanelConfigError(f'{where}.label: every band needs a label = "..."')
        types = band.get("types", [])
        if not isinstance(types, list) or not all(isinstance(t, str) and t for t in types):
            raise PanelConfigError(f'{where}.types: write a list of group names or globs, e.g. ["mouse.*", "click"]')
        if not types and i != len(value) - 1:
            raise PanelConfigError(f"{where}.types: only the last band may leave types out (it takes the rest)")
        bid = band.get("id", _ID.sub("-", label.lower()).strip("-") or f"band-{i}")
        if not isinstance(bid, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", bid):
            raise PanelConfigError(f"{where}.id: {bid!r}: write lower-case letters, digits and '-'")
        out.append(Band(bid, label, _text(band, "description", where), tuple(types)))
    return tuple(out)


def _text(item: Mapping[str, Any], key: str, here: str) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise PanelConfigError(f'{here}.{key}: write a non-empty string such as "{_EXAMPLES[key]}"')
    return value


_EXAMPLES = {
    "unit": "orders", "currency": "data.currency", "by": "data.status", "empty_text": "No orders yet.",
    "by_label": "Status", "value_label": "Orders", "other_label": "all other statuses", "label": "Amount",
    "description": "mouse and scroll", "empty": "none yet",
}  # fmt: skip


def _where_table(value: Any, dims: Sequence[str], here: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict) or not value:
        raise PanelConfigError(f'{here}.where: write a table of dimension = "value", e.g. {{ "data.status" = "paid" }}')
    out = []
    for key, expected in value.items():
        if key not in dims:
            raise PanelConfigError(
                f"{here}.where: {key!r} is not a dimension of the metric; its by: {', '.join(dims) or 'nothing'}"
            )
        if isinstance(expected, bool) or not isinstance(expected, str | int | float):
            raise PanelConfigError(f"{here}.where.{key}: write a string or a number, not {expected!r}")
        out.append((key, expected if isinstance(expected, str) else str(expected)))
    return tuple(out)


def _thresholds(value: Any, here: str) -> Thresholds | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise PanelConfigError(f'{here}.thresholds: write {{ warn = 100, critical = 200, direction = "above" }}')
    unknown = set(value) - {"warn", "critical", "direction"}
    if unknown:
        raise PanelConfigError(
            f"{here}.thresholds: unknown key(s) {sorted(unknown)}; allowed: critical, direction, warn"
        )
    lines: dict[str, float | None] = {}
    for key in ("warn", "critical"):
        line = value.get(key)
        if line is not None and (isinstance(line, bool) or not isinstance(line, int | float)):
            raise PanelConfigError(f"{here}.thresholds.{key}: write a number, not {line!r}")
        lines[key] = None if line is None else float(line)
    if lines["warn"] is None and lines["critical"] is None:
        raise PanelConfigError(f"{here}.thresholds: give warn, critical or both")
    direction = value.get("direction", "above")
    if direction not in DIRECTIONS:
        raise PanelConfigError(f"{here}.thresholds.direction: {direction!r}; write above or below")
    warn, critical = lines["warn"], lines["critical"]
    if warn is not None and critical is not None and (critical < warn if direction == "above" else critical > warn):
        side = "at or above" if direction == "above" else "at or below"
        raise PanelConfigError(f"{here}.thresholds: with direction = {direction!r}, critical must be {side} warn")
    return Thresholds(warn, critical, direction)
