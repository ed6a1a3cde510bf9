"""Secrets are never printed (issue 14): a whole run with an AWS key pair, a session token, a Redis
password and the redaction key (user ids hashed) set, and every line any part of it wrote searched for them.

The run: `streamkpi settings`, `consume --print-properties`, a worker through the real KCL daemon with
traffic (valid and invalid events: dead letters, the archive), `query` from both stores, `dashboard
publish`, `dlq stats` and `dlq peek`; then the failures, where secrets leak most often: a wrong Redis
password (a command and a worker), a Redis URL that cannot be read, an AWS endpoint that does not answer.
Searched: every command's stdout and stderr, the worker logs (the Python processors' JSON and the Java
daemon's), the snapshot files and every file the run left in its state folder (the KCL properties).
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import string
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from streamkpi.config import default_config_text
from tests.integration.conftest import STREAMKPI, Stack, Worker, free_port, wait_for

pytestmark = pytest.mark.integration


def _token(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


# Random, so "not found" means something; the shapes of real ones (an access key id is not secret, but
# it names the account's key: it is searched for too). The password needs percent-encoding in a URL.
ACCESS_KEY_ID = "AKIA" + _token(string.ascii_uppercase + string.digits, 16)
SECRET_ACCESS_KEY = _token(string.ascii_letters + string.digits, 40)
SESSION_TOKEN = "IQoJb3JpZ2lu" + _token(string.ascii_letters + string.digits, 60)
REDIS_PASSWORD = f"s3cr/{_token(string.ascii_letters, 24)}@x"
WRONG_PASSWORD = f"wrong-{_token(string.ascii_letters, 24)}"
REDACTION_KEY = _token(string.ascii_letters + string.digits, 48)


def spellings(secret: str) -> set[str]:
    """The ways a secret could appear in text: as is, percent-encoded (in a URL), JSON-escaped."""
    return {secret, quote(secret, safe=""), json.dumps(secret)[1:-1]}


@dataclass
class Transcript:
    """Every text the run printed or wrote, by where it came from."""

    texts: dict[str, str] = field(default_factory=dict)

    def add(self, where: str, text: str) -> None:
        assert where not in self.texts, where
        self.texts[where] = text

    def run(self, where: str, env: dict[str, str], *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([STREAMKPI, *args], env=env, capture_output=True, text=True, timeout=180)
        self.add(f"{where} (stdout)", result.stdout)
        self.add(f"{where} (stderr)", result.stderr)
        assert result.returncode == code, f"{where}: exit {result.returncode}\n{result.stderr[-3000:]}"
        return result

    def add_files(self, root: Path, label: str) -> int:
        count = 0
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            self.add(f"{label}/{path.relative_to(root)}", path.read_bytes().decode("utf-8", "replace"))
            count += 1
        return count

    def leaks(self, secret_values: dict[str, str]) -> list[str]:
        found = []
        for name, secret in secret_values.items():
            for spelling in spellings(secret):
                found += [f"{name} in {where}" for where, text in self.texts.items() if spelling in text]
        return found


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[int]:
    """A redis-server of the test's own that requires REDIS_PASSWORD."""
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", str(port),
         "--dir", str(data), "--save", "", "--appendonly", "no", "--requirepass", REDIS_PASSWORD],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(host="127.0.0.1", port=port, password=REDIS_PASSWORD, socket_timeout=5)

    def pings() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_for(pings, 20, "redis-server with a password up", interval=0.1)
        yield port
    finally:
        server.kill()
        server.wait(10)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def test_no_secret_is_printed_in_a_whole_run(
    stack: Stack, start_worker: Callable[..., Worker], password_redis: int, tmp_path: Path
) -> None:
    redis_url = f"redis://:{quote(REDIS_PASSWORD, safe='')}@127.0.0.1:{password_redis}/0"
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "streamkpi.toml"
    config.write_text(default_config_text() + '\n[redaction]\nhash = ["userId"]\n')
    credentials = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "REDIS_URL": redis_url,
        "STREAMKPI_STATE_DIR": str(state),
        "STREAMKPI_CONFIG": str(config),
        "STREAMKPI_REDACTION_KEY": REDACTION_KEY,
        "STREAMKPI_LOG_LEVEL": "DEBUG",  # the most a log ever says
    }
    s = stack.fresh(shards=2, **credentials)
    env = s.env
    out = Transcript()

    settings = json.loads(out.run("settings", env, "settings").stdout)
    assert settings["redis_url"] == f"redis://:***@127.0.0.1:{password_redis}/0"
    assert settings["redaction_key"] == "***"
    out.run("print-properties", env, "consume", "--print-properties")

    truth_file = tmp_path / "truth.json"
    out.run("generate", env, "generate", "--rate", "500", "--duration", "2", "--invalid-fraction", "0.1",
            "--seed", "14", "--truth", str(truth_file))  # fmt: skip
    truth = json.loads(truth_file.read_text())
    expected = truth["counts"]["events"]["1m"]
    starts = sorted(int(k) for k in expected)
    window = ("--from", iso(starts[0]), "--to", iso(starts[-1] + 60_000))

    worker = start_worker(s, STREAMKPI_LOG_LEVEL="DEBUG")

    def counted(store: str) -> bool:
        result = subprocess.run(
            [STREAMKPI, "query", "--metric", "events", "--resolution", "1m", *window, "--store", store,
             "--format", "json"], env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if result.returncode != 0:
            return False
        windows = json.loads(result.stdout)["windows"]
        return sum(sum(w["groups"].values()) for w in windows) == truth["valid"]

    wait_for(lambda: counted("dynamodb") and counted("redis"), 180, "every valid event counted in both stores")
    for store in ("redis", "dynamodb"):
        out.run(f"query {store}", env, "query", "--metric", "events", "--resolution", "1m", *window,
                "--store", store, "--format", "json")  # fmt: skip
    snapshots = tmp_path / "site"
    out.run("dashboard publish", env, "dashboard", "publish", "--to", str(snapshots), "--once", "--static")
    stats = out.run("dlq stats", env, "dlq", "stats")
    assert "schema" in stats.stdout or "bad_timestamp" in stats.stdout or "missing_field" in stats.stdout, stats.stdout
    out.run("dlq peek", env, "dlq", "peek")
    assert worker.stop(signal.SIGTERM, timeout=120) == 0, worker.logs()[-3000:]
    out.add("worker log", worker.logs())

    # The failures. A wrong password: a command says what to fix, and a worker gives up without a checkpoint.
    wrong = {**env, "REDIS_URL": f"redis://:{WRONG_PASSWORD}@127.0.0.1:{password_redis}/0"}
    refused = out.run("query, wrong password", wrong, "query", "--metric", "events", "--resolution", "1m",
                      *window, "--store", "redis", code=1)  # fmt: skip
    assert "password" in refused.stderr, refused.stderr
    failing = start_worker(s, REDIS_URL=wrong["REDIS_URL"], STREAMKPI_STORE_RETRY_SECONDS="2",
                           STREAMKPI_LOG_LEVEL="DEBUG")  # fmt: skip
    out.run("generate, second", env, "generate", "--rate", "100", "--duration", "1", "--seed", "15")
    assert failing.process.wait(180) != 0, "a worker that cannot log in to Redis exits"
    out.add("failing worker log", failing.logs())
    assert "Redis" in out.texts["failing worker log"]
    # A URL that cannot be read (an unescaped / in the password cuts the host off).
    unreadable = {**env, "REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{password_redis}/0"}
    out.run("settings, unreadable URL", unreadable, "settings", code=2)
    # AWS that does not answer: the error names the endpoint, not the keys.
    away = {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    out.run("dlq stats, no AWS", away, "dlq", "stats", code=1)

    files = out.add_files(snapshots, "snapshot site") + out.add_files(state, "state folder")
    assert files >= 3, "the snapshot, the page and the KCL properties were written"
    assert any(where.endswith(".properties") for where in out.texts), sorted(out.texts)

    leaks = out.leaks(
        {
            "AWS secret key": SECRET_ACCESS_KEY,
            "AWS access key id": ACCESS_KEY_ID,
            "AWS session token": SESSION_TOKEN,
            "Redis password": REDIS_PASSWORD,
            "wrong Redis password": WRONG_PASSWORD,
            "redaction key": REDACTION_KEY,
        }
    )
    assert not leaks, leaks
    lines = sum(text.count("\n") for text in out.texts.values())
    assert lines > 200, f"the run wrote {lines} lines: too few to have searched a whole run"
