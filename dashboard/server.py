"""`streamkpi dashboard serve`: the publisher in a thread, and a read-only HTTP server on 127.0.0.1.

    GET /               the page (dashboard/static, loaded into memory at start: no path is ever
                        looked up on disk, so nothing outside the page can be served)
    GET /snapshot.json  the latest snapshot (503 until the first one is published)
    GET /metrics        Prometheus text format: the golden signals of the latest snapshot
    GET /healthz        200 "ok"
Anything but GET and HEAD is refused (405); so is a request whose `Host` is not this server's own
address (421: a DNS-rebinding page cannot read it), and a client that sends nothing for
REQUEST_TIMEOUT_SECONDS is disconnected. Every response, errors included, carries the security headers.
"""

from __future__ import annotations

import errno
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dashboard.errors import ServeError
from dashboard.publisher import SNAPSHOT_NAME, Publisher, static_files

log = logging.getLogger("streamkpi.dashboard")
HOST = "127.0.0.1"  # never anything else: the dashboard is local and read-only
REQUEST_TIMEOUT_SECONDS = 10.0  # a client silent this long loses its connection (and its thread)


class SnapshotHolder:
    """The latest snapshot in memory: the publisher's target when serving."""

    description = "memory"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self.clock = clock
        self.body: bytes | None = None
        self.snapshot: dict[str, Any] | None = None
        self.written_at: float | None = None
        self.files: dict[str, bytes] = {}  # the range snapshots by name (snapshot-24h.json ...)

    def write(self, body: bytes) -> None:
        snapshot = orjson.loads(body)
        with self._lock:
            self.body, self.snapshot, self.written_at = body, snapshot, self.clock()

    def put_file(self, name: str, body: bytes, content_type: str) -> None:  # the server has its own copy
        pass

    def write_file(self, name: str, body: bytes) -> None:
        with self._lock:
            self.files[name] = body

    def file(self, name: str) -> bytes | None:
        with self._lock:
            return self.files.get(name)

    def latest(self) -> tuple[bytes | None, dict[str, Any] | None]:
        with self._lock:
            return self.body, self.snapshot


# -- /metrics -------------------------------------------------------------------------------------


class SnapshotCollector(Collector):
    """The golden signals, from the latest snapshot: traffic (events/s), errors (invalid/s, dead letters),
    latency (how far behind the stream, checkpoint age) per shard, plus the snapshot's own age."""

    def __init__(self, holder: SnapshotHolder, publisher: Publisher | None = None) -> None:
        self.holder, self.publisher = holder, publisher

    def collect(self) -> Iterator[Metric]:
        _, snap = self.holder.latest()
        now = self.holder.clock()
        age = GaugeMetricFamily(
            "streamkpi_dashboard_snapshot_age_seconds", "Seconds since the latest snapshot was generated."
        )
        if snap is not None:
            age.add_metric([], max(0.0, now - snap["generatedAtMs"] / 1000))
        yield age
        if self.publisher is not None:
            yield CounterMetricFamily(
                "streamkpi_dashboard_publish_failures",
                "Snapshots that could not be published.",
                value=self.publisher.failures,
            )
        if snap is None:
            return
        yield from snapshot_metrics(snap, now)


def snapshot_metrics(snap: Mapping[str, Any], now: float) -> Iterator[Metric]:
    """Metric families of one snapshot; ages are brought forward to `now` (seconds since the epoch)."""
    since = max(0.0, now - snap["generatedAtMs"] / 1000)
    rate = snap["rate"]["eventsPerSecond"]
    events = GaugeMetricFamily("streamkpi_events_per_second", "Valid events per second, all shards (worker health).")
    if rate is not None:
        events.add_metric([], rate)
    yield events
    invalid_rate = snap["invalid"]["perSecond"]
    invalid = GaugeMetricFamily(
        "streamkpi_invalid_per_second", "Invalid events (dead letters) per second over the last minute."
    )
    if invalid_rate is not None:
        invalid.add_metric([], invalid_rate)
    yield invalid

    labels = ["shard"]
    behind = GaugeMetricFamily(
        "streamkpi_shard_behind_latest_seconds",
        "How far behind the tip of the stream (millisBehindLatest).",
        labels=labels,
    )
    checkpoint = GaugeMetricFamily(
        "streamkpi_shard_checkpoint_age_seconds", "Seconds since the shard's last checkpoint.", labels=labels
    )
    shard_rate = GaugeMetricFamily(
        "streamkpi_shard_events_per_second", "Events per second of the shard.", labels=labels
    )
    report = GaugeMetricFamily(
        "streamkpi_shard_report_age_seconds", "Seconds since the shard's worker last reported health.", labels=labels
    )
    up = GaugeMetricFamily("streamkpi_shard_up", "1 if the shard's worker reported within 30 s.", labels=labels)
    events_total = CounterMetricFamily(
        "streamkpi_shard_events", "Events the shard's current worker process handled.", labels=labels
    )
    letters_total = CounterMetricFamily(
        "streamkpi_shard_dead_letters", "Dead letters the shard's current worker process sent.", labels=labels
    )
    for row in snap["shards"]["rows"]:
        if row["status"] == "ended":  # a resharded parent: no lag, no checkpoint to age, nothing to alert on
            continue
        shard = [row["shardId"]]
        if row["millisBehindLatest"] is not None:
            behind.add_metric(shard, row["millisBehindLatest"] / 1000)
        if row["checkpointAgeSeconds"] is not None:
            checkpoint.add_metric(shard, row["checkpointAgeSeconds"] + since)
        if row["eventsPerSecond"] is not None:
            shard_rate.add_metric(shard, row["eventsPerSecond"])
        if row["reportAgeSeconds"] is not None:
            report.add_metric(shard, row["reportAgeSeconds"] + since)
        up.add_metric(shard, 0 if row["status"] == "stale" else 1)
        if row["events"] is not None:
            events_total.add_metric(shard, row["events"])
        if row["deadLetters"] is not None:
            letters_total.add_metric(shard, row["deadLetters"])
    yield from (behind, checkpoint, shard_rate, report, up, events_total, letters_total)

    queue = snap["invalid"]["queue"]
    dlq = GaugeMetricFamily("streamkpi_dlq_messages", "Messages in the DLQ (SQS approximate counts).", labels=["state"])
    if queue is not None:
        for state in ("visible", "inFlight", "delayed"):
            value = queue.get(state)
            if value is not None and math.isfinite(value):
                dlq.add_metric([state], value)
    yield dlq
    problems = GaugeMetricFamily(
        "streamkpi_dashboard_problem", "1 for each part of the snapshot that could not be read.", labels=["part"]
    )
    for problem in snap["problems"]:
        problems.add_metric([problem["part"]], 1)
    yield problems
    yield from panel_metrics(snap.get("panels") or [])


PANEL_STATES = {"ok": 0, "warning": 1, "critical": 2}


def panel_metrics(panels: list[Mapping[str, Any]]) -> Iterator[Metric]:
    """Per config panel with thresholds: its state (0 ok, 1 warning, 2 critical) and the value judged (the
    1h range's, or today's for period = "today"), so an alert rule needs no second copy of the lines."""
    state = GaugeMetricFamily(
        "streamkpi_dashboard_panel_state",
        "State of a dashboard panel with thresholds: 0 ok, 1 warning, 2 critical.",
        labels=["panel", "title"],
    )
    value = GaugeMetricFamily(
        "streamkpi_dashboard_panel_value", "The value a dashboard panel's thresholds judge.", labels=["panel", "title"]
    )
    for panel in panels:
        if panel.get("thresholds") is None:
            continue
        labels = [panel["id"], panel["title"]]
        if panel["state"] in PANEL_STATES:
            state.add_metric(labels, PANEL_STATES[panel["state"]])
        number = panel.get("value")
        if isinstance(number, int | float) and not isinstance(number, bool) and math.isfinite(number):
            value.add_metric(labels, number)
    yield state
    yield value


# -- HTTP -----------------------------------------------------------------------------------------


def load_static() -> dict[str, tuple[bytes, str]]:
    """URL path -> (bytes, content type) of every file of the page."""
    files = {f"/{name}": (body, kind) for name, body, kind in static_files()}
    files["/"] = files["/index.html"]
    return files


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        port: int,
        holder: SnapshotHolder,
        registry: CollectorRegistry,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self.holder, self.registry = holder, registry
        self.request_timeout = timeout
        self.static = load_static()
        super().__init__((HOST, port), _Handler)
        port = self.server_address[1]
        names = (HOST, "localhost", "[::1]")
        self.allowed_hosts = frozenset(names) | {f"{name}:{port}" for name in names}

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"


_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "streamkpi-dashboard"
    sys_version = ""
    default_request_version = "HTTP/1.0"  # not 0.9: every answer, to a garbled request too, has headers

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_timeout)  # a silent client is disconnected

    def parse_request(self) -> bool:
        """The request line and headers, then the `Host`: only this server's own address is answered."""
        if not super().parse_request():
            return False
        hosts = self.headers.get_all("Host") or []
        if len(hosts) > 1 or (not hosts and self.request_version != "HTTP/1.0"):
            self.send_error(HTTPStatus.BAD_REQUEST, "exactly one Host header is required")
            return False
        if hosts and hosts[0].strip().lower() not in self.server.allowed_hosts:
            self.send_error(HTTPStatus.MISDIRECTED_REQUEST, f"this server answers to {HOST} and localhost only")
            return False
        return True

    def end_headers(self) -> None:  # every response, send_error's too
        for name, value in _SECURITY_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def _refuse(self) -> None:
        self._send(
            HTTPStatus.METHOD_NOT_ALLOWED, b"read-only: GET and HEAD only\n", "text/plain", extra={"Allow": "GET, HEAD"}
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def _respond(self, head: bool) -> None:
        path = urlsplit(self.path).path
        if path == f"/{SNAPSHOT_NAME}":
            body, _ = self.server.holder.latest()
            if body is None:
                msg = b'{"error": "no snapshot yet: the publisher has not finished its first read"}'
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, msg, "application/json", head, cache="no-store")
            else:
                self._send(HTTPStatus.OK, body, "application/json", head, cache="no-store")
        elif path.startswith("/snapshot-") and path.endswith(".json"):
            body = self.server.holder.file(path[1:])
            if body is None:
                msg = b'{"error": "no snapshot of this range yet: is [[dashboard.panels]] in the config?"}'
                self._send(HTTPStatus.NOT_FOUND, msg, "application/json", head, cache="no-store")
            else:
                self._send(HTTPStatus.OK, body, "application/json", head, cache="no-store")
        elif path == "/metrics":
            self._send(
                HTTPStatus.OK, generate_latest(self.server.registry), CONTENT_TYPE_LATEST, head, cache="no-store"
            )
        elif path == "/healthz":
            self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8", head, cache="no-store")
        elif path in self.server.static:
            body, kind = self.server.static[path]
            self._send(HTTPStatus.OK, body, kind, head, cache="no-cache")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", head)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        head: bool = False,
        cache: str = "no-store",
        extra: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http " + format % args)


def make_server(
    port: int,
    holder: SnapshotHolder,
    publisher: Publisher | None = None,
    timeout: float = REQUEST_TIMEOUT_SECONDS,
) -> DashboardServer:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(SnapshotCollector(holder, publisher))
    try:
        return DashboardServer(port, holder, registry, timeout)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(
                f"port {port} is in use on {HOST}; choose another with --port (0 picks a free one)"
            ) from None
        raise ServeError(f"cannot listen on {HOST}:{port}: {exc.strerror}") from None


def serve(
    publisher: Publisher, holder: SnapshotHolder, port: int, every_seconds: float, say: Callable[[str], None]
) -> int:
    """Publish every `every_seconds` and serve until SIGINT or SIGTERM; returns the exit code."""
    server = make_server(port, holder, publisher)
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    publishing = threading.Thread(target=publisher.run, args=(every_seconds, stop), name="publisher", daemon=True)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True)
    try:
        publishing.start()
        serving.start()
        say(f"dashboard: {server.url} (snapshot every {every_seconds:g} s; metrics at {server.url}metrics)")
        say("read-only, on 127.0.0.1 only. Ctrl-C stops it.")
        while not stop.wait(0.5):
            pass
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        publishing.join(10)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
