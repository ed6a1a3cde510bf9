"""The resume file of a replay, pure apart from `load` and `save` (atomic: readers see the old file or
the whole new one).

It records the replay's parameters (a resume with other ones is refused), the objects finished (by
their index in the listing, which is kept beside it in `<file>.objects`, so that a resumed replay reads
exactly the objects the first run listed, not copies archived since), and for each object under way:
`low` (every piece before this byte offset is finished: delivered, skipped or reported), `read`
(pieces up to this offset were counted in the totals) and `acked` (offsets at or after `low` of events
already delivered: batches keep order per key, not file order, so what is delivered is not always a
prefix). Totals of the runs so far are kept too, so the summary after a resume covers the whole replay.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from replay.errors import ProgressError

VERSION = 1


@dataclass
class ObjectMark:
    low: int = 0
    read: int = -1
    acked: set[int] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        return {"low": self.low, "read": self.read, "acked": sorted(self.acked)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ObjectMark:
        return cls(int(data["low"]), int(data["read"]), {int(o) for o in data.get("acked", [])})


def to_ranges(numbers: set[int]) -> list[list[int]]:
    """{0, 1, 2, 5} -> [[0, 3], [5, 6]] (half-open ranges): a done set that is mostly a prefix stays small."""
    ranges: list[list[int]] = []
    for n in sorted(numbers):
        if ranges and ranges[-1][1] == n:
            ranges[-1][1] = n + 1
        else:
            ranges.append([n, n + 1])
    return ranges


def from_ranges(ranges: list[list[int]]) -> set[int]:
    return {n for start, end in ranges for n in range(int(start), int(end))}


@dataclass
class Progress:
    params: dict[str, Any]
    done: set[int] = field(default_factory=set)  # indexes in the listing
    partial: dict[int, ObjectMark] = field(default_factory=dict)
    totals: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "params": self.params,
            "done": to_ranges(self.done),
            "partial": {str(index): mark.to_json() for index, mark in sorted(self.partial.items())},
            "totals": self.totals,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        if data.get("version") != VERSION:
            raise ProgressError(f"resume file version {data.get('version')!r}; this streamkpi writes {VERSION}")
        return cls(
            params=dict(data["params"]),
            done=from_ranges(data.get("done", [])),
            partial={int(index): ObjectMark.from_json(mark) for index, mark in data.get("partial", {}).items()},
            totals=dict(data.get("totals", {})),
            extra=dict(data.get("extra", {})),
        )

    def check_params(self, params: dict[str, Any], path: Path) -> None:
        if self.params != params:
            differ = sorted(k for k in set(params) | set(self.params) if params.get(k) != self.params.get(k))
            raise ProgressError(
                f"{path} belongs to another replay (different {', '.join(differ)}): "
                f"use the same options to resume it, or another --resume file to start a new replay"
            )


def load(path: Path) -> Progress | None:
    """The progress in `path`, or None when there is no such file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return Progress.from_json(orjson.loads(raw))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ProgressError):
            raise
        raise ProgressError(f"{path} is not a replay resume file ({exc}); move it away or name another") from None


def save(path: Path, progress: Progress) -> None:
    write_atomically(path, orjson.dumps(progress.to_json()))


def listing_path(path: Path) -> Path:
    return path.with_name(path.name + ".objects")


def save_listing(path: Path, objects: list[tuple[str, int]]) -> None:
    """The (key, size) of every object of the replay, in order, beside the resume file."""
    write_atomically(listing_path(path), orjson.dumps([[key, size] for key, size in objects]))


def load_listing(path: Path) -> list[tuple[str, int]] | None:
    try:
        raw = listing_path(path).read_bytes()
    except FileNotFoundError:
        return None
    try:
        return [(str(key), int(size)) for key, size in orjson.loads(raw)]
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise ProgressError(f"{listing_path(path)} is not a replay listing ({exc}); move it away") from None


def remove(path: Path) -> None:
    """Remove a finished replay's resume file and its listing."""
    path.unlink(missing_ok=True)
    listing_path(path).unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes) -> None:
    """A temporary file, fsync, then rename over the old one: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


OLD = "old"  # finished in an earlier run: skip without counting
ACKED = "acked"  # delivered in an earlier run: skip, count as already delivered
RECOUNT = "recount"  # seen and counted in an earlier run, not delivered: send again if it is an event, count nothing
NEW = "new"


class ObjectTracker:
    """What of one object is finished, as pieces are read and events acknowledged."""

    def __init__(self, index: int, key: str, mark: ObjectMark | None = None) -> None:
        self.index = index
        self.key = key
        self.resumed = mark or ObjectMark()
        self.read = self.resumed.read
        self.acked: set[int] = {o for o in self.resumed.acked if o >= self.resumed.low}
        self.pending: dict[int, None] = {}  # offsets queued, not yet acknowledged, in order
        self.reading = True

    def classify(self, offset: int) -> str:
        if offset < self.resumed.low:
            return OLD
        if offset in self.resumed.acked:
            return ACKED
        return RECOUNT if offset <= self.resumed.read else NEW

    def counted(self, offset: int) -> None:
        self.read = max(self.read, offset)

    def queued(self, offset: int) -> None:
        self.pending[offset] = None

    def acknowledged(self, offset: int) -> None:
        del self.pending[offset]
        self.acked.add(offset)

    @property
    def done(self) -> bool:
        return not self.reading and not self.pending

    def mark(self) -> ObjectMark:
        low = next(iter(self.pending)) if self.pending else self.read + 1
        low = max(low, self.resumed.low)
        return ObjectMark(low, self.read, {o for o in self.acked if o >= low})
