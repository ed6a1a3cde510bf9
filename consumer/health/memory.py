"""The in-memory health sink the tests use: the last fields each shard reported."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class MemoryHealth:
    def __init__(self) -> None:
        self.shards: dict[str, dict[str, Any]] = {}

    def report(self, shard_id: str, fields: Mapping[str, Any]) -> None:
        self.shards[shard_id] = dict(fields)
