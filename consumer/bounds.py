"""The bounds on hostile input, and their checks at the edge (decode and validate). Pure.

Browsers write these events: any byte string up to 1 MiB per record arrives. Every way a record can
cost more than its size (nesting, inflation, many events, long group values, huge numbers, many dead
letters) is bounded here by a setting (see `Limits`, filled from the `STREAMKPI_MAX_*` settings), and
what crosses a bound becomes a dead letter with a stable reason code. Everything after decode and
validate may rely on these bounds: no recursion deeper than `max_depth`, no group or distinct value
longer than `max_value_chars`, no number outside `NUMBER_LIMIT`.

Where each bound is checked: decode (consumer/decode.py) checks what a record is made of (inflation,
events per record, letters per record, nesting, bytes per event); validate (consumer/validate.py) checks
the values the metrics read (`ValueChecks`: lengths of group and distinct values, ranges of summed
numbers), once per event type's plan. The checks are written for the hot path: a record (or line) whose
own size already proves a bound skips that check, so normal traffic pays a few comparisons per event.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

# The fold's own path lookup and group naming, so the length checked is the length the fold would use.
from aggregations.metrics import MISSING, group_part, lookup
from consumer.reasons import Reason

# Numbers fed to sum/min/max must lie in (-1e21, 1e21) and be 0 or at least 1e-20 in size. A sum of
# such numbers keeps under ~60 digits, so every stored value (and a window's item) has a known size.
NUMBER_LIMIT = 10**21
# A compressed record may always inflate to this much, whatever its compressed size.
INFLATION_FLOOR_BYTES = 64 * 1024
# Concatenated gzip members in one record (each costs a decompressor).
MAX_GZIP_MEMBERS = 1000
_OPEN_BRACKET = ord("[")  # `int in bytes` is a memchr; `bytes in bytes` tries an int first


@dataclass(frozen=True, slots=True)
class Limits:
    """Every bound on one record's cost. Defaults are the settings' defaults (see streamkpi/settings.py)."""

    # Nesting of objects and arrays in one event (the event itself is level 1). Far beyond real events and
    # below orjson's 254 written levels; a text of at most 2 x this many bytes cannot nest deeper, so
    # nearly every event skips the check.
    max_depth: int = 128
    max_event_bytes: int = 65_536  # one event's JSON text
    max_value_chars: int = 512  # a value used as a metric group (`by`) or a distinct value
    max_events_per_record: int = 10_000  # array elements or NDJSON lines of one record
    max_letters_per_record: int = 100  # beyond: one letter stands for the whole record
    max_inflated_bytes: int = 8 * 1024 * 1024  # what one compressed record may inflate to
    max_inflation_ratio: int = 100  # ... and at most this times its compressed size (beyond the floor)
    max_item_bytes: int = 262_144  # one window partial (a store item); further groups fold into __other__
    max_pending_bytes: int = 32 * 1024 * 1024  # dead letters and forwards held before they are sent

    def inflate_budget(self, compressed_bytes: int) -> int:
        """How far one compressed record of this size may inflate."""
        return min(self.max_inflated_bytes, max(INFLATION_FLOOR_BYTES, self.max_inflation_ratio * compressed_bytes))


DEFAULT_LIMITS = Limits()
Path = tuple[str, ...]


# Per event type: (top-level keys besides `userId` whose values metrics group by or count as distinct,
# the same for deeper dotted paths, the dotted paths metrics sum, minimise or maximise, whether there are
# deeper paths or such numbers, the longest `userId` allowed). `userId` is apart: validation reads it
# anyway; so is a top-level value that is a string within the limit, which value_problem need not see.
TypePlan = tuple[tuple[str, ...], tuple[Path, ...], tuple[Path, ...], bool, int]
UNBOUNDED = 1 << 62


@dataclass(frozen=True)
class ValueChecks:
    """Which fields of an event the metrics read, so validation can bound them: per event type, the
    paths used as groups or distinct values (length-bounded) and the paths summed, minimised or
    maximised (range-bounded). Built from the config; `plans` caches them per event type name (names
    that passed their own check: validation's Rules.types holds each name's plan too)."""

    # (type patterns, group/distinct paths, number paths), one entry per metric.
    metrics: tuple[tuple[tuple[str, ...], tuple[Path, ...], tuple[Path, ...]], ...] = ()
    max_value_chars: int = DEFAULT_LIMITS.max_value_chars
    plans: dict[str, TypePlan] = field(default_factory=dict, compare=False)

    def plan(self, event_type: str) -> TypePlan:
        """What to check in events of this (valid) type; cached, up to 100,000 types."""
        found = self.plans.get(event_type)
        if found is None:
            from fnmatch import fnmatchcase

            groups: dict[Path, None] = {}
            numbers: dict[Path, None] = {}
            for patterns, group_paths, number_paths in self.metrics:
                if any(fnmatchcase(event_type, p) for p in patterns):
                    groups.update(dict.fromkeys(group_paths))
                    numbers.update(dict.fromkeys(number_paths))
            keys = tuple(path[0] for path in groups if len(path) == 1 and path[0] != "userId")
            deep = tuple(path for path in groups if len(path) > 1)
            user_limit = self.max_value_chars if ("userId",) in groups else UNBOUNDED
            found = (keys, deep, tuple(numbers), bool(deep or numbers), user_limit)
            if len(self.plans) < 100_000:
                self.plans[event_type] = found
        return found


# What `value_problem` returns for an event within bounds that holds a float that may be an integer
# literal beyond 64 bits in a summed field (orjson reads those as floats): read its record again exactly.
READ_EXACTLY: Any = ("read_exactly", "")
Problem = tuple[Reason, str]


def value_problem(event: Mapping[str, Any], plan: Any, limit: int, exact: bool) -> Problem | None:
    """Why a group value or a summed number of the event is out of bounds, None, or READ_EXACTLY (never
    when `exact`: the record was read exactly already). `userId` is checked by the caller."""
    get = event.get
    for key in plan[0]:
        value = get(key)
        if value is not None and (len(value) if type(value) is str else len(group_part(value))) > limit:
            return Reason.VALUE_TOO_LONG, f"{key} has {len(group_part(value))} characters; at most {limit}"
    for path in plan[1]:
        value = lookup(event, path)
        if value is MISSING or value is None:
            continue
        length = len(value) if type(value) is str else len(group_part(value))
        if length > limit:
            return Reason.VALUE_TOO_LONG, f"{'.'.join(path)} has {length} characters; at most {limit}"
    wide = False
    for path in plan[2]:
        value = lookup(event, path)
        kind = type(value)
        if kind is int:
            if not -NUMBER_LIMIT < value < NUMBER_LIMIT:
                return Reason.NUMBER_OUT_OF_RANGE, f"{'.'.join(path)} is {_short(value)}: outside ±1e21"
        elif kind is float:
            # ±1e21 itself waits for the exact reading: an integer literal just under it reads as 1e21.
            if (
                not -NUMBER_LIMIT <= value <= NUMBER_LIMIT
                or (value and abs(value) < 1e-20)
                or (exact and abs(value) == NUMBER_LIMIT)
            ):
                where = f"{'.'.join(path)} is {value!r}"
                return Reason.NUMBER_OUT_OF_RANGE, f"{where}: outside ±1e21 or nearer 0 than 1e-20"
            wide = wide or (not exact and value.is_integer() and abs(value) >= 9.2e18)
    return READ_EXACTLY if wide else None


def structure_problem(event: Any, size: int, size_is_exact: bool, shallow: bool, limits: Limits) -> Problem | None:
    """Why one decoded event nests too deep or is too large, or None. `size` bounds its text in bytes (is
    its size when `size_is_exact`); `shallow`: its text has too few brackets to nest deeper than allowed."""
    if not shallow and depth_exceeds(event, limits.max_depth):
        return Reason.TOO_DEEP, f"objects and arrays nest deeper than {limits.max_depth} levels"
    if size > limits.max_event_bytes:
        if not size_is_exact:
            size = len(to_json_bytes(event))
        if size > limits.max_event_bytes:
            return Reason.TOO_LARGE, f"event of {size} bytes; at most {limits.max_event_bytes}"
    return None


def _short(value: int) -> str:
    text = str(value) if value.bit_length() < 4000 else f"an integer of {value.bit_length()} bits"
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} digits)"


def depth_exceeds(value: Any, limit: int) -> bool:
    """True when objects/arrays nest deeper than `limit` levels (the value itself is level 1). Iterative:
    a hostile value cannot make it recurse."""
    stack = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        current, depth = pop()
        kind = type(current)
        if kind is dict:
            children: Any = current.values()
        elif kind is list:
            children = current
        else:
            continue
        if depth > limit:
            return True
        for child in children:
            child_kind = type(child)
            if child_kind is dict or child_kind is list:
                push((child, depth + 1))
    return False


def bracket_bound(text: bytes) -> int:
    """An upper bound of the nesting depth of a JSON text: its count of `{` and `[` (C speed).

    A count reads every byte, a membership test stops at the first match (memchr). Events seldom hold
    arrays, so the `[` of a text with none, or just one (an array record's own), are not counted."""
    braces = text.count(b"{")
    if _OPEN_BRACKET not in text:
        return braces
    if _OPEN_BRACKET not in text.partition(b"[")[2]:
        return braces + 1
    return braces + text.count(b"[")


def to_json_bytes(value: Any) -> bytes:
    """Compact JSON of a parsed value. orjson writes at most 254 levels and 64-bit integers; anything it
    refuses (an integer past 64 bits, a deeper value parsed up to orjson's 1,024 read levels) is written
    by the standard library, with room for that depth."""
    try:
        return memoryview(orjson.dumps(value)).tobytes()  # a copy: orjson's result keeps its whole buffer
    except orjson.JSONEncodeError:
        pass
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * 1024 + 100))
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    finally:
        sys.setrecursionlimit(limit)


def exact_loads(text: bytes) -> Any:
    """JSON with integers beyond 64 bits read exactly (orjson reads them as floats). Called only for text
    orjson accepted, so what is valid is the same; NaN/Infinity stay refused. None when it cannot."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * 1024 + 100))
    try:
        return json.loads(text, parse_constant=refuse)
    except (ValueError, RecursionError):  # e.g. an integer of more than 4,300 digits: keep orjson's reading
        return None
    finally:
        sys.setrecursionlimit(limit)
