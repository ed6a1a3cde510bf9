"""The page drawn from the config's panels, in headless chromium: an order pipeline (none of the demo's
metrics) shows exactly its panels with the snapshot's numbers, the range buttons and `#range=` redraw from
the right file, and a threshold crossing turns a panel to warning, then critical, on the page and on
/metrics. The publisher is the real one, reading the windows that ShardAggregates folds as the worker does."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from selenium.webdriver.common.by import By

from aggregations.memory_store import MemoryStore
from dashboard.publisher import Publisher
from dashboard.server import DashboardServer, SnapshotHolder, make_server
from streamkpi.config import parse_config
from tests.browser.conftest import browser, wait_until
from tests.unit.test_snapshot_ranges import ORDERS_TOML, order, order_events, order_partials, orders_publisher

pytestmark = pytest.mark.browser
__all__ = ["browser"]  # the session's chromium (a fixture of tests/browser)

# Orders: ok below 5 in the last hour, warning from 5, critical from 8.
CONFIG = parse_config(
    ORDERS_TOML.replace("thresholds = { warn = 3, critical = 50 }", "thresholds = { warn = 5, critical = 8 }"),
    "orders.toml",
)
PANEL_IDS = [
    "orders", "paid-revenue", "distinct-customers", "refunds", "orders-by-status", "revenue-by-currency",
    "top-statuses", "workers", "rejected-events",
]  # fmt: skip


@dataclass
class Dashboard:
    server: DashboardServer
    holder: SnapshotHolder
    publisher: Publisher
    store: MemoryStore

    @property
    def url(self) -> str:
        return self.server.url

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        connection = http.client.HTTPConnection("127.0.0.1", self.server.server_address[1], timeout=10)
        try:
            connection.request("GET", "/metrics")
            text = connection.getresponse().read().decode()
        finally:
            connection.close()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


@pytest.fixture
def dashboard() -> Iterator[Dashboard]:
    now = int(time.time() * 1000)
    store = MemoryStore("dynamodb")
    store.write(order_partials(CONFIG, order_events(now)))
    holder = SnapshotHolder()
    publisher = orders_publisher(store, config=CONFIG, now=now, targets=[holder])
    publisher.clock = lambda: int(time.time() * 1000)
    publisher.publish_once()
    server = make_server(0, holder, publisher)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield Dashboard(server, holder, publisher, store)
    finally:
        server.shutdown()
        server.server_close()


def field(browser: Any, name: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, f'[data-field="{name}"]').text)


def table(browser: Any, panel: str) -> list[list[str]]:
    found = browser.find_elements(By.CSS_SELECTOR, f"#table-{panel} tbody tr")
    return [[c.text for c in r.find_elements(By.CSS_SELECTOR, "th, td")] for r in found]


def pressed(browser: Any, range_id: str) -> str:
    button = browser.find_element(By.CSS_SELECTOR, f'#ranges button[data-range="{range_id}"]')
    return str(button.get_attribute("aria-pressed"))


def panel_state(browser: Any, panel: str) -> str:
    return str(browser.find_element(By.ID, f"panel-{panel}").get_attribute("data-state"))


def shown_panels(browser: Any) -> list[str]:
    return [str(p.get_attribute("data-panel")) for p in browser.find_elements(By.CSS_SELECTOR, "#panels [data-panel]")]


def open_page(browser: Any, url: str) -> None:
    browser.get("about:blank")
    browser.get(url)
    wait_until(
        lambda: (
            browser.find_element(By.ID, "freshness").get_attribute("data-state") == "fresh" and shown_panels(browser)
        ),
        15,
        "the panels",
    )


def test_the_page_shows_exactly_the_configured_panels_with_their_numbers(browser: Any, dashboard: Dashboard) -> None:
    open_page(browser, dashboard.url)
    assert shown_panels(browser) == PANEL_IDS
    assert "not in" not in browser.find_element(By.ID, "main").text  # no "metric ... is not in your config"
    titles = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "#panels [data-panel] h2")]
    assert titles == [
        "Orders", "Paid revenue", "Distinct customers", "Refunds", "Orders by status", "Revenue by currency",
        "Top statuses", "Workers", "Rejected events",
    ]  # fmt: skip
    assert field(browser, "orders") == "4 orders"
    assert field(browser, "orders-compare") == "▲ 100.0 % vs the same hour yesterday (2 orders)"
    assert field(browser, "paid-revenue") == "£30.50 · $5.00"
    assert field(browser, "distinct-customers") == "3"
    assert field(browser, "refunds") == "1"
    assert panel_state(browser, "orders") == "ok" and panel_state(browser, "refunds") == "critical"
    assert field(browser, "refunds-state") == "Critical: 1 is at or above 1"
    assert table(browser, "top-statuses") == [["paid", "3"], ["refunded", "1"]]  # a ranking: no share column
    assert table(browser, "revenue-by-currency") == [["GBP", "£37.50", "88.2 %"], ["USD", "$5.00", "11.8 %"]]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-orders-by-status g.window")) == 60
    assert browser.find_elements(By.CSS_SELECTOR, "#panel-orders svg.spark")
    assert pressed(browser, "1h") == "true"


def test_switching_ranges_redraws_from_that_range_s_snapshot(browser: Any, dashboard: Dashboard) -> None:
    open_page(browser, dashboard.url)
    browser.find_element(By.CSS_SELECTOR, '#ranges button[data-range="24h"]').click()
    wait_until(lambda: field(browser, "orders") == "5 orders", 10, "the 24h total")
    assert browser.current_url.endswith("#range=24h")
    assert pressed(browser, "24h") == "true"
    assert pressed(browser, "1h") == "false"
    assert field(browser, "orders-compare") == "▲ 150.0 % vs the 24 hours a day earlier (2 orders)"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-orders-by-status g.window")) == 24
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert any("/snapshot-24h.json?" in name for name in fetched), fetched

    browser.find_element(By.CSS_SELECTOR, '#ranges button[data-range="30d"]').click()
    wait_until(lambda: field(browser, "orders") == "8 orders", 10, "the 30d total")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-orders-by-status g.window")) == 30
    assert field(browser, "orders-compare") == "vs the 30 days before: 0 orders"

    # A link (or a wall screen) with the range in it opens on that range.
    open_page(browser, dashboard.url + "#range=7d")
    wait_until(lambda: field(browser, "orders") == "7 orders", 10, "the 7d total on load")
    assert pressed(browser, "7d") == "true"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-orders-by-status g.window")) == 168
    assert field(browser, "orders-compare") == "▲ 600.0 % vs the same 7 days a week earlier (1 orders)"


def test_a_threshold_crossing_shows_on_the_page_and_on_metrics(browser: Any, dashboard: Dashboard) -> None:
    labels = (("panel", "orders"), ("title", "Orders"))
    assert dashboard.metrics()[("streamkpi_dashboard_panel_state", labels)] == 0
    assert dashboard.metrics()[("streamkpi_dashboard_panel_value", labels)] == 4
    open_page(browser, dashboard.url)
    assert panel_state(browser, "orders") == "ok" and not browser.find_elements(
        By.CSS_SELECTOR, '[data-field="orders-state"]'
    )

    now = int(time.time() * 1000)
    more = [order(now - i * 1000, "paid", "USD", 1, f"n{i}") for i in range(1, 3)]  # 4 + 2 = 6: warning
    dashboard.store.write(order_partials(CONFIG, more, shard="shardId-000000000001"))
    dashboard.publisher.publish_once()
    wait_until(lambda: panel_state(browser, "orders") == "warning", 10, "the warning")
    assert field(browser, "orders") == "6 orders" and field(browser, "orders-state") == "Warning: 6 is at or above 5"
    assert dashboard.metrics()[("streamkpi_dashboard_panel_state", labels)] == 1

    more += [order(now - i * 1000, "paid", "USD", 1, f"n{i}") for i in range(3, 5)]  # 8: critical
    dashboard.store.write(order_partials(CONFIG, more, shard="shardId-000000000001"))
    dashboard.publisher.publish_once()
    wait_until(lambda: panel_state(browser, "orders") == "critical", 10, "the critical state")
    assert field(browser, "orders-state") == "Critical: 8 is at or above 8"
    samples = dashboard.metrics()
    assert samples[("streamkpi_dashboard_panel_state", labels)] == 2
    assert samples[("streamkpi_dashboard_panel_value", labels)] == 8
    # Only panels with thresholds are exported.
    assert not any(
        k[0] == "streamkpi_dashboard_panel_state" and ("panel", "distinct-customers") in k[1] for k in samples
    )
    colours = browser.execute_script(
        "const s = getComputedStyle(document.getElementById('panel-orders'));"
        "return [s.borderTopColor, s.backgroundColor]"
    )
    assert colours == ["rgb(180, 35, 24)", "rgb(253, 236, 235)"]  # --bad-border, --bad-bg


def test_a_phone_sized_screen_needs_no_sideways_scrolling(browser: Any, dashboard: Dashboard) -> None:
    browser.set_window_size(390, 844)
    try:
        open_page(browser, dashboard.url + "#range=24h")
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
    finally:
        browser.set_window_size(1280, 900)


def test_a_page_without_range_files_falls_back_to_snapshot_json(browser: Any) -> None:
    """An older publisher writes snapshot.json only: a #range link still shows the page, and the range
    buttons say which range it shows (the 60 minutes of snapshot.json)."""
    from tests.browser.fixtures import known_snapshot

    holder = SnapshotHolder()
    holder.write(__import__("orjson").dumps(known_snapshot(int(time.time() * 1000))))
    server = make_server(0, holder)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        browser.get("about:blank")
        browser.get(server.url + "#range=24h")
        wait_until(lambda: field(browser, "events-today") == "1,234,567", 15, "the page from snapshot.json")
        pressed = browser.find_element(By.CSS_SELECTOR, '#ranges button[aria-pressed="true"]')
        assert pressed.get_attribute("data-range") == "1h"
    finally:
        server.shutdown()
        server.server_close()


def demo_event(kind: str, ms: int, **extra: Any) -> tuple[dict[str, Any], int]:
    return {"eventType": kind, "timestamp": ms, "userId": f"u{ms % 7}", **extra}, ms


def test_the_default_config_s_page_switches_ranges_too(browser: Any) -> None:
    """The demo's page (the default config's panels, drawn by the same renderers) has the range buttons:
    its "today" panels read the range in the longer views, and its stats compare with a day earlier."""
    from streamkpi.app import dashboard_panels
    from streamkpi.config import load_config

    now = int(time.time() * 1000)
    config = load_config(None)
    donation = {"data": {"amount": 10, "currency": "GBP", "charityId": "2357"}}
    events = [
        demo_event("page.view", now - 60_000, path="/a"),
        demo_event("donation.made", now - 90_000, **donation),
        demo_event("user.created", now - 100_000),
        *(demo_event("page.view", now - 20 * 3_600_000 - i * 60_000, path="/b") for i in range(3)),
        demo_event("page.view", now - 86_400_000 - 30 * 60_000, path="/c"),  # a day earlier: the comparison
    ]
    store = MemoryStore("dynamodb")
    store.write(order_partials(config, events))
    holder = SnapshotHolder()
    publisher = orders_publisher(store, config=config, now=now, targets=[holder])
    publisher.source.panels = dashboard_panels(config)
    publisher.clock = lambda: int(time.time() * 1000)
    publisher.publish_once()
    server = make_server(0, holder, publisher)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        open_page(browser, server.url)
        assert pressed(browser, "1h") == "true" and browser.find_element(By.ID, "ranges").is_displayed()
        assert browser.find_element(By.ID, "h-events-today").text == "Events today"
        assert browser.find_elements(By.CSS_SELECTOR, '[data-field="events-today-compare"]') == []
        assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-minutes g.minute")) == 60

        browser.find_element(By.CSS_SELECTOR, '#ranges button[data-range="24h"]').click()
        wait_until(lambda: browser.execute_script("return location.hash") == "#range=24h", 5, "the URL")
        wait_until(lambda: field(browser, "events-today") == "6", 10, "the 24h total of the default page")
        assert browser.find_element(By.ID, "h-events-today").text == "Events in the last 24 hours"
        compare = field(browser, "events-today-compare")
        assert compare == "▲ 500.0 % vs the 24 hours a day earlier (1)", compare
        assert table(browser, "pages") == [["/b", "3"], ["/a", "1"]]
        assert table(browser, "donations") == [["2357", "1", "£10.00"]]
        assert browser.find_element(By.ID, "h-levels").text == "Last 24 hours by level"
        assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-minutes g.hour")) == 24
        assert field(browser, "donations-count-note") == "£10.00"
        # "distinct users in the last 60 minutes" would repeat the panel's own number here: left out.
        assert field(browser, "distinct-today-note") == "last 24 hours"
    finally:
        server.shutdown()
        server.server_close()
