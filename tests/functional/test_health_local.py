"""The local liveness files and `streamkpi health` with real processes: a live, a killed, a zombie and an exited
one; the JVM options of the daemon's command line. The image test (tests/integration/test_image.py) runs the
same command inside the container against the real KCL daemon."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from consumer.health.local_file import (
    LocalFileHealth,
    process_alive,
    process_start,
    prune_stale_workers,
    read_liveness,
    remove_worker_files,
    worker_dirs,
    worker_health_dir,
    write_daemon_record,
)
from streamkpi.errors import DaemonError
from streamkpi.kcl_daemon import java_command
from streamkpi.settings import Settings

STREAMKPI = str(Path(sys.executable).parent / "streamkpi")
APP = "app-health"


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process standing in for the KCL daemon (health looks only at its pid and start time)."""
    process = subprocess.Popen(["sleep", "300"])
    yield process
    process.kill()
    process.wait(10)


def health(state: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKPI_")}
    environ.update({"STREAMKPI_STATE_DIR": str(state), "STREAMKPI_APP_NAME": APP, **env})
    return subprocess.run([STREAMKPI, "health", *args], env=environ, capture_output=True, text=True, timeout=60)


def beat(directory: Path, shard: str, reported_ms: int, pid: int | None = None) -> None:
    """A heartbeat as a shard processor writes it (pid: whose it is; default this test's own process)."""
    LocalFileHealth(directory, pid).report(shard, {"reportedMs": reported_ms})


def now_ms() -> int:
    return int(time.time() * 1000)


def test_a_live_worker_with_fresh_heartbeats_is_healthy(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    directory = worker_health_dir(tmp_path, APP, "w1")
    write_daemon_record(directory, sleeper.pid, APP, "w1")
    beat(directory, "shardId-000000000000", now_ms())
    beat(directory, "shardId-000000000001", now_ms() - 2_000)
    result = health(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"healthy: KCL daemon pid {sleeper.pid} runs; 2 shard(s) reported")


def test_a_worker_holding_no_lease_is_healthy(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    write_daemon_record(worker_health_dir(tmp_path, APP, "w1"), sleeper.pid, APP, "w1")
    result = health(tmp_path)
    assert (result.returncode, result.stdout.strip()) == (
        0,
        f"healthy: KCL daemon pid {sleeper.pid} runs and holds no shard",
    )


def test_a_quiet_shard_is_unhealthy_and_named(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    directory = worker_health_dir(tmp_path, APP, "w1")
    write_daemon_record(directory, sleeper.pid, APP, "w1")
    beat(directory, "shardId-000000000000", now_ms())
    beat(directory, "shardId-000000000001", now_ms() - 50_000)
    result = health(tmp_path, STREAMKPI_HEALTH_MAX_SILENCE_SECONDS="30")
    assert result.returncode == 1
    assert result.stdout.startswith("unhealthy: shard shardId-000000000001 has not reported for 5")
    assert health(tmp_path, "--max-silence", "60").returncode == 0  # the option wins over the setting


def test_a_daemon_that_is_gone_is_unhealthy(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    directory = worker_health_dir(tmp_path, APP, "w1")
    write_daemon_record(directory, sleeper.pid, APP, "w1")
    beat(directory, "shardId-000000000000", now_ms())
    sleeper.kill()
    sleeper.wait(10)
    result = health(tmp_path)
    assert (result.returncode, result.stdout.strip()) == (1, f"unhealthy: the KCL daemon (pid {sleeper.pid}) is gone")


def test_a_zombie_daemon_counts_as_gone(tmp_path: Path) -> None:
    child = subprocess.Popen(["sleep", "300"])
    start = process_start(child.pid)
    try:
        assert process_alive(child.pid, start)
        child.send_signal(signal.SIGKILL)
        # Not reaped yet: the pid still exists, as a zombie, until its parent waits for it.
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/stat").read_text().split(") ")[1][0] != "Z":
            assert time.monotonic() < deadline, "the child never became a zombie"
            time.sleep(0.01)
        assert not process_alive(child.pid, start)
    finally:
        child.wait(10)


def test_a_reused_pid_is_not_taken_for_the_process_that_had_it() -> None:
    start = process_start(os.getpid())
    assert start is not None and process_alive(os.getpid(), start)
    assert not process_alive(os.getpid(), start + 1)  # same pid, another start time: another process


def test_no_worker_here_is_unhealthy(tmp_path: Path) -> None:
    result = health(tmp_path)
    assert result.returncode == 1 and result.stdout.startswith(f"unhealthy: no worker of {APP} is running here")


def test_several_workers_ask_for_the_worker_id_which_picks_one(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    write_daemon_record(worker_health_dir(tmp_path, APP, "w1"), sleeper.pid, APP, "w1")
    write_daemon_record(worker_health_dir(tmp_path, APP, "w2"), 999_999_999, APP, "w2")
    # Another app whose name starts like this one's is not one of its workers.
    write_daemon_record(worker_health_dir(tmp_path, f"{APP}-other", "w1"), sleeper.pid, f"{APP}-other", "w1")
    assert [p.name for p in worker_dirs(tmp_path, APP)] == [f"{APP}-w1", f"{APP}-w2"]
    result = health(tmp_path)
    assert result.returncode == 1 and "set STREAMKPI_WORKER_ID" in result.stdout
    assert health(tmp_path, STREAMKPI_WORKER_ID="w1").returncode == 0
    assert (
        health(tmp_path, STREAMKPI_WORKER_ID="w2").stdout.strip() == "unhealthy: the KCL daemon (pid 999999999) is gone"
    )
    assert health(tmp_path, STREAMKPI_HEALTH_DIR=str(worker_health_dir(tmp_path, APP, "w1"))).returncode == 0


def test_a_worker_of_another_host_or_a_cut_record_does_not_hide_this_ones(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    """A state folder on a volume outlives its container: the record of the old container (another host name)
    and a record cut short by a kill are no worker of this one."""
    write_daemon_record(worker_health_dir(tmp_path, APP, "here"), sleeper.pid, APP, "here")
    old = worker_health_dir(tmp_path, APP, "old-container")
    write_daemon_record(old, 999_999_999, APP, "old-container")
    record = old / "daemon.json"
    record.write_bytes(record.read_bytes().replace(socket.gethostname().encode(), b"another-host"))
    cut = worker_health_dir(tmp_path, APP, "cut")
    cut.mkdir(parents=True)
    (cut / "daemon.json").write_bytes(b'{"pid": 12')
    result = health(tmp_path)
    assert result.returncode == 0, result.stdout


def test_a_processor_removes_its_heartbeats_when_it_exits_and_a_killed_ones_stop_counting(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    directory = worker_health_dir(tmp_path, APP, "w1")
    write_daemon_record(directory, sleeper.pid, APP, "w1")
    script = (
        "import sys, time; from pathlib import Path; from consumer.health.local_file import LocalFileHealth\n"
        "LocalFileHealth(Path(sys.argv[1])).report(sys.argv[2], {'reportedMs': 0})\n"
        "print('reported', flush=True); time.sleep(float(sys.argv[3]))\n"
    )
    exits = subprocess.run(
        [sys.executable, "-c", script, str(directory), "shard-a", "0"], capture_output=True, timeout=60
    )
    assert exits.returncode == 0, exits.stderr
    assert not (directory / "shard-shard-a.json").exists(), "an exiting processor removes its heartbeat"

    killed = subprocess.Popen([sys.executable, "-c", script, str(directory), "shard-b", "300"], stdout=subprocess.PIPE)
    assert killed.stdout is not None and killed.stdout.readline() == b"reported\n"
    assert [(b.shard, b.process_alive) for b in read_liveness(directory).beats] == [("shard-b", True)]
    assert health(tmp_path).returncode == 1  # its heartbeat (reportedMs 0) is ancient and its process alive
    killed.kill()
    killed.wait(10)
    assert [(b.shard, b.process_alive) for b in read_liveness(directory).beats] == [("shard-b", False)]
    assert health(tmp_path).returncode == 0  # the KCL will give the shard to a new processor (or another worker)


def test_stale_workers_of_this_host_are_pruned_live_ones_kept(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    live, dead = worker_health_dir(tmp_path, APP, "live"), worker_health_dir(tmp_path, APP, "dead")
    write_daemon_record(live, sleeper.pid, APP, "live")
    write_daemon_record(dead, 999_999_999, APP, "dead")
    beat(dead, "shardId-0", 0, pid=999_999_999)
    assert prune_stale_workers(tmp_path, APP) == [dead]
    assert not dead.exists() and worker_dirs(tmp_path, APP) == [live]
    record = orjson.loads((live / "daemon.json").read_bytes())
    assert (record["pid"], record["appName"], record["workerId"]) == (sleeper.pid, APP, "live")
    remove_worker_files(live)
    assert not live.exists()


def test_the_daemon_gets_the_jvm_options(tmp_path: Path) -> None:
    command = java_command(Settings.from_mapping({"STREAMKPI_JVM_OPTS": "-Xmx99m '-Dx=a b'"}), tmp_path / "p")
    assert command[1:3] == ["-Xmx99m", "-Dx=a b"] and command.index("-cp") == 3
    default = java_command(Settings.from_mapping({}), tmp_path / "p")
    assert "-Xmx256m" in default and "-XX:+ExitOnOutOfMemoryError" in default
    with pytest.raises(DaemonError, match="STREAMKPI_JVM_OPTS"):
        java_command(Settings.from_mapping({"STREAMKPI_JVM_OPTS": "-Dx='open"}), tmp_path / "p")
