"""This worker's liveness on local disk, for `streamkpi health` (a container HEALTHCHECK): no Redis, no AWS.

<dir>/daemon.json          written by `streamkpi consume`: the KCL daemon's pid (and its start time)
<dir>/shard-<shard>.json   one per shard this worker holds: rewritten at every health report of the shard
                           (each Redis flush, empty batches included, and each checkpoint), removed when its
                           processor exits

`<dir>` is STREAMKPI_HEALTH_DIR, by default `<STREAMKPI_STATE_DIR>/health/<app>-<worker id>`: one per
worker, so workers sharing a state folder never read each other's. Files are replaced atomically (written
aside, then renamed). A process is known by its pid and its start time (Linux /proc), so a pid the kernel
gave to another process since is not taken for it. Writing is best effort: a failed write is logged, never
a reason to stop processing (the heartbeat then goes stale and the health check says so).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from consumer.health.liveness import ShardBeat

log = logging.getLogger("streamkpi.health")
DAEMON_FILE = "daemon.json"
_SHARD_PREFIX, _SUFFIX = "shard-", ".json"


def worker_health_dir(state_dir: str | Path, app_name: str, worker_id: str) -> Path:
    return Path(state_dir) / "health" / f"{_file_safe(app_name)}-{_file_safe(worker_id)}"


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


# -- processes --------------------------------------------------------------------------------------------


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat, field 22); None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses: split after the last.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def process_alive(pid: int, start: int | None) -> bool:
    """The process `pid` that started at `start` still runs (a zombie does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here: ask the kernel whether the pid exists at all
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    after_name = stat[stat.rindex(")") + 2 :].split()
    if after_name[0] in ("Z", "X"):
        return False
    return start is None or int(after_name[19]) == start


# -- writing ----------------------------------------------------------------------------------------------


def _write_atomically(path: Path, body: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(orjson.dumps(body, default=str))
    tmp.replace(path)


def write_daemon_record(directory: Path, daemon_pid: int, app_name: str, worker_id: str) -> None:
    """Called by `streamkpi consume` once the daemon runs; a stale record of an earlier run is replaced."""
    _write_atomically(
        directory / DAEMON_FILE,
        {
            "pid": daemon_pid,
            "pidStart": process_start(daemon_pid),
            "consumePid": os.getpid(),
            "host": socket.gethostname(),
            "appName": app_name,
            "workerId": worker_id,
            "startedMs": int(time.time() * 1000),
        },
    )


def prune_stale_workers(state_dir: str | Path, app_name: str) -> list[Path]:
    """Remove the folders of this app's workers on this host whose daemon is gone (killed before they could
    clean up), so a single worker's folder can be found without naming it. Returns what was removed."""
    removed = []
    for directory in worker_dirs(state_dir, app_name):
        record = _read_json(directory / DAEMON_FILE)
        if record is None or record.get("host") != socket.gethostname():
            continue
        if not process_alive(int(record["pid"]), record.get("pidStart")):
            remove_worker_files(directory)
            removed.append(directory)
    return removed


def remove_worker_files(directory: Path) -> None:
    """At the end of `streamkpi consume`: this worker no longer runs, so nothing of it may look alive."""
    for path in (directory / DAEMON_FILE, *directory.glob(f"{_SHARD_PREFIX}*{_SUFFIX}")):
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty (a file being written) or already gone
        directory.rmdir()


class LocalFileHealth:
    """The health sink of one shard processor (one process per shard): a heartbeat file per shard it reports."""

    def __init__(self, directory: Path, pid: int | None = None) -> None:
        self.directory = directory
        self.pid = os.getpid() if pid is None else pid
        self.pid_start = process_start(self.pid)
        self.written: set[Path] = set()
        atexit.register(self.remove_all)

    def path(self, shard_id: str) -> Path:
        return self.directory / f"{_SHARD_PREFIX}{_file_safe(shard_id)}{_SUFFIX}"

    def report(self, shard_id: str, fields: Mapping[str, Any]) -> None:
        path = self.path(shard_id)
        body = {**fields, "shard": shard_id, "pid": self.pid, "pidStart": self.pid_start}
        body.setdefault("reportedMs", int(time.time() * 1000))
        try:
            _write_atomically(path, body)
        except OSError as exc:
            log.warning("heartbeat write failed", extra={"shard": shard_id, "path": str(path), "error": str(exc)})
            return
        self.written.add(path)

    def remove_all(self) -> None:
        """At the processor's exit (after lease loss, shard end, shutdown): its shards are no longer held here."""
        for path in self.written:
            path.unlink(missing_ok=True)
        self.written.clear()


# -- reading ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerLiveness:
    """What `streamkpi health` judges: the daemon (None: no record) and the shards' last heartbeats."""

    daemon_pid: int | None
    daemon_alive: bool
    beats: list[ShardBeat]


def read_liveness(directory: Path) -> WorkerLiveness:
    daemon = _read_json(directory / DAEMON_FILE)
    if daemon is None:
        return WorkerLiveness(None, False, [])
    pid = int(daemon["pid"])
    beats = []
    for path in sorted(directory.glob(f"{_SHARD_PREFIX}*{_SUFFIX}")):
        beat = _read_json(path)
        if beat is None:
            continue  # removed while listing
        alive = process_alive(int(beat["pid"]), beat.get("pidStart"))
        beats.append(ShardBeat(str(beat["shard"]), int(beat["reportedMs"]), alive))
    return WorkerLiveness(pid, process_alive(pid, daemon.get("pidStart")), beats)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: not a liveness record")
    return value


def worker_dirs(state_dir: str | Path, app_name: str, host: str | None = None) -> list[Path]:
    """Folders of the workers of `app_name` that left a daemon record under the state folder (only those
    written on `host`, if given: a state folder on a volume outlives the container that wrote it). A record
    that cannot be read (cut short by a kill) is no worker's."""
    found = []
    for record_path in sorted((Path(state_dir) / "health").glob(f"{_file_safe(app_name)}-*/{DAEMON_FILE}")):
        try:
            record = _read_json(record_path)
        except (OSError, ValueError):
            continue
        if record is not None and record.get("appName") == app_name and host in (None, record.get("host")):
            found.append(record_path.parent)
    return found
