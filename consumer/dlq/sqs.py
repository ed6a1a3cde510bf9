"""The SQS dead-letter queue, large payloads in S3, on the delivery kit (`delivery/`).

SQS takes at most 256 KiB per message and per batch (bodies and attributes together): a payload whose
message would be larger goes to S3 at a key made from the letter's identity (a retry overwrites it,
never duplicates it) before any message points to it. Batches hold at most 10 entries and 256 KiB;
entries SQS refuses with a retryable code are sent again (`delivery.put`). FIFO queues get the identity
as deduplication id and the shard as message group (the DLQ promises no order, so none is kept).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from consumer.dlq import DEFAULT_S3_PREFIX, DeadLetter, dlq_message, encode_body, s3_key
from delivery.aws import SqsBatch, call_failure, sqs_message
from delivery.backoff import DEFAULT_BACKOFF, Backoff
from delivery.errors import DeliveryUnavailableError
from delivery.put import Budget, CallReport, Entry, all_acknowledged, put_until_acknowledged
from delivery.retryable import CallOutcome

log = logging.getLogger("streamkpi.dlq")

# A body above this goes to S3 instead: leaves room for the attributes under the SQS message limit.
MAX_INLINE_BODY_BYTES = 250_000


class SqsDeadLetterQueue:
    """SQS backend, large payloads in S3."""

    def __init__(
        self,
        sqs_client: Any,
        queue_url: str,
        sleep: Callable[[float], None] = time.sleep,
        attempts: int = 5,
        *,
        s3_client: Any | None = None,
        bucket: str | None = None,
        s3_prefix: str = DEFAULT_S3_PREFIX,
        max_inline_body_bytes: int = MAX_INLINE_BODY_BYTES,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        self.send_message_batch = SqsBatch(sqs_client, queue_url)
        self.queue_url = queue_url
        self.fifo = queue_url.endswith(".fifo")
        self.sleep = sleep
        self.budget = Budget(attempts)
        self.backoff = backoff
        self.s3 = s3_client
        self.bucket = bucket
        self.s3_prefix = s3_prefix
        self.max_inline_body_bytes = max_inline_body_bytes

    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Returns when SQS acknowledged every letter; raises DeliveryUnavailableError otherwise."""
        entries = [self._entry(letter) for letter in letters]  # large payloads are in S3 before any pointer
        results = put_until_acknowledged(
            entries,
            self.send_message_batch,
            budget=self.budget,
            backoff=self.backoff,
            sleep=self.sleep,
            on_call=_log_failures,
        )
        all_acknowledged(results, self.send_message_batch)

    def _entry(self, letter: DeadLetter) -> Entry:
        body = encode_body(dlq_message(letter))
        if len(body.encode()) > self.max_inline_body_bytes:
            body = encode_body(dlq_message(letter, self._store_payload(letter)))
        attributes = {"reason": {"DataType": "String", "StringValue": letter.reason}}
        if not self.fifo:
            return sqs_message(body, attributes)
        dedup_id = letter.identity.replace("/", "-")[-128:]
        return sqs_message(body, attributes, group_id=letter.shard_id, deduplication_id=dedup_id)

    def _store_payload(self, letter: DeadLetter) -> dict[str, Any]:
        if self.s3 is None or not self.bucket:
            raise DeliveryUnavailableError(
                f"a DLQ payload of {len(letter.payload)} bytes is too large for SQS and no S3 bucket is configured"
            )
        key = s3_key(letter, self.s3_prefix)
        for attempt in range(1, self.budget.attempts + 1):
            try:
                self.s3.put_object(
                    Bucket=self.bucket, Key=key, Body=letter.payload, ContentType="application/octet-stream"
                )
            except Exception as exc:
                failure = call_failure(exc)
                if failure is None:
                    raise
                log.warning("dlq payload upload failed", extra={"error": failure.error, "attempt": attempt, "key": key})
                if failure.failure is CallOutcome.REFUSED:  # (a missing bucket, access denied)
                    break
                if attempt < self.budget.attempts:
                    self.sleep(self.backoff.delay_s(attempt))
                continue
            return {"bucket": self.bucket, "key": key, "bytes": len(letter.payload)}
        raise DeliveryUnavailableError(f"S3 refused the DLQ payload s3://{self.bucket}/{key} after {attempt} attempts")


def _log_failures(report: CallReport) -> None:
    if report.call_failed:
        log.warning("dlq send failed", extra={"error": report.error, "attempt": report.attempt})
    elif report.failed:
        log.warning("dlq entries refused", extra={"refused": len(report.failed), "codes": report.error})
