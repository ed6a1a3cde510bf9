"""consumer/decode.py: bytes -> objects and rejections; every event in a record is accounted for."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.bounds import Limits
from consumer.decode import (
    DEFAULT_MAX_INFLATED_BYTES,
    GZIP_MAGIC,
    Decoded,
    Rejection,
    decode_parts,
    decode_record,
    inflate,
)
from consumer.reasons import Reason

EVENT = {"eventType": "page.view", "timestamp": "2019-11-15 18:05:00Z", "path": "/donate", "data": {"n": 1}}
OTHER = {"eventType": "donation.made", "timestamp": 1573841100, "data": {"amount": 12.5}}


def dumps(value: object) -> bytes:
    return orjson.dumps(value)


def only_rejection(decoded: Decoded) -> Rejection:
    assert decoded.objects == []
    assert len(decoded.rejections) == 1
    return decoded.rejections[0]


# -- plain JSON ------------------------------------------------------------------------------------


def test_single_object_is_index_zero() -> None:
    decoded = decode_record(dumps(EVENT))
    assert decoded.objects == [(0, EVENT)]
    assert decoded.rejections == []


def test_single_object_with_surrounding_whitespace_and_newlines() -> None:
    decoded = decode_record(b"\n  " + dumps(EVENT) + b"\r\n\n")
    assert decoded.objects == [(0, EVENT)]
    assert decoded.rejections == []


def test_array_of_objects_keeps_element_indexes() -> None:
    decoded = decode_record(dumps([EVENT, OTHER]))
    assert decoded.objects == [(0, EVENT), (1, OTHER)]
    assert decoded.rejections == []


def test_array_with_non_object_elements_rejects_them_at_their_index() -> None:
    decoded = decode_record(dumps([EVENT, 42, "text", OTHER, None, [1, 2], True]))
    assert decoded.objects == [(0, EVENT), (3, OTHER)]
    got = {(r.index, r.reason) for r in decoded.rejections}
    assert got == {(i, Reason.NOT_OBJECT) for i in (1, 2, 4, 5, 6)}
    payloads = {r.index: r.payload for r in decoded.rejections}
    assert orjson.loads(payloads[1]) == 42
    assert orjson.loads(payloads[2]) == "text"
    assert orjson.loads(payloads[4]) is None
    assert orjson.loads(payloads[5]) == [1, 2]
    assert orjson.loads(payloads[6]) is True


def test_empty_array_holds_no_events() -> None:
    assert decode_record(b"[]") == Decoded([], [])


def test_deeply_nested_array_element_is_rejected_not_raised() -> None:
    # orjson reads 1024 levels but writes only ~254: the element's payload cannot be re-encoded.
    deep = b"[" * 400 + b"]" * 400
    data = b"[" + dumps(EVENT) + b"," + deep + b"]"
    decoded = decode_record(data)
    assert decoded.objects == [(0, EVENT)]
    [rejection] = decoded.rejections
    assert (rejection.index, rejection.reason) == (1, Reason.NOT_OBJECT)
    assert rejection.payload  # the bytes are kept for the DLQ


@pytest.mark.parametrize(
    ("data", "kind"),
    [(b"42", "a number"), (b'"hello"', "a string"), (b"null", "null"), (b"true", "a boolean"), (b"1.5", "a number")],
)
def test_scalar_json_is_not_object(data: bytes, kind: str) -> None:
    rejection = only_rejection(decode_record(data))
    assert (rejection.index, rejection.reason) == (0, Reason.NOT_OBJECT)
    assert kind in rejection.detail
    assert rejection.payload == data


def test_empty_bytes_are_not_json() -> None:
    rejection = only_rejection(decode_record(b""))
    assert (rejection.index, rejection.reason, rejection.payload) == (0, Reason.NOT_JSON, b"")


def test_whitespace_only_is_not_json() -> None:
    rejection = only_rejection(decode_record(b" \n\n  \n"))
    assert rejection.reason is Reason.NOT_JSON


def test_broken_json_is_not_json_with_the_whole_record() -> None:
    data = b'{"eventType": "page.view", '
    rejection = only_rejection(decode_record(data))
    assert (rejection.index, rejection.reason, rejection.payload) == (0, Reason.NOT_JSON, data)


def test_non_utf8_is_not_utf8() -> None:
    data = b'{"eventType": "caf\xe9"}'
    rejection = only_rejection(decode_record(data))
    assert (rejection.index, rejection.reason, rejection.payload) == (0, Reason.NOT_UTF8, data)
    assert "byte 18" in rejection.detail


# -- NDJSON ------------------------------------------------------------------------------------------


def test_ndjson_objects_in_line_order() -> None:
    data = dumps(EVENT) + b"\n" + dumps(OTHER) + b"\n"
    decoded = decode_record(data)
    assert decoded.objects == [(0, EVENT), (1, OTHER)]
    assert decoded.rejections == []


def test_ndjson_blank_lines_are_ignored_and_do_not_count() -> None:
    data = b"\n\n" + dumps(EVENT) + b"\n   \n\r\n" + dumps(OTHER) + b"\n\n"
    decoded = decode_record(data)
    assert decoded.objects == [(0, EVENT), (1, OTHER)]
    assert decoded.rejections == []


def test_ndjson_crlf_line_endings() -> None:
    decoded = decode_record(dumps(EVENT) + b"\r\n" + dumps(OTHER) + b"\r\n")
    assert decoded.objects == [(0, EVENT), (1, OTHER)]


def test_ndjson_bad_line_is_not_json_at_its_index() -> None:
    bad = b'{"eventType": broken'
    data = dumps(EVENT) + b"\n\n" + bad + b"\n" + dumps(OTHER)
    decoded = decode_record(data)
    assert decoded.objects == [(0, EVENT), (2, OTHER)]
    [rejection] = decoded.rejections
    assert (rejection.index, rejection.reason, rejection.payload) == (1, Reason.NOT_JSON, bad)
    assert rejection.detail.startswith("line 2:")


def test_ndjson_non_utf8_line_is_not_utf8_at_its_index() -> None:
    bad = b'{"x": "\xff"}'
    decoded = decode_record(bad + b"\n" + dumps(EVENT))
    assert decoded.objects == [(1, EVENT)]
    [rejection] = decoded.rejections
    assert (rejection.index, rejection.reason, rejection.payload) == (0, Reason.NOT_UTF8, bad)


def test_ndjson_scalar_and_array_lines_are_not_object() -> None:
    decoded = decode_record(b"7\n" + dumps(EVENT) + b'\n[{"a": 1}]\n"s"')
    assert decoded.objects == [(1, EVENT)]
    assert [(r.index, r.reason, r.payload) for r in decoded.rejections] == [
        (0, Reason.NOT_OBJECT, b"7"),
        (2, Reason.NOT_OBJECT, b'[{"a": 1}]'),
        (3, Reason.NOT_OBJECT, b'"s"'),
    ]


def test_multi_line_garbage_is_one_broken_document() -> None:
    data = b'{\n  "eventType": "x",\n  oops\n}'
    rejection = only_rejection(decode_record(data))
    assert (rejection.index, rejection.reason, rejection.payload) == (0, Reason.NOT_JSON, data)


# -- compression -------------------------------------------------------------------------------------


def test_gzip_is_inflated() -> None:
    data = gzip.compress(dumps([EVENT, OTHER]))
    assert decode_record(data).objects == [(0, EVENT), (1, OTHER)]


@pytest.mark.parametrize("level", [1, 6, 9, 0])
def test_zlib_is_inflated(level: int) -> None:
    payload = dumps(EVENT) + b"\n" + dumps(OTHER)
    data = zlib.compress(payload, level)
    assert data[:1] == b"x"
    assert decode_record(data).objects == [(0, EVENT), (1, OTHER)]


def test_inflate_passes_plain_bytes_through_unchanged() -> None:
    data = dumps(EVENT)
    assert inflate(data) is data


def test_concatenated_gzip_members_are_all_inflated() -> None:
    # `cat a.gz b.gz` is a valid gzip file; dropping the second member would lose events silently.
    data = gzip.compress(dumps(EVENT) + b"\n") + gzip.compress(dumps(OTHER) + b"\n")
    decoded = decode_record(data)
    assert decoded.objects == [(0, EVENT), (1, OTHER)]
    assert decoded.rejections == []


@pytest.mark.parametrize("compress", [gzip.compress, zlib.compress], ids=["gzip", "zlib"])
def test_bytes_after_the_compressed_stream_are_bad_compression(compress: Callable[[bytes], bytes]) -> None:
    data = compress(dumps(EVENT)) + dumps(OTHER)
    rejection = only_rejection(decode_record(data))
    assert (rejection.index, rejection.reason, rejection.payload) == (0, Reason.BAD_COMPRESSION, data)


def test_decompression_bomb_is_too_large() -> None:
    bomb = zlib.compress(b" " * (DEFAULT_MAX_INFLATED_BYTES + 1), 9)
    assert len(bomb) < 20_000
    rejection = only_rejection(decode_record(bomb))
    assert (rejection.index, rejection.reason, rejection.payload) == (0, Reason.TOO_LARGE, bomb)


def test_gzip_bomb_is_too_large_with_a_small_cap() -> None:
    bomb = gzip.compress(b"\0" * 1_000_000)
    rejection = only_rejection(decode_record(bomb, Limits(max_inflated_bytes=64 * 1024, max_inflation_ratio=100_000)))
    assert rejection.reason is Reason.TOO_LARGE


def test_many_small_gzip_members_cannot_exceed_the_cap_together() -> None:
    member = gzip.compress(b" " * 1000)
    assert isinstance(inflate(member * 10, 10_000), bytes)
    rejection = inflate(member * 11, 10_000)
    assert isinstance(rejection, Rejection)
    assert rejection.reason is Reason.TOO_LARGE


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 3000), cap=st.integers(1, 3000), seed=st.binary(min_size=1, max_size=8), use_gzip=st.booleans()
)
def test_cap_is_exact(size: int, cap: int, seed: bytes, use_gzip: bool) -> None:
    payload = (seed * (size // len(seed) + 1))[:size]
    data = gzip.compress(payload) if use_gzip else zlib.compress(payload)
    result = inflate(data, cap)
    if size <= cap:
        assert result == payload
    else:
        assert isinstance(result, Rejection)
        assert result.reason is Reason.TOO_LARGE


@pytest.mark.parametrize("compress", [gzip.compress, zlib.compress], ids=["gzip", "zlib"])
def test_truncated_stream_is_bad_compression(compress: Callable[[bytes], bytes]) -> None:
    data = compress(dumps([EVENT] * 20))
    for cut in (3, len(data) // 2, len(data) - 1):
        rejection = only_rejection(decode_record(data[:cut]))
        assert (rejection.index, rejection.reason, rejection.payload) == (0, Reason.BAD_COMPRESSION, data[:cut])


def test_corrupt_gzip_is_bad_compression() -> None:
    data = bytearray(gzip.compress(dumps([EVENT] * 20)))
    data[12:20] = b"\xff" * 8  # inside the deflate stream
    rejection = only_rejection(decode_record(bytes(data)))
    assert rejection.reason is Reason.BAD_COMPRESSION
    assert rejection.payload == bytes(data)


def test_gzip_magic_alone_is_bad_compression() -> None:
    assert only_rejection(decode_record(GZIP_MAGIC)).reason is Reason.BAD_COMPRESSION


def test_gzip_with_bad_crc_is_bad_compression() -> None:
    data = bytearray(gzip.compress(dumps(EVENT)))
    data[-8] ^= 0xFF  # CRC32 of the trailer
    assert only_rejection(decode_record(bytes(data))).reason is Reason.BAD_COMPRESSION


def test_compressed_non_utf8_is_not_utf8() -> None:
    assert only_rejection(decode_record(gzip.compress(b"\xff\xfe\xfd"))).reason is Reason.NOT_UTF8


# -- the property: never raises, every event accounted for ------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
event_objects = st.builds(
    lambda t, ts, extra: {"eventType": t, "timestamp": ts, **extra},
    st.sampled_from(["page.view", "click", "donation.made"]),
    st.integers(0, 2**41),
    json_objects,
)
objects = event_objects | json_objects
# Lines that are not JSON and cannot combine with their neighbours into one valid document.
garbage_lines = st.sampled_from([b"nope", b'{"a":', b"[1,", b'"unterminated', b"\xff\xfe", b"{'single': 1}", b"1 2"])


@st.composite
def ndjson_records(draw: st.DrawFn) -> tuple[bytes, list[object]]:
    """(record bytes, the non-blank lines as dict | scalar | list | bytes-that-are-not-JSON)."""
    items = draw(
        st.lists(objects | json_scalars | st.lists(json_scalars, max_size=2) | garbage_lines, min_size=2, max_size=8)
    )
    out = []
    for item in items:
        out.append(draw(st.sampled_from([b"", b"\n", b"  \n", b"\r\n\n"])))
        out.append(item if isinstance(item, bytes) else dumps(item))
        out.append(b"\n")
    return b"".join(out), items


def check_accounting(decoded: Decoded) -> None:
    object_indexes = [i for i, _ in decoded.objects]
    rejection_indexes = [r.index for r in decoded.rejections]
    assert len(set(object_indexes)) == len(object_indexes)
    assert len(set(rejection_indexes)) == len(rejection_indexes)
    assert not set(object_indexes) & set(rejection_indexes)
    assert all(isinstance(obj, dict) for _, obj in decoded.objects)
    for rejection in decoded.rejections:
        assert isinstance(rejection.reason, Reason)
        assert isinstance(rejection.payload, bytes)
        assert rejection.index >= 0


def all_indexes(decoded: Decoded) -> list[int]:
    return sorted([i for i, _ in decoded.objects] + [r.index for r in decoded.rejections])


def compressed(data: bytes, how: str) -> bytes:
    return {"plain": data, "gzip": gzip.compress(data), "zlib": zlib.compress(data)}[how]


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=300)
    | st.binary(max_size=100).map(lambda b: GZIP_MAGIC + b)
    | st.binary(max_size=100).map(lambda b: b"\x78\x9c" + b)
    | st.binary(max_size=200).map(gzip.compress)
    | st.binary(max_size=200).map(zlib.compress)
)
def test_any_bytes_never_raise_and_are_accounted_for(data: bytes) -> None:
    decoded = decode_record(data)
    check_accounting(decoded)
    if not decoded.objects and not decoded.rejections:
        # Only an empty array holds nothing to count.
        inflated = inflate(data)
        assert isinstance(inflated, bytes)
        assert orjson.loads(inflated) == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=objects, how=st.sampled_from(["plain", "gzip", "zlib"]))
def test_any_single_object_is_index_zero(obj: dict, how: str) -> None:
    decoded = decode_record(compressed(dumps(obj), how))
    assert decoded.objects == [(0, obj)]
    assert decoded.rejections == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(objects | json_values, max_size=8), how=st.sampled_from(["plain", "gzip", "zlib"]))
def test_any_array_covers_exactly_its_elements(items: list, how: str) -> None:
    decoded = decode_record(compressed(dumps(items), how))
    check_accounting(decoded)
    assert all_indexes(decoded) == list(range(len(items)))
    for index, obj in decoded.objects:
        assert obj == items[index]
    for rejection in decoded.rejections:
        assert not isinstance(items[rejection.index], dict)
        assert rejection.reason is Reason.NOT_OBJECT
        assert orjson.loads(rejection.payload) == orjson.loads(dumps(items[rejection.index]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=ndjson_records(), how=st.sampled_from(["plain", "gzip", "zlib"]))
def test_any_ndjson_covers_exactly_its_lines(record: tuple[bytes, list[object]], how: str) -> None:
    data, items = record
    decoded = decode_record(compressed(data, how))
    check_accounting(decoded)
    if all(isinstance(item, bytes) for item in items):
        # No line is JSON: one broken document, kept whole for the DLQ.
        rejection = only_rejection(decoded)
        assert rejection.index == 0
        assert rejection.reason in (Reason.NOT_JSON, Reason.NOT_UTF8)
        assert rejection.payload == data
        return
    assert all_indexes(decoded) == list(range(len(items)))
    for index, obj in decoded.objects:
        assert obj == items[index]
    for rejection in decoded.rejections:
        item = items[rejection.index]
        assert not isinstance(item, dict)
        if isinstance(item, bytes):
            assert rejection.payload == item
            assert rejection.reason is (Reason.NOT_UTF8 if item == b"\xff\xfe" else Reason.NOT_JSON)
        else:
            assert rejection.reason is Reason.NOT_OBJECT
            assert orjson.loads(rejection.payload) == orjson.loads(dumps(item))


@settings(max_examples=100, deadline=None)
@given(record=ndjson_records() | objects.map(lambda o: (dumps(o), [o])), cut=st.integers(1, 10_000))
def test_any_truncated_gzip_is_one_bad_compression_rejection(record: tuple[bytes, list[object]], cut: int) -> None:
    data = gzip.compress(record[0])
    truncated = data[: cut % len(data)]
    decoded = decode_record(truncated)
    check_accounting(decoded)
    if truncated[:2] == GZIP_MAGIC:
        rejection = only_rejection(decoded)
        assert rejection.reason is Reason.BAD_COMPRESSION
        assert rejection.payload == truncated


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b'{"a": 1}', b'{"a": 1}'),
        (b'  {"a": 1}\r\n', b'{"a": 1}'),  # a trailing newline: still one line
        (b'{\n  "a": 1\n}', None),  # pretty-printed: no line of its own
        (b'[{"a": 1}, {"b": 2}]', None),  # array elements: none either
    ],
)
def test_objects_come_with_their_own_line_when_they_have_one(data: bytes, text: bytes | None) -> None:
    objects, _ = decode_parts(data)
    assert objects[0][2] == text


def test_ndjson_objects_come_with_their_lines() -> None:
    objects, rejections = decode_parts(b'{"a": 1}\n 7\n  {"b": 2} \r\n')
    assert [(index, text) for index, _, text in objects] == [(0, b'{"a": 1}'), (2, b'{"b": 2}')]
    assert [r.index for r in rejections] == [1]
