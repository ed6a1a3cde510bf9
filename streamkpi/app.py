"""The composition root: the one place that reads settings and builds clients, stores and workers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import boto3
import redis

from aggregations.dynamodb_store import DynamoDBStore, make_model
from aggregations.redis_store import RedisStore
from consumer.dlq import SqsDeadLetterQueue
from consumer.health import RedisHealth
from consumer.sinks import EventSink, FirehoseSink, KinesisStreamSink
from consumer.worker import Cadence, ShardWorker
from streamkpi import logs
from streamkpi.config import AppConfig, load_config
from streamkpi.settings import Settings, read_env_file

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
        return redis.Redis.from_url(self.settings.redis_url, socket_timeout=5, socket_connect_timeout=5)

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
        """The forward sinks the config defines; Firehose sinks default to the settings' delivery stream."""
        built: dict[str, EventSink] = {}
        for sink in self.config.sinks:
            if sink.type == "firehose":
                target = sink.target or self.settings.firehose_stream
                built[sink.name] = FirehoseSink(sink.name, self.client("firehose"), target, pack=sink.pack)
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


def build_worker_factory(settings: Settings) -> Any:
    services = Services(settings)
    # Build everything now, so a bad config or an unreachable queue fails at start, not mid-batch.
    config, durable, hot, dlq, sinks, health = (
        services.config,
        services.dynamodb_store,
        services.redis_store,
        services.dead_letters,
        services.sinks,
        services.health,
    )

    def factory(shard_id: str) -> ShardWorker:
        return ShardWorker(
            shard_id, settings.stream, config, durable, hot, dlq, services.cadence(), sinks=sinks, health=health
        )

    return factory
