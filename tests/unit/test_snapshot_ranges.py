"""dashboard/ranges.py: the config's panels shaped for each range's snapshot (every panel kind), comparison
with the earlier period, threshold states. The windows are folded exactly as the worker folds them."""

from __future__ import annotations

from typing import Any

import pytest

from aggregations.memory_store import MemoryStore
from aggregations.partials import ShardAggregates, StoredPartial
from dashboard.panels import parse_panels
from dashboard.publisher import Publisher, Source
from dashboard.ranges import DAY_MS, RANGE_BY_ID, RANGES, RangeReadings, build_panels
from streamkpi.config import AppConfig, parse_config

NOW = 1_764_417_125_000  # 2025-11-29T11:52:05Z
MIN = 60_000
HOUR = 3_600_000

# An order pipeline: none of the demo's metrics.
ORDERS_TOML = """
[metrics.orders]
agg = "count"
types = ["order.placed"]
by = ["data.status"]

[metrics.revenue]
agg = "sum"
field = "data.total"
types = ["order.placed"]
by = ["data.currency", "data.status"]

[metrics.customers]
agg = "distinct"
field = "data.customerId"

[[dashboard.panels]]
kind = "stat"
title = "Orders"
metric = "orders"
unit = "orders"
thresholds = { warn = 3, critical = 50 }

[[dashboard.panels]]
kind = "stat"
title = "Paid revenue"
metric = "revenue"
currency = "data.currency"
where = { "data.status" = "paid" }

[[dashboard.panels]]
kind = "stat"
title = "Distinct customers"
metric = "customers"

[[dashboard.panels]]
kind = "stat"
title = "Refunds"
metric = "orders"
where = { "data.status" = "refunded" }
thresholds = { critical = 1 }

[[dashboard.panels]]
kind = "timeseries"
title = "Orders by status"
metric = "orders"
by = "data.status"

[[dashboard.panels]]
kind = "breakdown"
title = "Revenue by currency"
metric = "revenue"
by = "data.currency"
currency = "data.currency"

[[dashboard.panels]]
kind = "top"
title = "Top statuses"
metric = "orders"
top = 2

[[dashboard.panels]]
kind = "health"
title = "Workers"

[[dashboard.panels]]
kind = "dlq"
title = "Rejected events"
thresholds = { warn = 1 }
"""

ORDERS = parse_config(ORDERS_TOML, "orders.toml")


def order(ms: int, status: str, currency: str, total: float, customer: str) -> tuple[dict[str, Any], int]:
    data = {"status": status, "currency": currency, "total": total, "customerId": customer}
    return {"eventType": "order.placed", "timestamp": ms, "data": data}, ms


def order_events(now: int) -> list[tuple[dict[str, Any], int]]:
    return [
        order(now - 60_000, "paid", "GBP", 10.5, "c1"),
        order(now - 120_000, "paid", "GBP", 20, "c2"),
        order(now - 30_000, "paid", "USD", 5, "c1"),
        order(now - 10 * MIN, "refunded", "GBP", 7, "c3"),
        order(now - 61 * MIN, "pending", "EUR", 3, "c4"),  # in the 24h range, not in the 1h one
        order(now - DAY_MS - 5 * MIN, "paid", "GBP", 100, "c9"),  # a day earlier, in the 1h comparison
        order(now - DAY_MS - 6 * MIN, "paid", "GBP", 1, "c9"),
        order(now - 7 * DAY_MS - HOUR, "paid", "GBP", 2, "c8"),  # a week earlier
    ]


ORDER_EVENTS = order_events(NOW)


def order_partials(
    config: AppConfig = ORDERS,
    events: list[tuple[dict[str, Any], int]] = ORDER_EVENTS,
    shard: str = "shardId-000000000000",
) -> list[StoredPartial]:
    """The events folded exactly as the worker of `shard` folds them (ShardAggregates)."""
    aggregates = ShardAggregates(shard, config.metric_set, config.resolutions)
    for seq, (body, ms) in enumerate(events, start=1):
        for key in aggregates.missing(aggregates.keys_for(ms)):
            aggregates.install(key, None)
        aggregates.add(body, body["eventType"], ms, (seq, 0, 0))
    return aggregates.dirty("dynamodb")


def orders_store(name: str = "dynamodb", config: AppConfig = ORDERS) -> MemoryStore:
    store = MemoryStore(name)
    store.write(order_partials(config))
    return store


def orders_publisher(*stores: MemoryStore, config: AppConfig = ORDERS, now: int = NOW, **kw: Any) -> Publisher:
    source = Source(
        stream="orders",
        stores=stores or (orders_store(),),
        resolutions=config.resolutions,
        metrics=config.metric_set.by_name,
        health=lambda: {},
        config_source=config.source,
        panels=parse_panels(config.dashboard, {m.name: m.by for m in config.metrics}, config.source),
    )
    return Publisher(source, kw.pop("targets", []), clock=lambda: now, **kw)


def panels_of(range_id: str, publisher: Publisher | None = None) -> dict[str, dict[str, Any]]:
    pub = publisher or orders_publisher()
    snap = pub.publish_once()
    doc = pub.range_snapshot(RANGE_BY_ID[range_id], NOW, snap)
    assert doc["range"]["id"] == range_id
    return {p["id"]: p for p in doc["panels"]}


def test_stats_over_the_last_hour_with_the_day_before() -> None:
    panels = panels_of("1h")
    orders = panels["orders"]
    assert orders["value"] == 4 and orders["unit"] == "orders"
    assert orders["compare"] == {"label": "vs the same hour yesterday", "value": 2, "change": 1.0}
    assert len(orders["spark"]) == 60 and sum(orders["spark"]) == 4
    assert orders["state"] == "warning"  # 4 >= warn 3, < critical 50
    revenue = panels["paid-revenue"]
    assert revenue["amounts"] == [{"currency": "GBP", "amount": 30.5}, {"currency": "USD", "amount": 5}]
    assert revenue["value"] is None and revenue["state"] == "none"
    assert panels["distinct-customers"]["value"] == 3  # c1, c2, c3 (HyperLogLog, exact this small)
    assert panels["distinct-customers"]["compare"]["value"] == 1  # c9
    refunds = panels["refunds"]
    assert refunds["value"] == 1 and refunds["state"] == "critical"


@pytest.mark.parametrize(
    ("range_id", "orders", "before", "windows"),
    [("24h", 5, 2, 24), ("7d", 7, 1, 168), ("30d", 8, 0, 30)],
)
def test_each_range_reads_its_windows_and_compares_with_its_earlier_period(
    range_id: str, orders: int, before: int, windows: int
) -> None:
    stat = panels_of(range_id)["orders"]
    assert stat["value"] == orders and len(stat["spark"]) == windows
    assert stat["compare"]["value"] == before
    assert stat["compare"]["change"] == (round((orders - before) / before, 4) if before else None)


def test_timeseries_stacks_the_top_groups_per_window() -> None:
    series = panels_of("24h")["orders-by-status"]
    assert series["style"] == "stacked" and series["resolution"] == "1h"
    assert [s["id"] for s in series["series"]] == ["paid", "pending", "refunded"]
    points = series["points"]
    assert len(points) == 24 and points[-1]["partial"] and not points[-2]["partial"]
    assert points[-1]["values"] == {"paid": 3, "refunded": 1} and points[-1]["total"] == 4
    assert points[-2]["values"] == {"pending": 1}
    assert points[-1]["startMs"] == NOW - NOW % HOUR


def test_timeseries_folds_groups_past_top_into_other() -> None:
    toml = ORDERS_TOML.replace('by = "data.status"\n', 'by = "data.status"\ntop = 1\nstyle = "lines"\n', 1)
    config = parse_config(toml, "orders.toml")
    pub = orders_publisher(orders_store(config=config), config=config)
    series = panels_of("24h", pub)["orders-by-status"]
    assert [s["id"] for s in series["series"]] == ["paid", "other"] and series["style"] == "lines"
    assert series["points"][-1]["values"] == {"paid": 3, "other": 1}


def test_breakdown_and_top_tables() -> None:
    panels = panels_of("24h")
    breakdown = panels["revenue-by-currency"]
    assert breakdown["dimension"] == "data.currency" and breakdown["additive"]
    assert breakdown["rows"] == [
        {"name": "GBP", "value": 37.5, "share": round(37.5 / 45.5, 4)},
        {"name": "USD", "value": 5, "share": round(5 / 45.5, 4)},
        {"name": "EUR", "value": 3, "share": round(3 / 45.5, 4)},
    ]
    top = panels["top-statuses"]
    assert top["rows"] == [
        {"name": "paid", "value": 3, "share": 0.6},
        {"name": "pending", "value": 1, "share": 0.2},
    ]
    assert top["other"] == 1  # refunded, past top = 2


def test_health_and_dlq_panels_judge_the_pipeline() -> None:
    snapshot = {
        # An ended shard (a resharded parent, every record counted) is no trouble; a stale one is.
        "shards": {"rows": [{"status": "ok"}, {"status": "stale"}, {"status": "ended"}], "note": None},
        "invalid": {"lastHour": 3},
    }
    config_panels = parse_panels(ORDERS.dashboard, {m.name: m.by for m in ORDERS.metrics})
    readings = RangeReadings(RANGES[0], NOW, {}, found={}, previous={})
    shaped = {p["id"]: p for p in build_panels(config_panels, readings, snapshot)}
    assert shaped["workers"]["value"] == 1 and shaped["workers"]["state"] == "none"
    assert shaped["rejected-events"]["value"] == 3 and shaped["rejected-events"]["state"] == "warning"


def test_unreadable_windows_say_so_instead_of_zero() -> None:
    down = orders_store()
    down.available = False
    panels = panels_of("1h", orders_publisher(down))
    assert panels["orders"]["value"] is None and "no aggregate store answered" in panels["orders"]["note"]
    assert panels["orders"]["state"] == "unknown"


def test_the_comparison_reads_the_store_that_keeps_windows_that_old() -> None:
    """Redis keeps 6 h of 1m windows: yesterday's minutes come from DynamoDB."""
    redis_store = MemoryStore("redis")
    recent = [p for p in order_partials() if p.start_ms >= NOW - 6 * HOUR]  # what Redis still holds
    redis_store.write(recent)
    pub = orders_publisher(redis_store, orders_store("dynamodb"))
    orders = panels_of("1h", pub)["orders"]
    assert orders["value"] == 4 and orders["compare"]["value"] == 2


def test_period_today_reads_the_day_window_in_the_hour_view_and_the_range_in_longer_ones() -> None:
    toml = ORDERS_TOML.replace('title = "Orders"\n', 'title = "Orders {period}"\nperiod = "today"\n', 1)
    config = parse_config(toml, "orders.toml")
    pub = orders_publisher(orders_store(config=config), config=config)
    hour = panels_of("1h", pub)["orders-period"]
    assert hour["value"] == 5 and hour["compare"] is None and hour["period"] == "today"  # since 00:00 UTC
    assert hour["title"] == "Orders today" and "spark" not in hour
    week = panels_of("7d", pub)["orders-period"]
    assert week["value"] == 7 and week["compare"]["value"] == 1 and week["period"] == "range"
    assert week["title"] == "Orders in the last 7 days" and len(week["spark"]) == 168


BANDS_TOML = (
    ORDERS_TOML
    + """
[[dashboard.panels]]
kind = "timeseries"
id = "banded"
title = "Orders per {window}, {range}"
metric = "orders"
by = "data.status"

[[dashboard.panels.bands]]
label = "Done"
types = ["paid", "refunded"]

[[dashboard.panels.bands]]
label = "Open"

[[dashboard.panels]]
kind = "breakdown"
id = "banded-table"
title = "{Period} by state"
metric = "orders"
by = "data.status"
other_label = "other statuses"

[[dashboard.panels.bands]]
label = "Done"
types = ["paid", "refunded"]

[[dashboard.panels.bands]]
label = "Open"

[[dashboard.panels]]
kind = "top"
id = "joined"
title = "Orders and revenue by status"
metric = "orders"
join = { metric = "revenue", currency = "data.currency", label = "Revenue" }
detail = { metric = "customers", text = "{value} customers" }

[[dashboard.panels]]
kind = "stat"
id = "with-detail"
title = "Paid"
metric = "orders"
where = { "data.status" = "paid" }
detail = { metric = "revenue", currency = "data.currency", where = { "data.status" = "paid" }, empty = "no revenue" }
"""
)
BANDS = parse_config(BANDS_TOML, "bands.toml")


def test_bands_fold_groups_into_series_and_rows() -> None:
    pub = orders_publisher(orders_store(config=BANDS), config=BANDS)
    panels = panels_of("24h", pub)
    series = panels["banded"]
    assert series["title"] == "Orders per hour, last 24 hours"
    assert [s["id"] for s in series["series"]] == ["done", "open"]
    assert series["series"][0] == {"id": "done", "label": "Done", "description": None, "types": ["paid", "refunded"]}
    assert series["points"][-1]["values"] == {"done": 4} and series["points"][-2]["values"] == {"open": 1}
    table = panels["banded-table"]
    assert table["title"] == "Last 24 hours by state" and table["bands"]
    assert [(r["name"], r["value"]) for r in table["rows"]] == [("Done", 4), ("Open", 1)]
    assert table["rows"][0]["children"] == [{"name": "paid", "value": 3}, {"name": "refunded", "value": 1}]


def test_a_join_adds_a_column_per_row_and_a_detail_a_second_number() -> None:
    pub = orders_publisher(orders_store(config=BANDS), config=BANDS)
    panels = panels_of("1h", pub)
    joined = panels["joined"]
    assert [r["name"] for r in joined["rows"]] == ["paid", "refunded"]
    assert joined["join"]["label"] == "Revenue" and joined["join"]["currency"]
    assert joined["join"]["values"]["paid"] == [{"currency": "GBP", "amount": 30.5}, {"currency": "USD", "amount": 5}]
    assert joined["join"]["values"]["refunded"] == [{"currency": "GBP", "amount": 7}]
    assert joined["detail"]["value"] == 3 and joined["detail"]["text"] == "{value} customers"
    paid = panels["with-detail"]
    assert paid["value"] == 3
    assert paid["detail"]["amounts"] == [{"currency": "GBP", "amount": 30.5}, {"currency": "USD", "amount": 5}]
    assert paid["detail"]["empty"] == "no revenue"


def test_longer_ranges_are_rewritten_less_often(tmp_path: Any) -> None:
    from dashboard.publisher import DirTarget

    clock = [NOW]
    pub = orders_publisher(targets=[DirTarget(tmp_path)])
    pub.clock = lambda: clock[0]
    pub.publish_once()
    files = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert set(files) == {"snapshot.json", *(r.file for r in RANGES)}
    written = dict(pub.range_written_ms)
    clock[0] = NOW + 31_000
    pub.publish_once()
    assert pub.range_written_ms["1h"] == pub.range_written_ms["24h"] == NOW + 31_000
    assert pub.range_written_ms["7d"] == pub.range_written_ms["30d"] == written["7d"] == NOW
    clock[0] = NOW + 301_000
    pub.publish_once()
    assert pub.range_written_ms["7d"] == NOW + 301_000


def test_a_config_without_a_dashboard_section_gets_the_default_panels_that_fit() -> None:
    from streamkpi.app import dashboard_panels

    config = parse_config("", "plain.toml")  # only the built-in `events`
    source = orders_publisher(orders_store(config=config), config=config).source
    source.panels = dashboard_panels(config)
    snap = Publisher(source, [], clock=lambda: NOW).publish_once()
    assert snap["range"]["id"] == "1h"
    panels = {p["id"]: p for p in snap["panels"]}
    assert list(panels) == ["rate", "events-today", "invalid-hour", "minutes", "levels", "invalid", "shards"]
    assert panels["events-today"]["value"] == 5 == snap["today"]["events"]
    assert [(r["name"], r["value"]) for r in panels["levels"]["rows"]] == [
        ("Low level", 0), ("Mid level", 0), ("High level", 0), ("Other", 5),
    ]  # fmt: skip
