"""The real thing: moto over hypercorn, a real redis-server and the Java KCL daemon, on free ports.

One local stack per test session (started with the same code as `streamkpi local up`); each test
gets its own stream, tables and queue names so tests cannot see each other's data.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis

from devstack import local_stack, resources
from streamkpi.settings import Settings

pytestmark = pytest.mark.integration
STREAMKPI = str(Path(sys.executable).parent / "streamkpi")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]  # process environment for streamkpi commands against this stack

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.settings.endpoint_url,
            region_name=self.settings.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def fresh(self, shards: int = 2, client: resources.ClientFactory | None = None, **overrides: str) -> Stack:
        """New stream, lease table, metrics table, queue: a clean slate for one test.

        `client` builds the clients the resources are created with (default: this stack's, all moto).
        """
        tag = uuid.uuid4().hex[:8]
        names = {
            "STREAMKPI_STREAM": f"events-{tag}",
            "STREAMKPI_APP_NAME": f"app-{tag}",
            "STREAMKPI_METRICS_TABLE": f"metrics-{tag}",
            "STREAMKPI_DLQ_QUEUE": f"dlq-{tag}",
            "STREAMKPI_ARCHIVE_BUCKET": f"archive-{tag}",
            "STREAMKPI_FIREHOSE_STREAM": f"archive-{tag}",
            "STREAMKPI_SHARDS": str(shards),
            "REDIS_URL": f"redis://127.0.0.1:{self.settings.redis_port}/0",
        }
        env = {**self.env, **names, **overrides}
        settings = Settings.load(env)
        resources.create_all(settings, client or self.client)
        return Stack(settings, env)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("state")
    env = {
        **os.environ,
        "STREAMKPI_STATE_DIR": str(state),
        "STREAMKPI_LOCAL_PORT": str(free_port()),
        "STREAMKPI_REDIS_PORT": str(free_port()),
        "STREAMKPI_WORKER_ID": "itest-worker",
    }
    for key in ("AWS_ENDPOINT_URL", "REDIS_URL", "AWS_PROFILE"):
        env.pop(key, None)
    settings = Settings.load(env)
    values = local_stack.up(settings)
    env.update(values)
    try:
        yield Stack(replace(settings, endpoint_url=values["AWS_ENDPOINT_URL"]), env)
    finally:
        local_stack.down(settings)


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """`streamkpi consume` as a user runs it, in its own process group (killed at teardown); `overrides`
    are settings for this worker (over the test cadence below)."""
    workers: list[Worker] = []

    def start(stack: Stack, **overrides: str) -> Worker:
        log = tmp_path / f"worker-{len(workers)}.log"
        env = {
            **stack.env,
            # Quick cadence so tests see durable results within seconds.
            "STREAMKPI_DYNAMODB_FLUSH_SECONDS": "1",
            "STREAMKPI_CHECKPOINT_SECONDS": "1",
            "STREAMKPI_KCL_FAILOVER_MILLIS": "5000",
            **overrides,
        }
        with log.open("wb") as out:
            process = subprocess.Popen(
                [STREAMKPI, "consume"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        worker = Worker(process, log)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        if worker.process.poll() is None:
            os.killpg(worker.process.pid, signal.SIGKILL)
            worker.process.wait(10)


@contextmanager
def own_redis_server(data: Path) -> Iterator[redis.Redis]:
    """A redis-server of the test's own on a free port (no persistence), for tests that lose or inspect it."""
    port = free_port()
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", str(port),
         "--dir", str(data), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    connection = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        wait_for(lambda: _pings(connection), 20, "redis-server up", interval=0.1)
        yield connection
    finally:
        server.kill()
        server.wait(10)


def _pings(connection: redis.Redis) -> bool:
    try:
        return bool(connection.ping())
    except redis.RedisError:
        return False


def wait_for(predicate: Callable[[], Any], timeout: float, message: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s: {message} (last: {last!r})")
