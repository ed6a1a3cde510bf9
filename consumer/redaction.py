"""Redaction of personal data: fields dropped, masked or hashed with a keyed HMAC, once per event. Pure.

Browsers send emails and user ids (seed 004's `data` and `userId`). The config's `[redaction]` table names
dotted paths, as the metrics do; the worker applies them to every event that parsed as a JSON object,
right after validation and before anything leaves it: the fold, the dead letters, the forward sinks and
the archive. The key comes from the environment through the composition root: nothing here reads it.

Rules, each idempotent, so an event redacted twice (a redriven letter, a replayed archive) is unchanged:
- `drop`: the field is removed.
- `mask`: its value becomes `MASK`.
- `hash`: its value becomes `hmac:<64 hex digits>`, HMAC-SHA256 under the key of the value's UTF-8 (a
  string) or of its canonical JSON (sorted keys, no spaces; a number, boolean, object or array). A string
  already in that form is left as it is.
- A null value is left null (there is nothing in it), a missing field stays missing.
- A path passes through arrays: `data.contacts.email` redacts the `email` of every object in the array
  `data.contacts` (and in arrays inside it). The metrics' paths do not enter arrays.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

HASH_PREFIX = "hmac:"
MASK = "***"
MIN_KEY_CHARS = 32  # HMAC-SHA256 wants a key of at least its output's 32 bytes (`openssl rand -hex 32`)
DEFAULT_KEY_ENV = "STREAMKPI_REDACTION_KEY"
HASHED_CHARS = len(HASH_PREFIX) + 64  # what a hashed value is long
UNPARSED_CHOICES = ("drop", "keep")
# Fields redaction may not touch: validation read them, and a redriven or replayed event must pass it again.
PROTECTED_FIELDS = ("eventType", "timestamp")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DROP, _MASK, _HASH = 0, 1, 2
_BLOCK = 64  # SHA-256's block size: the HMAC key is padded to it
_CACHED_VALUES = 16_384  # hashes kept of recent strings (cleared when full) ...
_CACHED_CHARS = 128  # ... of at most this many characters: a few MB at most
_DONE = {"drop": "dropped", "mask": "masked", "hash": "hashed"}

Path = tuple[str, ...]


class RedactionKeyError(ValueError):
    """The key for hashing is missing or too short. The message names the variable, never the key."""


@dataclass(frozen=True)
class RedactionSpec:
    """The `[redaction]` table, checked (streamkpi/config.py): dotted paths to drop, mask and hash, the
    variable holding the key, and what a dead letter of a record that parsed into no object carries:
    `unparsed = "drop"` its size and sha256 only, `"keep"` its raw bytes."""

    drop: tuple[str, ...] = ()
    mask: tuple[str, ...] = ()
    hash: tuple[str, ...] = ()
    key_env: str = DEFAULT_KEY_ENV
    unparsed: str = "drop"

    @property
    def paths(self) -> tuple[tuple[str, str], ...]:
        """(list name, path) of every redacted path."""
        return tuple((kind, path) for kind in ("drop", "mask", "hash") for path in getattr(self, kind))


def split_path(path: str) -> Path:
    return tuple(path.split("."))


def overlaps(a: Path, b: Path) -> bool:
    """One path is the other or lies inside it: redacting one changes what the other reads."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def canonical_json(value: Any) -> bytes:
    """The JSON a non-string value is hashed as: sorted keys, no spaces, UTF-8 (lone surrogates kept)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8", "surrogatepass")


def is_hashed(value: Any) -> bool:
    return (
        type(value) is str
        and len(value) == HASHED_CHARS
        and value.startswith(HASH_PREFIX)
        and _HEX64.fullmatch(value, len(HASH_PREFIX)) is not None
    )


class Redactor:
    """Applies a RedactionSpec, built once at start with its key (None when nothing is hashed)."""

    def __init__(self, spec: RedactionSpec, key: str | bytes | None = None) -> None:
        self.spec = spec
        self.keep_unparsed = spec.unparsed == "keep"
        if spec.hash:
            if not key:
                raise RedactionKeyError(
                    f"[redaction] hashes {', '.join(spec.hash)} but {spec.key_env} is not set: set it to a secret "
                    f"of at least {MIN_KEY_CHARS} characters (e.g. `openssl rand -hex 32`)"
                )
            raw = key.encode() if isinstance(key, str) else key
            if len(raw) < MIN_KEY_CHARS:
                raise RedactionKeyError(
                    f"{spec.key_env} holds {len(raw)} bytes; the redaction key needs at least {MIN_KEY_CHARS} "
                    "(e.g. `openssl rand -hex 32`)"
                )
            # HMAC (RFC 2104) with its two padded key states made once: a hash then costs two state copies,
            # about a third of `hmac.new(...).copy()` and of `hmac.digest` here.
            block = (hashlib.sha256(raw).digest() if len(raw) > _BLOCK else raw).ljust(_BLOCK, b"\0")
            self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
            self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        # The hashes of recent short strings: a user's id comes again with each event of the session.
        self._recent: dict[str, str] = {}
        # Each path once, drops first: a path is in one list only and none lies inside another (config).
        self._rules: tuple[tuple[Path, int], ...] = tuple(
            [(split_path(p), _DROP) for p in spec.drop]
            + [(split_path(p), _MASK) for p in spec.mask]
            + [(split_path(p), _HASH) for p in spec.hash]
        )

    def redact(self, event: dict[str, Any]) -> bool:
        """Redact `event` in place; True if anything changed."""
        changed = False
        for path, action in self._rules:
            if self._apply(event, path, action):
                changed = True
        return changed

    def hash_value(self, value: Any) -> str:
        """`hmac:<hex>` of a value (a value already in that form comes back as it is)."""
        if type(value) is str:
            known = self._recent.get(value)
            if known is not None:
                return known
            if is_hashed(value):
                return value
            data = value.encode("utf-8", "surrogatepass")
        else:
            data = canonical_json(value)
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        hashed = HASH_PREFIX + outer.hexdigest()
        if type(value) is str and len(value) <= _CACHED_CHARS:
            if len(self._recent) >= _CACHED_VALUES:
                self._recent.clear()
            self._recent[value] = hashed
        return hashed

    def _apply(self, event: dict[str, Any], path: Path, action: int) -> bool:
        # The common case first: objects all the way down to the field.
        node = event
        last = len(path) - 1
        for depth in range(last):
            child = node.get(path[depth])
            if type(child) is dict:
                node = child
            elif type(child) is list:
                return self._apply_through(child, depth + 1, path, action)
            else:
                return False
        return self._act(node, path[last], action)

    def _act(self, node: dict[str, Any], key: str, action: int) -> bool:
        """Redact `node[key]`; True if it changed."""
        if key not in node:
            return False
        value = node[key]
        if action == _DROP:
            del node[key]
            return True
        if value is None:
            return False
        if action == _MASK:
            if value == MASK:
                return False
            node[key] = MASK
            return True
        hashed = self.hash_value(value)
        if hashed is value:
            return False
        node[key] = hashed
        return True

    def _apply_through(self, start: Any, start_depth: int, path: Path, action: int) -> bool:
        """Apply below `start` (reached by the path's first `start_depth` names), through arrays. Iterative: a
        hostile event nests arrays as deep as decode allows."""
        changed = False
        last = len(path) - 1
        stack: list[tuple[Any, int]] = [(start, start_depth)]
        while stack:
            node, depth = stack.pop()
            if type(node) is list:
                stack.extend((item, depth) for item in node)
                continue
            if type(node) is not dict:
                continue
            if depth < last:
                if path[depth] in node:
                    stack.append((node[path[depth]], depth + 1))
            elif self._act(node, path[depth], action):
                changed = True
        return changed


def withheld(payload: bytes) -> tuple[int, str]:
    """What a dead letter of an unparsed record keeps under `unparsed = "drop"`: its size and sha256, enough to
    find the record in the stream (with the letter's sequence numbers) and to tell it is the same."""
    return len(payload), hashlib.sha256(payload).hexdigest()


def conflicts(spec: RedactionSpec, metric_paths: Iterable[tuple[str, str, str]]) -> list[str]:
    """Why metrics cannot be computed on the redacted event as they are defined, one line each.
    `metric_paths`: (metric name, its key: field, by or where, the dotted path). A metric may name a hashed
    path in `field` or `by` (it then counts or groups the hashes), never a dropped or masked one, nor a path
    inside or around a redacted one, nor a hashed one in `where` (it compares with a value as sent)."""
    problems = []
    for name, key, dotted in metric_paths:
        path = split_path(dotted)
        for kind, redacted in spec.paths:
            rpath = split_path(redacted)
            if not overlaps(path, rpath):
                continue
            if kind == "hash" and path == rpath and key != "where":
                continue
            what = "is the" if path == rpath else "overlaps the"
            if kind == "hash" and path == rpath:
                why = "a where filter compares with the value as sent, and the event holds its hash"
            else:
                why = "its numbers would silently change"
            done = _DONE[kind]
            problems.append(f"metrics.{name}.{key} names {dotted!r}, which {what} {done} path {redacted!r}: {why}")
    return problems
