"""The dashboard snapshot: pure shaping of what the publisher read into the JSON document the page draws.

No I/O here. The publisher reads the stores through `aggregations.query`, the shards' health hashes and
the DLQ, and hands the results to `build_snapshot` as `Readings`. `InvalidTracker` turns the workers'
per-shard dead-letter counters into dead letters per minute.

The snapshot holds aggregates only (counts, sums, per-shard health numbers), never an event.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from aggregations.metrics import OTHER_GROUP
from aggregations.query import iso
from consumer.reasons import REASON_DOCS

SNAPSHOT_VERSION = 1
MINUTE_MS = 60_000
DAY_MS = 86_400_000
HISTORY_MINUTES = 60  # the per-minute charts cover this many minutes, the current one included
STALE_SECONDS = 30  # the page warns when the snapshot is older; a shard not reporting for longer is stale
LAG_WARN_MS = 60_000  # a shard further behind the tip of its stream than this is flagged
CHECKPOINT_WARN_SECONDS = 60  # a shard with events flowing and no checkpoint for this long is flagged
TOP_PAGES = 10
TOP_REASONS = 5
TOP_CHARITIES = 12

# The metrics of the default config the page shows. A config without one of them gets an empty state
# that says so (the snapshot's `note`), not an error.
EVENTS = "events"
PAGE_VIEWS = "page_views"
DONATIONS = "donations"
DONATION_AMOUNT = "donation_amount"
LARGEST_DONATION = "largest_donation"
DISTINCT_USERS = "distinct_users"
SIGNUPS = "signups"
TODAY_METRICS = (EVENTS, PAGE_VIEWS, DONATIONS, DONATION_AMOUNT, LARGEST_DONATION, DISTINCT_USERS, SIGNUPS)
CURRENCY_DIM = "data.currency"
CHARITY_DIM = "data.charityId"
SIGNUP_TYPE = "user.created"
VERIFIED_TYPE = "user.verified"

QueryResult = Mapping[str, Any]  # what aggregations.query.shape returns


@dataclass(frozen=True)
class Level:
    """A band of event types: the per-minute chart stacks events by level."""

    id: str
    label: str
    description: str
    patterns: tuple[str, ...]  # exact types or globs; the last level ("other") takes the rest


LEVELS: tuple[Level, ...] = (
    Level("low", "Low level", "mouse and scroll", ("mouse.*", "click", "scroll")),
    Level("mid", "Mid level", "page actions", ("page.*", "search", "form.*")),
    Level("high", "High level", "business", ("donation.*", "user.*")),
    Level("other", "Other", "any other type", ()),
)
LEVEL_IDS: tuple[str, ...] = tuple(level.id for level in LEVELS)


def level_of(event_type: str) -> str:
    """The level an event type belongs to (`other` for anything no pattern names, and for __other__)."""
    for level in LEVELS:
        if any(fnmatch.fnmatchcase(event_type, pattern) for pattern in level.patterns):
            return level.id
    return "other"


def by_level(groups: Mapping[str, Any]) -> dict[str, int]:
    """Counts per event type folded into counts per level (every level present, zeros included)."""
    out = dict.fromkeys(LEVEL_IDS, 0)
    for event_type, count in groups.items():
        out[level_of(event_type)] += _count(count)
    return out


# -- inputs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """A part that could not be read; the page shows it so that missing numbers are never mistaken for 0."""

    part: str
    message: str


@dataclass(frozen=True)
class DlqReading:
    """What the publisher knows about the DLQ: SQS's approximate counts and a sample counted by reason."""

    approximate: Mapping[str, int] | None = None  # visible / inFlight / delayed
    by_reason: Mapping[str, int] = field(default_factory=dict)  # among the sampled messages
    sampled: int = 0
    sampled_at_ms: int | None = None
    complete: bool = False  # the sample covered every visible message
    sample_every_seconds: float | None = None  # None: sampling is off


@dataclass(frozen=True)
class InvalidHistory:
    """Dead letters per minute as one publisher observed them (see InvalidTracker)."""

    minutes: Sequence[tuple[int, int | None]]  # (minute start, count; None before the publisher looked)
    per_second: float | None
    observed_since_ms: int | None


@dataclass(frozen=True)
class Readings:
    """Everything the publisher read for one snapshot."""

    now_ms: int
    stream: str
    store: str | None = None  # where the aggregates came from; None when no store answered
    minutes: QueryResult | None = None  # `events` per 1-minute window, the last HISTORY_MINUTES windows
    today: Mapping[str, QueryResult] = field(default_factory=dict)  # metric -> its 1-day window of today
    dims: Mapping[str, Sequence[str]] = field(default_factory=dict)  # metric -> its `by` dimensions
    distinct_last_hour: int | None = None
    health: Mapping[str, Mapping[str, str]] | None = None  # RedisHealth.read(); None when unreadable
    invalid: InvalidHistory | None = None
    dlq: DlqReading | None = None
    notes: Mapping[str, str] = field(default_factory=dict)  # section -> why it has no data
    problems: Sequence[Problem] = ()


# -- the snapshot ---------------------------------------------------------------------------------


def build_snapshot(r: Readings) -> dict[str, Any]:
    """The JSON document the page polls (version SNAPSHOT_VERSION)."""
    shards = shards_section(r.health, r.now_ms, r.notes.get("shards"))
    per_minute = minutes_section(r.minutes, r.now_ms, r.notes.get("perMinute"))
    today_start = r.now_ms - r.now_ms % DAY_MS
    return {
        "version": SNAPSHOT_VERSION,
        "generatedAt": iso_ms(r.now_ms),
        "generatedAtMs": r.now_ms,
        "stream": r.stream,
        "store": r.store,
        "staleAfterSeconds": STALE_SECONDS,
        "levels": [
            {"id": lv.id, "label": lv.label, "description": lv.description, "types": list(lv.patterns)} for lv in LEVELS
        ],
        "rate": rate_section(shards, per_minute),
        "perMinute": per_minute,
        "today": today_section(r.today.get(EVENTS), today_start, r.notes.get("today")),
        "topPages": top_pages_section(r.today.get(PAGE_VIEWS), r.notes.get("topPages")),
        "donations": donations_section(
            r.today.get(DONATIONS),
            r.today.get(DONATION_AMOUNT),
            r.today.get(LARGEST_DONATION),
            r.dims.get(DONATION_AMOUNT, ()),
            r.notes.get("donations"),
        ),
        "users": users_section(
            r.today.get(SIGNUPS), r.today.get(DISTINCT_USERS), r.distinct_last_hour, r.notes.get("users")
        ),
        "invalid": invalid_section(r.invalid, r.dlq, r.notes.get("invalid")),
        "shards": shards,
        "problems": [{"part": p.part, "message": p.message} for p in r.problems],
    }


def minutes_section(result: QueryResult | None, now_ms: int, note: str | None = None) -> dict[str, Any]:
    """Events per minute stacked by level; the current minute (still filling) is marked `partial`."""
    if result is None:
        return {"resolution": None, "minutes": [], "note": note or "the per-minute events could not be read"}
    current = now_ms - now_ms % MINUTE_MS
    rows = []
    for window in result.get("windows", []):
        levels = by_level(window.get("groups", {}))
        rows.append(
            {
                "start": window["start"],
                "startMs": window["start_ms"],
                **levels,
                "total": _count(window.get("total")),
                "partial": window["start_ms"] >= current,
            }
        )
    return {"resolution": result.get("resolution"), "minutes": rows, "note": note}


def rate_section(shards: Mapping[str, Any], per_minute: Mapping[str, Any]) -> dict[str, Any]:
    """Events/s now (the workers' own rate over their last seconds) and over the last whole minute."""
    # A stale shard's rate is old news, an ended one's (a resharded parent) its last: neither flows now.
    fresh = [s for s in shards["rows"] if s["status"] not in ("stale", "ended") and s["eventsPerSecond"] is not None]
    now = round(sum(s["eventsPerSecond"] for s in fresh), 1) if fresh else None
    whole = [m for m in per_minute["minutes"] if not m["partial"]]
    last = whole[-1] if whole else None
    return {
        "eventsPerSecond": now,
        "source": "worker health" if now is not None else None,
        "lastMinute": None
        if last is None
        else {
            "start": last["start"],
            "startMs": last["startMs"],
            "total": last["total"],
            "perSecond": round(last["total"] / 60, 1),
            "byLevel": {lv: last[lv] for lv in LEVEL_IDS},
        },
    }


def today_section(result: QueryResult | None, today_start_ms: int, note: str | None = None) -> dict[str, Any]:
    """Events of the current UTC day, per level and per type."""
    window = _only_window(result)
    if window is None:
        return {"start": iso(today_start_ms), "events": None, "byLevel": None, "byType": [], "note": note}
    groups = window.get("groups", {})
    types = sorted(((t, _count(c)) for t, c in groups.items()), key=lambda tc: (-tc[1], tc[0]))
    return {
        "start": iso(today_start_ms),
        "events": _count(window.get("total")),
        "byLevel": by_level(groups),
        "byType": [{"type": t, "level": level_of(t), "count": c} for t, c in types],
        "note": note,
    }


def top_pages_section(result: QueryResult | None, note: str | None = None) -> dict[str, Any]:
    """The most viewed pages today (the rest summed as `otherViews`)."""
    window = _only_window(result)
    if window is None:
        return {"rows": [], "otherViews": 0, "total": None, "note": note}
    groups = window.get("groups", {})
    rows = [{"path": path, "views": _count(v)} for path, v in groups.items() if path != OTHER_GROUP]
    rows.sort(key=lambda row: (-row["views"], row["path"]))
    shown = rows[:TOP_PAGES]
    other = _count(groups.get(OTHER_GROUP)) + sum(row["views"] for row in rows[TOP_PAGES:])
    return {"rows": shown, "otherViews": other, "total": _count(window.get("total")), "note": note}


def donations_section(
    counts: QueryResult | None,
    amounts: QueryResult | None,
    largest: QueryResult | None,
    amount_dims: Sequence[str],
    note: str | None = None,
) -> dict[str, Any]:
    """Donations today: how many, how much per currency (currencies are never added up), per charity."""
    count_window, amount_window, largest_window = _only_window(counts), _only_window(amounts), _only_window(largest)
    if count_window is None and amount_window is None:
        return {"count": None, "amounts": [], "largest": [], "byCharity": [], "note": note}
    charities: dict[str, dict[str, Any]] = {}

    def charity(name: str) -> dict[str, Any]:
        return charities.setdefault(name, {"count": 0, "amounts": {}})

    for name, value in (count_window or {}).get("groups", {}).items():
        charity(name)["count"] += _count(value)
    totals: dict[str, Decimal] = {}
    dims = list(amount_dims)
    for group, value in (amount_window or {}).get("groups", {}).items():
        amount = _decimal(value)
        if amount is None:
            continue
        currency, name = _split_amount_group(group, dims)
        totals[currency] = totals.get(currency, Decimal(0)) + amount
        if name is not None:
            per = charity(name)["amounts"]
            per[currency] = per.get(currency, Decimal(0)) + amount
    rows = [
        {"charity": name, "count": c["count"], "amounts": _money_list(c["amounts"])} for name, c in charities.items()
    ]
    rows.sort(key=lambda row: (row["charity"] == OTHER_GROUP, -row["count"], row["charity"]))
    largest_rows = []
    for currency, value in (largest_window or {}).get("groups", {}).items():
        amount = _decimal(value)
        if amount is not None:
            largest_rows.append({"currency": currency, "amount": _money(amount)})
    largest_rows.sort(key=lambda row: row["currency"])
    return {
        "count": _count(count_window.get("total")) if count_window is not None else None,
        "amounts": _money_list(totals),
        "largest": largest_rows,
        "byCharity": rows[:TOP_CHARITIES],
        "note": note,
    }


def users_section(
    signups: QueryResult | None,
    distinct: QueryResult | None,
    distinct_last_hour: int | None,
    note: str | None = None,
) -> dict[str, Any]:
    """Sign-ups and verifications today, distinct users today and over the last hour (HyperLogLog estimates)."""
    signup_window, distinct_window = _only_window(signups), _only_window(distinct)
    groups = (signup_window or {}).get("groups", {})
    return {
        "signups": _count(groups.get(SIGNUP_TYPE)) if signup_window is not None else None,
        "verifications": _count(groups.get(VERIFIED_TYPE)) if signup_window is not None else None,
        "distinctToday": _count(distinct_window.get("total")) if distinct_window is not None else None,
        "distinctLastHour": distinct_last_hour,
        "note": note,
    }


def shards_section(
    health: Mapping[str, Mapping[str, str]] | None, now_ms: int, note: str | None = None
) -> dict[str, Any]:
    """Per-shard pipeline health from the workers' Redis hashes (consumer/health/), judged at `now_ms`."""
    if health is None:
        return {"rows": [], "note": note or "the shards' health could not be read"}
    rows = [shard_row(shard, fields, now_ms) for shard, fields in health.items()]
    rows.sort(key=lambda row: (row["status"] == "ended", row["status"] == "stale", _natural(row["shardId"])))
    return {"rows": rows, "note": note}


def shard_row(shard_id: str, fields: Mapping[str, str], now_ms: int) -> dict[str, Any]:
    reported = _int(fields.get("reportedMs")) or _int(fields.get("lastBatchMs"))
    report_age = _age_seconds(now_ms, reported)
    behind = _int(fields.get("millisBehindLatest"))
    checkpoint_age = _age_seconds(now_ms, _int(fields.get("lastCheckpointMs")))
    rate = _float(fields.get("eventsPerSecond"))
    if _int(fields.get("endedMs")) is not None:  # SHARD_END checkpointed: a resharded parent, all counted
        status, text = "ended", "ended (resharded): every record counted, its child shards carry on"
    elif report_age is None or report_age > STALE_SECONDS:
        status = "stale"
        since = "ever" if report_age is None else f"{_human_seconds(report_age)}"
        text = f"no report for {since}: its worker stopped, or the shard ended"
    elif behind is not None and behind > LAG_WARN_MS:
        status, text = "warning", f"{_human_seconds(behind / 1000)} behind the tip of the stream"
    elif checkpoint_age is not None and checkpoint_age > CHECKPOINT_WARN_SECONDS and (rate or 0) > 0:
        status, text = "warning", f"events flow but the last checkpoint is {_human_seconds(checkpoint_age)} old"
    else:
        status, text = "ok", "ok"
    return {
        "shardId": shard_id,
        "status": status,
        "statusText": text,
        "millisBehindLatest": behind,
        "checkpointAgeSeconds": checkpoint_age,
        "eventsPerSecond": rate,
        "reportAgeSeconds": report_age,
        "deadLetters": _int(fields.get("dlqCount")),
        "events": _int(fields.get("events")),
        "records": _int(fields.get("records")),
    }


def invalid_section(history: InvalidHistory | None, dlq: DlqReading | None, note: str | None = None) -> dict[str, Any]:
    """Dead letters per minute (as the publisher saw the workers' counters grow) and the DLQ's top reasons."""
    minutes = [
        {"start": iso(start), "startMs": start, "count": count} for start, count in (history.minutes if history else [])
    ]
    observed = [m["count"] for m in minutes if m["count"] is not None]
    reasons = sorted((dlq.by_reason if dlq else {}).items(), key=lambda kv: (-kv[1], kv[0]))
    return {
        "perMinute": minutes,
        "lastHour": sum(observed) if observed else None,
        "perSecond": history.per_second if history else None,
        "observedSince": iso_ms(history.observed_since_ms) if history and history.observed_since_ms else None,
        "observedSinceMs": history.observed_since_ms if history else None,
        "queue": dict(dlq.approximate) if dlq and dlq.approximate is not None else None,
        "topReasons": [
            {"reason": reason, "count": count, "meaning": REASON_DOCS.get(reason, "")}
            for reason, count in reasons[:TOP_REASONS]
        ],
        "sampled": dlq.sampled if dlq else 0,
        "sampledAt": iso_ms(dlq.sampled_at_ms) if dlq and dlq.sampled_at_ms is not None else None,
        "sampleComplete": bool(dlq and dlq.complete),
        "sampleEverySeconds": dlq.sample_every_seconds if dlq else None,
        "note": note,
    }


# -- invalid events per minute --------------------------------------------------------------------


class InvalidTracker:
    """Dead letters per minute from the workers' per-shard `dlqCount` health counters.

    The DLQ is a queue, not a time series, and a worker's `dlqCount` counts the letters it sent since
    its process started. So this tracker remembers each shard's counter between two looks and books
    the growth into the minute (publisher's clock) in which it was seen. Honest limits, shown on the
    page: the history starts when this publisher starts (earlier minutes are unknown, not zero); a
    worker restart resets its counter (detected when `dlqCount` or `records` goes down: the new value
    is all new); letters re-sent after a crash (the DLQ is at least once) are counted again.
    """

    def __init__(self, keep_minutes: int = HISTORY_MINUTES, rate_span_ms: int = MINUTE_MS) -> None:
        self.keep_minutes = keep_minutes
        self.rate_span_ms = rate_span_ms
        self.started_ms: int | None = None
        self.counters: dict[str, tuple[int, int]] = {}  # shard -> (dlqCount, records) at the last look
        self.per_minute: dict[int, int] = {}
        self.recent: deque[tuple[int, int]] = deque()  # (look time, new letters seen then)

    def observe(self, now_ms: int, health: Mapping[str, Mapping[str, str]]) -> int:
        """Take one look at the shards' counters; returns the dead letters sent since the last look."""
        first = self.started_ms is None
        if first:
            self.started_ms = now_ms
        new = 0
        for shard, fields in health.items():
            count = _int(fields.get("dlqCount"))
            if count is None:
                continue
            records = _int(fields.get("records")) or 0
            previous = self.counters.get(shard)
            self.counters[shard] = (count, records)
            if previous is None:
                # At the first look the counters hold letters sent at unknown times: a baseline. A shard
                # that shows up later has a new worker (or is new): all its letters were sent since.
                new += 0 if first else count
                continue
            restarted = count < previous[0] or records < previous[1]
            new += count if restarted else count - previous[0]
        minute = now_ms - now_ms % MINUTE_MS
        if new:
            self.per_minute[minute] = self.per_minute.get(minute, 0) + new
        self.recent.append((now_ms, new))
        oldest = minute - (self.keep_minutes - 1) * MINUTE_MS
        for start in [s for s in self.per_minute if s < oldest]:
            del self.per_minute[start]
        while self.recent and now_ms - self.recent[0][0] > self.rate_span_ms:
            self.recent.popleft()
        return new

    def per_second(self, now_ms: int) -> float | None:
        """Dead letters per second over the last minute (or since the first look, if that is shorter)."""
        if self.started_ms is None:
            return None
        span = min(self.rate_span_ms, now_ms - self.started_ms)
        if span < 1000:
            return None
        new = sum(n for t, n in self.recent if now_ms - t < span)
        return round(new / (span / 1000), 2)

    def history(self, now_ms: int) -> InvalidHistory:
        current = now_ms - now_ms % MINUTE_MS
        minutes: list[tuple[int, int | None]] = []
        for i in range(self.keep_minutes - 1, -1, -1):
            start = current - i * MINUTE_MS
            known = self.started_ms is not None and start + MINUTE_MS > self.started_ms
            minutes.append((start, self.per_minute.get(start, 0) if known else None))
        return InvalidHistory(minutes, self.per_second(now_ms), self.started_ms)


# -- small helpers --------------------------------------------------------------------------------


def iso_ms(ms: int) -> str:
    """ISO-8601 UTC with milliseconds: 2025-11-29T11:52:05.123Z."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _only_window(result: QueryResult | None) -> Mapping[str, Any] | None:
    if result is None:
        return None
    windows = result.get("windows") or []
    return windows[-1] if windows else None


def _count(value: Any) -> int:
    if value is None or isinstance(value, bool):
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _int(text: Any) -> int | None:
    if text is None or text == "":
        return None
    try:
        return int(float(text))
    except (TypeError, ValueError, OverflowError):
        return None


def _float(text: Any) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        result = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        return None
    return result if result.is_finite() else None


def _money(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def _money_list(amounts: Mapping[str, Decimal]) -> list[dict[str, Any]]:
    return [{"currency": c, "amount": _money(a)} for c, a in sorted(amounts.items(), key=lambda ca: (-ca[1], ca[0]))]


def _split_amount_group(group: str, dims: Sequence[str]) -> tuple[str, str | None]:
    """(currency, charity) of a `donation_amount` group key ("GBP|2357" with by = [currency, charity])."""
    if group == OTHER_GROUP:
        return "", None  # groups past max_groups: no currency to tell, counted in no charity
    if CURRENCY_DIM not in dims:
        return "", group
    parts = group.split("|") if len(dims) > 1 else [group]
    if len(parts) != len(dims):
        return "", None
    currency = parts[dims.index(CURRENCY_DIM)]
    charity = parts[dims.index(CHARITY_DIM)] if CHARITY_DIM in dims else None
    return currency, charity


def _age_seconds(now_ms: int, then_ms: int | None) -> float | None:
    if then_ms is None or then_ms <= 0:
        return None
    return round(max(0, now_ms - then_ms) / 1000, 1)


def _human_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def _natural(text: str) -> tuple[Any, ...]:
    """shardId-2 before shardId-10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))
