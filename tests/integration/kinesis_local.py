"""kinesis-local (the npm build of kinesis-mock) on 127.0.0.1, for tests that moto cannot serve (resharding).

The version is pinned in `kinesis-local/package.json` + `package-lock.json` beside this file; `npm ci`
installs it into `kinesis-local/node_modules` (gitignored) once, and later sessions reuse it. The
server is started with a `node -r` preload (`listen-localhost.js`) that forces every listening socket
onto 127.0.0.1, since kinesis-local itself always binds 0.0.0.0.

The KCL talks to its plain port: cleartext HTTP/2 with prior knowledge (h2c), which the KCL's Netty
client uses for an `http://` endpoint, and HTTP/1.1 for boto3, on the same port. Its TLS port (a
self-signed certificate) is given a free port too but not used.

Missing node or npm fails the test with what to install: it is never a silent skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tests.integration.conftest import free_port

PACKAGE_DIR = Path(__file__).resolve().parent / "kinesis-local"
PRELOAD = PACKAGE_DIR / "listen-localhost.js"
INSTALLED = PACKAGE_DIR / "node_modules" / "kinesis-local"
START_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0


def _tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(
            f"{name} is not installed, but the resharding tests need kinesis-local (an npm package) as their "
            "Kinesis: install Node.js 18 or newer with npm (Debian: `apt-get install nodejs npm`).",
            pytrace=False,
        )
    return found


def pinned_version() -> str:
    lock = json.loads((PACKAGE_DIR / "package-lock.json").read_text())
    return str(lock["packages"]["node_modules/kinesis-local"]["version"])


def installed_version() -> str | None:
    try:
        return str(json.loads((INSTALLED / "package.json").read_text())["version"])
    except (FileNotFoundError, KeyError, ValueError):
        return None


def ensure_installed() -> Path:
    """The pinned kinesis-local's main.js; `npm ci` only when it is missing or another version."""
    _tool("node")
    wanted = pinned_version()
    complete = all((INSTALLED / name).is_file() for name in ("main.js", "server.json"))
    if installed_version() != wanted or not complete:
        npm = _tool("npm")
        result = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline"],
            cwd=PACKAGE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            pytest.fail(
                f"`npm ci` in {PACKAGE_DIR} failed (exit {result.returncode}); the npm registry must be "
                f"reachable once to install kinesis-local {wanted}:\n{result.stderr[-3000:]}",
                pytrace=False,
            )
        if installed_version() != wanted:
            pytest.fail(f"`npm ci` did not install kinesis-local {wanted} into {INSTALLED}", pytrace=False)
    return INSTALLED / "main.js"


@dataclass
class KinesisLocal:
    process: subprocess.Popen[bytes]
    plain_port: int
    tls_port: int
    log: Path

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.plain_port}"

    def client(self, region: str = "us-east-1") -> Any:
        return boto3.client(
            "kinesis",
            endpoint_url=self.endpoint_url,
            region_name=region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 2}, connect_timeout=2, read_timeout=10),
        )

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_kinesis_local(log: Path) -> KinesisLocal:
    main_js = ensure_installed()
    node = _tool("node")
    plain_port, tls_port = free_port(), free_port()
    while tls_port == plain_port:
        tls_port = free_port()
    env = {
        **os.environ,
        "KINESIS_MOCK_CERT_PATH": str(main_js.parent / "server.json"),
        "KINESIS_MOCK_PLAIN_PORT": str(plain_port),
        "KINESIS_MOCK_TLS_PORT": str(tls_port),
        "AWS_REGION": "us-east-1",
        # Streams become ACTIVE, and splits complete, this long after the call (default 500ms).
        "CREATE_STREAM_DURATION": "200ms",
        "SPLIT_SHARD_DURATION": "200ms",
        "MERGE_SHARDS_DURATION": "200ms",
        "UPDATE_SHARD_COUNT_DURATION": "200ms",
        "LOG_LEVEL": "WARN",
        "SHOULD_PERSIST_DATA": "false",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [node, "-r", str(PRELOAD), str(main_js)],
            cwd=PACKAGE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = KinesisLocal(process, plain_port, tls_port, log)
    probe = server.client()
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        if process.poll() is not None:
            pytest.fail(f"kinesis-local exited with {process.returncode} at start:\n{server.logs()[-3000:]}")
        try:
            probe.list_streams()
            return server
        except (BotoCoreError, ClientError):
            if time.monotonic() > deadline:
                server.stop()
                pytest.fail(
                    f"kinesis-local did not answer within {START_TIMEOUT_SECONDS:.0f}s:\n{server.logs()[-3000:]}"
                )
            time.sleep(0.2)


@pytest.fixture(scope="session")
def kinesis_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KinesisLocal]:
    """One kinesis-local per session on free 127.0.0.1 ports; each test makes its own streams."""
    server = start_kinesis_local(tmp_path_factory.mktemp("kinesis-local") / "kinesis-local.log")
    try:
        yield server
    finally:
        server.stop()
