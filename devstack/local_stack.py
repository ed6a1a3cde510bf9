"""The embedded local stack: moto (served by hypercorn) and a real redis-server on 127.0.0.1.

`up` starts what is not running, waits until both answer, creates the resources and writes the env
file every other command reads. Pids, logs and redis data live under the state folder; `down` stops
exactly the processes whose pid files it wrote (and checks each pid is still that program).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import boto3
import redis

from devstack import resources
from devstack.errors import LocalStackError
from streamkpi.settings import Settings, write_env_file

LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
START_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Service:
    name: str
    port_setting: str  # the env variable that moves it
    marker: str  # a word in the program's command line, to tell it from an unrelated reused pid

    def port(self, settings: Settings) -> int:
        return settings.local_port if self.name == "moto" else settings.redis_port

    def address(self, settings: Settings) -> str:
        scheme = "http" if self.name == "moto" else "redis"
        return f"{scheme}://127.0.0.1:{self.port(settings)}"


MOTO = Service("moto", "STREAMKPI_LOCAL_PORT", "devstack.moto_server")
REDIS = Service("redis", "STREAMKPI_REDIS_PORT", "redis-server")
SERVICES = (MOTO, REDIS)


@dataclass(frozen=True)
class Row:
    name: str
    pid: int | None
    alive: bool
    address: str


def _state(settings: Settings) -> Path:
    return Path(settings.state_dir).resolve()


def _pid_file(settings: Settings, service: Service) -> Path:
    return _state(settings) / "pids" / f"{service.name}.pid"


def log_file(settings: Settings, service: Service) -> Path:
    return _state(settings) / "logs" / f"{service.name}.log"


def _running_pid(settings: Settings, service: Service) -> int | None:
    """The pid from our pid file, if that process is alive and still the program we started."""
    try:
        pid = int(_pid_file(settings, service).read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    return pid if service.marker in cmdline else None


def port_free(port: int) -> bool:
    """False if something listens on 127.0.0.1:`port` (or holds it so that the service cannot bind).

    The probe binds as hypercorn and redis-server do, with SO_REUSEADDR: the connections a stopped stack
    left in TIME_WAIT (up to a minute after `local down`) do not count, a listener does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _command(settings: Settings, service: Service) -> list[str]:
    port = str(service.port(settings))
    if service is MOTO:
        return [sys.executable, "-m", "devstack.moto_server", "--host", "127.0.0.1", "--port", port]
    server = shutil.which("redis-server")
    if not server:
        raise LocalStackError("redis-server is not installed; run `make setup` (or apt-get install redis-server).")
    data = _state(settings) / "redis"
    data.mkdir(parents=True, exist_ok=True)
    # Append-only file under the state folder: the hot store survives a restart of the stack.
    return [server, "--bind", "127.0.0.1", "--port", port, "--dir", str(data), "--appendonly", "yes",
            "--save", "", "--daemonize", "no", "--protected-mode", "yes"]  # fmt: skip


def _moto_ready(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(f"{MOTO.address(settings)}/moto-api/", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _redis_ready(settings: Settings) -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=settings.redis_port, socket_timeout=2).ping())
    except redis.RedisError:
        return False


READY: dict[str, Callable[[Settings], bool]] = {"moto": _moto_ready, "redis": _redis_ready}


def _start(settings: Settings, service: Service) -> int:
    port = service.port(settings)
    if not port_free(port):
        raise LocalStackError(
            f"port {port} on 127.0.0.1 is busy, so {service.name} cannot start there; stop what uses it "
            f"(`ss -ltnp 'sport = :{port}'` shows it) or set {service.port_setting} to a free port."
        )
    log = log_file(settings, service)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        # A new session: Ctrl-C in the terminal that ran `local up` does not reach the stack.
        process = subprocess.Popen(
            _command(settings, service), stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
        )
    pid_file = _pid_file(settings, service)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{process.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not READY[service.name](settings):
        if process.poll() is not None:
            _pid_file(settings, service).unlink(missing_ok=True)
            raise LocalStackError(f"{service.name} exited with {process.returncode} at start:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise LocalStackError(f"{service.name} did not answer within {START_TIMEOUT_SECONDS:.0f}s:\n{_tail(log)}")
        time.sleep(0.1)
    return process.pid


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


LOCAL_LEASE_ASSIGNMENT_MILLIS = 5_000


def env_values(settings: Settings) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": MOTO.address(settings),
        "AWS_REGION": settings.region,
        **LOCAL_CREDENTIALS,
        "REDIS_URL": f"{REDIS.address(settings)}/0",
        "STREAMKPI_STREAM": settings.stream,
        "STREAMKPI_APP_NAME": settings.app_name,
        "STREAMKPI_METRICS_TABLE": settings.metrics_table,
        "STREAMKPI_DLQ_QUEUE": settings.dlq_queue,
        "STREAMKPI_ARCHIVE_BUCKET": settings.archive_bucket,
        "STREAMKPI_FIREHOSE_STREAM": settings.firehose_stream,
        # One worker here: the leader assigns its leases within seconds of its start, not the KCL's 20 s.
        "STREAMKPI_KCL_LEASE_ASSIGNMENT_MILLIS": str(LOCAL_LEASE_ASSIGNMENT_MILLIS),
    }


def up(settings: Settings) -> dict[str, str]:
    """Start moto and redis-server unless running, create the resources, write the env file."""
    for service in SERVICES:
        if _running_pid(settings, service) is None:
            _start(settings, service)
    env = env_values(settings)
    endpoint = env["AWS_ENDPOINT_URL"]
    session = boto3.session.Session(
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=settings.region,
    )
    resources.create_all(settings, lambda name: session.client(name, endpoint_url=endpoint))
    write_env_file(settings.env_file, env)
    return env


def down(settings: Settings, grace_seconds: float = 10.0) -> list[str]:
    """Stop the processes `up` started (SIGTERM, then SIGKILL after the grace). Returns their names."""
    stopped = []
    for service in SERVICES:
        pid = _running_pid(settings, service)
        if pid is not None:
            _terminate(pid, grace_seconds)
            stopped.append(f"{service.name} (pid {pid})")
        _pid_file(settings, service).unlink(missing_ok=True)
    return stopped


def _terminate(pid: int, grace_seconds: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our child (tests start the stack in-process); otherwise just probe.
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(") ")[-1].split()[0] != "Z"  # a zombie is gone for our purposes
    except OSError:
        return False


def status(settings: Settings) -> list[Row]:
    rows = []
    for service in SERVICES:
        pid = _running_pid(settings, service)
        rows.append(Row(service.name, pid, pid is not None, service.address(settings)))
    return rows
