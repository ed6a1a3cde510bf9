"""dashboard/snapshot.py: the pure shaping of the dashboard snapshot, and dead letters per minute."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from aggregations.metrics import OTHER_GROUP
from aggregations.query import iso
from dashboard.snapshot import (
    CHECKPOINT_WARN_SECONDS,
    HISTORY_MINUTES,
    LEVEL_IDS,
    MINUTE_MS,
    STALE_SECONDS,
    TOP_PAGES,
    TOP_REASONS,
    DlqReading,
    InvalidHistory,
    InvalidTracker,
    Problem,
    Readings,
    build_snapshot,
    by_level,
    donations_section,
    invalid_section,
    level_of,
    minutes_section,
    rate_section,
    shard_row,
    shards_section,
    today_section,
    top_pages_section,
    users_section,
)
from devstack.generator import EVENT_TYPES

NOW = 1_764_417_125_000  # 2025-11-29T11:52:05Z
MINUTE = NOW - NOW % MINUTE_MS
DAY = NOW - NOW % 86_400_000


def window(start: int, groups: dict[str, Any], total: Any = None) -> dict[str, Any]:
    return {
        "start": iso(start),
        "start_ms": start,
        "groups": groups,
        "total": sum(groups.values()) if total is None else total,
    }


def result(windows: list[dict[str, Any]], agg: str = "count") -> dict[str, Any]:
    return {"metric": "m", "resolution": "1m", "agg": agg, "windows": windows}


def health(now: int = NOW, **overrides: Any) -> dict[str, str]:
    fields = {
        "reportedMs": now - 1_000,
        "lastBatchMs": now - 1_000,
        "millisBehindLatest": 250,
        "eventsPerSecond": 40.5,
        "lastCheckpointMs": now - 4_000,
        "dlqCount": 3,
        "records": 900,
        "events": 2_000,
    }
    fields.update(overrides)
    return {k: "" if v is None else str(v) for k, v in fields.items()}


# -- levels ---------------------------------------------------------------------------------------


def test_every_generated_type_has_the_level_the_issue_names() -> None:
    expected = {
        "mouse.move": "low",
        "click": "low",
        "scroll": "low",
        "page.view": "mid",
        "search": "mid",
        "form.submit": "mid",
        "donation.made": "high",
        "user.created": "high",
        "user.verified": "high",
    }
    assert {t: level_of(t) for t in EVENT_TYPES} == expected
    assert level_of("user.deleted") == "high"
    assert level_of("checkout.started") == "other"
    assert level_of(OTHER_GROUP) == "other"


def test_by_level_sums_types_and_keeps_every_level() -> None:
    assert by_level({"click": 2, "scroll": 3, "search": 4, OTHER_GROUP: 5, "x": 1}) == {
        "low": 5,
        "mid": 4,
        "high": 0,
        "other": 6,
    }
    assert by_level({}) == dict.fromkeys(LEVEL_IDS, 0)


@given(st.dictionaries(st.sampled_from([*EVENT_TYPES, "custom", OTHER_GROUP]), st.integers(0, 10**9)))
def test_levels_partition_the_total(groups: dict[str, int]) -> None:
    assert sum(by_level(groups).values()) == sum(groups.values())


# -- per minute and rates -------------------------------------------------------------------------


def test_minutes_are_stacked_by_level_and_the_current_one_is_partial() -> None:
    windows = [window(MINUTE - 2 * MINUTE_MS, {"click": 10, "page.view": 5}), window(MINUTE - MINUTE_MS, {})]
    windows.append(window(MINUTE, {"donation.made": 2, "weird": 1}))
    section = minutes_section(result(windows), NOW)
    rows = section["minutes"]
    assert [r["startMs"] for r in rows] == [MINUTE - 2 * MINUTE_MS, MINUTE - MINUTE_MS, MINUTE]
    assert [r["partial"] for r in rows] == [False, False, True]
    assert rows[0] | {} == {
        "start": iso(MINUTE - 2 * MINUTE_MS),
        "startMs": MINUTE - 2 * MINUTE_MS,
        "low": 10,
        "mid": 5,
        "high": 0,
        "other": 0,
        "total": 15,
        "partial": False,
    }
    assert (rows[2]["high"], rows[2]["other"], rows[2]["total"]) == (2, 1, 3)
    assert section["note"] is None


def test_unreadable_minutes_say_why() -> None:
    assert minutes_section(None, NOW, "redis is down")["note"] == "redis is down"
    assert minutes_section(None, NOW)["note"]


def test_rate_now_is_the_sum_of_the_fresh_shards_and_the_last_whole_minute_is_an_average() -> None:
    shards = shards_section(
        {
            "s-0": health(eventsPerSecond=40.5),
            "s-1": health(eventsPerSecond=9.6),
            "s-2": health(eventsPerSecond=99, reportedMs=NOW - (STALE_SECONDS + 5) * 1000),
        },
        NOW,
    )
    minutes = minutes_section(
        result([window(MINUTE - MINUTE_MS, {"click": 600, "search": 60}), window(MINUTE, {"click": 5})]), NOW
    )
    rate = rate_section(shards, minutes)
    assert rate["eventsPerSecond"] == 50.1
    assert rate["lastMinute"] == {
        "start": iso(MINUTE - MINUTE_MS),
        "startMs": MINUTE - MINUTE_MS,
        "total": 660,
        "perSecond": 11.0,
        "byLevel": {"low": 600, "mid": 60, "high": 0, "other": 0},
    }


def test_without_health_there_is_no_rate_now_but_still_the_last_minute() -> None:
    minutes = minutes_section(result([window(MINUTE - MINUTE_MS, {"click": 120}), window(MINUTE, {})]), NOW)
    rate = rate_section(shards_section(None, NOW), minutes)
    assert rate["eventsPerSecond"] is None and rate["source"] is None
    assert rate["lastMinute"]["perSecond"] == 2.0
    assert rate_section(shards_section({}, NOW), minutes_section(None, NOW))["lastMinute"] is None


# -- today ----------------------------------------------------------------------------------------


def test_today_counts_per_level_and_per_type_largest_first() -> None:
    section = today_section(result([window(DAY, {"click": 5, "scroll": 9, "user.created": 2})]), DAY)
    assert section["events"] == 16
    assert section["start"] == iso(DAY)
    assert section["byLevel"] == {"low": 14, "mid": 0, "high": 2, "other": 0}
    assert section["byType"] == [
        {"type": "scroll", "level": "low", "count": 9},
        {"type": "click", "level": "low", "count": 5},
        {"type": "user.created", "level": "high", "count": 2},
    ]
    assert today_section(None, DAY, "not configured")["events"] is None


def test_top_pages_keep_the_ten_largest_and_sum_the_rest() -> None:
    groups = {f"/p{i}": 100 - i for i in range(15)} | {OTHER_GROUP: 7}
    section = top_pages_section(result([window(DAY, groups)]))
    assert [r["path"] for r in section["rows"]] == [f"/p{i}" for i in range(TOP_PAGES)]
    assert section["rows"][0] == {"path": "/p0", "views": 100}
    assert section["otherViews"] == 7 + sum(100 - i for i in range(TOP_PAGES, 15))
    assert section["total"] == sum(groups.values())
    assert top_pages_section(None, "metric 'page_views' is not in the config")["rows"] == []


def test_donations_are_summed_exactly_per_currency_and_per_charity_never_across_currencies() -> None:
    counts = result([window(DAY, {"2357": 3, "50": 1})])
    amounts = result([window(DAY, {"GBP|2357": 0.1, "GBP|50": 0.2, "USD|2357": 25, OTHER_GROUP: 9})], "sum")
    largest = result([window(DAY, {"USD": 25, "GBP": 0.2}, total=25)], "max")
    section = donations_section(counts, amounts, largest, ("data.currency", "data.charityId"))
    assert section["count"] == 4
    assert section["amounts"] == [
        {"currency": "USD", "amount": 25},
        {"currency": "", "amount": 9},
        {"currency": "GBP", "amount": 0.3},
    ]
    assert section["byCharity"] == [
        {
            "charity": "2357",
            "count": 3,
            "amounts": [{"currency": "USD", "amount": 25}, {"currency": "GBP", "amount": 0.1}],
        },
        {"charity": "50", "count": 1, "amounts": [{"currency": "GBP", "amount": 0.2}]},
    ]
    assert section["largest"] == [{"currency": "GBP", "amount": 0.2}, {"currency": "USD", "amount": 25}]


def test_donation_groups_follow_the_metric_dimensions_in_any_order() -> None:
    amounts = result([window(DAY, {"2357|EUR": 10.5})], "sum")
    section = donations_section(None, amounts, None, ("data.charityId", "data.currency"))
    assert section["amounts"] == [{"currency": "EUR", "amount": 10.5}]
    assert section["byCharity"] == [{"charity": "2357", "count": 0, "amounts": [{"currency": "EUR", "amount": 10.5}]}]
    assert section["count"] is None


def test_no_donation_metrics_means_an_empty_state_with_the_reason() -> None:
    section = donations_section(None, None, None, (), "metric 'donations' is not in my.toml")
    assert section == {
        "count": None,
        "amounts": [],
        "largest": [],
        "byCharity": [],
        "note": "metric 'donations' is not in my.toml",
    }


def test_users_signups_verifications_and_distinct() -> None:
    signups = result([window(DAY, {"user.created": 7, "user.verified": 3})])
    distinct = result([window(DAY, {"all": 42})], "distinct")
    assert users_section(signups, distinct, 12) == {
        "signups": 7,
        "verifications": 3,
        "distinctToday": 42,
        "distinctLastHour": 12,
        "note": None,
    }
    empty = users_section(result([window(DAY, {})]), None, None)
    assert (empty["signups"], empty["verifications"], empty["distinctToday"]) == (0, 0, None)


# -- shards ---------------------------------------------------------------------------------------


def test_a_healthy_shard() -> None:
    row = shard_row("shardId-000000000000", health(), NOW)
    assert row == {
        "shardId": "shardId-000000000000",
        "status": "ok",
        "statusText": "ok",
        "millisBehindLatest": 250,
        "checkpointAgeSeconds": 4.0,
        "eventsPerSecond": 40.5,
        "reportAgeSeconds": 1.0,
        "deadLetters": 3,
        "events": 2_000,
        "records": 900,
    }


def test_shard_warnings_say_what_is_wrong() -> None:
    stale = shard_row("s", health(reportedMs=NOW - 95_000), NOW)
    assert stale["status"] == "stale" and "no report for 2 min" in stale["statusText"]
    never = shard_row("s", health(reportedMs=None, lastBatchMs=None), NOW)
    assert never["status"] == "stale" and never["reportAgeSeconds"] is None
    behind = shard_row("s", health(millisBehindLatest=125_000), NOW)
    assert behind["status"] == "warning" and "2 min behind" in behind["statusText"]
    old = (CHECKPOINT_WARN_SECONDS + 30) * 1000
    no_checkpoint = shard_row("s", health(lastCheckpointMs=NOW - old), NOW)
    assert no_checkpoint["status"] == "warning" and "checkpoint" in no_checkpoint["statusText"]
    # An idle shard has nothing to checkpoint: an old checkpoint is fine there.
    assert shard_row("s", health(lastCheckpointMs=NOW - old, eventsPerSecond=0), NOW)["status"] == "ok"


def test_unparseable_health_fields_are_unknown_not_errors() -> None:
    row = shard_row("s", {"reportedMs": str(NOW), "millisBehindLatest": "", "eventsPerSecond": "nan"}, NOW)
    assert (row["millisBehindLatest"], row["eventsPerSecond"], row["checkpointAgeSeconds"]) == (None, None, None)
    assert row["status"] == "ok"


def test_shards_sort_naturally_with_stale_ones_last() -> None:
    rows = shards_section(
        {
            "shardId-10": health(),
            "shardId-2": health(),
            "shardId-1": health(reportedMs=NOW - 600_000),
        },
        NOW,
    )["rows"]
    assert [r["shardId"] for r in rows] == ["shardId-2", "shardId-10", "shardId-1"]


# -- invalid events -------------------------------------------------------------------------------


def test_the_first_look_is_a_baseline_then_growth_is_booked_per_minute() -> None:
    tracker = InvalidTracker()
    assert tracker.observe(NOW, {"a": health(dlqCount=10), "b": health(dlqCount=5)}) == 0
    assert tracker.observe(NOW + 2_000, {"a": health(dlqCount=13), "b": health(dlqCount=5)}) == 3
    assert tracker.observe(NOW + 62_000, {"a": health(dlqCount=14), "b": health(dlqCount=7)}) == 3
    history = tracker.history(NOW + 62_000)
    assert len(history.minutes) == HISTORY_MINUTES
    assert history.minutes[-1] == (MINUTE + MINUTE_MS, 3)
    assert history.minutes[-2] == (MINUTE, 3)
    assert history.minutes[-3] == (MINUTE - MINUTE_MS, None)  # before the publisher looked: unknown
    assert history.observed_since_ms == NOW


def test_a_worker_restart_resets_its_counter_and_its_new_letters_count() -> None:
    tracker = InvalidTracker()
    tracker.observe(NOW, {"a": health(dlqCount=50, records=10_000)})
    assert tracker.observe(NOW + 2_000, {"a": health(dlqCount=4, records=300)}) == 4
    # A new worker that already sent more than the old one did: records going down tells.
    tracker.observe(NOW + 4_000, {"a": health(dlqCount=60, records=20_000)})
    assert tracker.observe(NOW + 6_000, {"a": health(dlqCount=70, records=500)}) == 70


def test_a_shard_that_appears_after_the_first_look_counts_all_its_letters() -> None:
    tracker = InvalidTracker()
    tracker.observe(NOW, {"a": health(dlqCount=1)})
    assert tracker.observe(NOW + 2_000, {"a": health(dlqCount=1), "child": health(dlqCount=6)}) == 6
    assert tracker.observe(NOW + 4_000, {"a": health(dlqCount=1), "child": health(dlqCount="")}) == 0


def test_rate_over_the_last_minute_and_history_pruned_to_an_hour() -> None:
    tracker = InvalidTracker()
    assert tracker.per_second(NOW) is None
    tracker.observe(NOW, {"a": health(dlqCount=0)})
    assert tracker.per_second(NOW + 500) is None
    tracker.observe(NOW + 10_000, {"a": health(dlqCount=20)})
    assert tracker.per_second(NOW + 10_000) == 2.0
    for i in range(1, 80):
        tracker.observe(NOW + 10_000 + i * MINUTE_MS, {"a": health(dlqCount=20 + i)})
    later = NOW + 10_000 + 79 * MINUTE_MS
    assert len(tracker.per_minute) <= HISTORY_MINUTES
    assert tracker.per_second(later) == round(1 / 60, 2)
    assert all(count == 1 for _, count in tracker.history(later).minutes)


def test_invalid_section_top_reasons_with_their_meaning() -> None:
    history = InvalidHistory([(MINUTE - MINUTE_MS, None), (MINUTE, 4)], 0.07, NOW - 30_000)
    reasons = {"not_json": 5, "bad_timestamp": 9, "a": 1, "b": 1, "c": 1, "too_old": 2}
    dlq = DlqReading({"visible": 19, "inFlight": 0, "delayed": 0}, reasons, 19, NOW - 1_000, True, 60)
    section = invalid_section(history, dlq)
    assert section["lastHour"] == 4
    assert section["perSecond"] == 0.07
    assert [m["count"] for m in section["perMinute"]] == [None, 4]
    assert [r["reason"] for r in section["topReasons"]] == ["bad_timestamp", "not_json", "too_old", "a", "b"]
    assert len(section["topReasons"]) == TOP_REASONS
    assert section["topReasons"][0]["meaning"].startswith("`timestamp` is not ISO-8601")
    assert section["topReasons"][3]["meaning"] == ""
    assert section["queue"] == {"visible": 19, "inFlight": 0, "delayed": 0}
    assert (section["sampled"], section["sampleComplete"], section["sampleEverySeconds"]) == (19, True, 60)
    nothing = invalid_section(None, None, "no health read yet")
    assert (nothing["lastHour"], nothing["queue"], nothing["sampledAt"], nothing["note"]) == (
        None,
        None,
        None,
        "no health read yet",
    )


# -- the whole document ---------------------------------------------------------------------------


def test_the_snapshot_is_json_with_every_section_and_its_problems() -> None:
    readings = Readings(
        now_ms=NOW,
        stream="events",
        store="dynamodb",
        minutes=result([window(MINUTE, {"click": 1})]),
        today={"events": result([window(DAY, {"click": 1})])},
        health={"s": health()},
        notes={"topPages": "metric 'page_views' is not in x.toml"},
        problems=[Problem("redis", "redis is not reachable: refused"), Problem("aggregates", "from dynamodb")],
    )
    snapshot = orjson.loads(orjson.dumps(build_snapshot(readings)))
    assert snapshot["version"] == 1
    assert snapshot["generatedAtMs"] == NOW and snapshot["generatedAt"] == "2025-11-29T11:52:05.000Z"
    assert (snapshot["stream"], snapshot["store"], snapshot["staleAfterSeconds"]) == ("events", "dynamodb", 30)
    assert set(snapshot) == {
        "version",
        "generatedAt",
        "generatedAtMs",
        "stream",
        "store",
        "staleAfterSeconds",
        "levels",
        "rate",
        "perMinute",
        "today",
        "topPages",
        "donations",
        "users",
        "invalid",
        "shards",
        "problems",
    }
    assert [lv["id"] for lv in snapshot["levels"]] == list(LEVEL_IDS)
    assert snapshot["topPages"]["note"] == "metric 'page_views' is not in x.toml"
    assert snapshot["problems"][0] == {"part": "redis", "message": "redis is not reachable: refused"}
    assert snapshot["today"]["events"] == 1
    assert snapshot["rate"]["eventsPerSecond"] == 40.5


def test_the_snapshot_holds_aggregates_only() -> None:
    """Whatever the stores hold, the snapshot's strings are names (types, paths, charities, reasons,
    shard ids, times) and notes: never an event body."""
    event_marker = '{"eventType": "click", "secret": "do-not-leak"}'
    readings = Readings(
        now_ms=NOW,
        stream="s",
        store="redis",
        minutes=result([window(MINUTE, {"click": 1})]),
        today={"events": result([window(DAY, {"click": 1})])},
        health={"s": health() | {"lastCheckpointSequence": event_marker}},
        dlq=DlqReading(by_reason={"not_json": 1}),
    )
    assert b"do-not-leak" not in orjson.dumps(build_snapshot(readings))


def test_an_ended_shard_is_ended_not_stale_and_has_no_series_on_metrics() -> None:
    """A resharded parent's last report (after its SHARD_END checkpoint) says it ended: long after, it is
    `ended`, listed last, and /metrics has no series for it, so no alert fires for it."""
    from dashboard.server import snapshot_metrics
    from tests.browser.fixtures import known_snapshot

    ended = shard_row("shardId-1", health(reportedMs=NOW - 600_000, endedMs=NOW - 600_000), NOW)
    assert ended["status"] == "ended" and "resharded" in ended["statusText"]
    rows = shards_section(
        {
            "shardId-1": health(reportedMs=NOW - 600_000, endedMs=NOW - 600_000),
            "shardId-2": health(reportedMs=NOW - 600_000),
            "shardId-3": health(),
        },
        NOW,
    )["rows"]
    assert [(r["shardId"], r["status"]) for r in rows] == [
        ("shardId-3", "ok"),
        ("shardId-2", "stale"),
        ("shardId-1", "ended"),
    ]

    # Its last rate is not "now": events/s sums the shards that flow.
    shards = {"rows": rows, "note": None}
    assert rate_section(shards, {"minutes": []})["eventsPerSecond"] == rows[0]["eventsPerSecond"]

    snap = known_snapshot(NOW)
    snap["shards"] = shards
    series = {
        (sample.name, sample.labels.get("shard"))
        for family in snapshot_metrics(snap, NOW / 1000)
        for sample in family.samples
    }
    assert ("streamkpi_shard_up", "shardId-2") in series and ("streamkpi_shard_up", "shardId-3") in series
    assert not any(shard == "shardId-1" for _, shard in series), sorted(series)
