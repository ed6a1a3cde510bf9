"""consumer/dlq.py: the DLQ message body, the letter identity, and the in-memory queue."""

from __future__ import annotations

import base64
import dataclasses
from datetime import datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.dlq import DeadLetter, dlq_message
from consumer.dlq.memory import MemoryDeadLetterQueue
from delivery.errors import DeliveryUnavailableError

LETTER = DeadLetter(
    stream="streamkpi-events",
    shard_id="shardId-000000000001",
    sequence_number="49590338271490256608559692538361571095921575989136588898",
    sub_sequence_number=3,
    index=7,
    partition_key="user-42",
    arrival_ms=1_573_841_100_123,
    reason="not_json",
    detail="line 8: unexpected character",
    payload=b'{"eventType": broken\xff',
)


def test_identity_names_shard_record_and_index() -> None:
    assert LETTER.identity == "shardId-000000000001/49590338271490256608559692538361571095921575989136588898/3/7"


def test_identity_differs_for_each_event_of_a_record() -> None:
    other_index = dataclasses.replace(LETTER, index=8)
    other_sub = dataclasses.replace(LETTER, sub_sequence_number=4)
    other_shard = dataclasses.replace(LETTER, shard_id="shardId-000000000002")
    assert len({LETTER.identity, other_index.identity, other_sub.identity, other_shard.identity}) == 4
    # The identity is about where the event is, not why it failed: a redelivery has the same one.
    assert dataclasses.replace(LETTER, reason="schema", detail="other").identity == LETTER.identity


def test_message_fields() -> None:
    message = dlq_message(LETTER)
    assert message == {
        "id": LETTER.identity,
        "reason": "not_json",
        "detail": "line 8: unexpected character",
        "stream": "streamkpi-events",
        "shardId": "shardId-000000000001",
        "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
        "subSequenceNumber": 3,
        "index": 7,
        "partitionKey": "user-42",
        "approximateArrivalTimestamp": "2019-11-15T18:05:00.123+00:00",
        "payload": base64.b64encode(b'{"eventType": broken\xff').decode(),
    }


def test_message_keeps_the_sequence_number_as_a_string() -> None:
    # Kinesis sequence numbers do not fit a 64-bit number; JSON readers must not round them.
    body = orjson.loads(orjson.dumps(dlq_message(LETTER)))
    assert body["sequenceNumber"] == LETTER.sequence_number
    assert isinstance(body["sequenceNumber"], str)


def test_long_detail_is_cut_to_1000_characters() -> None:
    message = dlq_message(dataclasses.replace(LETTER, detail="x" * 5000))
    assert message["detail"] == "x" * 1000


@settings(max_examples=100)
@given(
    payload=st.binary(max_size=2000),
    arrival_ms=st.integers(0, 4_102_444_800_000),
    detail=st.text(max_size=1200),
    partition_key=st.text(min_size=1, max_size=256),
)
def test_message_is_json_and_keeps_the_payload_and_arrival(
    payload: bytes, arrival_ms: int, detail: str, partition_key: str
) -> None:
    letter = dataclasses.replace(
        LETTER, payload=payload, arrival_ms=arrival_ms, detail=detail, partition_key=partition_key
    )
    body = orjson.loads(orjson.dumps(dlq_message(letter)))
    assert base64.b64decode(body["payload"], validate=True) == payload
    arrival = datetime.fromisoformat(body["approximateArrivalTimestamp"])
    assert arrival.utcoffset() is not None
    assert round(arrival.timestamp() * 1000) == arrival_ms
    assert body["detail"] == detail[:1000]
    assert body["partitionKey"] == partition_key
    assert body["id"] == letter.identity


def test_memory_queue_keeps_letters_in_order() -> None:
    queue = MemoryDeadLetterQueue()
    second = dataclasses.replace(LETTER, index=8)
    third = dataclasses.replace(LETTER, index=9)
    queue.send([LETTER, second])
    queue.send([])
    queue.send([third])
    assert queue.letters == [LETTER, second, third]


def test_memory_queue_outage_raises_and_keeps_nothing() -> None:
    queue = MemoryDeadLetterQueue()
    queue.available = False
    with pytest.raises(DeliveryUnavailableError):
        queue.send([LETTER])
    assert queue.letters == []
    queue.available = True
    queue.send([LETTER])
    assert queue.letters == [LETTER]


def test_dead_letters_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        LETTER.reason = "schema"  # type: ignore[misc]
