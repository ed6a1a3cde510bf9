"""The redactor: drop, mask and keyed hash of dotted paths; properties that must hold for any event."""

from __future__ import annotations

import copy
import hashlib
import hmac
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.dlq import DeadLetter, PayloadUnavailableError, dlq_message, letter_payload
from consumer.redaction import (
    HASH_PREFIX,
    MASK,
    RedactionKeyError,
    RedactionSpec,
    Redactor,
    canonical_json,
    is_hashed,
    withheld,
)

KEY = "k" * 32
SPEC = RedactionSpec(drop=("data.email",), mask=("data.phone",), hash=("userId", "data.contacts.id"))


def hmac_hex(value: bytes, key: str = KEY) -> str:
    return HASH_PREFIX + hmac.new(key.encode(), value, hashlib.sha256).hexdigest()


def redacted(event: dict[str, Any], spec: RedactionSpec = SPEC, key: str = KEY) -> dict[str, Any]:
    out = copy.deepcopy(event)
    Redactor(spec, key).redact(out)
    return out


def test_the_seeds_browser_event_loses_its_email_and_raw_user_id() -> None:
    event = {
        "eventType": "user.created",
        "timestamp": "2019-11-15 18:05:00Z",
        "userId": "u-42",
        "path": "/signup",
        "data": {"email": "alice@example.com", "phone": "+44 7700 900123", "plan": "free"},
    }
    out = redacted(event)
    assert out == {
        "eventType": "user.created",
        "timestamp": "2019-11-15 18:05:00Z",
        "userId": hmac_hex(b"u-42"),  # computable elsewhere: HMAC-SHA256 of the id's UTF-8 under the key
        "path": "/signup",
        "data": {"phone": MASK, "plan": "free"},
    }
    assert b"alice" not in orjson.dumps(out) and b"u-42" not in orjson.dumps(out)


def test_a_path_goes_through_arrays_at_any_depth() -> None:
    event = {"data": {"contacts": [{"id": "a"}, [{"id": "b"}, {"name": "x"}], "text", {"id": None}]}}
    out = redacted(event)
    assert out["data"]["contacts"] == [
        {"id": hmac_hex(b"a")},
        [{"id": hmac_hex(b"b")}, {"name": "x"}],
        "text",
        {"id": None},
    ]


def test_non_strings_hash_as_canonical_json_and_null_or_missing_stay() -> None:
    spec = RedactionSpec(hash=("data.v",))
    a = redacted({"data": {"v": {"b": 1, "a": [1.5, True]}}}, spec)
    b = redacted({"data": {"v": {"a": [1.5, True], "b": 1}}}, spec)
    assert a == b == {"data": {"v": hmac_hex(b'{"a":[1.5,true],"b":1}')}}
    assert redacted({"data": {"v": 7}}, spec) == {"data": {"v": hmac_hex(b"7")}}
    assert redacted({"data": {"v": None}}, spec) == {"data": {"v": None}}
    assert redacted({"data": "not an object"}, spec) == {"data": "not an object"}
    assert redacted({"other": 1}, spec) == {"other": 1}
    assert canonical_json("\ud800") == '"\ud800"'.encode("utf-8", "surrogatepass")  # a lone surrogate hashes too


def test_redact_says_whether_it_changed_anything() -> None:
    redactor = Redactor(SPEC, KEY)
    event: dict[str, Any] = {"eventType": "a", "data": {"email": "x"}}
    assert redactor.redact(event) is True
    assert redactor.redact(event) is False  # redacted already
    assert redactor.redact({"eventType": "a", "data": {"phone": MASK}, "userId": hmac_hex(b"u")}) is False


def test_a_different_key_gives_different_hashes() -> None:
    one = redacted({"userId": "u-1"})
    other = redacted({"userId": "u-1"}, key="z" * 40)
    assert is_hashed(one["userId"]) and is_hashed(other["userId"]) and one != other


@pytest.mark.parametrize("key", [None, "", "short-key"])
def test_hashing_without_a_usable_key_fails_naming_the_variable_never_the_key(key: str | None) -> None:
    spec = RedactionSpec(hash=("userId",), key_env="MY_PII_KEY")
    with pytest.raises(RedactionKeyError) as failure:
        Redactor(spec, key)
    assert "MY_PII_KEY" in str(failure.value)
    assert "short-key" not in str(failure.value)


def test_drop_and_mask_need_no_key() -> None:
    assert redacted(
        {"data": {"email": "e", "phone": "p"}}, RedactionSpec(drop=("data.email",), mask=("data.phone",)), ""
    ) == {"data": {"phone": MASK}}


def test_a_withheld_payload_keeps_only_size_and_sha256_and_cannot_be_read_back() -> None:
    payload = b"not json, alice@example.com"
    size, digest = withheld(payload)
    letter = DeadLetter("s", "shardId-0", "1", 0, 0, "pk", 0, "not_json", "", b"", None, (size, digest))
    message = dlq_message(letter)
    assert message["payload"] is None
    assert message["payloadWithheld"] == {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    assert b"alice" not in orjson.dumps(message)
    with pytest.raises(PayloadUnavailableError, match="redaction withheld"):
        letter_payload(message, None)


# -- properties --------------------------------------------------------------------------------------

names = st.sampled_from(["data", "email", "phone", "id", "userId", "contacts", "x"])
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=4),
    max_leaves=20,
)
events = st.dictionaries(names, values, max_size=5)
paths = st.lists(names, min_size=1, max_size=3).map(".".join)


def found(value: Any, path: tuple[str, ...]) -> list[Any]:
    """Every value at `path`, through arrays as redaction goes."""
    if isinstance(value, list):
        return [v for item in value for v in found(item, path)]
    if not path:
        return [value]
    if isinstance(value, dict) and path[0] in value:
        return found(value[path[0]], path[1:])
    return []


def without(value: Any, path: tuple[str, ...]) -> Any:
    """`value` with what lies at `path` taken out (through arrays), to compare the rest."""
    if isinstance(value, list):
        return [without(item, path) for item in value]
    if isinstance(value, dict) and path and path[0] in value:
        rest = dict(value)
        if len(path) == 1:
            del rest[path[0]]
        else:
            rest[path[0]] = without(value[path[0]], path[1:])
        return rest
    return value


@given(events, paths)
def test_a_dropped_path_never_appears_and_nothing_else_changes(event: dict[str, Any], path: str) -> None:
    out = redacted(event, RedactionSpec(drop=(path,)))
    parts = tuple(path.split("."))
    assert found(out, parts) == []
    assert out == without(event, parts)


@given(events, paths)
def test_hashing_is_deterministic_idempotent_and_leaves_the_rest(event: dict[str, Any], path: str) -> None:
    spec = RedactionSpec(hash=(path,))
    once = redacted(event, spec)
    assert redacted(event, spec) == once  # deterministic
    assert redacted(once, spec) == once  # idempotent: a redriven event keeps its hash
    parts = tuple(path.split("."))
    assert all(v is None or is_hashed(v) for v in found(once, parts))
    assert without(once, parts) == without(event, parts)


@given(events, paths, paths)
def test_masking_and_dropping_are_idempotent(event: dict[str, Any], masked: str, dropped: str) -> None:
    spec = RedactionSpec(drop=(dropped,), mask=(masked,))
    once = redacted(event, spec)
    assert redacted(once, spec) == once
    assert all(v is None or v == MASK for v in found(once, tuple(masked.split("."))))


def test_hashes_stay_right_past_the_cache_of_recent_values() -> None:
    redactor = Redactor(RedactionSpec(hash=("userId",)), KEY)
    values = [f"user-{n}" for n in range(20_000)] + ["x" * 200]  # more than it keeps, and one too long to keep
    for value in values + values[:100] + values[-100:]:
        assert redactor.hash_value(value) == hmac_hex(value.encode())
