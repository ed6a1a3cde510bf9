"""Event validation: envelope, timestamp, bounds against arrival time, per-type JSON Schema. Pure.

Time bounds are judged against the record's `approximateArrivalTimestamp`, never the wall clock, so
reprocessing the same records always gives the same verdicts (and the same numbers).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Any

from consumer.bounds import DEFAULT_LIMITS, READ_EXACTLY, TypePlan, ValueChecks, value_problem
from consumer.errors import TimestampError
from consumer.reasons import Reason

EVENT_TYPE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Numbers below this are epoch seconds, above it epoch milliseconds (1e11 s is the year 5138).
_SECONDS_LIMIT = 100_000_000_000
_OPTIONAL_STRINGS = ("eventId", "userId", "sessionId")
# An ISO-8601 time whose seconds are 60 (a leap second), which datetime cannot hold.
_LEAP_SECOND = re.compile(r"(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}):60(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})")


@dataclass(frozen=True, slots=True)
class Valid:
    event_type: str
    event_ms: int


@dataclass(frozen=True, slots=True)
class Invalid:
    reason: Reason
    detail: str


@dataclass(frozen=True)
class Rules:
    """What makes an event acceptable. Built once from the config."""

    max_age_ms: int = 3 * 365 * 86_400_000
    future_skew_ms: int = 5 * 60_000
    strict_types: bool = False
    known_types: frozenset[str] = frozenset()
    # Glob patterns (routes, metrics) that also make a type known under strict_types.
    known_patterns: tuple[str, ...] = ()
    # eventType -> compiled validator that raises on failure (fastjsonschema)
    schemas: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    # The values the metrics read, bounded here (consumer/bounds.py).
    values: ValueChecks = field(default_factory=ValueChecks)
    max_value_chars: int = DEFAULT_LIMITS.max_value_chars
    # check_event's cache of what it needs per event type name that passed EVENT_TYPE (see _type_rules): one
    # look-up per event instead of three. Not a rule: no argument, and left out of equality and repr.
    types: dict[str, _TypeRules] = field(default_factory=dict, init=False, compare=False, repr=False)


# Per valid event type name: its value checks (ValueChecks.plan), its schema (None: none), and whether
# strict_types refuses it (no schema and not known).
_TypeRules = tuple[TypePlan, Callable[[Any], Any] | None, bool]


def _known(event_type: str, rules: Rules) -> bool:
    return event_type in rules.known_types or any(fnmatchcase(event_type, p) for p in rules.known_patterns)


def _type_rules(event_type: str, rules: Rules) -> _TypeRules:
    """What check_event needs of the rules for events of this (valid) type; cached, up to 100,000 names."""
    schema = rules.schemas.get(event_type)
    unknown = schema is None and rules.strict_types and not _known(event_type, rules)
    found = (rules.values.plan(event_type), schema, unknown)
    if len(rules.types) < 100_000:
        rules.types[event_type] = found
    return found


def parse_timestamp_ms(value: Any) -> int:
    """ISO-8601 with `Z` or an offset (`T` or space), or epoch seconds / milliseconds -> epoch ms."""
    kind = type(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            leap = _LEAP_SECOND.fullmatch(value)
            if leap is None:
                raise TimestampError(f"{value[:64]!r} is not ISO-8601") from None
            # A leap second (23:59:60) is the last moment of its minute: 23:59:59.999, same windows.
            return parse_timestamp_ms(f"{leap[1]}:59{leap[3]}") + 999
        if parsed.tzinfo is None:
            raise TimestampError(f"{value[:64]!r} has no UTC offset (add Z or +hh:mm)")
        since = parsed - _EPOCH  # floored to whole milliseconds, in plain ints
        return (since.days * 86_400 + since.seconds) * 1000 + since.microseconds // 1000
    if kind is int:
        return value * 1000 if -_SECONDS_LIMIT < value < _SECONDS_LIMIT else value
    if kind is float and -_SECONDS_LIMIT < value < _SECONDS_LIMIT:
        # Epoch seconds with at most 3 decimals (what clients send): the whole milliseconds whose
        # quotient by 1000 rounds to exactly this double. Below 1e11 doubles are closer than 0.001 s
        # apart, so the float's shortest repr is that quotient, and the exact path below gives the same.
        ms = round(value * 1000)
        if ms / 1000 == value:
            return ms
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TimestampError(f"timestamp is a {type(value).__name__}, not a string or number")
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise TimestampError("timestamp is not a finite number")
        exact = Decimal(repr(value))
        return int((exact * 1000 if abs(exact) < _SECONDS_LIMIT else exact).to_integral_value("ROUND_FLOOR"))
    return value * 1000 if abs(value) < _SECONDS_LIMIT else value


# What check_event returns for an event that holds, in a field a metric sums, a float that may be an
# integer beyond 64 bits: the worker decodes its record again exactly (decode_parts(..., exact=True)).
READ_AGAIN = Invalid(Reason.NUMBER_OUT_OF_RANGE, "a summed integer beyond 64 bits: read the record again exactly")
_fromisoformat = datetime.fromisoformat
assert _OPTIONAL_STRINGS == ("eventId", "userId", "sessionId")  # check_event has them unrolled


def check_event(
    event: Mapping[str, Any], arrival_ms: int, rules: Rules, exact: bool = False
) -> tuple[str, int] | Invalid:
    """`validate_event` for the hot path: (event type, event time in ms) when valid; READ_AGAIN when the
    event must be read again exactly (never when `exact`: it was)."""
    # The two fields every valid event has are subscripted (KeyError when missing), the others read by
    # `event.get(...)`: CPython 3.11 specialises both, and either costs less than a hoisted `get = event.get`.
    try:
        event_type = event["eventType"]
    except KeyError:
        event_type = None
    if event_type is None:
        return Invalid(Reason.MISSING_FIELD, "eventType is missing")
    try:
        found = rules.types.get(event_type)
    except TypeError:  # unhashable: no string either
        found = None
    if found is None:  # a type not seen yet (the regex runs once per name) or not a string
        if not isinstance(event_type, str) or not EVENT_TYPE.fullmatch(event_type):
            return Invalid(Reason.WRONG_TYPE, "eventType must be a string of 1-128 letters, digits and ._:- characters")
        found = _type_rules(event_type, rules)
    plan, schema, unknown = found
    try:
        timestamp = event["timestamp"]
    except KeyError:
        return Invalid(Reason.MISSING_FIELD, "timestamp is missing")
    # parse_timestamp_ms, with its commonest cases inline; any other value (or error) goes through it.
    kind = type(timestamp)
    if kind is int:
        event_ms = timestamp * 1000 if -_SECONDS_LIMIT < timestamp < _SECONDS_LIMIT else timestamp
    else:
        try:
            # An ISO-8601 time; one without a UTC offset cannot be subtracted from the (aware) epoch: TypeError.
            since = _fromisoformat(timestamp) - _EPOCH if kind is str else None
        except (ValueError, TypeError):
            since = None
        if since is not None:
            event_ms = since.days * 86_400_000 + (since.seconds * 1000 + since.microseconds // 1000)
        else:
            try:
                event_ms = parse_timestamp_ms(timestamp)
            except TimestampError as exc:
                return Invalid(Reason.BAD_TIMESTAMP, str(exc))
    # The optional strings (_OPTIONAL_STRINGS), unrolled; a string is told first (it nearly always is one).
    value = event.get("eventId")
    if type(value) is not str and value is not None and not isinstance(value, str):
        return Invalid(Reason.WRONG_TYPE, "eventId must be a string")
    value = event.get("userId")
    if (type(value) is not str or len(value) > plan[4]) and value is not None:
        if not isinstance(value, str):
            return Invalid(Reason.WRONG_TYPE, "userId must be a string")
        if len(value) > plan[4]:  # a metric groups by it or counts it as distinct
            return Invalid(Reason.VALUE_TOO_LONG, f"userId has {len(value)} characters; at most {plan[4]}")
    value = event.get("sessionId")
    if type(value) is not str and value is not None and not isinstance(value, str):
        return Invalid(Reason.WRONG_TYPE, "sessionId must be a string")
    data = event.get("data")
    if type(data) is not dict and data is not None and not isinstance(data, dict):
        return Invalid(Reason.WRONG_TYPE, "data must be an object")
    if event_ms < arrival_ms - rules.max_age_ms:
        return Invalid(Reason.TOO_OLD, f"event time is {(arrival_ms - event_ms) // 1000}s before arrival")
    if event_ms > arrival_ms + rules.future_skew_ms:
        return Invalid(Reason.IN_FUTURE, f"event time is {(event_ms - arrival_ms) // 1000}s after arrival")
    if schema is not None:
        try:
            schema(event)
        except Exception as exc:  # fastjsonschema.JsonSchemaException and friends
            return Invalid(Reason.SCHEMA, _schema_detail(exc))
    elif unknown:
        return Invalid(Reason.UNKNOWN_TYPE, f"event type {event_type!r} is not configured")
    # The values the metrics read (userId above): group and distinct values' lengths, summed numbers' ranges.
    # A top-level string within the limit (nearly every group value) passes here, without the cost of a call;
    # any other top-level value, and deeper paths and summed numbers (plan[3]), are value_problem's to judge.
    look = plan[3]
    if plan[0]:  # (most types have no such keys: no loop)
        for key in plan[0]:
            value = event.get(key)
            if type(value) is not str or len(value) > rules.max_value_chars:
                look = True
                break
    if look:
        problem = value_problem(event, plan, rules.max_value_chars, exact)
        if problem is not None:
            return READ_AGAIN if problem is READ_EXACTLY else Invalid(*problem)
    return event_type, event_ms


def validate_event(event: Mapping[str, Any], arrival_ms: int, rules: Rules) -> Valid | Invalid:
    """The verdict on one event (an event READ_AGAIN would ask for is judged as read: valid)."""
    verdict = check_event(event, arrival_ms, rules)
    if verdict is READ_AGAIN:
        verdict = check_event(event, arrival_ms, rules, exact=True)
    if isinstance(verdict, Invalid):
        return verdict
    return Valid(*verdict)


def _schema_detail(exc: Exception) -> str:
    """The schema's complaint, naming paths and rules, never the event's own words: fastjsonschema quotes
    the undeclared property names for `additionalProperties`, and a name can be an email address."""
    if getattr(exc, "rule", None) == "additionalProperties":
        return f"{getattr(exc, 'name', 'data')} must not contain properties its schema does not declare"
    return str(exc)
