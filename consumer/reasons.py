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
        "The payload inflates to more than the decompression cap, or an event is too large (or nested too deep) "
        "for a forward sink."
    ),
    "bad_compression": "Gzip/zlib magic bytes, but the compressed stream is corrupt or truncated.",
}
