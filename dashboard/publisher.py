"""The publisher: read the stores, the shards' health and the DLQ; shape the snapshot; write it atomically.

    Source        what to read: aggregate stores (in order of preference), the config's resolutions and
                  metrics, the health reader, the DLQ sampler
    Publisher     one publish = read -> dashboard.snapshot.build_snapshot -> every target; `run` repeats it
    targets       DirTarget (temp file + rename), S3Target (one put), or the server's in-memory holder

Nothing here stops on a failed read: the part is left out of the snapshot and named in its `problems`,
so the page says what is missing instead of showing zeros.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, cast

from aggregations.metrics import MetricDef
from aggregations.partials import StoredPartial
from aggregations.query import read_rolling, shape, to_json
from aggregations.store import AggregateStore, StoreUnavailableError
from aggregations.windows import Resolution
from dashboard.errors import PublishError
from dashboard.panels import Panel
from dashboard.ranges import RANGES, Found, Range, RangeReadings, build_panels, range_document
from dashboard.snapshot import (
    DAY_MS,
    DISTINCT_USERS,
    DONATION_AMOUNT,
    DONATIONS,
    EVENTS,
    HISTORY_MINUTES,
    LARGEST_DONATION,
    MINUTE_MS,
    PAGE_VIEWS,
    SIGNUPS,
    TODAY_METRICS,
    DlqReading,
    InvalidTracker,
    Problem,
    Readings,
    build_snapshot,
)

log = logging.getLogger("streamkpi.dashboard")
SNAPSHOT_NAME = "snapshot.json"
SNAPSHOT_CACHE_CONTROL = "no-cache, max-age=0"  # every poll must see the newest snapshot
SECTION_OF_METRIC = {
    PAGE_VIEWS: "topPages",
    DONATIONS: "donations",
    DONATION_AMOUNT: "donations",
    LARGEST_DONATION: "donations",
    DISTINCT_USERS: "users",
    SIGNUPS: "users",
}
AGGREGATE_SECTIONS = ("perMinute", "today", "topPages", "donations", "users")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- targets --------------------------------------------------------------------------------------


class Target(Protocol):
    description: str

    def write(self, body: bytes) -> None:
        """Replace the snapshot with `body`, atomically: a reader sees the old one or the new one."""
        ...

    def put_file(self, name: str, body: bytes, content_type: str) -> None:
        """Write one static file of the page (for `publish --static`)."""
        ...

    def write_file(self, name: str, body: bytes) -> None:
        """Replace one range's snapshot (`snapshot-24h.json`), atomically, like `write`."""
        ...


class DirTarget:
    """A directory (served by anything): each write goes to a temp file in the same directory, then is
    renamed over the snapshot, so a reader never sees half a file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.description = str(directory / SNAPSHOT_NAME)

    def write(self, body: bytes) -> None:
        self._atomic(SNAPSHOT_NAME, body)

    def put_file(self, name: str, body: bytes, content_type: str) -> None:
        self._atomic(name, body)

    def write_file(self, name: str, body: bytes) -> None:
        self._atomic(name, body)

    def _atomic(self, name: str, body: bytes) -> None:
        final = self.directory / name
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        except OSError as exc:
            raise PublishError(f"cannot write into {final.parent}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(body)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a web server must read it
            os.replace(tmp, final)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise PublishError(f"cannot write {final}: {exc.strerror}") from None


class S3Target:
    """s3://bucket/prefix: one PutObject per snapshot (S3 replaces an object whole)."""

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client, self.bucket = client, bucket
        self.prefix = prefix.strip("/")
        self.description = f"s3://{bucket}/{self._key(SNAPSHOT_NAME)}"

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def write(self, body: bytes) -> None:
        self._put(SNAPSHOT_NAME, body, "application/json", SNAPSHOT_CACHE_CONTROL)

    def put_file(self, name: str, body: bytes, content_type: str) -> None:
        self._put(name, body, content_type, "no-cache")

    def write_file(self, name: str, body: bytes) -> None:
        self._put(name, body, "application/json", SNAPSHOT_CACHE_CONTROL)

    def _put(self, name: str, body: bytes, content_type: str, cache_control: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(name), Body=body, ContentType=content_type, CacheControl=cache_control
            )
        except (ClientError, BotoCoreError) as exc:
            raise PublishError(f"cannot put s3://{self.bucket}/{self._key(name)}: {exc}") from None


def parse_target(text: str, s3_client: Callable[[], Any]) -> Target:
    """`DIR` or `s3://bucket/prefix`."""
    if text.startswith("s3://"):
        bucket, _, prefix = text[len("s3://") :].partition("/")
        if not bucket:
            raise PublishError(f"--to {text!r}: name a bucket, as in s3://my-bucket/dashboard")
        return S3Target(s3_client(), bucket, prefix)
    if "://" in text:
        raise PublishError(f"--to {text!r}: write a directory or s3://bucket/prefix")
    return DirTarget(Path(text))


def static_files() -> Iterator[tuple[str, bytes, str]]:
    """(relative path, bytes, content type) of every file of the page in dashboard/static."""
    root = resources.files("dashboard").joinpath("static")

    def walk(node: Any, prefix: str) -> Iterator[tuple[str, bytes, str]]:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.name.startswith(".") or child.name == "__pycache__":
                continue
            name = f"{prefix}{child.name}"
            if child.is_dir():
                yield from walk(child, name + "/")
            else:
                yield name, child.read_bytes(), content_type(name)

    yield from walk(root, "")


def content_type(name: str) -> str:
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if kind.startswith("text/") or kind in ("application/javascript", "application/json", "image/svg+xml"):
        kind += "; charset=utf-8"
    return kind


# -- what to read ---------------------------------------------------------------------------------


class DlqSampler:
    """The DLQ as the page shows it: SQS's approximate counts at every publish, and every `every_seconds`
    a sample of up to `limit` messages counted by reason. Reading never deletes (deadletters.admin's
    Scanner: received with a short visibility timeout, made visible again right after). Each sample
    raises the messages' receive count, so with a redrive policy on the DLQ itself keep it rare (or 0:
    off)."""

    def __init__(
        self,
        sqs: Callable[[], Any],
        queue_name: str,
        every_seconds: float = 60.0,
        limit: int = 500,
        visibility_timeout: int = 30,
        wait_seconds: int = 1,
    ) -> None:
        self._sqs_factory, self.queue_name = sqs, queue_name
        self.every_seconds, self.limit = every_seconds, limit
        self.visibility_timeout, self.wait_seconds = visibility_timeout, wait_seconds
        self._sqs: Any = None
        self._url: str | None = None
        self.by_reason: dict[str, int] = {}
        self.sampled = 0
        self.sampled_at_ms: int | None = None
        self.complete = False

    def read(self, now: int) -> DlqReading:
        from deadletters import admin as dlq_admin

        if self._sqs is None:
            self._sqs = self._sqs_factory()
        if self._url is None:
            self._url = dlq_admin.resolve_queue(self._sqs, self.queue_name)
        approximate = dlq_admin.approximate_counts(self._sqs, self._url)
        due = self.sampled_at_ms is None or now - self.sampled_at_ms >= self.every_seconds * 1000
        if self.every_seconds > 0 and due:
            self._sample(now, approximate["visible"])
        return DlqReading(
            approximate=approximate,
            by_reason=dict(self.by_reason),
            sampled=self.sampled,
            sampled_at_ms=self.sampled_at_ms,
            complete=self.complete,
            sample_every_seconds=self.every_seconds if self.every_seconds > 0 else None,
        )

    def _sample(self, now: int, visible: int) -> None:
        from deadletters import admin as dlq_admin

        assert self._url is not None  # resolved by read()
        scanner = dlq_admin.Scanner(self._sqs, self._url, self.visibility_timeout, self.wait_seconds)
        try:
            for _ in scanner.batches(limit=self.limit):
                pass
        finally:
            scanner.release(list(scanner.seen))
        messages = list(scanner.seen.values())
        self.by_reason = dlq_admin.count_by_reason(messages)
        self.sampled = len(messages)
        self.sampled_at_ms = now
        self.complete = not scanner.incomplete and len(messages) < self.limit and len(messages) >= visible


@dataclass
class Source:
    """Where a snapshot's numbers come from."""

    stream: str
    stores: Sequence[AggregateStore]  # in order of preference; the next is read when one is unavailable
    resolutions: Sequence[Resolution]
    metrics: Mapping[str, MetricDef]
    health: Callable[[], Mapping[str, Mapping[str, str]]] | None = None
    dlq: DlqSampler | None = None
    config_source: str = "the config"
    panels: Sequence[Panel] = ()  # the config's [[dashboard.panels]] (or the default config's that fit)


@dataclass
class _Cached:
    """The windows already read, as a store: read_rolling merges them without reading again."""

    found: Mapping[int, list[StoredPartial]]
    name: str = "cached"

    def read(self, resolution: str, starts: Sequence[int]) -> dict[int, list[StoredPartial]]:
        return {s: self.found[s] for s in starts if s in self.found}


def _resolution(resolutions: Sequence[Resolution], size_ms: int) -> Resolution | None:
    return next((r for r in resolutions if r.size_ms == size_ms), None)


def _retention(store: AggregateStore, res: Resolution) -> int:
    return res.redis_retention_ms if store.name == "redis" else res.dynamodb_retention_ms


# -- the publisher --------------------------------------------------------------------------------


@dataclass
class Publisher:
    source: Source
    targets: Sequence[Target]
    clock: Callable[[], int] = now_ms
    tracker: InvalidTracker = field(default_factory=InvalidTracker)
    last: dict[str, Any] | None = None
    published: int = 0
    failures: int = 0
    _last_problems: tuple[tuple[str, str], ...] = ()
    _logged_errors: dict[str, str] = field(default_factory=dict)  # part -> the error text last logged
    range_written_ms: dict[str, int] = field(default_factory=dict)  # range id -> when its file was last written
    range_seconds: dict[str, float] = field(default_factory=dict)  # range id -> how long its last read+shape took

    def read(self, now: int) -> Readings:
        src = self.source
        problems: list[Problem] = []
        errors: dict[str, str] = {}  # part -> error text, for the log only
        notes: dict[str, str] = {}
        minute_res = _resolution(src.resolutions, MINUTE_MS)
        day_res = _resolution(src.resolutions, DAY_MS)
        current = now - now % MINUTE_MS
        minute_starts = [current - i * MINUTE_MS for i in range(HISTORY_MINUTES - 1, -1, -1)]
        today_start = now - now % DAY_MS

        store_used: str | None = None
        minutes_found: Mapping[int, list[StoredPartial]] = {}
        day_found: Mapping[int, list[StoredPartial]] = {}
        for store in src.stores:
            try:
                minutes_found = store.read(minute_res.name, minute_starts) if minute_res else {}
                day_found = store.read(day_res.name, [today_start]) if day_res else {}
            except StoreUnavailableError as exc:
                problems.append(self._failed(errors, store.name, f"{store.name} is not reachable", exc))
                continue
            except Exception as exc:  # a read error must not stop the dashboard; the page shows it
                problems.append(self._failed(errors, store.name, f"reading {store.name} failed", exc, trace=True))
                continue
            store_used = store.name
            break
        if store_used is not None and problems:
            problems.append(Problem("aggregates", f"the numbers below come from {store_used}"))
        if store_used is None:
            why = "no aggregate store answered (see the problems above)"
            notes.update(dict.fromkeys(AGGREGATE_SECTIONS, why))
        if minute_res is None:
            notes["perMinute"] = f"{src.config_source} has no 1-minute resolution"
        if day_res is None:
            for section in ("today", "topPages", "donations", "users"):
                notes[section] = f"{src.config_source} has no 1-day resolution"

        minutes = None
        distinct_last_hour = None
        today: dict[str, Any] = {}
        dims: dict[str, Sequence[str]] = {}
        if store_used is not None and minute_res is not None:
            minutes = shape(minute_res, EVENTS, minute_starts, minutes_found)
            if DISTINCT_USERS in src.metrics:
                cached = cast(AggregateStore, _Cached(minutes_found))
                rolling = read_rolling(cached, minute_res, DISTINCT_USERS, now, HISTORY_MINUTES * MINUTE_MS)
                distinct_last_hour = int(rolling["total"] or 0)
        for name in TODAY_METRICS:
            metric = src.metrics.get(name)
            if metric is None:
                section = SECTION_OF_METRIC.get(name, "today")
                notes.setdefault(section, f"metric {name!r} is not in {src.config_source}")
                continue
            dims[name] = metric.by
            if store_used is not None and day_res is not None:
                today[name] = shape(day_res, name, [today_start], day_found)

        health = None
        if src.health is None:
            notes["shards"] = notes["invalid"] = "no health source"
        else:
            try:
                health = src.health()
            except Exception as exc:  # Redis down: say so, keep publishing the rest
                problems.append(self._failed(errors, "health", "the shards' health (Redis) could not be read", exc))
                notes["shards"] = "the shards' health could not be read (see the problems above)"
        if health is not None:
            self.tracker.observe(now, health)
        invalid = self.tracker.history(now) if self.tracker.started_ms is not None else None
        if invalid is None:
            notes.setdefault("invalid", "no health read yet: the dead-letter counters are unknown")

        dlq = None
        if src.dlq is not None:
            try:
                dlq = src.dlq.read(now)
            except Exception as exc:
                problems.append(self._failed(errors, "dlq", "the DLQ could not be read", exc))
        self._logged_errors = errors
        return Readings(
            now_ms=now,
            stream=src.stream,
            store=store_used,
            minutes=minutes,
            today=today,
            dims=dims,
            distinct_last_hour=distinct_last_hour,
            health=health,
            invalid=invalid,
            dlq=dlq,
            notes=notes,
            problems=problems,
        )

    def publish_once(self) -> dict[str, Any]:
        """Read, shape and write one snapshot to every target. PublishError if no target took it."""
        now = self.clock()
        snapshot = build_snapshot(self.read(now))
        self._log_problem_changes(snapshot)
        if self.source.panels:
            for rng in RANGES[1:]:
                if self._due(rng, now):
                    self._write_range(rng, self.range_snapshot(rng, now, snapshot), now)
            snapshot = self.range_snapshot(RANGES[0], now, snapshot)  # snapshot.json is the 1h range's file
            self._write_range(RANGES[0], snapshot, now)
        body = to_json(snapshot)  # (exact whole numbers past 64 bits too)
        errors = []
        for target in self.targets:
            try:
                target.write(body)
            except PublishError as exc:
                errors.append(str(exc))
                log.warning("snapshot write failed", extra={"target": target.description, "error": str(exc)})
        if errors and len(errors) == len(self.targets):
            self.failures += 1
            raise PublishError("; ".join(errors))
        self.published += 1
        self.last = snapshot
        return snapshot

    def _due(self, rng: Range, now: int) -> bool:
        last = self.range_written_ms.get(rng.id)
        return last is None or now - last >= rng.every_seconds * 1000

    def _write_range(self, rng: Range, snapshot: Mapping[str, Any], now: int) -> None:
        body = to_json(snapshot)
        written = False
        for target in self.targets:
            try:
                target.write_file(rng.file, body)
                written = True
            except PublishError as exc:
                log.warning("range snapshot write failed", extra={"target": target.description, "error": str(exc)})
        if written:
            self.range_written_ms[rng.id] = now

    def range_snapshot(self, rng: Range, now: int, snapshot: Mapping[str, Any]) -> dict[str, Any]:
        """The document of one range: the pipeline snapshot of this tick plus the config's panels over the
        range's windows (and the comparison windows), refreshed every `rng.every_seconds`."""
        started = time.perf_counter()
        readings = self.read_range(rng, now)
        doc = range_document(rng, snapshot, build_panels(self.source.panels, readings, snapshot))
        self.range_seconds[rng.id] = time.perf_counter() - started
        return doc

    def read_range(self, rng: Range, now: int) -> RangeReadings:
        src = self.source
        res = _resolution(src.resolutions, rng.size_ms)
        dims = {name: metric.by for name, metric in src.metrics.items()}
        notes: dict[str, str] = {}
        found = previous = today = None
        if res is None:
            notes["found"] = f"{src.config_source} has no {rng.resolution} resolution for the {rng.label}"
        else:
            starts = rng.starts(now)
            found, why = self._read_windows(res, starts, now)
            if why:
                notes["found"] = why
            # The earlier windows only when a stat compares with them (a "today" stat in the hour view does not).
            if any(p.kind == "stat" and not (p.period == "today" and rng.id == RANGES[0].id) for p in src.panels):
                previous, why = self._read_windows(res, [s - rng.compare_ms for s in starts], now)
                if why:
                    notes["previous"] = why
        today_start = now - now % DAY_MS
        wants_today = any(p.period == "today" or (p.detail and p.detail.period == "today") for p in src.panels)
        if rng.id == RANGES[0].id and wants_today:  # the longer ranges read "today" panels over the range
            day = _resolution(src.resolutions, DAY_MS)
            if day is None:
                notes["today"] = f"{src.config_source} has no 1-day resolution"
            else:
                today, why = self._read_windows(day, [today_start], now)
                if why:
                    notes["today"] = why
        return RangeReadings(rng, now, dims, found, previous, today, today_start, notes)

    def _read_windows(self, res: Resolution, starts: Sequence[int], now: int) -> tuple[Found | None, str | None]:
        """The windows from the first store that keeps them that long (Redis keeps fewer: e.g. 6 h of 1m
        windows), falling back to the next when one is unavailable."""
        oldest = min(starts)
        stores = list(self.source.stores)
        keeping = [s for s in stores if oldest + res.size_ms + _retention(s, res) >= now] or stores[-1:]
        for store in keeping + [s for s in stores if s not in keeping]:
            try:
                return store.read(res.name, list(starts)), None
            except Exception as exc:  # logged once by the snapshot read; the panel says it is missing
                log.debug("range read failed", extra={"store": store.name, "error": str(exc)})
        return None, "no aggregate store answered (see the problems above)"

    def run(self, every_seconds: float, stop: threading.Event) -> None:
        """Publish every `every_seconds` until `stop` is set; failures are logged and retried next time."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.publish_once()
            except PublishError:
                pass  # logged per target
            except Exception:
                self.failures += 1
                log.exception("publish failed")
            stop.wait(max(0.0, every_seconds - (time.monotonic() - started)))

    def copy_static(self) -> None:
        """Write the page's files next to the snapshot, so the target is the whole site."""
        for target in self.targets:
            for name, body, kind in static_files():
                target.put_file(name, body, kind)

    def _failed(self, errors: dict[str, str], part: str, what: str, exc: Exception, trace: bool = False) -> Problem:
        """The problem as the page shows it: which part and the kind of error, never its text (it can name
        hosts, endpoints, even credentials, and the snapshot may be public). The full error goes to the
        log, once until it changes or the part recovers."""
        text = f"{type(exc).__name__}: {exc}"
        if self._logged_errors.get(part) != text and errors.get(part) != text:
            log.warning(
                "dashboard: reading a part failed",
                extra={"part": part, "error": str(exc), "error_type": type(exc).__name__},
                exc_info=exc if trace else None,
            )
        errors[part] = text
        return Problem(part, f"{what} ({type(exc.__cause__ or exc).__name__})")

    def _log_problem_changes(self, snapshot: Mapping[str, Any]) -> None:
        problems = tuple((p["part"], p["message"]) for p in snapshot["problems"])
        if problems != self._last_problems:
            for part, message in problems:
                log.warning("dashboard: part unavailable", extra={"part": part, "problem": message})
            if not problems:
                log.info("dashboard: every part readable again")
            self._last_problems = problems
