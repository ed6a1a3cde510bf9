"""The composition root: the one place that reads settings and builds clients, stores and workers."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

import boto3
import redis

from aggregations.dynamodb_store import DynamoDBStore, make_model
from aggregations.redis_store import RedisStore
from aggregations.store import AggregateStore
from consumer.dlq.sqs import SqsDeadLetterQueue
from consumer.health import HealthSink
from consumer.health.fanout import FanOutHealth
from consumer.health.local_file import LocalFileHealth
from consumer.health.redis_health import RedisHealth
from consumer.processor import RecordProcessor, WorkerFactory
from consumer.protocol import KCLReader
from consumer.redaction import DEFAULT_KEY_ENV, Redactor
from consumer.sinks import EventSink
from consumer.sinks.firehose import FirehoseSink
from consumer.sinks.kinesis import KinesisStreamSink
from consumer.sinks.sqs import SqsQueueSink
from consumer.worker import Cadence, Outputs, ShardWorker, Stores
from streamkpi import logs
from streamkpi.config import AppConfig, default_config_text, load_config, parse_config
from streamkpi.settings import Settings, read_env_file

if TYPE_CHECKING:
    from dashboard.panels import Panel
    from dashboard.publisher import Publisher, Target
    from deadletters.ledger_dynamodb import DynamoDbRedriveLedger
    from deadletters.redrive import Context as RedriveContext
    from replay.runner import Replayer, ReplayOptions, Summary

log = logging.getLogger("streamkpi.processor")

# The env file of the local stack also carries the AWS credentials moto expects; boto3, pynamodb and
# the Java KCL daemon read those from the process environment, so they are exported there.
_EXPORTED_FROM_ENV_FILE = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")


def bootstrap(environ: dict[str, str] | None = None) -> Settings:
    """Load settings (environment over the local env file), export credentials, configure JSON logs."""
    env = os.environ if environ is None else environ
    state_dir = env.get("STREAMKPI_STATE_DIR", ".streamkpi")
    from pathlib import Path

    file_values = read_env_file(Path(state_dir) / "local.env")
    for key in _EXPORTED_FROM_ENV_FILE:
        if key in file_values and key not in env:
            env[key] = file_values[key]
    settings = Settings.load(env)
    if "AWS_REGION" not in env:
        env["AWS_REGION"] = settings.region
    env.setdefault("AWS_DEFAULT_REGION", settings.region)
    logs.configure(settings.log_level)
    return settings


@dataclass
class Services:
    """Lazily built clients and stores for one Settings."""

    settings: Settings

    @cached_property
    def config(self) -> AppConfig:
        return load_config(self.settings.config_path, self.settings.limits())

    def client(self, service: str) -> Any:
        if service == "kinesis":
            return boto3.client(service, **self.settings.kinesis_client_kwargs())
        return boto3.client(service, **self.settings.aws_client_kwargs())

    @cached_property
    def redis(self) -> redis.Redis:
        """The one Redis client of every store, health writer and reader: TLS, login and CA from the settings."""
        return redis.Redis.from_url(self.settings.redis_url, **self.settings.redis_client_kwargs())

    @cached_property
    def dynamodb_store(self) -> DynamoDBStore:
        model = make_model(self.settings.metrics_table, self.settings.region, self.settings.endpoint_url)
        return DynamoDBStore(model, self.config.resolutions)

    @cached_property
    def redis_store(self) -> RedisStore:
        # Keys are named after the metrics table, so apps (or test stacks) sharing one Redis never collide.
        return RedisStore(self.redis, self.config.resolutions, prefix=f"skpi:{self.settings.metrics_table}")

    @cached_property
    def dead_letters(self) -> SqsDeadLetterQueue:
        sqs = self.client("sqs")
        url = sqs.get_queue_url(QueueName=self.settings.dlq_queue)["QueueUrl"]
        return SqsDeadLetterQueue(sqs, url, s3_client=self.client("s3"), bucket=self.settings.archive_bucket)

    @cached_property
    def sinks(self) -> dict[str, EventSink]:
        """The forward sinks the config defines; Firehose sinks default to the settings' delivery stream, an
        SQS sink's queue is a URL or a name (looked up now, so a missing queue fails at start)."""
        built: dict[str, EventSink] = {}
        for sink in self.config.sinks:
            if sink.type == "firehose":
                target = sink.target or self.settings.firehose_stream
                built[sink.name] = FirehoseSink(sink.name, self.client("firehose"), target, pack=sink.pack)
            elif sink.type == "sqs":
                sqs, queue = self.client("sqs"), str(sink.target)
                url = queue if "://" in queue else sqs.get_queue_url(QueueName=queue)["QueueUrl"]
                built[sink.name] = SqsQueueSink(sink.name, sqs, url)
            else:
                built[sink.name] = KinesisStreamSink(sink.name, self.client("kinesis"), str(sink.target))
        return built

    @cached_property
    def health(self) -> RedisHealth:
        return RedisHealth(self.redis, self.settings.stream)

    def cadence(self) -> Cadence:
        s = self.settings
        return Cadence(
            redis_flush_seconds=s.redis_flush_seconds,
            dynamodb_flush_seconds=s.dynamodb_flush_seconds,
            checkpoint_seconds=s.checkpoint_seconds,
            checkpoint_records=s.checkpoint_records,
            store_retry_seconds=s.store_retry_seconds,
        )


def build_worker_factory(settings: Settings) -> WorkerFactory:
    services = Services(settings)
    # Build everything now, so a bad config or an unreachable queue fails at start, not mid-batch.
    pipeline = services.config.pipeline
    redaction = services.config.redaction
    if redaction is not None:  # RedactionKeyError (it names the variable, never the key) when hashing has no key
        pipeline = replace(pipeline, redactor=Redactor(redaction, redaction_key(settings, redaction.key_env)))
    stores = Stores(services.dynamodb_store, services.redis_store)
    outputs = Outputs(services.dead_letters, services.sinks, worker_health(settings, services.health))
    cadence = services.cadence()

    def factory(shard_id: str) -> ShardWorker:
        return ShardWorker(shard_id, settings.stream, pipeline, stores, outputs, cadence)

    return factory


def redaction_key(settings: Settings, key_env: str) -> str | None:
    """The [redaction] key: STREAMKPI_REDACTION_KEY (a setting, shown as `***`), or the variable `key_env` names."""
    if key_env == DEFAULT_KEY_ENV:
        return settings.redaction_key.reveal() if settings.redaction_key is not None else None
    return os.environ.get(key_env) or None


def worker_health(settings: Settings, redis_health: RedisHealth) -> HealthSink:
    """Redis (for the dashboard) and, under `streamkpi consume` (which sets STREAMKPI_HEALTH_DIR), the shard's
    heartbeat on local disk, which `streamkpi health` reads (the container's HEALTHCHECK)."""
    if not settings.health_dir:
        return redis_health
    from pathlib import Path

    return FanOutHealth(LocalFileHealth(Path(settings.health_dir)), redis_health)


def run_record_processor() -> None:
    """Entry point of the `streamkpi-processor` executable that the MultiLangDaemon starts per shard."""
    settings = bootstrap()
    try:
        factory = build_worker_factory(settings)
    except Exception:
        log.exception("cannot start the record processor")
        sys.exit(3)
    KCLReader(RecordProcessor(factory)).run()


# The builders below import their packages when called: the record processor imports this module and
# needs none of them.


def dashboard_panels(config: AppConfig) -> tuple[Panel, ...]:
    """The config's [[dashboard.panels]]; without a [dashboard] section, the default config's panels whose
    metrics the config has (plus the pipeline's own: rate, invalid events, shard health)."""
    from dashboard.panels import parse_panels

    dims = {m.name: m.by for m in config.metrics}
    if config.dashboard:
        return parse_panels(config.dashboard, dims, config.source)
    default = parse_config(default_config_text(), "built-in default config")
    return parse_panels(default.dashboard, dims, default.source, fitting_only=True)


def build_publisher(
    settings: Settings,
    targets: Sequence[Target],
    store: str = "redis",
    dlq_every_seconds: float = 60.0,
    dlq_sample: int = 500,
) -> Publisher:
    """A Publisher over the configured stores (preferred first, the other as fallback), health and DLQ, drawing
    the config's [[dashboard.panels]]. ConfigError (dashboard.panels.PanelConfigError) names a panel's mistake."""
    from dashboard.publisher import DlqSampler, Publisher, Source

    services = Services(settings)
    config = services.config
    panels = dashboard_panels(config)
    redis_store: AggregateStore = services.redis_store
    dynamodb_store: AggregateStore = services.dynamodb_store
    stores = [redis_store, dynamodb_store] if store == "redis" else [dynamodb_store, redis_store]
    dlq = DlqSampler(lambda: services.client("sqs"), settings.dlq_queue, dlq_every_seconds, dlq_sample)
    source = Source(
        stream=settings.stream,
        stores=stores,
        resolutions=config.resolutions,
        metrics=config.metric_set.by_name,
        health=services.health.read,
        dlq=dlq,
        config_source=config.source,
        panels=panels,
    )
    return Publisher(source, targets)


def build_redrive(settings: Settings, stream: str) -> tuple[DynamoDbRedriveLedger, RedriveContext]:
    """A redrive of the DLQ into `stream` with the config's rules: its ledger in the metrics table (to check
    before the run) and the run's context. ConfigError if the config file has a mistake."""
    from deadletters.ledger_dynamodb import DynamoDbRedriveLedger
    from deadletters.redrive import NO_RETRY_CONFIG, Context

    services = Services(settings)
    ledger = DynamoDbRedriveLedger(services.client("dynamodb"), settings.metrics_table)
    context = Context(
        # No automatic retries: a PutRecords retried after a timeout could put a letter twice.
        kinesis=boto3.client("kinesis", **settings.kinesis_client_kwargs(), config=NO_RETRY_CONFIG),
        stream=stream,
        rules=services.config.rules,
        ledger=ledger,
        s3=services.client("s3"),
        bucket=settings.archive_bucket,
        limits=settings.limits(),
    )
    return ledger, context


def build_replayer(settings: Settings, options: ReplayOptions, **callbacks: Any) -> Replayer:
    """A replay from the archive into a stream; `callbacks` are the Replayer's on_start / on_update."""
    from replay.runner import Replayer

    services = Services(settings)
    return Replayer(services.client("s3"), services.client("kinesis"), options, **callbacks)


def build_rebuild(settings: Settings, options: ReplayOptions, echo: Callable[[str], None]) -> Callable[..., Summary]:
    """`rebuild(**callbacks)`: reset the aggregates of the span in both stores, then replay it (`options`)."""
    from replay.rebuild import run_rebuild

    services = Services(settings)
    stores: list[tuple[str, AggregateStore]] = [("DynamoDB", services.dynamodb_store), ("Redis", services.redis_store)]
    return partial(
        run_rebuild,
        stores=stores,
        resolutions=services.config.resolutions,
        s3=services.client("s3"),
        kinesis=services.client("kinesis"),
        options=options,
        echo=echo,
    )
