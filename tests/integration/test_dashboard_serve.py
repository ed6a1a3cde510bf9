"""`streamkpi dashboard serve`: the page, the snapshot and Prometheus /metrics on 127.0.0.1, read-only."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from consumer.health.redis_health import RedisHealth
from dashboard.errors import ServeError
from dashboard.server import DashboardServer, SnapshotHolder, make_server
from tests.browser.fixtures import known_snapshot
from tests.integration.conftest import STREAMKPI, Stack, free_port, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def served() -> Iterator[tuple[DashboardServer, SnapshotHolder]]:
    holder = SnapshotHolder()
    server = make_server(0, holder)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server, holder
    finally:
        server.shutdown()
        server.server_close()


def request(port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_page_and_its_files_are_served_read_only(served: tuple[DashboardServer, SnapshotHolder]) -> None:
    server, _ = served
    port = server.server_address[1]
    assert server.server_address[0] == "127.0.0.1"
    status, headers, body = request(port, "GET", "/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert b"<title>streamkpi" in body
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    for path, kind in (("/app.js", "javascript"), ("/style.css", "text/css"), ("/index.html", "text/html")):
        status, headers, _ = request(port, "GET", path)
        assert status == 200 and kind in headers["content-type"], path
    status, headers, body = request(port, "HEAD", "/app.js")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 1000
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, _ = request(port, method, "/snapshot.json")
        assert status == 405 and headers["allow"] == "GET, HEAD", method
    for path in ("/../pyproject.toml", "/static/app.js", "/%2e%2e/README.md", "/nothing"):
        assert request(port, "GET", path)[0] == 404, path


def test_the_snapshot_is_served_fresh_once_there_is_one(served: tuple[DashboardServer, SnapshotHolder]) -> None:
    server, holder = served
    port = server.server_address[1]
    status, _, body = request(port, "GET", "/snapshot.json")
    assert status == 503 and b"no snapshot yet" in body
    snap = known_snapshot(int(time.time() * 1000))
    holder.write(orjson.dumps(snap))
    status, headers, body = request(port, "GET", "/snapshot.json?t=123")
    assert status == 200 and headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    assert orjson.loads(body) == snap


def test_metrics_are_the_golden_signals_of_the_latest_snapshot(served: tuple[DashboardServer, SnapshotHolder]) -> None:
    server, holder = served
    port = server.server_address[1]
    status, headers, body = request(port, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=")
    before = metric_samples(body.decode())
    assert ("streamkpi_dashboard_snapshot_age_seconds", ()) not in before  # no snapshot: no age

    now_ms = int(time.time() * 1000) - 2_000
    holder.write(orjson.dumps(known_snapshot(now_ms)))
    samples = metric_samples(request(port, "GET", "/metrics")[2].decode())
    shard0, shard1 = (("shard", "shardId-000000000000"),), (("shard", "shardId-000000000001"),)
    assert samples[("streamkpi_events_per_second", ())] == 51.5  # the fresh shard only
    assert samples[("streamkpi_invalid_per_second", ())] == 0.05
    assert samples[("streamkpi_shard_behind_latest_seconds", shard0)] == 0.2
    assert samples[("streamkpi_shard_events_per_second", shard0)] == 51.5
    assert samples[("streamkpi_shard_up", shard0)] == 1 and samples[("streamkpi_shard_up", shard1)] == 0
    # Ages are brought forward from the snapshot's time to the scrape.
    assert 4.5 <= samples[("streamkpi_shard_checkpoint_age_seconds", shard0)] < 15
    assert 2 <= samples[("streamkpi_dashboard_snapshot_age_seconds", ())] < 12
    assert samples[("streamkpi_shard_events_total", shard0)] == 10_000
    assert samples[("streamkpi_shard_dead_letters_total", shard1)] == 2
    assert samples[("streamkpi_dlq_messages", (("state", "visible"),))] == 42


def test_a_busy_port_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServeError, match=f"port {port} is in use on 127.0.0.1; choose another with --port"):
            make_server(port, SnapshotHolder())


def raw_request(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `data` as it is (no Host added), read the response until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def test_only_requests_for_this_server_are_answered(served: tuple[DashboardServer, SnapshotHolder]) -> None:
    server, holder = served
    port = server.server_address[1]
    holder.write(orjson.dumps(known_snapshot(int(time.time() * 1000))))
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}", f"[::1]:{port}", "127.0.0.1"):
        status, _, body = raw_request(
            port, f"GET /snapshot.json HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        )
        assert status == 200 and body.startswith(b"{"), host
    # DNS rebinding: a page of evil.example, its name now resolving to 127.0.0.1, must not read the snapshot.
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", f"127.0.0.1.evil.example:{port}"):
        status, headers, body = raw_request(port, f"GET /snapshot.json HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert status == 421 and b"generatedAtMs" not in body, host
        assert headers["connection"] == "close"
    no_host = raw_request(port, b"GET /snapshot.json HTTP/1.1\r\nConnection: close\r\n\r\n")
    two_hosts = raw_request(port, f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\n\r\n".encode())
    assert no_host[0] == two_hosts[0] == 400


def test_error_responses_carry_the_security_headers(served: tuple[DashboardServer, SnapshotHolder]) -> None:
    server, _ = served
    port = server.server_address[1]
    host = f"Host: 127.0.0.1:{port}\r\n"
    responses = {
        "404": request(port, "GET", "/nothing"),
        "405": request(port, "POST", "/snapshot.json"),
        "503": request(port, "GET", "/snapshot.json"),
        "501": raw_request(port, f"BREW /pot HTTP/1.1\r\n{host}\r\n".encode()),
        "400": raw_request(port, b"GET / x HTTP/1.1\r\n\r\n"),
        "400 garbled": raw_request(port, b"GET\r\n\r\n"),
        "400 version": raw_request(port, b"GET / HTTP/one\r\n\r\n"),
        "505": raw_request(port, f"GET / HTTP/7.0\r\n{host}\r\n".encode()),
        "421": raw_request(port, b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n"),
    }
    for name, (status, headers, _) in responses.items():
        assert str(status) == name.split()[0], (name, status)
        assert headers["x-content-type-options"] == "nosniff", name
        assert headers["referrer-policy"] == "no-referrer", name
        assert "frame-ancestors 'none'" in headers["content-security-policy"], name
    status, headers, _ = request(port, "GET", "/")
    assert status == 200 and list(headers).count("x-content-type-options") == 1


def test_a_silent_client_is_disconnected_after_the_timeout() -> None:
    server = make_server(0, SnapshotHolder(), timeout=0.3)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        for sent in (b"", b"GET / HTTP/1.1\r\n"):  # nothing at all, or a request that never ends
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(sent)
                started = time.monotonic()
                assert sock.recv(1) == b""  # blocks until the server closes (10 s and it raises)
                assert time.monotonic() - started < 5, sent
        assert request(port, "GET", "/healthz")[0] == 200  # and the server still answers
    finally:
        server.shutdown()
        server.server_close()


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_serve_publishes_live_snapshots_and_metrics_until_sigterm(stack: Stack, tmp_path: Path) -> None:
    mine = stack.fresh(shards=1)
    RedisHealth(redis.Redis.from_url(mine.env["REDIS_URL"]), mine.settings.stream).report(
        "shardId-000000000000",
        {"reportedMs": int(time.time() * 1000), "eventsPerSecond": 7.5, "millisBehindLatest": 1500, "dlqCount": 0},
    )
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [STREAMKPI, "dashboard", "serve", "--port", str(port), "--every", "1", "--dlq-every", "0"],
            env=mine.env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: f"http://127.0.0.1:{port}/" in log.read_text(), 30, "the URL printed")
        assert listening_addresses(port) == {"0100007F"}, "bound to 127.0.0.1 only"

        def snapshot() -> dict | None:
            status, _, body = request(port, "GET", "/snapshot.json")
            return orjson.loads(body) if status == 200 else None

        first = wait_for(snapshot, 30, "a first snapshot")
        assert first["stream"] == mine.settings.stream and first["problems"] == []
        assert first["shards"]["rows"][0]["millisBehindLatest"] == 1500
        second = wait_for(lambda: (s := snapshot()) and s["generatedAtMs"] > first["generatedAtMs"] and s, 10, "update")
        assert second["generatedAtMs"] - first["generatedAtMs"] < 5_000
        samples = metric_samples(request(port, "GET", "/metrics")[2].decode())
        assert samples[("streamkpi_shard_behind_latest_seconds", (("shard", "shardId-000000000000"),))] == 1.5
        assert samples[("streamkpi_events_per_second", ())] == 7.5
        assert samples[("streamkpi_dashboard_snapshot_age_seconds", ())] < 5
        assert samples[("streamkpi_dashboard_publish_failures_total", ())] == 0
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    assert code == 0, log.read_text()[-2000:]


def test_serve_on_a_busy_port_exits_with_the_reason(stack: Stack) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [STREAMKPI, "dashboard", "serve", "--port", str(port)], env=stack.env, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
    assert done.returncode == 1
    assert f"port {port} is in use" in done.stderr
