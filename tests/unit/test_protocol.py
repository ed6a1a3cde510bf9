"""consumer.protocol: the faster reading of daemon messages gives what amazon_kclpy's own reading gives."""

from __future__ import annotations

import base64
import json

import pytest
from amazon_kclpy import dispatch, messages

from consumer.protocol import load_action, pipeline_records

RECORDS = [
    {
        "action": "record",
        "data": base64.b64encode(b'{"eventType":"click"}').decode(),
        "partitionKey": "user-1",
        "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
        "subSequenceNumber": 0,
        "approximateArrivalTimestamp": 1_763_337_600_123,
    },
    {
        "action": "record",
        "data": "",
        "partitionKey": "k",
        "sequenceNumber": "2",
        "subSequenceNumber": None,
        "approximateArrivalTimestamp": 1_763_337_600_999.0,
    },
]


def library(line: str) -> object:
    return json.loads(line, object_hook=dispatch.message_decode)


def test_process_records_lines_give_the_library_records_as_the_pipeline_takes_them() -> None:
    line = json.dumps({"action": "processRecords", "records": RECORDS, "millisBehindLatest": 1234})
    ours, theirs = load_action(line), library(line)
    assert isinstance(ours, messages.ProcessRecordsInput)
    expected = ("processRecords", 1234)
    assert (ours.action, ours.millis_behind_latest) == (theirs.action, theirs.millis_behind_latest) == expected
    assert ours.records == [
        (
            lib.binary_data,
            lib.sequence_number,
            int(lib.sub_sequence_number or 0),
            lib.partition_key,
            lib.timestamp_millis,
        )
        for lib in theirs.records
    ]
    assert ours.records[0] == (b'{"eventType":"click"}', RECORDS[0]["sequenceNumber"], 0, "user-1", 1_763_337_600_123)
    assert ours.records[1] == (b"", "2", 0, "k", 1_763_337_600_999)
    assert pipeline_records(ours.records) is ours.records  # already as the pipeline takes them
    assert pipeline_records(theirs.records) == ours.records  # amazon_kclpy's own Records, converted


@pytest.mark.parametrize(
    "message",
    [
        {"action": "initialize", "shardId": "shardId-000000000001", "sequenceNumber": "TRIM_HORIZON",
         "subSequenceNumber": 0},
        {"action": "checkpoint", "sequenceNumber": "5", "subSequenceNumber": 0, "error": "ThrottlingException"},
        {"action": "checkpoint", "sequenceNumber": None, "subSequenceNumber": None},
        {"action": "shutdownRequested"},
        {"action": "leaseLost"},
        {"action": "shardEnded"},
        {"action": "processRecords", "records": [], "millisBehindLatest": 0},
    ],
)  # fmt: skip
def test_other_messages_are_read_as_the_library_reads_them(message: dict) -> None:
    line = json.dumps(message)
    ours, theirs = load_action(line), library(line)
    assert type(ours) is type(theirs)
    assert vars(ours) == vars(theirs)  # the library's own message class, with the same fields


def test_unknown_actions_fail_as_in_the_library() -> None:
    line = json.dumps({"action": "dance"})
    with pytest.raises(dispatch.MalformedAction):
        library(line)
    with pytest.raises(dispatch.MalformedAction):
        load_action(line)


def test_lines_orjson_refuses_are_read_by_the_library() -> None:
    record = dict(RECORDS[0], partitionKey="\ud800")  # a lone surrogate: json.loads takes it, orjson does not
    line = json.dumps({"action": "processRecords", "records": [record], "millisBehindLatest": 0})
    ours, theirs = load_action(line), library(line)
    assert [r.partition_key for r in ours.records] == [r.partition_key for r in theirs.records] == ["\ud800"]
    assert [partition_key for _, _, _, partition_key, _ in pipeline_records(ours.records)] == ["\ud800"]
