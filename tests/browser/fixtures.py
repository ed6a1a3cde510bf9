"""A known snapshot for the page tests: readings with round, recognisable numbers, shaped by the real
`build_snapshot` and the default config's panels (`dashboard.ranges`), so the page is tested against
exactly what the publisher writes for the last 60 minutes (`snapshot.json`)."""

from __future__ import annotations

from decimal import Decimal
from functools import cache
from typing import Any

from aggregations import hll
from aggregations.metrics import AGGREGATORS
from aggregations.partials import StoredPartial
from aggregations.query import iso
from dashboard.panels import Panel, parse_panels
from dashboard.ranges import RANGES, RangeReadings, build_panels, range_document
from dashboard.snapshot import (
    DAY_MS,
    MINUTE_MS,
    DlqReading,
    InvalidHistory,
    Problem,
    Readings,
    build_snapshot,
)
from streamkpi.config import load_config

XSS_PATH = "/search?q=<img src=x onerror=\"document.title='pwned'\">"
TYPES_PER_MINUTE = {
    "mouse.move": 300,
    "click": 180,
    "scroll": 120,
    "page.view": 90,
    "search": 30,
    "form.submit": 12,
    "donation.made": 6,
    "user.created": 2,
    "user.verified": 1,
    "custom.thing": 3,
}


def _window(start: int, groups: dict[str, Any], total: Any = None) -> dict[str, Any]:
    if total is None:
        total = sum(groups.values())
    return {"start": iso(start), "start_ms": start, "groups": groups, "total": total}


def _result(metric: str, agg: str, resolution: str, windows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metric": metric, "resolution": resolution, "agg": agg, "windows": windows}


def known_readings(now_ms: int, scale: int = 1, problems: tuple[Problem, ...] = ()) -> Readings:
    """`scale` multiplies today's totals, so a second snapshot has visibly different numbers."""
    current = now_ms - now_ms % MINUTE_MS
    today = now_ms - now_ms % DAY_MS
    minutes = []
    for i in range(59, -1, -1):
        start = current - i * MINUTE_MS
        factor = 1 + (59 - i) / 59  # rising traffic
        minutes.append(_window(start, {t: round(n * factor) for t, n in TYPES_PER_MINUTE.items()}))
    events_today = {
        "mouse.move": 500_000 * scale,
        "click": 300_000 * scale,
        "scroll": 200_000 * scale,
        "page.view": 150_000 * scale,
        "search": 50_000 * scale,
        "form.submit": 20_000 * scale,
        "donation.made": 165 * scale,
        "user.created": 87 * scale,
        "user.verified": 52 * scale,
        "custom.thing": 14_263 * scale,
    }
    pages = {
        "/fundraising/ice-bucket-challenge-2014": 3_456 * scale,
        "/": 2_345 * scale,
        "/search": 1_200 * scale,
        XSS_PATH: 3,
    }
    amounts = {"GBP|2357": 12_345.5 * scale, "USD|2357": 100 * scale, "GBP|11854": 1_000 * scale}
    today_results = {
        "events": _result("events", "count", "1d", [_window(today, events_today)]),
        "page_views": _result("page_views", "count", "1d", [_window(today, pages)]),
        "donations": _result("donations", "count", "1d", [_window(today, {"2357": 120 * scale, "11854": 45 * scale})]),
        "donation_amount": _result("donation_amount", "sum", "1d", [_window(today, amounts)]),
        "largest_donation": _result(
            "largest_donation", "max", "1d", [_window(today, {"GBP": 250, "USD": 100}, total=250)]
        ),
        "distinct_users": _result("distinct_users", "distinct", "1d", [_window(today, {"all": 4_321 * scale})]),
        "signups": _result(
            "signups", "count", "1d", [_window(today, {"user.created": 87 * scale, "user.verified": 52 * scale})]
        ),
    }
    health = {
        "shardId-000000000000": {
            "reportedMs": str(now_ms - 1_000),
            "lastBatchMs": str(now_ms - 1_000),
            "millisBehindLatest": "200",
            "eventsPerSecond": "51.5",
            "lastCheckpointMs": str(now_ms - 3_000),
            "dlqCount": "7",
            "records": "5000",
            "events": str(10_000 * scale),
        },
        "shardId-000000000001": {
            "reportedMs": str(now_ms - 120_000),
            "millisBehindLatest": "0",
            "eventsPerSecond": "3.0",
            "lastCheckpointMs": str(now_ms - 125_000),
            "dlqCount": "2",
            "records": "800",
            "events": "1500",
        },
    }
    invalid_minutes: list[tuple[int, int | None]] = [
        (current - i * MINUTE_MS, None if i >= 10 else (10 - i) * scale) for i in range(59, -1, -1)
    ]
    return Readings(
        now_ms=now_ms,
        stream="streamkpi-events",
        store="redis",
        minutes=_result("events", "count", "1m", minutes),
        today=today_results,
        dims={
            "page_views": ("path",),
            "donations": ("data.charityId",),
            "donation_amount": ("data.currency", "data.charityId"),
            "largest_donation": ("data.currency",),
            "distinct_users": (),
            "signups": ("eventType",),
        },
        distinct_last_hour=999,
        health=health,
        invalid=InvalidHistory(invalid_minutes, 0.05, current - 9 * MINUTE_MS - 20_000),
        dlq=DlqReading(
            approximate={"visible": 42, "inFlight": 0, "delayed": 0},
            by_reason={"bad_timestamp": 12, "not_json": 5, "missing_field": 3, "wrong_type": 2},
            sampled=22,
            sampled_at_ms=now_ms - 5_000,
            complete=True,
            sample_every_seconds=60,
        ),
        problems=problems,
    )


DISTINCT_LAST_HOUR = 999
DISTINCT_TODAY = 4_321


@cache
def default_panels() -> tuple[tuple[Panel, ...], dict[str, tuple[str, ...]]]:
    config = load_config(None)
    dims = {m.name: tuple(m.by) for m in config.metrics}
    return parse_panels(config.dashboard, dims, config.source), dims


@cache
def distinct(n: int, salt: str = "") -> bytearray:
    registers = hll.new()
    for i in range(n):
        hll.add(registers, f"user-{salt}{i}")
    return registers


def estimate(n: int, salt: str = "") -> int:
    """What the page shows for `n` distinct users: the HyperLogLog estimate (about 1.6 % error)."""
    return hll.estimate(distinct(n, salt))


def _encode(agg: str, value: Any) -> Any:
    if agg == "distinct":
        return hll.encode(value)
    if agg == "count":
        return int(value)
    return AGGREGATORS[agg].encode(Decimal(str(value)))


def _partial(resolution: str, start: int, metrics: dict[str, tuple[str, dict[str, Any]]]) -> StoredPartial:
    body = {
        name: {"agg": agg, "groups": {g: _encode(agg, v) for g, v in groups.items()}}
        for name, (agg, groups) in metrics.items()
    }
    return StoredPartial(resolution, start, "shardId-000000000000", "1", body)


def stored_windows(
    readings: Readings, distinct_today: bytearray | None, distinct_hour: bytearray | None
) -> RangeReadings:
    """The same numbers as stored window partials (what the publisher reads for the panels)."""
    now = readings.now_ms
    aggs = {"events": "count", "page_views": "count", "donations": "count", "donation_amount": "sum"}
    aggs |= {"largest_donation": "max", "signups": "count", "distinct_users": "distinct"}
    minutes: dict[int, list[StoredPartial]] = {}
    for i, window in enumerate(readings.minutes["windows"] if readings.minutes else []):
        metrics: dict[str, tuple[str, dict[str, Any]]] = {"events": ("count", dict(window["groups"]))}
        if distinct_hour is not None and i == len(readings.minutes["windows"]) - 1:  # type: ignore[index]
            metrics["distinct_users"] = ("distinct", {"all": distinct_hour})
        minutes[window["start_ms"]] = [_partial("1m", window["start_ms"], metrics)]
    today_start = now - now % DAY_MS
    day: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, result in readings.today.items():
        groups = dict(result["windows"][0]["groups"]) if result["windows"] else {}
        if name == "distinct_users":
            groups = {"all": distinct_today} if distinct_today is not None else {}
        day[name] = (aggs[name], groups)
    today = {today_start: [_partial("1d", today_start, day)]}
    _, dims = default_panels()
    return RangeReadings(RANGES[0], now, {**dims, **readings.dims}, minutes, {}, today, today_start)


def page_snapshot(
    readings: Readings, distinct_today: bytearray | None, distinct_hour: bytearray | None
) -> dict[str, Any]:
    snapshot = build_snapshot(readings)
    panels, _ = default_panels()
    shaped = build_panels(panels, stored_windows(readings, distinct_today, distinct_hour), snapshot)
    return range_document(RANGES[0], snapshot, shaped)


def known_snapshot(now_ms: int, scale: int = 1, problems: tuple[Problem, ...] = ()) -> dict[str, Any]:
    return page_snapshot(
        known_readings(now_ms, scale, problems), distinct(DISTINCT_TODAY * scale), distinct(DISTINCT_LAST_HOUR, "h")
    )


def empty_snapshot(now_ms: int) -> dict[str, Any]:
    """A stack with nothing in it yet: every store answers, nothing has happened."""
    current = now_ms - now_ms % MINUTE_MS
    today = now_ms - now_ms % DAY_MS
    minutes = [_window(current - i * MINUTE_MS, {}, 0) for i in range(59, -1, -1)]
    return page_snapshot(
        Readings(
            now_ms=now_ms,
            stream="streamkpi-events",
            store="redis",
            minutes=_result("events", "count", "1m", minutes),
            today={
                name: _result(name, "count", "1d", [_window(today, {}, 0)])
                for name in ("events", "page_views", "donations", "donation_amount", "signups", "distinct_users")
            },
            health={},
            invalid=InvalidHistory([(s["start_ms"], 0) for s in minutes], 0.0, now_ms - 30_000),
            dlq=DlqReading(
                approximate={"visible": 0, "inFlight": 0, "delayed": 0},
                sampled_at_ms=now_ms,
                complete=True,
                sample_every_seconds=60,
            ),
        ),
        None,
        None,
    )
