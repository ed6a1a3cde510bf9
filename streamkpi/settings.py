"""Settings: every knob the worker reads, from the environment (and the local stack's env file).

One table, `SETTINGS`, names each variable, its default and what it does; the README's settings table
is generated from it (`streamkpi settings --markdown`) and a unit test keeps the two equal.
Precedence: process environment > env file written by `streamkpi local up` > default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from consumer.bounds import Limits
from streamkpi.errors import SettingsError


def _spec(env: str, default: Any, doc: str, secret: bool = False) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc, "secret": secret})


class SecretText(str):
    """A secret setting's value: as text (printed, logged, serialised, in a repr) it is `***`; `reveal()` gives
    the secret. So `streamkpi settings` and any log of the settings show `***`."""

    _secret: str

    def __new__(cls, secret: str) -> SecretText:
        text = super().__new__(cls, "***")
        text._secret = secret
        return text

    def reveal(self) -> str:
        return self._secret

    def __eq__(self, other: object) -> bool:  # compares the secrets (a plain string: with the secret)
        if isinstance(other, SecretText):
            return other._secret == self._secret
        return isinstance(other, str) and str.__eq__(other, self._secret)

    def __hash__(self) -> int:
        return hash(self._secret)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SecretText, (self._secret,))

    def __deepcopy__(self, memo: Any) -> SecretText:
        return self


@dataclass(frozen=True)
class Settings:
    endpoint_url: str | None = _spec("AWS_ENDPOINT_URL", None, "AWS endpoint for every service; unset means real AWS.")
    kinesis_endpoint_url: str | None = _spec(
        "STREAMKPI_KINESIS_ENDPOINT_URL",
        None,
        "Kinesis endpoint when it differs from AWS_ENDPOINT_URL (e.g. a Kinesis emulator).",
    )
    region: str = _spec("AWS_REGION", "us-east-1", "AWS region (`AWS_DEFAULT_REGION` is read too).")
    redis_url: str = _spec(
        "REDIS_URL",
        "redis://127.0.0.1:6379/0",
        "Redis for hot aggregates and health: `redis://` or, for TLS, `rediss://`; with a password "
        "`rediss://:PASSWORD@host:6379/0`, with an ACL user `rediss://USER:PASSWORD@host:6379/0` (percent-encode "
        "`@ : / ? #` in the password). `streamkpi settings` shows the password as `***`.",
    )
    redis_ca_file: str | None = _spec(
        "STREAMKPI_REDIS_CA_FILE",
        None,
        "CA bundle (PEM) trusted for the Redis server's TLS certificate, besides the system store; `rediss://` "
        "only. The certificate and its host name are always verified.",
    )
    stream: str = _spec("STREAMKPI_STREAM", "streamkpi-events", "Kinesis stream the worker consumes.")
    app_name: str = _spec("STREAMKPI_APP_NAME", "streamkpi", "KCL application name; also the name of its lease table.")
    metrics_table: str = _spec("STREAMKPI_METRICS_TABLE", "streamkpi-metrics", "DynamoDB table of aggregates.")
    dlq_queue: str = _spec("STREAMKPI_DLQ_QUEUE", "streamkpi-dlq", "SQS queue for rejected records.")
    archive_bucket: str = _spec(
        "STREAMKPI_ARCHIVE_BUCKET", "streamkpi-archive", "S3 bucket of the raw-event archive (Firehose)."
    )
    firehose_stream: str = _spec(
        "STREAMKPI_FIREHOSE_STREAM", "streamkpi-archive", "Firehose delivery stream into the archive."
    )
    config_path: str | None = _spec(
        "STREAMKPI_CONFIG", None, "TOML file of metrics and routes; unset means the built-in default."
    )
    state_dir: str = _spec(
        "STREAMKPI_STATE_DIR", ".streamkpi", "Local state: env file, pids, logs, redis data, KCL properties."
    )
    local_port: int = _spec("STREAMKPI_LOCAL_PORT", 4566, "Port of the local AWS stand-in (moto).")
    redis_port: int = _spec("STREAMKPI_REDIS_PORT", 6379, "Port of the local redis-server.")
    shards: int = _spec("STREAMKPI_SHARDS", 2, "Shards of the stream that `local up` creates.")
    worker_id: str = _spec("STREAMKPI_WORKER_ID", "", "KCL worker id; empty means hostname and pid.")
    redis_flush_seconds: float = _spec(
        "STREAMKPI_REDIS_FLUSH_SECONDS", 1.0, "Longest time a changed aggregate waits for Redis."
    )
    dynamodb_flush_seconds: float = _spec(
        "STREAMKPI_DYNAMODB_FLUSH_SECONDS", 5.0, "Longest time a changed aggregate waits for DynamoDB."
    )
    checkpoint_seconds: float = _spec(
        "STREAMKPI_CHECKPOINT_SECONDS", 5.0, "Checkpoint at least this often (after a durable flush)."
    )
    checkpoint_records: int = _spec(
        "STREAMKPI_CHECKPOINT_RECORDS", 50_000, "Checkpoint after this many records (after a durable flush)."
    )
    store_retry_seconds: float = _spec(
        "STREAMKPI_STORE_RETRY_SECONDS", 60.0, "How long an unavailable store is retried before the worker exits."
    )
    kcl_idle_millis: int = _spec(
        "STREAMKPI_KCL_IDLE_MILLIS", 200, "KCL `idleTimeBetweenReadsInMillis` (polling interval)."
    )
    kcl_max_records: int = _spec("STREAMKPI_KCL_MAX_RECORDS", 10_000, "KCL `maxRecords` per GetRecords.")
    kcl_failover_millis: int = _spec(
        "STREAMKPI_KCL_FAILOVER_MILLIS", 10_000, "KCL `failoverTimeMillis`: lease expiry before another takes it."
    )
    kcl_shutdown_grace_millis: int = _spec(
        "STREAMKPI_KCL_SHUTDOWN_GRACE_MILLIS", 20_000, "KCL `shutdownGraceMillis` for SIGTERM."
    )
    kcl_lease_assignment_millis: int = _spec(
        "STREAMKPI_KCL_LEASE_ASSIGNMENT_MILLIS",
        0,
        "KCL 3 `leaseAssignmentIntervalMillis`: how often the leader assigns new and expired leases (a scan of "
        "the lease and worker-metrics tables each time); 0 means the KCL's default, twice "
        "`STREAMKPI_KCL_FAILOVER_MILLIS` (see Several workers). `streamkpi local up` writes 5000.",
    )
    kcl_worker_metrics_millis: int = _spec(
        "STREAMKPI_KCL_WORKER_METRICS_MILLIS",
        0,
        "KCL 3 `workerMetricsReporterFreqInMillis`: how often a worker reports its load to the leader; 0 "
        "means the KCL's default (30 s).",
    )
    kcl_graceful_handoff: str = _spec(
        "STREAMKPI_KCL_GRACEFUL_HANDOFF",
        "true",
        "KCL 3 `isGracefulLeaseHandoffEnabled`: a lease the leader moves is checkpointed by its owner first.",
    )
    kcl_graceful_handoff_timeout_millis: int = _spec(
        "STREAMKPI_KCL_GRACEFUL_HANDOFF_TIMEOUT_MILLIS",
        30_000,
        "KCL 3 `gracefulLeaseHandoffTimeoutMillis`: longest wait for that checkpoint before the lease moves.",
    )
    kcl_max_leases_for_worker: int = _spec(
        "STREAMKPI_KCL_MAX_LEASES_FOR_WORKER", 0, "KCL `maxLeasesForWorker`: most shards one worker takes; 0 = no cap."
    )
    kcl_client_version: str = _spec(
        "STREAMKPI_KCL_CLIENT_VERSION",
        "3X",
        "KCL `clientVersionConfig`: `3X` (the leader assigns leases by worker load) or `COMPATIBLE_WITH_2X` "
        "(every worker takes expired leases, as KCL 2 did; for a fleet being upgraded from KCL 2).",
    )
    kcl_metrics_level: str = _spec(
        "STREAMKPI_KCL_METRICS_LEVEL",
        "NONE",
        "KCL `metricsLevel`, what the KCL sends to CloudWatch: NONE (nothing; the local stack has no CloudWatch), "
        "SUMMARY or DETAILED (needs cloudwatch:PutMetricData).",
    )
    kcl_retrieval_mode: str = _spec(
        "STREAMKPI_KCL_RETRIEVAL_MODE",
        "POLLING",
        "KCL `retrievalMode`: POLLING (GetRecords) or FANOUT (enhanced fan-out, SubscribeToShard).",
    )
    kcl_consumer_name: str = _spec(
        "STREAMKPI_KCL_CONSUMER_NAME",
        "",
        "Enhanced fan-out consumer name (FANOUT only); empty means the application name (STREAMKPI_APP_NAME).",
    )
    initial_position: str = _spec(
        "STREAMKPI_INITIAL_POSITION", "TRIM_HORIZON", "Where a new lease starts: TRIM_HORIZON or LATEST."
    )
    max_depth: int = _spec(
        "STREAMKPI_MAX_DEPTH", 128, "Deepest nesting of objects and arrays in one event; deeper is `too_deep`."
    )
    max_event_bytes: int = _spec(
        "STREAMKPI_MAX_EVENT_BYTES", 65_536, "Largest event (its JSON, in bytes); larger is `too_large`."
    )
    max_value_chars: int = _spec(
        "STREAMKPI_MAX_VALUE_CHARS",
        512,
        "Longest value a metric groups by or counts as distinct (characters); longer is `value_too_long`.",
    )
    max_events_per_record: int = _spec(
        "STREAMKPI_MAX_EVENTS_PER_RECORD",
        10_000,
        "Most events (array elements, NDJSON lines) in one record; more is one `too_many_events` letter.",
    )
    max_letters_per_record: int = _spec(
        "STREAMKPI_MAX_LETTERS_PER_RECORD",
        100,
        "Most dead letters one record makes; beyond, one `too_many_invalid` letter stands for the record.",
    )
    max_inflated_bytes: int = _spec(
        "STREAMKPI_MAX_INFLATED_BYTES", 8_388_608, "Most bytes one gzip/zlib record may inflate to."
    )
    max_inflation_ratio: int = _spec(
        "STREAMKPI_MAX_INFLATION_RATIO",
        100,
        "A compressed record may inflate to at most this times its size (64 KiB always); beyond is `too_large`.",
    )
    max_item_bytes: int = _spec(
        "STREAMKPI_MAX_ITEM_BYTES",
        262_144,
        "Bytes of one window's stored partial; new groups past it count under `__other__` (DynamoDB: 400 KB).",
    )
    max_pending_bytes: int = _spec(
        "STREAMKPI_MAX_PENDING_BYTES",
        33_554_432,
        "Dead letters and forwards held in memory before they are sent (mid-batch if need be).",
    )
    java: str = _spec("STREAMKPI_JAVA", "java", "Java 17 executable for the KCL MultiLangDaemon.")
    jvm_opts: str = _spec(
        "STREAMKPI_JVM_OPTS",
        "-XX:+UseSerialGC -Xms32m -Xmx256m -XX:MaxMetaspaceSize=128m -Xss512k -XX:+ExitOnOutOfMemoryError",
        "JVM options of the KCL MultiLangDaemon (split like a shell would), sized for a small task: the heap is "
        "measured in README, Container. An out-of-memory JVM exits, so the orchestrator restarts it.",
    )
    health_dir: str = _spec(
        "STREAMKPI_HEALTH_DIR",
        "",
        "Folder of the worker's liveness files that `streamkpi health` reads (the daemon's pid, one heartbeat "
        "per shard held); empty means `<STREAMKPI_STATE_DIR>/health/<app>-<worker id>`.",
    )
    health_max_silence_seconds: float = _spec(
        "STREAMKPI_HEALTH_MAX_SILENCE_SECONDS",
        120.0,
        "`streamkpi health` fails when a shard this worker holds has not reported for longer (idle shards "
        "report every STREAMKPI_REDIS_FLUSH_SECONDS); keep it above STREAMKPI_STORE_RETRY_SECONDS.",
    )
    log_level: str = _spec("STREAMKPI_LOG_LEVEL", "INFO", "Log level of the JSON logs on stderr.")
    redaction_key: SecretText | None = _spec(  # noqa: RUF009 - a field() like the others; SecretText is immutable
        "STREAMKPI_REDACTION_KEY",
        None,
        "Key of the HMAC-SHA256 that `[redaction]` hashes fields with (at least 32 characters, e.g. `openssl rand "
        "-hex 32`); needed when the config hashes a field (its `key_env` may name another variable). Shown as `***`.",
        secret=True,
    )

    @property
    def env_file(self) -> Path:
        return Path(self.state_dir) / "local.env"

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, env_file: Path | None = None) -> Settings:
        """Settings from `environ` (default os.environ) over the env file of the local stack."""
        env = dict(os.environ if environ is None else environ)
        state_dir = env.get("STREAMKPI_STATE_DIR", ".streamkpi")
        path = env_file or Path(state_dir) / "local.env"
        merged = {**read_env_file(path), **env}
        if "AWS_REGION" not in merged and "AWS_DEFAULT_REGION" in merged:
            merged["AWS_REGION"] = merged["AWS_DEFAULT_REGION"]
        return cls.from_mapping(merged)

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata["env"]
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            kind: type = SecretText if f.metadata["secret"] else type(f.default) if f.default is not None else str
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise SettingsError(
                    f"{name}={raw!r} is not a valid {kind.__name__}; set it to a {kind.__name__} "
                    f"(default {f.default!r}) or unset it."
                ) from None
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.shards < 1:
            raise SettingsError(f"STREAMKPI_SHARDS={self.shards}: a stream needs at least 1 shard.")
        if self.initial_position not in ("TRIM_HORIZON", "LATEST"):
            raise SettingsError(f"STREAMKPI_INITIAL_POSITION={self.initial_position!r}: use TRIM_HORIZON or LATEST.")
        for env, value, allowed in (
            ("STREAMKPI_KCL_GRACEFUL_HANDOFF", self.kcl_graceful_handoff, ("true", "false")),
            ("STREAMKPI_KCL_CLIENT_VERSION", self.kcl_client_version, KCL_CLIENT_VERSIONS),
            ("STREAMKPI_KCL_METRICS_LEVEL", self.kcl_metrics_level, ("NONE", "SUMMARY", "DETAILED")),
            ("STREAMKPI_KCL_RETRIEVAL_MODE", self.kcl_retrieval_mode, ("POLLING", "FANOUT")),
        ):
            if value not in allowed:
                raise SettingsError(f"{env}={value!r}: use {' or '.join(allowed)}.")
        for env, number in (
            ("STREAMKPI_KCL_LEASE_ASSIGNMENT_MILLIS", self.kcl_lease_assignment_millis),
            ("STREAMKPI_KCL_MAX_LEASES_FOR_WORKER", self.kcl_max_leases_for_worker),
            ("STREAMKPI_KCL_WORKER_METRICS_MILLIS", self.kcl_worker_metrics_millis),
        ):
            if number < 0:
                raise SettingsError(f"{env}={number}: use 0 (the KCL's default) or a positive whole number.")
        for name in (
            "redis_flush_seconds",
            "dynamodb_flush_seconds",
            "checkpoint_seconds",
            "health_max_silence_seconds",
        ):
            if not getattr(self, name) > 0:  # also refuses NaN, which would never come due
                env = next(f.metadata["env"] for f in fields(self) if f.name == name)
                raise SettingsError(f"{env} must be a positive number of seconds.")
        for name, low, high in _LIMIT_RANGES:
            value = getattr(self, name)
            if not low <= value <= high:
                env = next(f.metadata["env"] for f in fields(self) if f.name == name)
                raise SettingsError(f"{env}={value}: use a whole number from {low:,} to {high:,}.")
        self._validate_redis()

    def _validate_redis(self) -> None:
        """REDIS_URL names a host redis-py reads as meant, TLS stays verified, the CA file is there. The messages
        show the URL as `redact_url` does: never its password."""
        shown = redact_url(self.redis_url)
        scheme = self.redis_url.partition("://")[0]
        if scheme not in ("redis", "rediss", "unix"):
            raise SettingsError(f"REDIS_URL={shown}: use redis://, rediss:// (TLS) or unix://.")
        url = urlsplit(self.redis_url)
        if scheme != "unix":
            try:
                host, _port = url.hostname, url.port
            except ValueError:  # a port that is no number; the error's text may quote part of a password
                host = None
            if not host or "@" in self.redis_url.partition(url.netloc)[2]:
                # An unescaped / ? # in a password cuts the host off (redis-py would then try localhost).
                raise SettingsError(
                    f"REDIS_URL={shown}: no host and port can be read from it; percent-encode @ : / ? # in the "
                    "user name and password (`%40` for @, `%2F` for /)."
                )
        tls_options = sorted(k for k, _ in parse_qsl(url.query) if k.startswith("ssl"))
        if tls_options:
            raise SettingsError(
                f"REDIS_URL={shown}: remove {', '.join(tls_options)}; TLS is always verified. Use rediss:// and, "
                "for a private CA, STREAMKPI_REDIS_CA_FILE."
            )
        if self.redis_ca_file is not None:
            if scheme != "rediss":
                raise SettingsError(
                    f"STREAMKPI_REDIS_CA_FILE is set but REDIS_URL={shown} does not use TLS: use rediss://, "
                    "or unset STREAMKPI_REDIS_CA_FILE."
                )
            if not Path(self.redis_ca_file).is_file():
                raise SettingsError(
                    f"STREAMKPI_REDIS_CA_FILE={self.redis_ca_file}: no such file; give the PEM bundle of the CA that "
                    "signed the Redis server's certificate, or unset it to trust the system store only."
                )

    def limits(self) -> Limits:
        """The bounds on one record's cost (consumer/bounds.py), from the STREAMKPI_MAX_* settings."""
        return Limits(
            max_depth=self.max_depth,
            max_event_bytes=self.max_event_bytes,
            max_value_chars=self.max_value_chars,
            max_events_per_record=self.max_events_per_record,
            max_letters_per_record=self.max_letters_per_record,
            max_inflated_bytes=self.max_inflated_bytes,
            max_inflation_ratio=self.max_inflation_ratio,
            max_item_bytes=self.max_item_bytes,
            max_pending_bytes=self.max_pending_bytes,
        )

    def aws_client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"region_name": self.region}
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        return kwargs

    def redis_client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `redis.Redis.from_url(REDIS_URL, ...)`. With rediss:// the certificate must chain
        to the CA file or the system store and name the URL's host: no setting turns that off."""
        kwargs: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 5}
        if self.redis_url.startswith("rediss://"):
            kwargs.update(ssl_cert_reqs="required", ssl_check_hostname=True, ssl_ca_certs=self.redis_ca_file)
        return kwargs

    def kinesis_client_kwargs(self) -> dict[str, Any]:
        """`aws_client_kwargs()` for Kinesis: its own endpoint when STREAMKPI_KINESIS_ENDPOINT_URL is set."""
        kwargs = self.aws_client_kwargs()
        if self.kinesis_endpoint_url:
            kwargs["endpoint_url"] = self.kinesis_endpoint_url
        return kwargs


# STREAMKPI_KCL_CLIENT_VERSION -> the KCL's clientVersionConfig value.
KCL_CLIENT_VERSIONS = {
    "3X": "CLIENT_VERSION_CONFIG_3X",
    "COMPATIBLE_WITH_2X": "CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X",
}

# (setting, lowest, highest): orjson writes 254 levels; a Firehose record holds 1,000 KiB; a DynamoDB
# item 400 KB with its keys; a Kinesis record 1 MiB, so more than 1 Mi events or letters cannot come.
_LIMIT_RANGES = (
    ("max_depth", 2, 254),
    ("max_event_bytes", 1_024, 1_000 * 1024 - 1),
    ("max_value_chars", 16, 65_536),
    ("max_events_per_record", 1, 1_048_576),
    ("max_letters_per_record", 1, 1_048_576),
    ("max_inflated_bytes", 1_024, 256 * 1_048_576),
    ("max_inflation_ratio", 1, 100_000),
    ("max_item_bytes", 16_384, 350_000),
    ("max_pending_bytes", 1_048_576, 4 * 1024 * 1_048_576),
)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and # comments ignored. A missing file is empty."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip()
    return out


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    body = "# Written by `streamkpi local up`; read by every streamkpi command.\n"
    body += "".join(f"{k}={v}\n" for k, v in values.items())
    tmp.write_text(body)
    tmp.replace(path)


def redact_url(value: str) -> str:
    """`value` with the credentials of a URL replaced by `***`, for printing; anything else unchanged.

    The password goes (`redis://:***@host:6379/0`, `rediss://user:***@host`); a user without a password
    may itself be a token, so it goes too (`https://***@host`). Query parameters named like a secret
    (`?password=***`) go as well. Everything before the last `@` counts as credentials, so a password
    with an unescaped `/`, `?`, `#` or `@` (which a URL parser would split elsewhere) is hidden too."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        return value
    userinfo, at, rest = rest.rpartition("@")
    credentials = ""
    if at:
        user, colon, _ = userinfo.partition(":")
        if not colon:
            credentials = "***@"  # a lone user may be a token
        elif any(c in user for c in "/?#"):
            credentials = ":***@"  # not a user name: the URL is malformed, show nothing of it
        else:
            credentials = f"{user}:***@"
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    return f"{scheme}://{credentials}{rest[:end]}" + _SECRET_PARAM.sub(r"\1***", rest[end:])


_SECRET_PARAM = re.compile(r"([?&;][^=&;#]*(?:password|passwd|pwd|secret|token)[^=&;#]*=)[^&;#]*", re.I)


def settings_table_markdown() -> str:
    rows = ["| variable | default | what it does |", "| --- | --- | --- |"]
    for f in fields(Settings):
        default = "(unset)" if f.default in (None, "") else f"`{f.default}`"
        rows.append(f"| `{f.metadata['env']}` | {default} | {f.metadata['doc']} |")
    return "\n".join(rows)
