"""consumer/bounds.py and the bounds decode applies (issue 11): every bound at its edge.

Exactly at a limit passes; one past it is a rejection with its reason and the rejected event's own
bytes (never its siblings, which may be counted). The checks never recurse on hostile input.
"""

from __future__ import annotations

import gzip
import json
import random
import zlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from aggregations import hll
from aggregations.memory_store import MemoryStore
from aggregations.partials import merge_partials
from consumer.bounds import (
    INFLATION_FLOOR_BYTES,
    MAX_GZIP_MEMBERS,
    Limits,
    depth_exceeds,
    to_json_bytes,
)
from consumer.decode import Decoded, Rejection, decode_parts, decode_record
from consumer.dlq import DeadLetter
from consumer.dlq.memory import MemoryDeadLetterQueue
from consumer.reasons import Reason
from consumer.sinks.memory import MemorySink
from consumer.validate import READ_AGAIN, Invalid, Rules, check_event, parse_timestamp_ms
from consumer.worker import Cadence, Outputs, ShardWorker, Stores
from streamkpi.config import AppConfig, default_config_text, load_config, parse_config

CONFIG = load_config(None)  # the default config: page_views by path, donation sums, distinct userId, ...
LIMITS = CONFIG.limits
T = 1_764_000_000_000
ARRIVAL_MS = T + 60_000
# The default config, and a sum over a type with no schema (so a number's range is the only thing judged).
PAYMENTS = parse_config(
    default_config_text() + '\n[metrics.payments]\nagg = "sum"\nfield = "data.amount"\ntypes = ["payment"]\n',
    "payments",
)
EAGER = Cadence(redis_flush_seconds=0, dynamodb_flush_seconds=0, checkpoint_seconds=0, store_retry_seconds=0)


class Judged:
    """What a ShardWorker (in-memory stores, DLQ and archive sink) makes of records: letters, forwards, stores."""

    def __init__(self, *datas: bytes, config: AppConfig = CONFIG) -> None:
        self.dlq, self.sink, self.durable = MemoryDeadLetterQueue(), MemorySink("archive"), MemoryStore("dynamodb")
        stores, outputs = Stores(self.durable, MemoryStore("redis")), Outputs(self.dlq, {"archive": self.sink})
        worker = ShardWorker("shard-0", "events", config.pipeline, stores, outputs, EAGER)
        worker.process([(data, str(n + 1), 0, "pk", ARRIVAL_MS) for n, data in enumerate(datas)])
        worker.flush_durable()

    @property
    def letters(self) -> list[DeadLetter]:
        return self.dlq.letters

    @property
    def forwarded(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.sink.events]  # (integers past 64 bits exactly)

    def value(self, metric: str, resolution: str = "1m") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for (res, _, _), partial in self.durable.items.items():
            if res == resolution:
                out.update(merge_partials([partial]).get(metric, {}))
        return out


def click(**extra: Any) -> dict[str, Any]:
    return {"eventType": "click", "timestamp": T, **extra}


def page_view(path: Any) -> dict[str, Any]:
    return {"eventType": "page.view", "timestamp": T, "path": path}


def donation(amount: Any) -> dict[str, Any]:
    return {
        "eventType": "donation.made",
        "timestamp": T,
        "data": {"amount": amount, "currency": "GBP", "charityId": "c"},
    }


def donation_text(amount_literal: str) -> bytes:
    """A donation whose amount is written as this literal (integers past 64 bits cannot go through orjson)."""
    return b'{"eventType":"donation.made","timestamp":%d,"data":{"amount":%s,"currency":"GBP","charityId":"c"}}' % (
        T,
        amount_literal.encode(),
    )


def nested(levels: int) -> list[Any]:
    """A list nested `levels` deep ([] is one level), built without recursion."""
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def only_rejection(decoded: Decoded) -> Rejection:
    assert decoded.objects == []
    assert len(decoded.rejections) == 1, decoded.rejections
    return decoded.rejections[0]


def sized(target: int, make: Any = click) -> dict[str, Any]:
    """An event whose compact JSON is exactly `target` bytes."""
    base = len(orjson.dumps(make(data={"blob": ""})))
    event = make(data={"blob": "x" * (target - base)})
    assert len(orjson.dumps(event)) == target
    return event


# -- nesting depth -------------------------------------------------------------------------------------


@pytest.mark.parametrize("padded", [False, True], ids=["few-brackets", "checked"])
def test_depth_exactly_at_the_limit_passes_and_one_deeper_is_too_deep(padded: bool) -> None:
    # `padded`: brackets in a string defeat the bracket-count shortcut, so depth_exceeds really runs.
    pad = {"note": "[" * (LIMITS.max_depth + 1)} if padded else {}
    at = click(data=nested(LIMITS.max_depth - 1), **pad)  # the event is level 1
    past = click(data=nested(LIMITS.max_depth), **pad)
    assert decode_record(orjson.dumps(at), LIMITS).objects == [(0, at)]
    rejection = only_rejection(decode_record(orjson.dumps(past), LIMITS))
    assert (rejection.index, rejection.reason) == (0, Reason.TOO_DEEP)
    assert rejection.payload == orjson.dumps(past)
    assert rejection.detail == f"objects and arrays nest deeper than {LIMITS.max_depth} levels"


def test_too_deep_array_element_is_rejected_alone_with_its_own_bytes() -> None:
    at = click(data=nested(LIMITS.max_depth - 1))
    past = click(data=nested(LIMITS.max_depth))
    decoded = decode_record(orjson.dumps([at, past, click()]), LIMITS)
    assert decoded.objects == [(0, at), (2, click())]
    [rejection] = decoded.rejections
    assert (rejection.index, rejection.reason, rejection.payload) == (1, Reason.TOO_DEEP, orjson.dumps(past))


def test_too_deep_ndjson_line_is_rejected_alone_with_its_own_line() -> None:
    past_line = orjson.dumps(click(data=nested(LIMITS.max_depth)))
    data = orjson.dumps(click()) + b"\n" + past_line + b"  \n" + orjson.dumps(click(data=nested(LIMITS.max_depth - 1)))
    decoded = decode_record(data, LIMITS)
    assert [i for i, _ in decoded.objects] == [0, 2]
    [rejection] = decoded.rejections
    assert (rejection.index, rejection.reason, rejection.payload) == (1, Reason.TOO_DEEP, past_line)
    assert rejection.detail.startswith("line 2: ")


def test_a_page_view_path_nested_1000_deep_is_too_deep_not_an_exception() -> None:
    # Issue 11 item 1: 2 KB that used to raise RecursionError in the fold.
    data = orjson.dumps(page_view([])).replace(b"[]", b"[" * 1000 + b"]" * 1000)
    assert len(data) < 2_100
    rejection = only_rejection(decode_record(data, LIMITS))
    assert (rejection.reason, rejection.payload) == (Reason.TOO_DEEP, data)


@pytest.mark.parametrize("limit", [2, 5, 254])
def test_a_configured_depth_limit_is_exact(limit: int) -> None:
    bounds = Limits(max_depth=limit)
    pad = {"note": "{" * 300}
    at, past = to_json_bytes(click(data=nested(limit - 1), **pad)), to_json_bytes(click(data=nested(limit), **pad))
    assert decode_record(at, bounds).rejections == []
    rejection = only_rejection(decode_record(past, bounds))
    assert (rejection.reason, rejection.payload) == (Reason.TOO_DEEP, past)


def test_depth_exceeds_is_iterative_on_a_100000_deep_list() -> None:
    deep = nested(100_000)
    assert depth_exceeds(deep, 32) is True
    assert depth_exceeds(deep, 99_999) is True
    assert depth_exceeds(deep, 100_000) is False


def test_depth_exceeds_counts_objects_and_arrays_and_ignores_scalars() -> None:
    assert depth_exceeds(1, 1) is False
    assert depth_exceeds("[[[[", 1) is False
    assert depth_exceeds({}, 1) is False
    assert depth_exceeds({"a": []}, 1) is True
    assert depth_exceeds({"a": [{"b": 1}]}, 3) is False
    assert depth_exceeds({"a": [{"b": 1}]}, 2) is True
    assert depth_exceeds([1, "x", [2, {"c": None}]], 2) is True  # a sibling deeper than the first child
    assert depth_exceeds([[1], [[2]]], 3) is False


# -- to_json_bytes -----------------------------------------------------------------------------------


def test_to_json_bytes_writes_a_900_deep_value_orjson_refuses() -> None:
    deep = nested(900)
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps(deep)
    assert to_json_bytes(deep) == b"[" * 900 + b"]" * 900
    assert to_json_bytes({"a": deep}) == b'{"a":' + b"[" * 900 + b"]" * 900 + b"}"


def test_to_json_bytes_writes_integers_past_64_bits_exactly() -> None:
    assert to_json_bytes(2**70) == b"1180591620717411303424"
    assert to_json_bytes({"n": -(2**70), "s": "é"}) == '{"n":-1180591620717411303424,"s":"é"}'.encode()
    assert to_json_bytes({"a": 1.5}) == b'{"a":1.5}'


# -- bytes per event -----------------------------------------------------------------------------------


def test_event_exactly_max_event_bytes_passes_and_one_more_is_too_large() -> None:
    limit = LIMITS.max_event_bytes
    at, past = orjson.dumps(sized(limit)), orjson.dumps(sized(limit + 1))
    assert decode_record(at, LIMITS).objects == [(0, orjson.loads(at))]
    rejection = only_rejection(decode_record(past, LIMITS))
    assert (rejection.index, rejection.reason, rejection.payload) == (0, Reason.TOO_LARGE, past)
    assert rejection.detail == f"event of {limit + 1} bytes; at most {limit}"


def test_too_large_array_element_carries_its_own_json_never_its_siblings() -> None:
    limit = LIMITS.max_event_bytes
    at, past = sized(limit), sized(limit + 1)
    decoded = decode_record(orjson.dumps([click(), past, at]), LIMITS)
    assert decoded.objects == [(0, click()), (2, at)]
    [rejection] = decoded.rejections
    assert (rejection.index, rejection.reason, rejection.payload) == (1, Reason.TOO_LARGE, orjson.dumps(past))
    assert rejection.detail == f"event of {limit + 1} bytes; at most {limit}"


def test_too_large_ndjson_line_carries_its_own_line() -> None:
    limit = LIMITS.max_event_bytes
    past = orjson.dumps(sized(limit + 1))
    data = orjson.dumps(sized(limit)) + b"\n" + past + b"\n" + orjson.dumps(click()) + b"\n"
    decoded = decode_record(data, LIMITS)
    assert [i for i, _ in decoded.objects] == [0, 2]
    [rejection] = decoded.rejections
    assert (rejection.index, rejection.reason, rejection.payload) == (1, Reason.TOO_LARGE, past)


# -- events per record ---------------------------------------------------------------------------------


def test_array_of_max_events_passes_and_one_more_is_one_too_many_events_letter() -> None:
    bounds = Limits(max_events_per_record=5)
    assert len(decode_record(orjson.dumps([click()] * 5), bounds).objects) == 5
    data = orjson.dumps([click()] * 6)
    rejection = only_rejection(decode_record(data, bounds))
    assert (rejection.index, rejection.reason, rejection.payload, rejection.events) == (
        0,
        Reason.TOO_MANY_EVENTS,
        data,
        6,
    )


def test_ndjson_of_max_events_passes_and_one_more_is_one_too_many_events_letter() -> None:
    bounds = Limits(max_events_per_record=5)
    line = orjson.dumps(click())
    assert len(decode_record(b"\n".join([line] * 5), bounds).objects) == 5
    data = b"\n".join([line] * 6)
    rejection = only_rejection(decode_record(data, bounds))
    assert (rejection.index, rejection.reason, rejection.payload, rejection.events) == (
        0,
        Reason.TOO_MANY_EVENTS,
        data,
        6,
    )


def test_compressed_ndjson_of_too_many_events_carries_the_raw_record() -> None:
    bounds = Limits(max_events_per_record=5)
    data = gzip.compress(b"\n".join([orjson.dumps(click())] * 6))
    rejection = only_rejection(decode_record(data, bounds))
    assert (rejection.reason, rejection.payload, rejection.events) == (Reason.TOO_MANY_EVENTS, data, 6)


def test_ndjson_of_max_events_with_a_trailing_newline_is_not_too_many_events() -> None:
    """Blank lines do not count as events (test_decode: ndjson_blank_lines_are_ignored_and_do_not_count), and
    archives write every event as a line with its newline: 5 events + "\\n" are 5 events, not 6."""
    bounds = Limits(max_events_per_record=5)
    data = b"".join(orjson.dumps(click()) + b"\n" for _ in range(5))
    decoded = decode_record(data, bounds)
    assert decoded.rejections == []
    assert len(decoded.objects) == 5


# -- letters per record ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["ndjson", "array"])
def test_max_letters_invalid_events_give_that_many_letters(form: str) -> None:
    invalid = 100
    assert LIMITS.max_letters_per_record == invalid
    if form == "ndjson":
        data = b"\n".join([orjson.dumps(click())] * 3 + [b"1"] * invalid)
    else:
        data = orjson.dumps([click()] * 3 + [1] * invalid)
    decoded = decode_record(data, LIMITS)
    assert len(decoded.objects) == 3
    assert [(r.index, r.reason, r.payload) for r in decoded.rejections] == [
        (3 + n, Reason.NOT_OBJECT, b"1") for n in range(invalid)
    ]


def test_101_invalid_lines_are_one_record_letter_with_the_line_count_and_raw_record() -> None:
    data = b"\n".join([b"1"] * 101)
    rejection = only_rejection(decode_record(data, LIMITS))
    assert (rejection.index, rejection.reason, rejection.payload, rejection.events) == (
        0,
        Reason.TOO_MANY_INVALID,
        data,
        101,
    )
    assert rejection.detail.startswith("101 of the record's 101 events are invalid, more than 100 letters per record")


def test_101_invalid_lines_among_valid_ones_are_one_record_letter_counting_every_line() -> None:
    lines = [orjson.dumps(click())] * 50 + [b"not json"] * 60 + [b"[]"] * 41
    data = gzip.compress(b"\n".join(lines) + b"\n")
    rejection = only_rejection(decode_record(data, LIMITS))
    assert (rejection.reason, rejection.payload, rejection.events) == (Reason.TOO_MANY_INVALID, data, 151)
    assert "101 of the record's 151 events are invalid" in rejection.detail


def test_101_invalid_array_elements_are_one_record_letter() -> None:
    data = orjson.dumps([click()] * 7 + ["x"] * 101)
    rejection = only_rejection(decode_record(data, LIMITS))
    assert (rejection.index, rejection.reason, rejection.payload, rejection.events) == (
        0,
        Reason.TOO_MANY_INVALID,
        data,
        108,
    )


def test_out_of_bounds_array_elements_count_towards_the_letters_of_a_record() -> None:
    # 60 not objects + 41 too deep = 101 letters: one record letter.
    deep = click(data=nested(LIMITS.max_depth))
    data = orjson.dumps([click()] + [0] * 60 + [deep] * 41)
    rejection = only_rejection(decode_record(data, LIMITS))
    assert (rejection.reason, rejection.payload, rejection.events) == (Reason.TOO_MANY_INVALID, data, 102)
    at_limit = orjson.dumps([click()] + [0] * 59 + [deep] * 41)
    decoded = decode_record(at_limit, LIMITS)
    assert len(decoded.objects) == 1 and len(decoded.rejections) == 100


# -- integers past 64 bits are summed exactly -------------------------------------------------------------

WIDE = 18446744073709551617  # 2**64 + 1: orjson reads it as the float 1.8446744073709552e19


def test_a_wide_summed_integer_asks_for_an_exact_reading_which_keeps_it_an_int() -> None:
    data = donation_text(str(WIDE))
    [(_, read)] = decode_record(data, LIMITS).objects
    assert read["data"]["amount"] == float(WIDE)  # orjson's reading
    assert check_event(read, ARRIVAL_MS, CONFIG.rules) is READ_AGAIN
    [(_, exact)] = decode_record(data, LIMITS, exact=True).objects
    assert type(exact["data"]["amount"]) is int and exact["data"]["amount"] == WIDE
    assert check_event(exact, ARRIVAL_MS, CONFIG.rules, exact=True) == ("donation.made", T)


def test_a_wide_summed_integer_in_a_single_record_is_summed_exactly() -> None:
    judged = Judged(donation_text(str(WIDE)))
    assert judged.letters == []
    assert judged.value("donation_amount") == {"GBP|c": Decimal(WIDE)}
    assert judged.value("largest_donation", "1d") == {"GBP": Decimal(WIDE)}
    assert judged.sink.events[0][1] == donation_text(str(WIDE))  # forwarded as it came


def test_a_wide_summed_integer_inside_an_array_is_summed_exactly_with_its_siblings() -> None:
    data = b"[" + orjson.dumps(click()) + b"," + donation_text(str(WIDE)) + b"," + donation_text("5") + b"]"
    judged = Judged(data)
    assert judged.letters == []
    assert judged.value("donation_amount") == {"GBP|c": Decimal(WIDE) + 5}
    assert judged.value("events") == {"click": 1, "donation.made": 2}
    assert [e["data"]["amount"] for e in judged.forwarded[1:]] == [WIDE, 5]


def test_a_wide_summed_integer_on_an_ndjson_line_is_summed_exactly() -> None:
    negative = donation_text(str(-(2**63) - 1))  # read exactly too, then refused by the schema (minimum 0)
    data = orjson.dumps(click()) + b"\n" + donation_text(str(2**64)) + b"\n" + negative
    judged = Judged(data)
    assert [(x.index, x.reason, x.payload) for x in judged.letters] == [(2, "schema", negative)]
    assert judged.value("donation_amount") == {"GBP|c": Decimal(2**64)}
    assert [body for _, body in judged.sink.events] == data.split(b"\n")[:2]  # forwarded as they came
    parts, rejections = decode_parts(data, LIMITS, exact=True)
    assert rejections == []
    assert [(index, event["data"]["amount"], own) for index, event, own in parts[1:]] == [
        (1, 2**64, donation_text(str(2**64))),
        (2, -(2**63) - 1, negative),
    ]


def test_an_integer_just_under_1e21_is_in_range() -> None:
    """10**21 - 1 lies in (-1e21, 1e21); orjson's float reading rounds it to 1e21, the exact reading does not."""
    judged = Judged(donation_text(str(10**21 - 1)))
    assert judged.letters == []
    assert judged.value("donation_amount") == {"GBP|c": Decimal(10**21 - 1)}


# -- summed numbers' range ---------------------------------------------------------------------------------


def payment(literal: str) -> bytes:
    return b'{"eventType":"payment","timestamp":%d,"data":{"amount":%s}}' % (T, literal.encode())


@pytest.mark.parametrize(
    ("literal", "allowed"),
    [
        ("1e21", False),
        ("-1e21", False),
        ("1e-21", False),
        ("-1e-21", False),
        ("1000000000000000000000", False),  # 10**21, an integer
        ("-1000000000000000000000", False),
        ("0", True),
        ("0.0", True),
        ("-0.0", True),
        ("1e-20", True),
        ("-1e-20", True),
        ("9.99e20", True),
        ("-9.99e20", True),
        ("123.45", True),
    ],
)
def test_summed_number_range_edges(literal: str, allowed: bool) -> None:
    data = payment(literal)
    judged = Judged(data, config=PAYMENTS)
    if allowed:
        assert judged.letters == []
        assert judged.value("payments") == {"all": Decimal(literal)}
    else:
        [letter] = judged.letters
        assert (letter.reason, letter.payload) == (Reason.NUMBER_OUT_OF_RANGE, data)
        assert letter.detail.startswith("data.amount is ")
        assert judged.value("payments") == {} and judged.forwarded == []


def test_number_out_of_range_in_an_array_rejects_that_element_with_its_own_json() -> None:
    judged = Judged(b"[" + payment("1e-21") + b"," + payment("7") + b"]", config=PAYMENTS)
    [letter] = judged.letters
    assert (letter.index, letter.reason) == (0, Reason.NUMBER_OUT_OF_RANGE)
    assert orjson.loads(letter.payload) == orjson.loads(payment("1e-21"))
    assert judged.value("payments") == {"all": Decimal(7)}


def test_numbers_not_summed_are_not_range_checked() -> None:
    event = click(data={"amount": 1e300, "tiny": 1e-300})
    judged = Judged(orjson.dumps(event))
    assert judged.letters == [] and judged.forwarded == [event]


# -- length of group and distinct values -------------------------------------------------------------------


def test_page_view_path_of_max_value_chars_passes_and_one_more_is_value_too_long() -> None:
    limit = LIMITS.max_value_chars
    at, past = orjson.dumps(page_view("/" + "p" * (limit - 1))), orjson.dumps(page_view("/" + "p" * limit))
    judged = Judged(at, past)
    [letter] = judged.letters
    assert (letter.sequence_number, letter.index, letter.reason, letter.payload) == (
        "2",
        0,
        Reason.VALUE_TOO_LONG,
        past,
    )
    assert letter.detail == f"path has {limit + 1} characters; at most {limit}"
    assert judged.value("page_views") == {"/" + "p" * (limit - 1): 1}


def test_user_id_of_max_value_chars_passes_and_one_more_is_value_too_long() -> None:
    limit = LIMITS.max_value_chars
    at, past = click(userId="u" * limit), click(userId="ü" * (limit + 1))  # characters, not bytes
    judged = Judged(orjson.dumps(at), orjson.dumps(past))
    [letter] = judged.letters
    assert (letter.sequence_number, letter.reason, letter.payload) == ("2", Reason.VALUE_TOO_LONG, orjson.dumps(past))
    assert letter.detail == f"userId has {limit + 1} characters; at most {limit}"
    assert judged.value("events") == {"click": 1}


def test_value_too_long_in_an_array_rejects_that_element_with_its_own_json() -> None:
    limit = LIMITS.max_value_chars
    long_path, long_user = page_view("x" * (limit + 1)), click(userId="u" * (limit + 1))
    ok = page_view("x" * limit)
    judged = Judged(orjson.dumps([long_path, ok, long_user]))
    assert [(x.index, x.reason, x.payload) for x in judged.letters] == [
        (0, Reason.VALUE_TOO_LONG, orjson.dumps(long_path)),
        (2, Reason.VALUE_TOO_LONG, orjson.dumps(long_user)),
    ]
    assert judged.forwarded == [ok]


def test_value_too_long_on_an_ndjson_line_carries_that_line() -> None:
    long_line = b'  {"eventType":"page.view","timestamp":%d,"path":"%s"}' % (T, b"y" * 600)
    judged = Judged(orjson.dumps(click()) + b"\n" + long_line + b"\n")
    [letter] = judged.letters
    assert (letter.index, letter.reason, letter.payload) == (1, Reason.VALUE_TOO_LONG, long_line.strip())


def test_a_long_value_outside_any_metric_is_not_value_too_long() -> None:
    event = click(path="p" * 5_000, data={"note": "n" * 5_000})  # `path` is only grouped for page.view
    judged = Judged(orjson.dumps(event))
    assert judged.letters == [] and judged.forwarded == [event]


def test_a_non_string_group_value_is_bounded_by_the_text_it_groups_as() -> None:
    """A group value that is not a string groups as its str(): [0, 0, ...] as "[0, 0, ...]", longer than its
    JSON text. No group text longer than max_value_chars may get through."""
    path = [0] * 172  # JSON: 345 bytes; groups as a text of 516 characters
    data = orjson.dumps(page_view(path))
    assert len(data) <= LIMITS.max_value_chars < len(str(path))
    judged = Judged(data)
    assert [x.reason for x in judged.letters] == [Reason.VALUE_TOO_LONG]
    assert judged.value("page_views") == {}


# -- compression ---------------------------------------------------------------------------------------------


def test_inflate_budget_rule_at_its_edges() -> None:
    limits = Limits()  # 8 MiB, 100 times, a 64 KiB floor
    floor = INFLATION_FLOOR_BYTES
    assert floor == 65_536
    assert limits.inflate_budget(0) == floor
    assert limits.inflate_budget(655) == floor  # 65,500: the floor wins
    assert limits.inflate_budget(656) == 65_600
    assert limits.inflate_budget(83_886) == 8_388_600
    assert limits.inflate_budget(83_887) == 8 * 1024 * 1024  # 8,388,700: the cap wins
    assert limits.inflate_budget(10**9) == 8 * 1024 * 1024
    assert Limits(max_inflated_bytes=1024).inflate_budget(10**6) == 1024  # the cap wins over the floor too
    assert Limits(max_inflation_ratio=3).inflate_budget(100_000) == 300_000


@pytest.mark.parametrize("compress", [gzip.compress, zlib.compress], ids=["gzip", "zlib"])
def test_a_small_record_may_inflate_to_exactly_the_floor(compress: Any) -> None:
    event = orjson.dumps(click())
    at = event + b" " * (INFLATION_FLOOR_BYTES - len(event))
    data = compress(at)
    assert 100 * len(data) < INFLATION_FLOOR_BYTES
    assert decode_record(data, LIMITS).objects == [(0, click())]
    past = compress(at + b" ")
    rejection = only_rejection(decode_record(past, LIMITS))
    assert (rejection.reason, rejection.payload) == (Reason.TOO_LARGE, past)
    assert rejection.detail == f"inflates to more than {INFLATION_FLOOR_BYTES} bytes"


def test_a_record_may_inflate_to_exactly_ratio_times_its_size() -> None:
    # An event with incompressible text (so the record is over 655 bytes) and padding: find the padding at
    # which the inflated size is exactly 100 times the compressed size, then one byte more.
    rng = random.Random(11)
    event = orjson.dumps(click(data={"noise": rng.randbytes(1_500).hex()}))

    def record(pad: int) -> tuple[bytes, int]:
        text = event + b" " * pad
        return zlib.compress(text, 9), len(text)

    limits = bounds = Limits()
    found = None
    pad = 0
    for _ in range(50):  # a fixed point: the padding barely changes the compressed size
        data, size = record(pad)
        target = limits.max_inflation_ratio * len(data)
        if size == target and len(record(pad + 1)[0]) == len(data):
            found = data, size, record(pad + 1)[0]
            break
        pad = target - len(event)
    assert found is not None
    at, size, past = found
    assert size > INFLATION_FLOOR_BYTES and limits.inflate_budget(len(at)) == size
    assert decode_record(at, bounds).rejections == []
    rejection = only_rejection(decode_record(past, bounds))
    assert (rejection.reason, rejection.detail) == (Reason.TOO_LARGE, f"inflates to more than {size} bytes")


def test_a_1_kb_gzip_bomb_of_lines_is_one_too_large_letter() -> None:
    # Issue 11 item 3: 1 MiB of "1\n" used to become 524,288 not_object letters.
    bomb = gzip.compress(b"1\n" * (512 * 1024))
    assert len(bomb) < 1_200
    rejection = only_rejection(decode_record(bomb, LIMITS))
    assert (rejection.index, rejection.reason, rejection.payload) == (0, Reason.TOO_LARGE, bomb)


def test_a_megabyte_of_empty_gzip_members_is_bad_compression() -> None:
    data = gzip.compress(b"") * 50_000
    assert len(data) == 1_000_000
    rejection = only_rejection(decode_record(data, LIMITS))
    assert (rejection.reason, rejection.payload) == (Reason.BAD_COMPRESSION, data)
    assert rejection.detail == f"more than {MAX_GZIP_MEMBERS} gzip members"


def test_gzip_members_up_to_the_limit_are_all_inflated() -> None:
    line = orjson.dumps(click()) + b"\n"
    data = gzip.compress(line) * MAX_GZIP_MEMBERS
    decoded = decode_record(data, LIMITS)
    assert decoded.rejections == []
    assert len(decoded.objects) == MAX_GZIP_MEMBERS
    past = data + gzip.compress(line)
    assert only_rejection(decode_record(past, LIMITS)).reason is Reason.BAD_COMPRESSION


# -- leap second ---------------------------------------------------------------------------------------------


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


@pytest.mark.parametrize(
    ("leap", "same_as"),
    [
        ("2016-12-31T23:59:60Z", "2016-12-31T23:59:59.999+00:00"),
        ("2016-12-31 23:59:60Z", "2016-12-31T23:59:59.999+00:00"),
        ("2016-12-31T23:59:60.5Z", "2016-12-31T23:59:59.999+00:00"),
        ("2016-12-31T23:59:60.123456789Z", "2016-12-31T23:59:59.999+00:00"),
        ("2017-01-01T00:59:60+01:00", "2016-12-31T23:59:59.999+00:00"),
        ("2015-06-30T23:59:60-05:30", "2015-07-01T05:29:59.999+00:00"),
    ],
)
def test_a_leap_second_is_the_last_millisecond_of_its_minute(leap: str, same_as: str) -> None:
    assert parse_timestamp_ms(leap) == ms(same_as)


@pytest.mark.parametrize("bad", ["2016-12-31T23:59:61Z", "2016-12-31T23:59:60", "2016-12-31T23:60:60Z", "23:59:60Z"])
def test_not_a_leap_second_is_still_bad_timestamp(bad: str) -> None:
    arrival = ms("2017-01-01T00:00:00+00:00")
    verdict = check_event({"eventType": "click", "timestamp": bad}, arrival, Rules())
    assert type(verdict) is Invalid
    assert verdict.reason is Reason.BAD_TIMESTAMP


def test_a_leap_second_event_is_valid_in_the_last_minute_of_the_day() -> None:
    arrival = ms("2017-01-01T00:00:30+00:00")
    verdict = check_event({"eventType": "click", "timestamp": "2016-12-31T23:59:60Z"}, arrival, Rules())
    assert verdict == ("click", ms("2016-12-31T23:59:59.999+00:00"))
    assert datetime.fromtimestamp(verdict[1] // 60_000 * 60, UTC) == datetime(2016, 12, 31, 23, 59, tzinfo=UTC)


# -- the HyperLogLog hash cache --------------------------------------------------------------------------------


def test_hll_cache_keeps_short_strings_only() -> None:
    short, edge, long = "s" * 10, "e" * 128, "l" * 129
    huge = "h" * 100_000
    for value in (short, edge, long, huge):
        assert hll.locate(value) == hll.locate(value)  # the same answer, cached or not
    assert short in hll._located and edge in hll._located
    assert long not in hll._located and huge not in hll._located
    assert all(len(key) <= 128 for key in hll._located)


def test_hll_cache_keeps_no_long_value_after_a_fold() -> None:
    from aggregations.partials import ShardAggregates

    aggregates = ShardAggregates("s", CONFIG.metric_set, CONFIG.resolutions)
    long_ids = [f"user-{n}-" + "x" * 300 for n in range(50)]
    events = [(click(userId=u), "click", T, (1, 0, n)) for n, u in enumerate(long_ids)]
    for key in {k for e in events for k in aggregates.keys_for(e[2])}:
        aggregates.install(key, None)
    aggregates.fold(events)
    aggregates.add(click(userId="y" * 200), "click", T, (2, 0, 0))
    assert not any(u in hll._located for u in long_ids)
    assert "y" * 200 not in hll._located
    assert all(len(key) <= 128 for key in hll._located)
