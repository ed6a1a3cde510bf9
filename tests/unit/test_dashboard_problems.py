"""The snapshot (public: S3, the page) names what failed and the kind of error, never the error's text
(hosts, endpoints, credentials); the full error goes to the log."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, cast

import orjson
import pytest
import redis

from aggregations.store import AggregateStore, StoreUnavailableError
from dashboard.publisher import DlqSampler, Publisher, Source
from dashboard.snapshot import build_snapshot
from streamkpi.config import load_config

NOW = 1_764_064_800_000
SECRETS = ("hunter2", "cache.internal.example", "sqs.internal.example", "10.0.3.7")


class BrokenStore:
    def __init__(self, name: str, exc: Exception) -> None:
        self.name, self.exc = name, exc

    def read(self, resolution: str, starts: Sequence[int]) -> dict[int, list[Any]]:
        raise self.exc


class BrokenDlq:
    def read(self, now: int) -> Any:
        raise RuntimeError("Could not connect to the endpoint URL: https://admin:hunter2@sqs.internal.example/")


def broken_health() -> dict[str, dict[str, str]]:
    raise redis.AuthenticationError("invalid password hunter2 for redis://10.0.3.7:6379")


def unavailable() -> StoreUnavailableError:
    try:
        raise redis.ConnectionError("Error 111 connecting to cache.internal.example:6379 (redis://:hunter2@...)")
    except redis.ConnectionError as exc:
        try:
            raise StoreUnavailableError(f"Redis load failed: {exc}") from exc
        except StoreUnavailableError as wrapped:
            return wrapped


def broken_publisher() -> Publisher:
    config = load_config(None)
    stores = [
        BrokenStore("redis", unavailable()),
        BrokenStore("dynamodb", ValueError("https://dynamodb.cache.internal.example?token=hunter2 said no")),
    ]
    source = Source(
        stream="events",
        stores=cast(list[AggregateStore], stores),
        resolutions=config.resolutions,
        metrics=config.metric_set.by_name,
        health=broken_health,
        dlq=cast(DlqSampler, BrokenDlq()),
    )
    return Publisher(source, [], clock=lambda: NOW)


def test_problems_name_the_part_and_the_kind_of_error_never_its_text(caplog: pytest.LogCaptureFixture) -> None:
    publisher = broken_publisher()
    with caplog.at_level(logging.WARNING, logger="streamkpi.dashboard"):
        snapshot = build_snapshot(publisher.read(NOW))
    body = orjson.dumps(snapshot).decode()
    for secret in SECRETS:
        assert secret not in body, secret
    assert {p["part"]: p["message"] for p in snapshot["problems"]} == {
        "redis": "redis is not reachable (ConnectionError)",
        "dynamodb": "reading dynamodb failed (ValueError)",
        "health": "the shards' health (Redis) could not be read (AuthenticationError)",
        "dlq": "the DLQ could not be read (RuntimeError)",
    }
    # The operator still learns everything, on stderr.
    logged = {r.part: r.error for r in caplog.records if r.msg == "dashboard: reading a part failed"}  # type: ignore[attr-defined]
    assert set(logged) == {"redis", "dynamodb", "health", "dlq"}
    assert "cache.internal.example:6379" in logged["redis"] and "hunter2" in logged["dlq"]


def test_the_full_error_is_logged_once_until_it_changes(caplog: pytest.LogCaptureFixture) -> None:
    publisher = broken_publisher()
    with caplog.at_level(logging.WARNING, logger="streamkpi.dashboard"):
        for _ in range(3):
            publisher.read(NOW)
        assert sum(r.msg == "dashboard: reading a part failed" for r in caplog.records) == 4
        publisher.source.health = None  # the part recovers (here: is no longer read) ...
        publisher.read(NOW)
        publisher.source.health = broken_health  # ... and fails again: logged again
        publisher.read(NOW)
    parts = [r.part for r in caplog.records if r.msg == "dashboard: reading a part failed"]  # type: ignore[attr-defined]
    assert parts.count("health") == 2 and parts.count("redis") == 1
