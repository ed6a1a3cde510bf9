"""Which archive objects can hold events of a time range, pure (listing is injected).

Layouts, recognised from the folder names as the listing goes (no option needed):
- Firehose's default `YYYY/MM/DD/HH/` (UTC) under the source prefix;
- Hive style `year=YYYY/month=MM/day=DD/hour=HH/` (dynamic partitioning), also below other
  `key=value/` folders (e.g. `eventType=x/year=...`) and with `hour=` or `day=` as the last level;
- anything else: a plain prefix, listed whole (every event is filtered by its timestamp anyway).

A time folder is named after the arrival of the oldest record in its objects, not after the events'
own timestamps, so folders are kept when they overlap the range widened by `slack` on both sides
(default one hour), and then every event is filtered by its own `timestamp`. A folder wholly inside the
widened range is listed in one go; only folders on its edges are walked level by level.
The `dlq/` folder at the bucket root holds the DLQ's overflow payloads, not events: it is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

HOUR_MS = 3_600_000
DEFAULT_SLACK_MS = HOUR_MS
ROOT_SKIP = ("dlq/",)

FIREHOSE = "firehose"
HIVE = "hive"
PLAIN = "plain"
_HIVE_KEYS = ("year", "month", "day", "hour")
_FIREHOSE_PART = (re.compile(r"\d{4}"), re.compile(r"\d{2}"), re.compile(r"\d{2}"), re.compile(r"\d{2}"))
_HIVE_PART = tuple(re.compile(rf"{key}=(\d{{1,4}})") for key in _HIVE_KEYS)
_HIVE_OTHER = re.compile(r"[^=/]+=[^/]*")
_RANGES = ((1970, 9999), (1, 12), (1, 31), (0, 23))


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int


class Lister(Protocol):
    def level(self, prefix: str) -> tuple[list[str], list[ObjectInfo]]:
        """Sub-folders (full prefixes ending in '/') and objects directly under `prefix`."""
        ...

    def everything(self, prefix: str) -> Iterable[ObjectInfo]:
        """Every object under `prefix`, at any depth."""
        ...


@dataclass
class Plan:
    objects: list[ObjectInfo]
    layouts: set[str] = field(default_factory=set)  # what was recognised
    level_calls: int = 0  # folder listings (one level)
    full_calls: int = 0  # whole-subtree listings

    @property
    def total_bytes(self) -> int:
        return sum(o.size for o in self.objects)


def normalize_prefix(prefix: str) -> str:
    prefix = prefix.lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def interval_ms(parts: tuple[int, ...]) -> tuple[int, int]:
    """[start, end) in epoch ms of a time folder given (year[, month[, day[, hour]]])."""
    year, month, day, hour = (*parts, *(1, 1, 0)[len(parts) - 1 :])[:4]
    start = datetime(year, month, day, hour, tzinfo=UTC)
    if len(parts) == 1:
        end = datetime(year + 1, 1, 1, tzinfo=UTC) if year < 9999 else start + timedelta(days=365)
    elif len(parts) == 2:
        end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    elif len(parts) == 3:
        end = start + timedelta(days=1)
    else:
        end = start + timedelta(hours=1)
    return _ms(start), _ms(end)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp()) * 1000


def time_part(name: str, style: str | None, depth: int) -> tuple[str, int] | None:
    """(style, value) when a folder name is the next time level (depth 0 = year) of a layout, else None.
    `style` is the layout of the levels above (None at the year level, where either may start)."""
    if depth >= 4 or (style is None) != (depth == 0):
        return None
    hive = _HIVE_PART[depth].fullmatch(name)
    if style in (None, FIREHOSE) and _FIREHOSE_PART[depth].fullmatch(name):
        found, value = FIREHOSE, int(name)
    elif style in (None, HIVE) and hive:
        found, value = HIVE, int(hive.group(1))
    else:
        return None
    low, high = _RANGES[depth]
    return (found, value) if low <= value <= high else None


def root_state(prefix: str) -> tuple[str | None, tuple[int, ...]]:
    """The layout state a source prefix already stands in, e.g. `archive/2026/11/` -> Firehose (2026, 11)."""
    segments = [s for s in prefix.split("/") if s]
    for depth in (4, 3, 2, 1):
        if len(segments) < depth:
            continue
        style: str | None = None
        parts: list[int] = []
        for name in segments[-depth:]:
            found = time_part(name, style, len(parts))
            if found is None:
                break
            style = found[0]
            parts.append(found[1])
        else:
            if _valid(parts):
                return style, tuple(parts)
    return None, ()


def _valid(parts: list[int] | tuple[int, ...]) -> bool:
    try:
        interval_ms(tuple(parts))
    except ValueError:  # e.g. day 31 of a 30-day month
        return False
    return True


def plan(
    lister: Lister,
    prefix: str,
    from_ms: int,
    to_ms: int,
    slack_ms: int = DEFAULT_SLACK_MS,
    skip: Iterable[str] = ROOT_SKIP,
) -> Plan:
    """Every object under `prefix` that can hold events of [from_ms, to_ms), in key order."""
    root = normalize_prefix(prefix)
    result = Plan([])
    window = (from_ms - slack_ms, to_ms + slack_ms)
    style, parts = root_state(root)
    if style:
        result.layouts.add(style)
    seen: dict[str, ObjectInfo] = {}
    for info in _walk(lister, root, style, parts, window, tuple(skip), result):
        seen[info.key] = info
    result.objects = [seen[k] for k in sorted(seen)]
    return result


def _walk(
    lister: Lister,
    prefix: str,
    style: str | None,
    parts: tuple[int, ...],
    window: tuple[int, int],
    skip: tuple[str, ...],
    result: Plan,
) -> Iterator[ObjectInfo]:
    if parts:
        start, end = interval_ms(parts)
        if end <= window[0] or start >= window[1]:
            return
        if (window[0] <= start and end <= window[1]) or len(parts) == 4:
            result.full_calls += 1
            yield from lister.everything(prefix)
            return
    result.level_calls += 1
    folders, objects = lister.level(prefix)
    yield from objects
    for folder in sorted(folders):
        name = folder[len(prefix) :].rstrip("/")
        if prefix == "" and folder in skip:
            continue
        found = time_part(name, style, len(parts))
        if found is not None and _valid((*parts, found[1])):
            result.layouts.add(found[0])
            yield from _walk(lister, folder, found[0], (*parts, found[1]), window, skip, result)
        elif not parts and style is None and _HIVE_OTHER.fullmatch(name):
            yield from _walk(lister, folder, None, (), window, skip, result)
        else:
            result.layouts.add(PLAIN)
            result.full_calls += 1
            yield from lister.everything(folder)
    if objects and not parts:
        result.layouts.add(PLAIN)


class MemoryLister:
    """A Lister over a dict of keys -> sizes (tests, dry runs of the planning logic)."""

    def __init__(self, objects: dict[str, int]) -> None:
        self.objects = dict(sorted(objects.items()))
        self.calls: list[tuple[str, str]] = []

    def level(self, prefix: str) -> tuple[list[str], list[ObjectInfo]]:
        self.calls.append(("level", prefix))
        folders: set[str] = set()
        found: list[ObjectInfo] = []
        for key, size in self.objects.items():
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix) :]
            if "/" in rest:
                folders.add(prefix + rest.split("/", 1)[0] + "/")
            else:
                found.append(ObjectInfo(key, size))
        return sorted(folders), found

    def everything(self, prefix: str) -> Iterator[ObjectInfo]:
        self.calls.append(("everything", prefix))
        for key, size in self.objects.items():
            if key.startswith(prefix):
                yield ObjectInfo(key, size)
