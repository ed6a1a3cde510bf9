"""Running the real KCL MultiLangDaemon (Java) with our record processor as its child executable."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from importlib import resources
from pathlib import Path
from types import FrameType

from consumer.health import local_file
from streamkpi.errors import DaemonError
from streamkpi.settings import KCL_CLIENT_VERSIONS, Settings

log = logging.getLogger("streamkpi.kcl")

JVM_SIGNAL_EXIT_CODES = (128 + signal.SIGTERM, 128 + signal.SIGINT)
MULTILANG_MAIN = "software.amazon.kinesis.multilang.MultiLangDaemon"


def jars_dir() -> Path:
    try:
        import amazon_kclpy
    except ImportError:
        raise DaemonError("amazon_kclpy is not installed; run `make setup`.") from None
    path = Path(amazon_kclpy.__file__).parent / "jars"
    if not path.is_dir() or not any(path.glob("*.jar")):
        raise DaemonError(f"no KCL jars in {path}; reinstall with `make setup` (requirements-kcl.txt).")
    return path


def processor_command() -> str:
    """The processor executable for the daemon (it splits this on spaces, so no spaces allowed)."""
    sibling = Path(sys.executable).parent / "streamkpi-processor"
    found = str(sibling) if sibling.exists() else shutil.which("streamkpi-processor")
    if not found:
        raise DaemonError("the streamkpi-processor executable is not installed; run `make setup`.")
    if " " in found:
        raise DaemonError(f"{found}: the KCL daemon cannot run an executable whose path has a space.")
    return found


def default_worker_id(settings: Settings) -> str:
    return settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"


def properties_path(state: Path, app_name: str, worker_id: str) -> Path:
    """One properties file per worker: workers sharing a state folder (one machine) must not read each
    other's, or several daemons run under one worker id and fight over the same leases."""
    return state / f"kcl-{_file_safe(app_name)}-{_file_safe(worker_id)}.properties"


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def render_properties(settings: Settings, executable: str, worker_id: str) -> str:
    props: dict[str, str | int] = {
        "executableName": executable,
        "streamName": settings.stream,
        "applicationName": settings.app_name,
        # The AWS SDK for Java v2 name (KCL 3): environment, profile, container and instance credentials.
        "AwsCredentialsProvider": "DefaultCredentialsProvider",
        "processingLanguage": f"python/{sys.version_info.major}.{sys.version_info.minor}",
        "initialPositionInStream": settings.initial_position,
        "regionName": settings.region,
        "workerId": worker_id,
        "retrievalMode": settings.kcl_retrieval_mode,
        "metricsLevel": settings.kcl_metrics_level,
        "clientVersionConfig": KCL_CLIENT_VERSIONS[settings.kcl_client_version],
        "maxRecords": settings.kcl_max_records,
        "idleTimeBetweenReadsInMillis": settings.kcl_idle_millis,
        "failoverTimeMillis": settings.kcl_failover_millis,
        "shutdownGraceMillis": settings.kcl_shutdown_grace_millis,
        "isGracefulLeaseHandoffEnabled": settings.kcl_graceful_handoff,
        "gracefulLeaseHandoffTimeoutMillis": settings.kcl_graceful_handoff_timeout_millis,
        # Empty batches too, so time-based flushes and checkpoints happen while the stream is quiet.
        "callProcessRecordsEvenForEmptyRecordList": "true",
    }
    if settings.kcl_lease_assignment_millis:
        props["leaseAssignmentIntervalMillis"] = settings.kcl_lease_assignment_millis
    if settings.kcl_worker_metrics_millis:
        props["workerMetricsReporterFreqInMillis"] = settings.kcl_worker_metrics_millis
    if settings.kcl_max_leases_for_worker:
        props["maxLeasesForWorker"] = settings.kcl_max_leases_for_worker
    if settings.kcl_retrieval_mode == "FANOUT" and settings.kcl_consumer_name:
        # The nested key sets FanoutConfigBean.consumerName (verified with KCL 3.1.3; a flat `consumerName`
        # is ignored silently). Unset, the KCL registers the consumer under the application name.
        props["fanoutConfig.consumerName"] = settings.kcl_consumer_name
    kinesis_endpoint = settings.kinesis_endpoint_url or settings.endpoint_url
    if kinesis_endpoint:
        props["kinesisEndpoint"] = kinesis_endpoint
    if settings.endpoint_url:
        props["dynamoDBEndpoint"] = settings.endpoint_url
    lines = ["# Rendered by `streamkpi consume` from the streamkpi settings."]
    lines += [f"{key} = {value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def java_command(settings: Settings, properties_file: Path) -> list[str]:
    java = shutil.which(settings.java)
    if not java:
        raise DaemonError(
            f"Java not found ({settings.java!r}); install openjdk-17-jre-headless (`make setup`) "
            "or set STREAMKPI_JAVA to a Java 17 executable."
        )
    logback = resources.files("streamkpi").joinpath("logback.xml")
    try:
        jvm_opts = shlex.split(settings.jvm_opts)
    except ValueError as exc:
        raise DaemonError(f"STREAMKPI_JVM_OPTS={settings.jvm_opts!r}: {exc}; quote it as a shell would.") from None
    return [
        java,
        *jvm_opts,
        "-cp",
        f"{jars_dir()}/*",
        "-Daws.cborEnabled=false",  # moto speaks JSON, not CBOR
        f"-Dlogback.configurationFile={logback}",
        MULTILANG_MAIN,
        "--properties-file",
        str(properties_file),
    ]


def health_dir(settings: Settings, worker_id: str) -> Path:
    """Where this worker's liveness files go (`streamkpi health` reads them): STREAMKPI_HEALTH_DIR, else one
    folder per app and worker under the state folder."""
    if settings.health_dir:
        return Path(settings.health_dir).absolute()
    return local_file.worker_health_dir(Path(settings.state_dir).absolute(), settings.app_name, worker_id)


def run_daemon(settings: Settings) -> int:
    """Run the daemon in the foreground; SIGTERM/SIGINT are passed on for a graceful stop. While it runs, a
    liveness record (the daemon's pid) and the shard processors' heartbeats are kept in `health_dir`."""
    state = Path(settings.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    worker_id = default_worker_id(settings)
    properties_file = properties_path(state, settings.app_name, worker_id)
    properties_file.write_text(render_properties(settings, processor_command(), worker_id))
    command = java_command(settings, properties_file)
    liveness = health_dir(settings, worker_id)
    if not settings.health_dir:
        try:  # liveness files never stop a worker from starting
            local_file.prune_stale_workers(state.absolute(), settings.app_name)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("cannot prune stale liveness records", extra={"error": repr(exc)})
    # The shard processors (children of the daemon) inherit this environment: their heartbeats go there.
    env = {**os.environ, "STREAMKPI_HEALTH_DIR": str(liveness)}
    log.info("starting KCL MultiLangDaemon", extra={"stream": settings.stream, "worker_id": worker_id})
    # The daemon's stdout is not a protocol channel; keep ours clean by sending it to stderr.
    process = subprocess.Popen(command, stdout=sys.stderr, stderr=sys.stderr, env=env)

    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        log.info("stopping KCL daemon gracefully", extra={"signal": signal.Signals(signum).name})
        process.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            local_file.write_daemon_record(liveness, process.pid, settings.app_name, worker_id)
        except OSError as exc:
            log.warning("cannot write the liveness record", extra={"path": str(liveness), "error": str(exc)})
        code = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        with contextlib.suppress(OSError):  # (the worker's exit code matters more)
            local_file.remove_worker_files(liveness)
    if stopping and code in JVM_SIGNAL_EXIT_CODES:
        # The JVM exits 128+signal after its shutdown hook (the KCL's graceful shutdown) has run.
        log.info("KCL daemon stopped gracefully", extra={"exit_code": code})
        return 0
    log.info("KCL daemon exited", extra={"exit_code": code})
    return code
