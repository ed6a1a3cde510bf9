"""Stable reason codes for rejected records and events. Never rename one: DLQ consumers match on them."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    NOT_UTF8 = "not_utf8"  # the bytes are not UTF-8 text
    NOT_JSON = "not_json"  # the text is not JSON (nor NDJSON)
    NOT_OBJECT = "not_object"  # JSON, but not an object (or an array element / line that is not one)
    MISSING_FIELD = "missing_field"  # a required envelope field is absent
    WRONG_TYPE = "wrong_type"  # an envelope field has the wrong JSON type or shape
    BAD_TIMESTAMP = "bad_timestamp"  # `timestamp` is not ISO-8601 with an offset, nor epoch s/ms
    TOO_OLD = "too_old"  # event time older than every retention, judged against arrival time
    IN_FUTURE = "in_future"  # event time further ahead of arrival time than the allowed skew
    SCHEMA = "schema"  # the event fails its type's JSON Schema
    UNKNOWN_TYPE = "unknown_type"  # strict_types is on and no schema/route names this type
    TOO_LARGE = "too_large"  # the payload inflates past the size cap; or an event no forward sink can take
    BAD_COMPRESSION = "bad_compression"  # gzip/zlib magic bytes but a corrupt or truncated stream
    TOO_DEEP = "too_deep"  # objects/arrays nest deeper than STREAMKPI_MAX_DEPTH
    VALUE_TOO_LONG = "value_too_long"  # a group or distinct value longer than STREAMKPI_MAX_VALUE_CHARS
    NUMBER_OUT_OF_RANGE = "number_out_of_range"  # a summed/min/max number outside ±1e21 or nearer 0 than 1e-20
    TOO_MANY_EVENTS = "too_many_events"  # a record of more events than STREAMKPI_MAX_EVENTS_PER_RECORD
    TOO_MANY_INVALID = "too_many_invalid"  # more invalid events than STREAMKPI_MAX_LETTERS_PER_RECORD


REASON_DOCS: dict[str, str] = {
    "not_utf8": "The record's bytes are not UTF-8 text.",
    "not_json": "The text is neither JSON nor newline-delimited JSON (or one NDJSON line is not JSON).",
    "not_object": "Valid JSON that is not an object: a number, string, null, or such an array element.",
    "missing_field": "A required field (`eventType`, `timestamp`) is absent.",
    "wrong_type": "A field has the wrong type: `eventType` not a valid name string, `data` not an object, ...",
    "bad_timestamp": "`timestamp` is not ISO-8601 with `Z` or an offset, nor epoch seconds/milliseconds.",
    "too_old": "The event is older than the longest retention, judged against the record's arrival time.",
    "in_future": "The event is further in the future than the allowed skew, judged against arrival time.",
    "schema": "The event fails the JSON Schema configured for its type.",
    "unknown_type": "`strict_types` is on and the event type has no schema and no route.",
    "too_large": (
        "The payload inflates past `STREAMKPI_MAX_INFLATED_BYTES` or `STREAMKPI_MAX_INFLATION_RATIO` times its "
        "size, or one event's JSON is longer than `STREAMKPI_MAX_EVENT_BYTES` (or than a forward sink takes)."
    ),
    "bad_compression": (
        "Gzip/zlib magic bytes, but the compressed stream is corrupt or truncated (or has more than 1,000 "
        "gzip members)."
    ),
    "too_deep": "Objects and arrays in the event nest deeper than `STREAMKPI_MAX_DEPTH` levels.",
    "value_too_long": (
        "A value a metric groups by (`by`) or counts as distinct is longer than `STREAMKPI_MAX_VALUE_CHARS`."
    ),
    "number_out_of_range": (
        "A number a metric sums, minimises or maximises is outside ±1e21, or nearer zero than 1e-20 (but not 0)."
    ),
    "too_many_events": (
        "The record holds more events (array elements or NDJSON lines) than `STREAMKPI_MAX_EVENTS_PER_RECORD`: "
        "one letter carries the whole record and none of its events is counted."
    ),
    "too_many_invalid": (
        "More of the record's events are invalid than `STREAMKPI_MAX_LETTERS_PER_RECORD`: one letter carries the "
        "whole record (with its event count and first reasons) and none of its events is counted."
    ),
}
