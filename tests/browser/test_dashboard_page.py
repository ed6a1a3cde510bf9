"""The dashboard page in headless chromium: it shows the numbers of a known snapshot, redraws when the
snapshot changes (no reload), warns when the data goes stale or cannot be fetched, explains empty
panels, and stays readable on a phone."""

from __future__ import annotations

import re
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from dashboard.snapshot import Problem
from tests.browser.conftest import Site, now_ms, wait_until
from tests.browser.fixtures import (
    DISTINCT_LAST_HOUR,
    DISTINCT_TODAY,
    XSS_PATH,
    empty_snapshot,
    estimate,
    known_snapshot,
)

pytestmark = pytest.mark.browser


def text(browser: Any, css: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, css).text)


def field(browser: Any, name: str) -> str:
    return text(browser, f'[data-field="{name}"]')


def rows(browser: Any, table_id: str) -> list[list[str]]:
    found = browser.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")
    return [[cell.text for cell in row.find_elements(By.CSS_SELECTOR, "th, td")] for row in found]


def freshness(browser: Any) -> str:
    return str(browser.find_element(By.ID, "freshness").get_attribute("data-state"))


def open_page(browser: Any, site: Site, wait_for: str = "fresh") -> None:
    browser.get(site.url)
    wait_until(lambda: freshness(browser) == wait_for, 15, f"the page to be {wait_for}")


def test_the_page_shows_the_numbers_of_a_known_snapshot(browser: Any, site: Site) -> None:
    site.publish(known_snapshot(now_ms()))
    open_page(browser, site)

    assert text(browser, "#stream-name") == "streamkpi-events" and text(browser, "#store-name") == "redis"
    assert re.fullmatch(r"Updated (just now|\d s ago) · \d\d:\d\d:\d\d UTC", text(browser, "#freshness-text"))
    assert not browser.find_element(By.ID, "alert").is_displayed()
    assert not browser.find_element(By.ID, "problems").is_displayed()

    assert field(browser, "rate") == "51.5"
    assert field(browser, "events-today") == "1,234,567"
    assert field(browser, "events-today-note") == "since 00:00 UTC"
    assert field(browser, "donations-count") == "165"
    assert field(browser, "donations-count-note") == "£13,345.50 · $100.00"
    assert field(browser, "signups") == "87" and field(browser, "signups-note") == "52 verifications"
    assert field(browser, "distinct-today") == f"{estimate(DISTINCT_TODAY):,}"  # HyperLogLog: 4,321 users
    hour = estimate(DISTINCT_LAST_HOUR, "h")
    assert field(browser, "distinct-today-note") == f"{hour:,} in the last 60 minutes (estimates)"
    assert field(browser, "invalid-hour") == "55"  # 10 + 9 + ... + 1 in the observed minutes
    assert field(browser, "invalid-hour-note").startswith("0.1/s over the last minute · counted since")

    pages = rows(browser, "table-pages")
    assert pages[0] == ["/fundraising/ice-bucket-challenge-2014", "3,456"]
    assert pages[1] == ["/", "2,345"]
    assert pages[3] == [XSS_PATH, "3"]  # shown as text, never as markup
    assert browser.title == "streamkpi · live KPIs"
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []

    assert rows(browser, "table-donations") == [["2357", "120", "£12,345.50\n$100.00"], ["11854", "45", "£1,000.00"]]
    assert text(browser, "#donations-detail") == "Largest donation today: £250.00 · $100.00"
    levels = rows(browser, "table-levels")
    assert levels[0] == ["Low level", "1,000,000"] and ["mouse.move", "500,000"] in levels
    assert ["Other", "14,263"] in levels and ["custom.thing", "14,263"] in levels

    reasons = rows(browser, "table-reasons")
    assert reasons[0][0].startswith("bad_timestamp") and reasons[0][1] == "12"
    assert [r[1] for r in reasons] == ["12", "5", "3", "2"]
    assert "The queue holds about 42 letters." in text(browser, "#dlq-note")

    shards = rows(browser, "table-shards")
    assert shards[0][:3] == ["shardId-000000000000", "ok", "0.2 s"] and shards[0][4:] == ["51.5", "1 s ago", "7"]
    assert shards[1][0] == "shardId-000000000001" and shards[1][1].startswith("stale\nno report for 2 min")

    chart = browser.find_element(By.CSS_SELECTOR, "#chart-minutes svg")
    assert chart.get_attribute("role") == "img"
    assert "stacked by level" in chart.get_attribute("aria-label")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-minutes g.minute")) == 60
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-minutes g.minute.partial")) == 1
    legend = [" ".join(li.text.split()) for li in browser.find_elements(By.CSS_SELECTOR, "#legend-minutes li")]
    assert legend[0] == "Low level (mouse.*, click, scroll)" and legend[-1] == "current minute, still filling"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-invalid g.minute rect.unknown")) == 50


def test_the_page_redraws_when_the_snapshot_changes_without_reloading(browser: Any, site: Site) -> None:
    site.publish(known_snapshot(now_ms()))
    open_page(browser, site)
    assert field(browser, "events-today") == "1,234,567"
    browser.execute_script("window.__sameDocument = 'yes'")

    site.publish(known_snapshot(now_ms(), scale=2))
    wait_until(lambda: field(browser, "events-today") == "2,469,134", 10, "the new total")
    assert field(browser, "donations-count") == "330"
    assert rows(browser, "table-pages")[0] == ["/fundraising/ice-bucket-challenge-2014", "6,912"]
    assert browser.execute_script("return window.__sameDocument") == "yes", "the page reloaded"
    assert browser.execute_script("return performance.getEntriesByType('navigation').length") == 1


def test_a_snapshot_that_stops_changing_turns_into_a_stale_warning(browser: Any, site: Site) -> None:
    site.publish(known_snapshot(now_ms() - 26_000))
    open_page(browser, site)
    assert re.match(r"Updated 2\d s ago", text(browser, "#freshness-text"))

    # Nothing new is published: the same snapshot keeps coming back and ages past 30 s.
    wait_until(lambda: freshness(browser) == "stale", 12, "the stale warning")
    alert = browser.find_element(By.ID, "alert")
    assert alert.is_displayed() and alert.get_attribute("role") == "alert"
    assert re.match(
        r"Warning: no new data since \d\d:\d\d:\d\d UTC: the numbers below are more than 30 s old", alert.text
    )
    first_alert = alert.text
    assert re.match(r"Stale: data is 3\d s old", text(browser, "#freshness-text"))
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "stale"
    assert field(browser, "events-today") == "1,234,567", "the old numbers stay visible, marked stale"
    age = text(browser, "#freshness-text")
    wait_until(lambda: text(browser, "#freshness-text") != age, 3, "the age to tick on")
    assert alert.text == first_alert, "the alert (announced on every change) must not tick"

    site.publish(known_snapshot(now_ms()))
    wait_until(lambda: freshness(browser) == "fresh", 10, "fresh again")
    assert not browser.find_element(By.ID, "alert").is_displayed()


def test_a_snapshot_generated_long_ago_is_stale_at_once(browser: Any, site: Site) -> None:
    site.publish(known_snapshot(now_ms() - 3 * 3600 * 1000 - 5 * 60 * 1000))
    open_page(browser, site, wait_for="stale")
    assert text(browser, "#freshness-text").startswith("Stale: data is 3 h 5 min old")
    assert "more than 30 s old" in text(browser, "#alert")


def test_a_failed_fetch_is_a_clear_warning(browser: Any, site: Site) -> None:
    site.publish(known_snapshot(now_ms()))
    open_page(browser, site)
    site.stop()
    wait_until(lambda: freshness(browser) == "error", 12, "the fetch error")
    assert text(browser, "#alert").startswith("Warning: the snapshot could not be loaded (")
    assert re.search(r"The numbers below are from \d\d:\d\d:\d\d UTC\.$", text(browser, "#alert"))
    assert text(browser, "#freshness-text").startswith("Cannot load the snapshot — showing data from")
    assert field(browser, "events-today") == "1,234,567"


def test_before_the_first_snapshot_the_page_says_why_there_is_nothing(browser: Any, site: Site) -> None:
    open_page(browser, site, wait_for="error")
    assert text(browser, "#freshness-text").startswith("Cannot load the snapshot (HTTP 503: no snapshot yet")
    assert "Is the publisher running?" in text(browser, "#alert")
    site.publish(known_snapshot(now_ms()))
    wait_until(lambda: freshness(browser) == "fresh", 10, "the first snapshot")
    assert field(browser, "events-today") == "1,234,567"


def test_empty_panels_say_why_they_are_empty(browser: Any, site: Site) -> None:
    site.publish(empty_snapshot(now_ms()))
    open_page(browser, site)
    assert text(browser, "#empty-minutes").startswith("No events in the last 60 minutes")
    assert "is the worker running?" in text(browser, "#empty-minutes")
    assert text(browser, "#empty-pages") == "No page views yet today (UTC)."
    assert text(browser, "#empty-donations") == "No donations yet today (UTC)."
    assert text(browser, "#empty-levels") == "No events yet today (UTC)."
    assert text(browser, "#empty-reasons") == "The dead-letter queue is empty."
    assert text(browser, "#empty-shards").startswith("No shard has reported yet. Is the worker running")
    assert text(browser, "#empty-invalid") == "No invalid events in the 60 minutes observed."
    assert field(browser, "events-today") == "0" and field(browser, "donations-count-note") == "none yet today"
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-minutes svg") == []


def test_parts_that_could_not_be_read_are_named(browser: Any, site: Site) -> None:
    snap = known_snapshot(now_ms(), problems=(Problem("redis", "redis is not reachable: Connection refused"),))
    site.publish(snap)
    open_page(browser, site)
    problems = browser.find_element(By.ID, "problems")
    assert problems.is_displayed()
    assert "redis: redis is not reachable: Connection refused" in problems.text


def test_a_phone_sized_screen_needs_no_sideways_scrolling(browser: Any, site: Site) -> None:
    site.publish(known_snapshot(now_ms()))
    browser.set_window_size(390, 844)
    try:
        open_page(browser, site)
        wait_until(
            lambda: browser.execute_script("return document.querySelector('#chart-minutes svg').clientWidth <= 360"),
            5,
            "the chart to redraw at the phone's width",
        )
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
        assert field(browser, "events-today") == "1,234,567"
    finally:
        browser.set_window_size(1280, 900)


def _luminance(rgb: tuple[float, ...]) -> float:
    def channel(c: float) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    la, lb = (_luminance(tuple(float(x) for x in re.findall(r"[\d.]+", c)[:3])) for c in (a, b))
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


def test_labels_and_contrast(browser: Any, site: Site) -> None:
    site.publish(known_snapshot(now_ms() - 40_000))  # stale: the warning colours too
    open_page(browser, site, wait_for="stale")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    for chart in browser.find_elements(By.CSS_SELECTOR, ".chart svg"):
        assert chart.get_attribute("role") == "img" and len(chart.get_attribute("aria-label")) > 20
    for table in browser.find_elements(By.CSS_SELECTOR, "main table"):
        assert table.find_elements(By.TAG_NAME, "caption"), table.get_attribute("id")
        assert all(th.get_attribute("scope") == "col" for th in table.find_elements(By.CSS_SELECTOR, "thead th"))
    checks = {
        ".kpi .value": 7,
        ".kpi .note": 4.5,
        ".kpi h2": 4.5,
        "#alert": 4.5,
        "#freshness": 4.5,
        "td.num": 4.5,
        ".status.ok": 4.5,
        ".status.stale": 4.5,
        ".chart text": 4.5,
    }
    for css, minimum in checks.items():
        colours = browser.execute_script(
            """
            const el = document.querySelector(arguments[0]);
            let bg = el, colour = getComputedStyle(el).color;
            if (el instanceof SVGElement) colour = getComputedStyle(el).fill;
            const clear = (node) => /rgba\\(.*, 0\\)|transparent/.test(getComputedStyle(node).backgroundColor);
            while (bg && clear(bg)) bg = bg.parentElement;
            return [colour, bg ? getComputedStyle(bg).backgroundColor : 'rgb(255, 255, 255)'];
            """,
            css,
        )
        assert contrast(*colours) >= minimum, f"{css}: {colours} has contrast {contrast(*colours):.2f}"


def test_the_page_loads_nothing_from_anywhere_else(browser: Any, site: Site) -> None:
    site.publish(known_snapshot(now_ms()))
    open_page(browser, site)
    origin = site.url.rstrip("/")
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(name.startswith(origin) for name in resources), resources
