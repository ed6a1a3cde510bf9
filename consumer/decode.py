"""Record decoding: bytes -> JSON objects (one object, an array of objects, or NDJSON), pure.

Gzip and zlib payloads are recognised by their magic bytes and inflated with a size cap (against
decompression bombs). Anything that cannot become an object becomes a `Rejection` with a stable
reason code, so every byte that arrives ends up either counted or in the DLQ.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import orjson

from consumer.bounds import (
    DEFAULT_LIMITS,
    MAX_GZIP_MEMBERS,
    Limits,
    bracket_bound,
    exact_loads,
    structure_problem,
    to_json_bytes,
)
from consumer.reasons import Reason

GZIP_MAGIC = b"\x1f\x8b"
# zlib streams start with 0x78 and a check byte; JSON text never starts with 'x'.
ZLIB_HEADERS = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")
DEFAULT_MAX_INFLATED_BYTES = DEFAULT_LIMITS.max_inflated_bytes
_COMPRESSED_FIRST_BYTES = frozenset((GZIP_MAGIC[:1], ZLIB_HEADERS[0][:1]))
_UNREAD: Any = object()  # a line not read yet
_DICT_ONLY = frozenset((dict,))  # `_DICT_ONLY.issuperset(map(type, items))`: all dicts, told at C speed
# Single bytes looked for as ints: `int in bytes` is a memchr, where `bytes in bytes` first fails (an
# exception raised and cleared) to read its operand as an int: several times the cost of the search.
_NEWLINE = ord("\n")
_FEED_BYTES = 16 * 1024  # compressed input fed at a time: what zlib copies as unused_data at a member's end


@dataclass(frozen=True, slots=True)
class Rejection:
    """Something in a record that is not a countable event: where it is, why, and its raw bytes.
    `events` is set on a rejection of a whole record that held that many events."""

    index: int
    reason: Reason
    detail: str
    payload: bytes
    events: int | None = None


@dataclass(frozen=True, slots=True)
class Decoded:
    objects: list[tuple[int, dict[str, Any]]]  # (index in record, object)
    rejections: list[Rejection]


def inflate(data: bytes, max_bytes: int = DEFAULT_MAX_INFLATED_BYTES) -> bytes | Rejection:
    """Decompress gzip/zlib payloads (by magic bytes); other bytes pass through unchanged.

    Concatenated gzip members (valid gzip) are all inflated, up to MAX_GZIP_MEMBERS; any other bytes
    after the compressed stream make the record `bad_compression`, never silently dropped. Input is fed
    in pieces and output kept in chunks, so the cost is linear in the bytes whatever the member count.
    """
    if data[:2] == GZIP_MAGIC:
        wbits = 16 + zlib.MAX_WBITS
    elif data[:2] in ZLIB_HEADERS:
        wbits = zlib.MAX_WBITS
    else:
        return data
    chunks: list[bytes] = []
    total = 0
    position = 0
    view = memoryview(data)
    for _ in range(MAX_GZIP_MEMBERS):
        inflater = zlib.decompressobj(wbits)
        while not inflater.eof:
            if position >= len(data):
                return Rejection(0, Reason.BAD_COMPRESSION, "truncated compressed payload", data)
            piece = view[position : position + _FEED_BYTES]
            try:
                # One byte over the remaining budget tells "exactly at the cap" from "past it"
                # (and keeps max_length above 0, which zlib reads as "no limit").
                chunk = inflater.decompress(piece, max_bytes - total + 1)
            except zlib.error as exc:
                return Rejection(0, Reason.BAD_COMPRESSION, f"corrupt compressed payload: {exc}", data)
            total += len(chunk)
            if total > max_bytes:
                return Rejection(0, Reason.TOO_LARGE, f"inflates to more than {max_bytes} bytes", data)
            chunks.append(chunk)
            # Under the cap, zlib took the whole piece: what it did not use belongs to the next member.
            position += len(piece) - len(inflater.unused_data)
        if position >= len(data):
            return b"".join(chunks)
        if wbits == zlib.MAX_WBITS or data[position : position + 2] != GZIP_MAGIC:
            rest = len(data) - position
            return Rejection(0, Reason.BAD_COMPRESSION, f"{rest} bytes after the compressed stream", data)
    return Rejection(0, Reason.BAD_COMPRESSION, f"more than {MAX_GZIP_MEMBERS} gzip members", data)


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


def decode_record(data: bytes, limits: Limits = DEFAULT_LIMITS, exact: bool = False) -> Decoded:
    """Split one record's data into JSON objects and rejections (indices count events in the record)."""
    objects, rejections = decode_parts(data, limits, exact)
    return Decoded([(index, obj) for index, obj, _ in objects], rejections)


# One object found in a record: (index in record, object, its own text on one line or None).
Part = tuple[int, dict[str, Any], bytes | None]


def decode_parts(
    data: bytes, limits: Limits = DEFAULT_LIMITS, exact: bool = False
) -> tuple[list[Part], list[Rejection]]:
    """`decode_record` for the hot path, without the Decoded wrapper, and with each object's own text:
    the stripped line of an NDJSON record or of a one-line single-object record (None inside an array),
    which the worker forwards as it came instead of writing the object again.

    The bounds on what a record is made of are applied here (inflation, events and letters per record,
    nesting, bytes per event), so no object that comes out nests deeper or is larger than `limits`
    allow. `exact`: the objects are read again by the standard library, which keeps integers beyond 64
    bits exact (orjson reads them as floats); validation asks for it when a summed field holds one."""
    # Only gzip (0x1f 0x8b) and zlib (0x78 ..) payloads are inflated: other first bytes pass as they are.
    if data[:1] in _COMPRESSED_FIRST_BYTES:
        inflated = inflate(data, limits.inflate_budget(len(data)))
        if isinstance(inflated, Rejection):
            return [], [inflated]
    else:
        inflated = data
    if _NEWLINE in inflated:
        # More lines than the bound need at least as many newlines: shorter records are not counted. Lines
        # up to the last one that is not blank (a trailing newline adds no line).
        lines_in_text = 0
        if len(inflated) >= limits.max_events_per_record:
            lines_in_text = inflated.count(b"\n", 0, len(inflated.rstrip())) + 1
        if lines_in_text > limits.max_events_per_record:
            detail = f"{lines_in_text} lines; at most {limits.max_events_per_record} events per record"
            return [], [Rejection(0, Reason.TOO_MANY_EVENTS, detail, data, lines_in_text)]
        lines = [line for line in inflated.split(b"\n") if line and not line.isspace()]  # the non-blank ones
        if len(lines) > 1:
            try:
                first = orjson.loads(lines[0])
            except orjson.JSONDecodeError:
                first = _UNREAD
            if first is not _UNREAD:
                # After a whole JSON value only whitespace may follow, so two or more non-blank lines
                # whose first is one are no JSON document: NDJSON, without failing to read it whole first.
                return _decode_ndjson(data, inflated, limits, exact, lines, first)
    try:
        parsed = orjson.loads(inflated)
    except orjson.JSONDecodeError:
        return _decode_ndjson(data, inflated, limits, exact)
    if isinstance(parsed, dict):
        text = inflated.strip()  # one object, perhaps with a trailing newline: its own text if on one line
        size = len(text)
        if size > 2 * limits.max_depth or size > limits.max_event_bytes:  # (else it can cross neither)
            shallow = bracket_bound(text) <= limits.max_depth
            if not shallow or size > limits.max_event_bytes:  # (else it crosses neither)
                problem = structure_problem(parsed, size, True, shallow, limits)
                if problem is not None:
                    return [], [Rejection(0, problem[0], problem[1], inflated)]
        if exact:
            parsed = _exactly(text, parsed)
        return [(0, parsed, None if _NEWLINE in text else text)], []
    if isinstance(parsed, list):
        if len(parsed) > limits.max_events_per_record:
            detail = f"{len(parsed)} array elements; at most {limits.max_events_per_record} events per record"
            return [], [Rejection(0, Reason.TOO_MANY_EVENTS, detail, data, len(parsed))]
        if exact:
            parsed = _exactly(inflated, parsed)
        rejections: list[Rejection] = []
        if _DICT_ONLY.issuperset(map(type, parsed)):  # every element an object (nearly always): tupled at C speed
            objects: list[Part] = list(zip(range(len(parsed)), parsed, repeat(None)))
        else:
            objects = []
            for index, item in enumerate(parsed):
                if isinstance(item, dict):
                    objects.append((index, item, None))
                else:
                    payload = to_json_bytes(item)
                    rejections.append(Rejection(index, Reason.NOT_OBJECT, f"array element is {_kind(item)}", payload))
        size = len(inflated)
        if size > 2 * limits.max_depth or size > limits.max_event_bytes:
            shallow = bracket_bound(inflated) <= limits.max_depth
            if not shallow or size > limits.max_event_bytes:
                objects = _check_elements(objects, rejections, size, shallow, limits)
        if len(rejections) > limits.max_letters_per_record:
            return [], [_too_many_invalid(data, len(parsed), rejections, limits)]
        return objects, rejections
    return [], [Rejection(0, Reason.NOT_OBJECT, f"record is {_kind(parsed)}", inflated)]


def _exactly(text: bytes, parsed: Any) -> Any:
    """`text` read by the standard library (integers past 64 bits exact), or orjson's reading if it cannot."""
    exact = exact_loads(text)
    return exact if type(exact) is type(parsed) else parsed


def _check_elements(
    objects: list[Part], rejections: list[Rejection], size: int, shallow: bool, limits: Limits
) -> list[Part]:
    """The objects of an array record within the structure bounds; the others become rejections (their own
    JSON as payload, never their siblings'). `size` is the record's: an upper bound of each element's."""
    kept: list[Part] = []
    for part in objects:
        index, event, _ = part
        problem = structure_problem(event, size, False, shallow, limits)
        if problem is None:
            kept.append(part)
        else:
            rejections.append(Rejection(index, problem[0], problem[1], to_json_bytes(event)))
    rejections.sort(key=lambda r: r.index)
    return kept


def _too_many_invalid(data: bytes, events: int, rejections: list[Rejection], limits: Limits) -> Rejection:
    """One rejection standing for a whole record with too many invalid events (its raw bytes, its count)."""
    return too_many_invalid(data, events, [(r.reason, r.detail) for r in rejections[:10]], len(rejections), limits)


def too_many_invalid(
    data: bytes, events: int, first: list[tuple[Reason, str]], invalid: int, limits: Limits
) -> Rejection:
    reasons = ", ".join(f"{reason}: {detail[:120]}" for reason, detail in first[:3])
    detail = (
        f"{invalid} of the record's {events} events are invalid, more than "
        f"{limits.max_letters_per_record} letters per record; none counted; first: {reasons}"
    )
    return Rejection(0, Reason.TOO_MANY_INVALID, detail, data, events)


def _decode_ndjson(
    data: bytes, text: bytes, limits: Limits, exact: bool, lines: list[bytes] | None = None, first: Any = _UNREAD
) -> tuple[list[Part], list[Rejection]]:
    """`text` as NDJSON; `lines` are its non-blank lines and `first` the first one read, if done already."""
    if lines is None:
        lines = [line for line in text.split(b"\n") if line and not line.isspace()]
    if len(lines) <= 1:
        reason, detail = _classify_parse_failure(text)
        return [], [Rejection(0, reason, detail, text)]
    # A record with few brackets has no line that nests too deep; one no longer than the limit no line
    # that is too large: then the lines need no look of their own.
    shallow = len(text) <= 2 * limits.max_depth or bracket_bound(text) <= limits.max_depth
    check_lines = not shallow or len(text) > limits.max_event_bytes
    objects: list[Part] = []
    rejections: list[Rejection] = []
    parsed_any = False
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
        parsed_any = True
        if isinstance(item, dict):
            own = line.strip()
            if check_lines:
                line_shallow = shallow or len(own) <= 2 * limits.max_depth or bracket_bound(own) <= limits.max_depth
                problem = structure_problem(item, len(own), True, line_shallow, limits)
                if problem is not None:
                    rejections.append(Rejection(index, problem[0], f"line {index + 1}: {problem[1]}", own))
                    continue
            if exact:
                item = _exactly(own, item)
            objects.append((index, item, own))
        else:
            rejections.append(Rejection(index, Reason.NOT_OBJECT, f"line {index + 1} is {_kind(item)}", line))
    if not parsed_any:
        # Nothing parsed line by line either: this is one broken document, not many broken lines.
        reason, detail = _classify_parse_failure(text)
        return [], [Rejection(0, reason, detail, text)]
    if len(rejections) > limits.max_letters_per_record:
        return [], [_too_many_invalid(data, len(lines), rejections, limits)]
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
