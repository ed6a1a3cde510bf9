"""One health report, several places: the shard's heartbeat on local disk and its entry in Redis."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from consumer.health import HealthSink


class FanOutHealth:
    """Reports to every sink in order; each sink is best effort on its own (a failure is logged by it)."""

    def __init__(self, *sinks: HealthSink) -> None:
        self.sinks = sinks

    def report(self, shard_id: str, fields: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.report(shard_id, fields)
