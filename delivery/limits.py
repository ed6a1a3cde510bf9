"""The AWS limits the kit splits and checks by, defined here and nowhere else.

Kinesis counts a record as its data plus its partition key (UTF-8 bytes); SQS counts a message as its
body plus its attributes (names, types and values); Firehose counts a record's data.
"""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB

KINESIS_MAX_RECORDS = 500  # per PutRecords call
KINESIS_MAX_BATCH_BYTES = 5 * MIB  # per PutRecords call
KINESIS_MAX_RECORD_BYTES = MIB  # one record: data + partition key
KINESIS_MAX_PARTITION_KEY_CHARS = 256  # and at least 1

SQS_MAX_BATCH_ENTRIES = 10  # per SendMessageBatch (and DeleteMessageBatch, ChangeMessageVisibilityBatch)
SQS_MAX_MESSAGE_BYTES = 256 * KIB  # one message: body + attributes
SQS_MAX_BATCH_BYTES = 256 * KIB  # all messages of one SendMessageBatch
SQS_MAX_ID_CHARS = 128  # MessageGroupId and MessageDeduplicationId of a FIFO queue

FIREHOSE_MAX_RECORDS = 500  # per PutRecordBatch call
FIREHOSE_MAX_BATCH_BYTES = 4 * MIB  # per PutRecordBatch call
FIREHOSE_MAX_RECORD_BYTES = 1000 * KIB  # one record's data


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """What one batch call of a service takes."""

    max_entries: int
    max_batch_bytes: int
    max_entry_bytes: int


KINESIS = BatchLimits(KINESIS_MAX_RECORDS, KINESIS_MAX_BATCH_BYTES, KINESIS_MAX_RECORD_BYTES)
SQS = BatchLimits(SQS_MAX_BATCH_ENTRIES, SQS_MAX_BATCH_BYTES, SQS_MAX_MESSAGE_BYTES)
FIREHOSE = BatchLimits(FIREHOSE_MAX_RECORDS, FIREHOSE_MAX_BATCH_BYTES, FIREHOSE_MAX_RECORD_BYTES)
