"""consumer/validate.py: envelope, timestamps, bounds judged against arrival time, schemas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import fastjsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.errors import TimestampError
from consumer.reasons import REASON_DOCS, Reason
from consumer.validate import Invalid, Rules, Valid, parse_timestamp_ms, validate_event

ARRIVAL_MS = 1_573_841_100_000  # 2019-11-15 18:05:00Z
RULES = Rules()
DONATION_SCHEMA = fastjsonschema.compile(
    {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "object",
                "required": ["amount", "currency"],
                "properties": {"amount": {"type": "number", "minimum": 0}, "currency": {"enum": ["GBP", "USD"]}},
            }
        },
    }
)


def event(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {"eventType": "page.view", "timestamp": "2019-11-15 18:05:00Z", "path": "/"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def reason_of(result: Valid | Invalid) -> Reason:
    assert isinstance(result, Invalid), result
    assert result.detail
    return result.reason


def test_the_seed_event_shape_is_valid() -> None:
    result = validate_event(
        {
            "eventType": "donation.made",
            "browser": "Firefox",
            "timestamp": "2019-11-15 18:05:00Z",
            "path": "/donate",
            "target": "button#give",
            "data": {"amount": 10, "currency": "GBP"},
        },
        ARRIVAL_MS,
        RULES,
    )
    assert result == Valid("donation.made", ARRIVAL_MS)


# -- envelope -------------------------------------------------------------------------------------


def test_missing_event_type() -> None:
    assert reason_of(validate_event(event(eventType=...), ARRIVAL_MS, RULES)) is Reason.MISSING_FIELD


def test_null_event_type_counts_as_missing() -> None:
    assert reason_of(validate_event(event(eventType=None), ARRIVAL_MS, RULES)) is Reason.MISSING_FIELD


def test_missing_timestamp() -> None:
    result = validate_event(event(timestamp=...), ARRIVAL_MS, RULES)
    assert reason_of(result) is Reason.MISSING_FIELD
    assert isinstance(result, Invalid)
    assert "timestamp" in result.detail


@pytest.mark.parametrize("value", [42, ["page.view"], {"a": 1}, True, ""])
def test_event_type_of_wrong_type(value: object) -> None:
    assert reason_of(validate_event(event(eventType=value), ARRIVAL_MS, RULES)) is Reason.WRONG_TYPE


def test_event_type_of_128_characters_is_accepted() -> None:
    name = "a" * 120 + "._:-Z9b."
    assert len(name) == 128
    assert validate_event(event(eventType=name), ARRIVAL_MS, RULES) == Valid(name, ARRIVAL_MS)


def test_event_type_of_129_characters_is_rejected() -> None:
    assert reason_of(validate_event(event(eventType="a" * 129), ARRIVAL_MS, RULES)) is Reason.WRONG_TYPE


@pytest.mark.parametrize("name", ["page view", "page/view", "café", "page.view\n", "a\x00", "ünïcode", "a,b"])
def test_event_type_with_illegal_characters_is_rejected(name: str) -> None:
    assert reason_of(validate_event(event(eventType=name), ARRIVAL_MS, RULES)) is Reason.WRONG_TYPE


@pytest.mark.parametrize("name", ["a", "user.created", "A-Z_0:9", "x" * 64])
def test_event_type_with_legal_characters_is_accepted(name: str) -> None:
    assert validate_event(event(eventType=name), ARRIVAL_MS, RULES) == Valid(name, ARRIVAL_MS)


@pytest.mark.parametrize("field", ["eventId", "userId", "sessionId"])
def test_optional_ids_must_be_strings(field: str) -> None:
    assert isinstance(validate_event(event(**{field: "abc"}), ARRIVAL_MS, RULES), Valid)
    assert isinstance(validate_event(event(**{field: None}), ARRIVAL_MS, RULES), Valid)
    assert reason_of(validate_event(event(**{field: 123}), ARRIVAL_MS, RULES)) is Reason.WRONG_TYPE


@pytest.mark.parametrize("data", [[1, 2], "text", 5, True])
def test_data_must_be_an_object(data: object) -> None:
    assert reason_of(validate_event(event(data=data), ARRIVAL_MS, RULES)) is Reason.WRONG_TYPE


def test_data_object_is_accepted() -> None:
    assert isinstance(validate_event(event(data={"x": [1]}), ARRIVAL_MS, RULES), Valid)


# -- timestamps ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected_ms"),
    [
        ("2019-11-15T18:05:00Z", ARRIVAL_MS),
        ("2019-11-15 18:05:00Z", ARRIVAL_MS),
        ("2019-11-15T18:05:00.123Z", ARRIVAL_MS + 123),
        ("2019-11-15T18:05:00+00:00", ARRIVAL_MS),
        ("2019-11-15T20:05:00+02:00", ARRIVAL_MS),
        ("2019-11-15 13:35:00-04:30", ARRIVAL_MS),
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59.999Z", -1),
    ],
)
def test_iso_timestamps_with_offsets(text: str, expected_ms: int) -> None:
    assert parse_timestamp_ms(text) == expected_ms


@pytest.mark.parametrize("text", ["2019-11-15T18:05:00", "2019-11-15 18:05:00", "2019-11-15"])
def test_naive_iso_is_rejected(text: str) -> None:
    with pytest.raises(TimestampError, match="offset"):
        parse_timestamp_ms(text)
    assert reason_of(validate_event(event(timestamp=text), ARRIVAL_MS, RULES)) is Reason.BAD_TIMESTAMP


@pytest.mark.parametrize("text", ["", "yesterday", "2019-13-01T00:00:00Z", "2019-11-15T25:00:00Z", "15/11/2019"])
def test_unparseable_strings_are_bad_timestamp(text: str) -> None:
    with pytest.raises(TimestampError):
        parse_timestamp_ms(text)
    assert reason_of(validate_event(event(timestamp=text), ARRIVAL_MS, RULES)) is Reason.BAD_TIMESTAMP


@pytest.mark.parametrize(
    ("value", "expected_ms"),
    [
        (1_573_841_100, ARRIVAL_MS),  # epoch seconds
        (1_573_841_100.5, ARRIVAL_MS + 500),  # fractional epoch seconds
        (1_573_841_100.0009, ARRIVAL_MS),  # floored to the millisecond
        (ARRIVAL_MS, ARRIVAL_MS),  # epoch milliseconds
        (float(ARRIVAL_MS) + 0.7, ARRIVAL_MS),  # float milliseconds, floored
        (0, 0),
        (-1, -1000),
        (-1.5, -1500),
        (99_999_999_999, 99_999_999_999_000),  # the largest seconds value
        (100_000_000_000, 100_000_000_000),  # the smallest milliseconds value
    ],
)
def test_epoch_numbers(value: float, expected_ms: int) -> None:
    assert parse_timestamp_ms(value) == expected_ms


@pytest.mark.parametrize("value", [True, False, None, float("nan"), float("inf"), float("-inf"), [1], {"s": 1}])
def test_non_timestamps_are_rejected(value: object) -> None:
    with pytest.raises(TimestampError):
        parse_timestamp_ms(value)
    assert reason_of(validate_event(event(timestamp=value), ARRIVAL_MS, RULES)) is Reason.BAD_TIMESTAMP


@settings(max_examples=100)
@given(seconds=st.integers(-(10**11) + 1, 10**11 - 1))
def test_any_int_below_1e11_is_epoch_seconds(seconds: int) -> None:
    assert parse_timestamp_ms(seconds) == seconds * 1000


@settings(max_examples=100)
@given(ms=st.integers(10**11, 10**15))
def test_any_int_from_1e11_is_epoch_milliseconds(ms: int) -> None:
    assert parse_timestamp_ms(ms) == ms
    assert parse_timestamp_ms(-ms) == -ms


@settings(max_examples=100)
@given(
    moment=st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.just(UTC),
    ),
    offset_minutes=st.integers(-23 * 60, 23 * 60),
    sep=st.sampled_from(["T", " "]),
)
def test_iso_round_trip_at_any_offset(moment: datetime, offset_minutes: int, sep: str) -> None:
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    expected = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    local = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    assert parse_timestamp_ms(local.isoformat(sep=sep)) == expected
    assert parse_timestamp_ms(moment.isoformat(sep=sep).replace("+00:00", "Z")) == expected


# -- bounds, judged against arrival time ----------------------------------------------------------


def test_bounds_are_inclusive_and_judged_against_arrival() -> None:
    rules = Rules(max_age_ms=60_000, future_skew_ms=5_000)
    at = ARRIVAL_MS
    assert validate_event(event(timestamp=at - 60_000), at, rules) == Valid("page.view", at - 60_000)
    assert reason_of(validate_event(event(timestamp=at - 60_001), at, rules)) is Reason.TOO_OLD
    assert validate_event(event(timestamp=at + 5_000), at, rules) == Valid("page.view", at + 5_000)
    assert reason_of(validate_event(event(timestamp=at + 5_001), at, rules)) is Reason.IN_FUTURE


def test_old_event_is_valid_when_it_arrived_long_ago() -> None:
    # 1990: far outside the default 3-year age from today's wall clock, but it arrived in 1990.
    event_ms = 631_152_000_000  # 1990-01-01
    assert validate_event(event(timestamp=event_ms), event_ms + 1_000, RULES) == Valid("page.view", event_ms)
    assert reason_of(validate_event(event(timestamp=event_ms), ARRIVAL_MS, RULES)) is Reason.TOO_OLD


def test_future_event_is_valid_when_it_arrives_in_the_future() -> None:
    event_ms = 4_102_444_800_000  # 2100-01-01, far ahead of the wall clock
    assert validate_event(event(timestamp="2100-01-01T00:00:00Z"), event_ms, RULES) == Valid("page.view", event_ms)
    assert reason_of(validate_event(event(timestamp="2100-01-01T00:00:00Z"), ARRIVAL_MS, RULES)) is Reason.IN_FUTURE


@settings(max_examples=100)
@given(
    arrival=st.integers(10**12, 2**42),  # event times stay in the epoch-milliseconds range
    delta=st.integers(-(10**10), 10**10),
    max_age=st.integers(1, 10**10),
    skew=st.integers(0, 10**8),
)
def test_verdict_depends_only_on_event_time_minus_arrival(arrival: int, delta: int, max_age: int, skew: int) -> None:
    rules = Rules(max_age_ms=max_age, future_skew_ms=skew)
    result = validate_event(event(timestamp=arrival + delta), arrival, rules)
    if delta < -max_age:
        assert reason_of(result) is Reason.TOO_OLD
    elif delta > skew:
        assert reason_of(result) is Reason.IN_FUTURE
    else:
        assert result == Valid("page.view", arrival + delta)


# -- schemas and strict types ---------------------------------------------------------------------


def test_schema_accepts_a_conforming_event() -> None:
    rules = Rules(schemas={"donation.made": DONATION_SCHEMA})
    ok = event(eventType="donation.made", data={"amount": 5, "currency": "GBP"})
    assert validate_event(ok, ARRIVAL_MS, rules) == Valid("donation.made", ARRIVAL_MS)


@pytest.mark.parametrize(
    "data",
    [{"amount": -1, "currency": "GBP"}, {"amount": "5", "currency": "GBP"}, {"currency": "EUR", "amount": 1}, {}],
)
def test_schema_rejects_a_non_conforming_event(data: dict) -> None:
    rules = Rules(schemas={"donation.made": DONATION_SCHEMA})
    result = validate_event(event(eventType="donation.made", data=data), ARRIVAL_MS, rules)
    assert reason_of(result) is Reason.SCHEMA
    assert isinstance(result, Invalid)
    assert "data" in result.detail


def test_a_schema_detail_never_quotes_the_events_own_property_names() -> None:
    closed = fastjsonschema.compile(
        {
            "type": "object",
            "properties": {"data": {"type": "object", "properties": {"a": {}}, "additionalProperties": False}},
        }
    )
    rules = Rules(schemas={"signup": closed})
    result = validate_event(event(eventType="signup", data={"a": 1, "jane.doe@example.com": 2}), ARRIVAL_MS, rules)
    assert isinstance(result, Invalid) and result.reason is Reason.SCHEMA
    assert result.detail == "data.data must not contain properties its schema does not declare"


def test_schema_applies_only_to_its_type() -> None:
    rules = Rules(schemas={"donation.made": DONATION_SCHEMA})
    assert isinstance(validate_event(event(data={}), ARRIVAL_MS, rules), Valid)


def test_schema_is_checked_after_the_envelope() -> None:
    rules = Rules(schemas={"donation.made": DONATION_SCHEMA})
    result = validate_event(event(eventType="donation.made", timestamp="soon", data={}), ARRIVAL_MS, rules)
    assert reason_of(result) is Reason.BAD_TIMESTAMP


def test_strict_types_reject_unknown_types() -> None:
    rules = Rules(strict_types=True, known_types=frozenset({"page.view"}), schemas={"donation.made": DONATION_SCHEMA})
    assert isinstance(validate_event(event(), ARRIVAL_MS, rules), Valid)
    result = validate_event(event(eventType="click"), ARRIVAL_MS, rules)
    assert reason_of(result) is Reason.UNKNOWN_TYPE
    assert isinstance(result, Invalid)
    assert "click" in result.detail
    # A type with a schema is known even when not listed.
    donation = event(eventType="donation.made", data={"amount": 1, "currency": "USD"})
    assert isinstance(validate_event(donation, ARRIVAL_MS, rules), Valid)


def test_unknown_types_pass_without_strict_types() -> None:
    rules = Rules(strict_types=False, known_types=frozenset({"page.view"}))
    assert validate_event(event(eventType="click"), ARRIVAL_MS, rules) == Valid("click", ARRIVAL_MS)


def test_every_reason_is_documented() -> None:
    assert set(REASON_DOCS) == {r.value for r in Reason}
    assert all(REASON_DOCS[r.value] for r in Reason)
