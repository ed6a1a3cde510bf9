"""The streaming splitter: every format gives back exactly the events written; malformed stretches are
reported (object key offset, reason) and the split goes on; chunking never changes the result."""

from __future__ import annotations

import gzip
import itertools
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.split import (
    BAD_COMPRESSION,
    NOT_JSON,
    TOO_LARGE,
    TRUNCATED,
    Event,
    Malformed,
    Piece,
    split_bytes,
    split_chunks,
)

# Strings full of the characters a naive splitter trips on.
TRICKY = st.sampled_from([*list('{}[]",:\\\n\r\t /'), "}{", '\\"', "é", "\u2028", "😀", "\x00"])
TEXT = st.lists(st.one_of(TRICKY, st.text(max_size=4)), max_size=6).map("".join)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=8
)
EVENTS = st.lists(st.dictionaries(TEXT, VALUES, max_size=5), max_size=12)
FORMATS = ("ndjson", "crlf", "concatenated", "spaced", "array", "pretty_array", "pretty_concatenated")


def serialize(events: list[dict[str, Any]], fmt: str) -> bytes:
    if fmt == "ndjson":
        return b"".join(orjson.dumps(e) + b"\n" for e in events)
    if fmt == "crlf":
        return b"".join(orjson.dumps(e) + b"\r\n\r\n" for e in events)
    if fmt == "concatenated":  # Firehose's default: no delimiter at all
        return b"".join(orjson.dumps(e) for e in events)
    if fmt == "spaced":
        return b" ".join(orjson.dumps(e) for e in events) + b"\t"
    if fmt == "array":
        return orjson.dumps(events)
    if fmt == "pretty_array":
        return orjson.dumps(events, option=orjson.OPT_INDENT_2) + b"\n"
    if fmt == "pretty_concatenated":
        return b"".join(orjson.dumps(e, option=orjson.OPT_INDENT_2) + b"\n" for e in events)
    raise AssertionError(fmt)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def events_of(pieces: list[Piece]) -> list[dict[str, Any]]:
    return [p.obj for p in pieces if isinstance(p, Event)]


def malformed_of(pieces: list[Piece]) -> list[Malformed]:
    return [p for p in pieces if isinstance(p, Malformed)]


def assert_increasing(pieces: list[Piece]) -> None:
    offsets = [p.offset for p in pieces]
    assert offsets == sorted(set(offsets)), "pieces come in strictly increasing offset order"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=EVENTS, fmt=st.sampled_from(FORMATS), compress=st.booleans(), cuts=st.lists(st.integers(0, 10**6)))
def test_every_format_gives_back_exactly_the_events_written(
    events: list[dict[str, Any]], fmt: str, compress: bool, cuts: list[int]
) -> None:
    raw = serialize(events, fmt)
    data = gzip.compress(raw) if compress else raw
    pieces = list(split_chunks(chunked(data, cuts)))
    assert malformed_of(pieces) == []
    assert events_of(pieces) == events
    assert_increasing(pieces)
    for piece in pieces:
        assert isinstance(piece, Event)
        assert raw[piece.offset : piece.offset + len(piece.data)] == piece.data  # the bytes as stored
        assert orjson.loads(piece.data) == piece.obj


JUNK = st.text(
    alphabet=st.characters(exclude_characters="{[]\n\r", exclude_categories=["Cs"]), min_size=1, max_size=30
).filter(lambda s: s.strip())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(
        st.one_of(st.tuples(st.just("event"), EVENTS.map(lambda e: e[:1])), st.tuples(st.just("junk"), JUNK))
    ),
    cuts=st.lists(st.integers(0, 10**6)),
)
def test_junk_lines_are_reported_and_every_event_line_survives(lines: list[tuple[str, Any]], cuts: list[int]) -> None:
    data = b""
    expected: list[dict[str, Any]] = []
    junk_spans: list[tuple[int, int]] = []
    for kind, value in lines:
        if kind == "event":
            for event in value:
                data += orjson.dumps(event) + b"\n"
                expected.append(event)
        else:
            encoded = value.encode()
            junk_spans.append((len(data), len(data) + len(encoded)))
            data += encoded + b"\n"
    pieces = list(split_chunks(chunked(data, cuts)))
    assert events_of(pieces) == expected
    assert_increasing(pieces)
    bad = malformed_of(pieces)
    for start, end in junk_spans:  # every junk line is reported, where it is
        assert any(m.offset < end and start < m.offset + max(m.length, 1) for m in bad), (start, end, bad)
    for m in bad:  # and nothing else is
        assert any(start <= m.offset < end for start, end in junk_spans), m
        assert m.reason == NOT_JSON


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(st.tuples(st.dictionaries(TEXT, VALUES, min_size=1, max_size=4), st.booleans(), st.floats(0, 1))),
    cuts=st.lists(st.integers(0, 10**6)),
)
def test_truncated_lines_are_reported_and_the_next_lines_still_split(
    lines: list[tuple[dict[str, Any], bool, float]], cuts: list[int]
) -> None:
    """What a writer that died mid-record leaves: a strict prefix of an object, then the next line."""
    data = b""
    expected = []
    for event, cut, where in lines:
        encoded = orjson.dumps(event)
        if cut:
            data += encoded[: max(1, int(len(encoded) * where) % len(encoded))] + b"\n"
        else:
            data += encoded + b"\n"
            expected.append(event)
    pieces = list(split_chunks(chunked(data, cuts)))
    assert events_of(pieces) == expected
    assert len(malformed_of(pieces)) >= sum(1 for _, cut, _ in lines if cut) > 0 or not any(c for _, c, _ in lines)
    assert_increasing(pieces)


@settings(deadline=None)
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 10**6)))
def test_arbitrary_bytes_never_raise_and_chunking_never_changes_the_result(data: bytes, cuts: list[int]) -> None:
    whole = split_bytes(data)
    assert list(split_chunks(chunked(data, cuts))) == whole
    assert_increasing(whole)


@pytest.mark.parametrize(
    ("data", "events", "bad"),
    [
        (b'{"a":1}\n{"b":2}\n', [{"a": 1}, {"b": 2}], []),
        (b'{"a":1}{"b":"}{"}{"c":3}', [{"a": 1}, {"b": "}{"}, {"c": 3}], []),
        (b'[{"a":1},{"b":2}][{"c":3}]', [{"a": 1}, {"b": 2}, {"c": 3}], []),
        (b'{"a":1}\ngarbage\n{"b":2}\n', [{"a": 1}, {"b": 2}], [(8, 7, NOT_JSON)]),
        (b'{"a":1}\n{"b":tru}\n{"c":3}\n', [{"a": 1}, {"c": 3}], [(8, 9, NOT_JSON)]),
        (b'{"a":1}\n{"b":"x\n{"c":3}\n', [{"a": 1}, {"c": 3}], [(8, 7, NOT_JSON)]),
        (b'{"a":1}{"b":2', [{"a": 1}], [(7, 6, TRUNCATED)]),
        (b'{"a":1} xyz {"b":2}', [{"a": 1}, {"b": 2}], [(8, 4, NOT_JSON)]),
        (b'[{"a":1}, 5, {"b":2}]', [{"a": 1}, {"b": 2}], [(10, 3, NOT_JSON)]),
        (b'[{"a":1}', [{"a": 1}], [(8, 0, TRUNCATED)]),
        (b'"a string"\n{"a":1}\n', [{"a": 1}], [(0, 10, NOT_JSON)]),
        (b"", [], []),
    ],
)
def test_examples(data: bytes, events: list[dict[str, Any]], bad: list[tuple[int, int, str]]) -> None:
    pieces = split_bytes(data)
    assert events_of(pieces) == events
    assert [(m.offset, m.length, m.reason) for m in malformed_of(pieces)] == bad


def test_a_corrupt_gzip_object_is_reported_after_the_events_before_the_damage() -> None:
    good = b"".join(orjson.dumps({"n": i, "pad": "x" * 50}) + b"\n" for i in range(2000))
    data = bytearray(gzip.compress(good))
    data[len(data) // 2 : len(data) // 2 + 16] = b"\xff" * 16
    pieces = split_bytes(bytes(data))
    assert malformed_of(pieces)[-1].reason == BAD_COMPRESSION
    assert [e["n"] for e in events_of(pieces)] == list(range(len(events_of(pieces))))  # a clean prefix
    truncated = split_bytes(gzip.compress(good)[:-30])
    assert malformed_of(truncated)[-1].reason == BAD_COMPRESSION


def test_multi_member_gzip_and_trailing_padding() -> None:
    data = gzip.compress(b'{"a":1}\n') + gzip.compress(b'{"b":2}') + b"\x00" * 8
    assert events_of(split_bytes(data)) == [{"a": 1}, {"b": 2}]


def test_an_object_over_the_cap_is_reported_too_large_and_the_next_line_splits() -> None:
    data = orjson.dumps({"blob": "x" * 5000}) + b'\n{"b":2}\n'
    for chunk in (len(data), 100, 7):
        pieces = list(split_chunks(chunked(data, list(range(0, len(data), chunk))), max_event=1000))
        assert events_of(pieces) == [{"b": 2}]
        assert [(m.offset, m.reason) for m in malformed_of(pieces)] == [(0, TOO_LARGE)]


def test_memory_stays_bounded_by_the_event_not_the_object() -> None:
    """A 20 MB object streamed in 64 KiB chunks never holds much more than a chunk in the buffer."""
    from replay.split import Splitter

    line = orjson.dumps({"eventType": "page.view", "pad": "y" * 200}) + b"\n"
    splitter = Splitter()
    count, largest = 0, 0
    chunk = line * 300
    for _ in range(20_000_000 // len(chunk)):
        count += sum(1 for p in splitter.feed(chunk) if isinstance(p, Event))
        largest = max(largest, len(splitter.buf))
    count += sum(1 for p in splitter.close() if isinstance(p, Event))
    assert count == 300 * (20_000_000 // len(chunk))
    assert largest < 2 * len(chunk)
