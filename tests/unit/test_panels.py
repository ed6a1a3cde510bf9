"""dashboard/panels.py: [[dashboard.panels]] read and checked; each mistake names the panel, the key and the fix."""

from __future__ import annotations

import re
from typing import Any

import pytest

from dashboard.panels import Band, Detail, Join, PanelConfigError, Thresholds, parse_panels
from streamkpi.app import dashboard_panels
from streamkpi.config import load_config, parse_config
from streamkpi.errors import ConfigError

DIMS = {"events": ("eventType",), "orders": ("data.status",), "revenue": ("data.currency", "data.status")}


def panels(*items: dict[str, Any]) -> Any:
    return parse_panels({"panels": list(items)}, DIMS, "orders.toml")


DEFAULT_IDS = [
    "rate", "events-today", "donations-count", "signups", "distinct-today", "invalid-hour",
    "minutes", "levels", "pages", "donations", "invalid", "shards",
]  # fmt: skip


def test_the_default_config_declares_the_demo_page() -> None:
    found = dashboard_panels(load_config(None))
    assert [p.id for p in found] == DEFAULT_IDS
    by_id = {p.id: p for p in found}
    assert by_id["rate"].kind == "health" and by_id["rate"].view == "rate"
    assert by_id["invalid-hour"].view == "stat" and by_id["invalid"].view == "chart"
    assert by_id["donations-count"].detail == Detail(
        "donation_amount", currency="data.currency", empty="none yet {period}"
    )
    assert by_id["donations"].join == Join("donation_amount", "data.currency", "Amount")
    assert [b.id for b in by_id["minutes"].bands] == ["low", "mid", "high", "other"]
    assert by_id["minutes"].bands[-1] == Band("other", "Other", "any other type", ())
    assert by_id["events-today"].period == "today" and by_id["minutes"].period == "range"


def test_a_config_without_a_dashboard_section_gets_the_default_panels_that_fit() -> None:
    """No [dashboard]: the default config's panels whose metrics the config has, and the pipeline's own."""
    orders = parse_config('[metrics.orders]\nby = ["data.status"]\n', "orders.toml")
    assert [p.id for p in dashboard_panels(orders)] == [
        "rate", "events-today", "invalid-hour", "minutes", "levels", "invalid", "shards",
    ]  # fmt: skip
    # A `detail` or `join` whose metric is missing is left out, not the panel.
    some = parse_config(
        '[metrics.donations]\nby = ["data.charityId"]\ntypes = ["donation.made"]\n'
        '[metrics.signups]\nby = ["eventType"]\n',
        "some.toml",
    )
    by_id = {p.id: p for p in dashboard_panels(some)}
    assert by_id["donations-count"].detail is None and by_id["donations"].join is None
    assert by_id["signups"].detail is not None and "distinct-today" not in by_id
    # A config with its own [dashboard] gets exactly its panels, and its mistakes are errors.
    own = parse_config('[[dashboard.panels]]\nkind = "stat"\ntitle = "Ev"\nmetric = "events"\n', "own.toml")
    assert [p.id for p in dashboard_panels(own)] == ["ev"]


def test_panels_are_read_with_their_defaults() -> None:
    stat, top, health = panels(
        {"kind": "stat", "title": "Paid orders", "metric": "orders", "where": {"data.status": "paid"}},
        {"kind": "top", "title": "Revenue by currency", "metric": "revenue", "by": "data.currency"},
        {"kind": "health", "title": "Workers"},
    )
    assert (stat.id, stat.kind, stat.where, stat.period, stat.thresholds) == (
        "paid-orders", "stat", (("data.status", "paid"),), "range", None,
    )  # fmt: skip
    assert (top.id, top.by, top.top) == ("revenue-by-currency", "data.currency", 10)
    assert health.metric is None and health.index == 2


def test_the_dashboard_section_passes_through_the_config_file() -> None:
    config = parse_config(
        '[metrics.orders]\nby = ["data.status"]\n\n[[dashboard.panels]]\nkind = "stat"\ntitle = "Orders"\n'
        'metric = "orders"\n',
        "orders.toml",
    )
    (only,) = parse_panels(config.dashboard, {m.name: m.by for m in config.metrics}, config.source)
    assert only.metric == "orders"
    with pytest.raises(ConfigError, match=r"\[dashboard\] must be a table"):
        parse_config('dashboard = "big"\n', "x.toml")


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            {"kind": "stat", "title": "Revenue", "metric": "revenu"},
            "orders.toml: dashboard.panels[0] ('Revenue').metric: 'revenu' is not a configured metric; "
            "configured: events, orders, revenue",
        ),
        (
            {"kind": "gauge", "title": "Orders", "metric": "orders"},
            "dashboard.panels[0] ('Orders').kind: 'gauge' is not a panel kind; "
            "write one of stat, timeseries, top, breakdown, health, dlq",
        ),
        ({"kind": "stat", "metric": "orders"}, "dashboard.panels[0].title: every panel needs a title"),
        (
            {"kind": "top", "title": "T", "metric": "revenue"},
            "('T').by: a top panel needs by = one of data.currency, data.status",
        ),
        (
            {"kind": "timeseries", "title": "T", "metric": "orders", "by": "data.currency"},
            "('T').by: 'orders' is grouped by data.status; 'data.currency' is not one of them",
        ),
        (
            {"kind": "stat", "title": "T", "metric": "orders", "where": {"status": "paid"}},
            "('T').where: 'status' is not a dimension of the metric; its by: data.status",
        ),
        (
            {"kind": "stat", "title": "T", "metric": "orders", "colour": "red"},
            "('T'): unknown key(s) ['colour']; allowed: ",
        ),
        ({"kind": "health", "title": "H", "metric": "orders"}, "('H'): a health panel shows the pipeline itself"),
        (
            {"kind": "timeseries", "title": "T", "metric": "orders", "style": "pie"},
            "('T').style: 'pie'; write one of stacked, lines",
        ),
        ({"kind": "top", "title": "T", "metric": "orders", "top": 0}, "('T').top: 0; write a whole number from 1"),
        (
            {"kind": "stat", "title": "T", "metric": "orders", "thresholds": {"warn": "high"}},
            "('T').thresholds.warn: write a number, not 'high'",
        ),
        (
            {"kind": "stat", "title": "T", "metric": "orders", "thresholds": {"warn": 5, "critical": 1}},
            "('T').thresholds: with direction = 'above', critical must be at or above warn",
        ),
        (
            {"kind": "stat", "title": "T", "metric": "orders", "thresholds": {"warn": 1, "direction": "up"}},
            "('T').thresholds.direction: 'up'; write above or below",
        ),
        (
            {"kind": "stat", "title": "T", "metric": "revenue", "currency": "data.currency", "thresholds": {"warn": 1}},
            "('T').thresholds: amounts in several currencies have no single value to judge",
        ),
        ({"kind": "stat", "title": "T", "metric": "orders", "id": "Not An Id"}, "('T').id: 'Not An Id': write"),
    ],
)
def test_each_mistake_is_a_clear_message(item: dict[str, Any], message: str) -> None:
    with pytest.raises(PanelConfigError, match=re.escape(message)):
        panels(item)


def test_list_level_mistakes() -> None:
    with pytest.raises(PanelConfigError, match=r"dashboard.panels must be a non-empty list"):
        parse_panels({"panels": []}, DIMS, "x.toml")
    with pytest.raises(PanelConfigError, match=r"\[dashboard\] has unknown key\(s\) \['theme'\]"):
        parse_panels({"theme": "dark"}, DIMS, "x.toml")
    with pytest.raises(PanelConfigError, match=r"\[1\] \('Orders'\).id: 'orders' is used by more than one panel"):
        panels(
            {"kind": "stat", "title": "Orders", "metric": "orders"},
            {"kind": "top", "title": "Orders", "metric": "orders"},
        )
    with pytest.raises(PanelConfigError, match="at most one health panel with view = 'table'"):
        panels({"kind": "health", "title": "A"}, {"kind": "health", "title": "B"})
    assert len(panels({"kind": "health", "title": "A"}, {"kind": "health", "title": "B", "view": "rate"})) == 2


@pytest.mark.parametrize(
    ("warn", "critical", "direction", "value", "state"),
    [
        (10, 20, "above", 9, "ok"),
        (10, 20, "above", 10, "warning"),
        (10, 20, "above", 20, "critical"),
        (10, 5, "below", 11, "ok"),
        (10, 5, "below", 10, "warning"),
        (10, 5, "below", 0, "critical"),
        (None, 5, "below", 6, "ok"),
        (10, None, "above", None, "unknown"),
    ],
)
def test_threshold_states(warn: float | None, critical: float | None, direction: str, value: Any, state: str) -> None:
    assert Thresholds(warn, critical, direction).state(value) == state


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"view": "rate"}, "('T').view: only health and dlq panels have views"),
        ({"kind": "stat", "detail": {"metric": "nope"}}, "('T').detail.metric: 'nope' is not a configured metric"),
        (
            {"kind": "stat", "detail": {"metric": "orders", "text": "no value"}},
            "('T').detail.text: write a string holding {value}",
        ),
        ({"kind": "stat", "detail": {"metric": "orders", "colour": 1}}, "('T').detail: unknown key(s) ['colour']"),
        ({"detail": {"metric": "orders"}}, "('T').detail: a timeseries panel has no detail"),
        ({"bands": [{"label": "A"}]}, "('T').bands: bands fold the groups of `by`"),
        (
            {"by": "data.status", "bands": [{"label": "Rest"}, {"label": "B", "types": ["x"]}]},
            "('T').bands[0].types: only the last band may leave types out",
        ),
        ({"join": {"metric": "orders"}}, "('T').join: a timeseries panel has no join"),
    ],
)
def test_option_mistakes_are_clear_messages(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(PanelConfigError, match=re.escape(message)):
        panels({"kind": "timeseries", "title": "T", "metric": "orders", **extra})


def test_a_join_must_match_the_table_s_rows() -> None:
    with pytest.raises(PanelConfigError, match=re.escape("'orders' is not grouped by the table's 'data.currency'")):
        panels({"kind": "top", "title": "T", "metric": "revenue", "by": "data.currency", "join": {"metric": "orders"}})
    (top,) = panels(
        {"kind": "top", "title": "T", "metric": "orders", "join": {"metric": "revenue", "currency": "data.currency"}}
    )
    assert top.join == Join("revenue", "data.currency", None)


def test_the_readme_s_panel_example_is_a_valid_config() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Panels from the config") :]
    example = section[section.index("```toml\n") + 8 : section.index("```\n", section.index("```toml"))]
    config = parse_config(example, "README example")
    found = dashboard_panels(config)
    assert [p.kind for p in found] == ["stat", "stat", "timeseries", "top", "health"]
    assert found[0].detail is not None and found[3].join == Join("revenue", "data.currency", "Revenue")
