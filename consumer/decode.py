"""Record decoding: bytes -> JSON objects (one object, an array of objects, or NDJSON), pure.

Gzip and zlib payloads are recognised by their magic bytes and inflated with a size cap (against
decompression bombs). Anything that cannot become an object becomes a `Rejection` with a stable
reason code, so every byte that arrives ends up either counted or in the DLQ.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from consumer.reasons import Reason

GZIP_MAGIC = b"\x1f\x8b"
# zlib streams start with 0x78 and a check byte; JSON text never starts with 'x'.
ZLIB_HEADERS = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")
DEFAULT_MAX_INFLATED_BYTES = 8 * 1024 * 1024
_COMPRESSED_FIRST_BYTES = frozenset((GZIP_MAGIC[:1], ZLIB_HEADERS[0][:1]))
_UNREAD: Any = object()  # a line not read yet


@dataclass(frozen=True, slots=True)
class Rejection:
    """Something in a record that is not a countable event: where it is, why, and its raw bytes."""

    index: int
    reason: Reason
    detail: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Decoded:
    objects: list[tuple[int, dict[str, Any]]]  # (index in record, object)
    rejections: list[Rejection]


def inflate(data: bytes, max_bytes: int = DEFAULT_MAX_INFLATED_BYTES) -> bytes | Rejection:
    """Decompress gzip/zlib payloads (by magic bytes); other bytes pass through unchanged.

    Concatenated gzip members (valid gzip) are all inflated; any other bytes after the compressed
    stream make the record `bad_compression`, never silently dropped.
    """
    if data[:2] == GZIP_MAGIC:
        wbits = 16 + zlib.MAX_WBITS
    elif data[:2] in ZLIB_HEADERS:
        wbits = zlib.MAX_WBITS
    else:
        return data
    out = b""
    rest = data
    while True:
        inflater = zlib.decompressobj(wbits)
        try:
            # One byte over the remaining budget tells "exactly at the cap" from "past it"
            # (and keeps max_length above 0, which zlib reads as "no limit").
            out += inflater.decompress(rest, max_bytes - len(out) + 1)
            if inflater.unconsumed_tail or len(out) > max_bytes:
                return Rejection(0, Reason.TOO_LARGE, f"inflates to more than {max_bytes} bytes", data)
            out += inflater.flush()
        except zlib.error as exc:
            return Rejection(0, Reason.BAD_COMPRESSION, f"corrupt compressed payload: {exc}", data)
        if len(out) > max_bytes:
            return Rejection(0, Reason.TOO_LARGE, f"inflates to more than {max_bytes} bytes", data)
        if not inflater.eof:
            return Rejection(0, Reason.BAD_COMPRESSION, "truncated compressed payload", data)
        rest = inflater.unused_data
        if not rest:
            return out
        if wbits == zlib.MAX_WBITS or rest[:2] != GZIP_MAGIC:
            return Rejection(0, Reason.BAD_COMPRESSION, f"{len(rest)} bytes after the compressed stream", data)


def _classify_parse_failure(text: bytes) -> tuple[Reason, str]:
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Reason.NOT_UTF8, f"invalid UTF-8 at byte {exc.start}"
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return Reason.NOT_JSON, str(exc)
    return Reason.NOT_JSON, "not JSON"


def decode_record(data: bytes, max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES) -> Decoded:
    """Split one record's data into JSON objects and rejections (indices count events in the record)."""
    objects, rejections = decode_parts(data, max_inflated_bytes)
    return Decoded([(index, obj) for index, obj, _ in objects], rejections)


# One object found in a record: (index in record, object, its own text on one line or None).
Part = tuple[int, dict[str, Any], bytes | None]


def decode_parts(
    data: bytes, max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES
) -> tuple[list[Part], list[Rejection]]:
    """`decode_record` for the hot path, without the Decoded wrapper, and with each object's own text:
    the stripped line of an NDJSON record or of a one-line single-object record (None inside an array),
    which the worker forwards as it came instead of writing the object again."""
    # Only gzip (0x1f 0x8b) and zlib (0x78 ..) payloads are inflated: other first bytes pass as they are.
    inflated = inflate(data, max_inflated_bytes) if data[:1] in _COMPRESSED_FIRST_BYTES else data
    if isinstance(inflated, Rejection):
        return [], [inflated]
    if b"\n" in inflated:
        lines = [line for line in inflated.split(b"\n") if line and not line.isspace()]  # the non-blank ones
        if len(lines) > 1:
            try:
                first = orjson.loads(lines[0])
            except orjson.JSONDecodeError:
                first = _UNREAD
            if first is not _UNREAD:
                # After a whole JSON value only whitespace may follow, so two or more non-blank lines
                # whose first is one are no JSON document: NDJSON, without failing to read it whole first.
                return _decode_ndjson(inflated, lines, first)
    try:
        parsed = orjson.loads(inflated)
    except orjson.JSONDecodeError:
        return _decode_ndjson(inflated)
    if isinstance(parsed, dict):
        text = inflated.strip()  # one object, perhaps with a trailing newline: its own text if on one line
        return [(0, parsed, None if b"\n" in text else text)], []
    if isinstance(parsed, list):
        objects: list[Part] = [(index, item, None) for index, item in enumerate(parsed) if isinstance(item, dict)]
        if len(objects) == len(parsed):
            return objects, []
        objects, rejections = [], []
        for index, item in enumerate(parsed):
            if isinstance(item, dict):
                objects.append((index, item, None))
            else:
                try:
                    payload = orjson.dumps(item)
                except orjson.JSONEncodeError:  # nested deeper than orjson writes: keep the whole record
                    payload = inflated
                rejections.append(Rejection(index, Reason.NOT_OBJECT, f"array element is {_kind(item)}", payload))
        return objects, rejections
    return [], [Rejection(0, Reason.NOT_OBJECT, f"record is {_kind(parsed)}", inflated)]


def _decode_ndjson(
    text: bytes, lines: list[bytes] | None = None, first: Any = _UNREAD
) -> tuple[list[Part], list[Rejection]]:
    """`text` as NDJSON; `lines` are its non-blank lines and `first` the first one read, if done already."""
    if lines is None:
        lines = [line for line in text.split(b"\n") if line and not line.isspace()]
    if len(lines) <= 1:
        reason, detail = _classify_parse_failure(text)
        return [], [Rejection(0, reason, detail, text)]
    objects: list[Part] = []
    rejections = []
    for index, line in enumerate(lines):
        if index == 0 and first is not _UNREAD:
            item = first
        else:
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError:
                reason, detail = _classify_parse_failure(line)
                rejections.append(Rejection(index, reason, f"line {index + 1}: {detail}", line))
                continue
        if isinstance(item, dict):
            objects.append((index, item, line.strip()))
        else:
            rejections.append(Rejection(index, Reason.NOT_OBJECT, f"line {index + 1} is {_kind(item)}", line))
    if not objects and all(r.reason is not Reason.NOT_OBJECT for r in rejections):
        # Nothing parsed line by line either: this is one broken document, not many broken lines.
        reason, detail = _classify_parse_failure(text)
        return [], [Rejection(0, reason, detail, text)]
    return objects, rejections


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
