"""Partition keys for replayed events, pure.

The key comes from a JSON path into the event (`userId`, `data.charity`, `$.items.0.id`); by default
`userId`, then `sessionId`. A string or number found there is the key; when none of the paths gives
one, the key is a hash of the event's bytes (so identical events still land on one shard). Kinesis
takes keys of 1 to 256 characters: a longer value is replaced by its hash (the same value, the same key).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from replay.errors import PathError

DEFAULT_PATHS = ("userId", "sessionId")
MAX_KEY_CHARS = 256


def parse_path(text: str) -> tuple[str, ...]:
    """`a.b.c`, `$.a.b` or `a[0].b` -> ("a", "b", "c") / ("a", "0", "b"); list indexes are digit parts."""
    path = text.strip()
    if path.startswith("$"):
        path = path[1:].lstrip(".")
    path = path.replace("[", ".").replace("]", "")
    parts = tuple(path.split("."))
    if not path or any(not part for part in parts):
        raise PathError(f"partition key path {text!r} is not a dotted JSON path like userId or data.charity")
    return parts


def lookup(obj: Any, path: Sequence[str]) -> Any:
    for part in path:
        if isinstance(obj, Mapping):
            if part not in obj:
                return None
            obj = obj[part]
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return None
    return obj


def hash_key(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class PartitionKeys:
    """`key(event, raw bytes)` for one replay: the first path that gives a value, else a hash."""

    def __init__(self, path: str | None = None) -> None:
        self.paths = [parse_path(path)] if path else [(p,) for p in DEFAULT_PATHS]
        self.describe = path or " then ".join(DEFAULT_PATHS)

    def key(self, event: Mapping[str, Any], data: bytes) -> str:
        for path in self.paths:
            value = lookup(event, path)
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, int | float):
                value = str(value)
            if isinstance(value, str) and value:
                return value if len(value) <= MAX_KEY_CHARS else hash_key(value.encode())
        return hash_key(data)
