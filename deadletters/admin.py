"""Operating the dead-letter queue: count by reason, peek, and what redrive needs to read the queue.

Pure helpers (message parsing, counting, previews, the redrive verdict) under a thin I/O shell over
boto3 clients. Reading never deletes: messages are received with a visibility timeout, each counted
once by MessageId, and made visible again (visibility 0) afterwards. The redrive itself (exactly once
across runs, through a ledger) is in `deadletters/redrive.py`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from consumer.bounds import DEFAULT_LIMITS, Limits
from consumer.decode import decode_record
from consumer.dlq import DEFAULT_S3_PREFIX, PayloadUnavailableError, letter_payload
from consumer.validate import Invalid, Rules, validate_event
from deadletters.errors import DlqAdminError
from delivery.aws import SqsBatch
from delivery.errors import DeliveryUnavailableError
from delivery.limits import KINESIS_MAX_RECORD_BYTES, SQS_MAX_BATCH_ENTRIES
from delivery.put import Budget, CallReport, Entry, Rejected, put_until_acknowledged

log = logging.getLogger("streamkpi.dlq_admin")

# Reasons a message is kept that are not validation reason codes.
UNREADABLE = "unreadable"  # the body is not a DLQ message (not JSON, or no id)
PAYLOAD_UNAVAILABLE = "payload_unavailable"  # the payload cannot be had (bad base64, S3 object gone)
NO_EVENTS = "no_events"  # the payload decodes to no event at all (e.g. `[]`)
TOO_LARGE_FOR_STREAM = "too_large_for_stream"  # more than a Kinesis record holds
PUT_FAILED = "put_failed"  # Kinesis refused the record every time
REDRIVE_PENDING = "redrive_pending"  # another run (or an interrupted one) may be putting it: run again later
REDRIVE_UNVERIFIED = "redrive_unverified"  # an interrupted run may have put it; the stream cannot tell any more

PREVIEW_CHARS = 120
NOT_FOUND_CODES = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")


# -- pure helpers ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """One received SQS message of the DLQ."""

    message_id: str
    receipt_handle: str
    body: Mapping[str, Any] | None  # None: not a DLQ message
    raw_body: str
    receive_count: int = 0

    @property
    def reason(self) -> str:
        reason = self.body.get("reason") if self.body is not None else None
        return reason if isinstance(reason, str) and reason else UNREADABLE

    @property
    def letter_id(self) -> str:
        return str(self.body.get("id", "")) if self.body is not None else ""

    @property
    def partition_key(self) -> str:
        key = self.body.get("partitionKey") if self.body is not None else None
        return key if isinstance(key, str) else ""


def parse_message(message: Mapping[str, Any]) -> QueuedMessage:
    """An SQS `receive_message` entry as a QueuedMessage (a body that is not a DLQ message is kept raw)."""
    raw = message.get("Body", "")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict) or not body.get("id"):
        body = None
    try:
        count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", 0))
    except ValueError:
        count = 0
    return QueuedMessage(message["MessageId"], message["ReceiptHandle"], body, raw, count)


def count_by_reason(messages: Sequence[QueuedMessage]) -> dict[str, int]:
    """Messages per reason, most frequent first (ties by name)."""
    counts = Counter(m.reason for m in messages)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def preview(payload: bytes, chars: int = PREVIEW_CHARS) -> str:
    """The start of a payload as text: UTF-8 with replacement characters, cut to `chars` characters."""
    text = payload[: chars * 4].decode("utf-8", "replace")
    return text[:chars] + "…" if len(text) > chars or len(payload) > chars * 4 else text


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str = ""
    detail: str = ""
    events: int = 0


def judge(payload: bytes, partition_key: str, now_ms: int, rules: Rules, limits: Limits = DEFAULT_LIMITS) -> Verdict:
    """Would this payload now be counted? Only if it decodes to events that all validate (arrival = now),
    within the same bounds the worker applies."""
    if not partition_key:
        return Verdict(False, UNREADABLE, "the message has no partition key")
    if len(payload) + len(partition_key.encode()) > KINESIS_MAX_RECORD_BYTES:
        return Verdict(False, TOO_LARGE_FOR_STREAM, f"{len(payload)} bytes is more than one Kinesis record holds")
    decoded = decode_record(payload, limits)
    if decoded.rejections:
        rejection = decoded.rejections[0]
        return Verdict(False, str(rejection.reason), rejection.detail)
    if not decoded.objects:
        return Verdict(False, NO_EVENTS, "the payload holds no events")
    for index, obj in decoded.objects:
        verdict = validate_event(obj, now_ms, rules)
        if isinstance(verdict, Invalid):
            return Verdict(False, str(verdict.reason), f"event {index}: {verdict.detail}")
    return Verdict(True, events=len(decoded.objects))


def peek_row(message: QueuedMessage, payload: bytes | None, payload_error: str = "") -> dict[str, Any]:
    """What `peek` shows of one message."""
    body = message.body or {}
    pointer = body.get("payloadS3")
    return {
        "messageId": message.message_id,
        "id": message.letter_id,
        "reason": message.reason,
        "detail": body.get("detail", "") if message.body is not None else "body is not a DLQ message",
        "partitionKey": message.partition_key,
        "arrival": body.get("approximateArrivalTimestamp", ""),
        "receiveCount": message.receive_count,
        "payloadBytes": None if payload is None else len(payload),
        "preview": preview(payload) if payload is not None else payload_error or preview(message.raw_body.encode()),
        "payloadS3": pointer if isinstance(pointer, Mapping) else None,
    }


# -- the I/O shell --------------------------------------------------------------------------------


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def resolve_queue(sqs: Any, name: str) -> str:
    """The queue's URL, or a DlqAdminError that says what to do."""
    try:
        return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
    except ClientError as exc:
        if _error_code(exc) in NOT_FOUND_CODES:
            raise DlqAdminError(
                f"the DLQ queue {name!r} does not exist; is the stack up? `streamkpi local up` creates it "
                "(or set STREAMKPI_DLQ_QUEUE to the queue's name)."
            ) from None
        raise DlqAdminError(f"cannot look up the DLQ queue {name!r}: {exc}; check the AWS credentials.") from None
    except BotoCoreError as exc:
        raise DlqAdminError(
            f"cannot reach SQS ({exc}); is the stack up? `streamkpi local status`, then `streamkpi local up`."
        ) from None


def approximate_counts(sqs: Any, url: str) -> dict[str, int]:
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return {
        "visible": int(attributes.get(names[0], 0)),
        "inFlight": int(attributes.get(names[1], 0)),
        "delayed": int(attributes.get(names[2], 0)),
    }


class Scanner:
    """Receives every visible message once (by MessageId) and keeps it invisible until released.

    The scan ends at the first empty receive (with long polling SQS asks every server), or after
    `max_idle_rounds` receives in a row that only returned messages already seen (their visibility
    timeout ran out: `incomplete` is set, a longer timeout is needed).
    """

    def __init__(
        self, sqs: Any, url: str, visibility_timeout: int = 60, wait_seconds: int = 1, max_idle_rounds: int = 3
    ) -> None:
        self.sqs, self.url = sqs, url
        self.visibility_timeout, self.wait_seconds, self.max_idle_rounds = (
            visibility_timeout,
            wait_seconds,
            max_idle_rounds,
        )
        self.seen: dict[str, QueuedMessage] = {}  # MessageId -> latest receipt
        self.incomplete = False

    def batches(self, limit: int | None = None) -> Iterator[list[QueuedMessage]]:
        """Newly seen messages, one list per receive, until the queue has no more (or `limit` are seen)."""
        idle = 0
        while limit is None or len(self.seen) < limit:
            want = 10 if limit is None else max(1, min(10, limit - len(self.seen)))
            reply = self.sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=want,
                VisibilityTimeout=self.visibility_timeout,
                WaitTimeSeconds=self.wait_seconds,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
                MessageAttributeNames=["All"],
            )
            received = [parse_message(m) for m in reply.get("Messages", [])]
            if not received:
                return
            new = [m for m in received if m.message_id not in self.seen]
            for m in received:
                self.seen[m.message_id] = m
            if new:
                idle = 0
                yield new
                continue
            idle += 1
            if idle >= self.max_idle_rounds:
                self.incomplete = True
                log.warning("dlq scan: only messages already seen come back", extra={"seen": len(self.seen)})
                return

    def release(self, message_ids: Sequence[str]) -> int:
        """Make these messages visible again now; returns how many SQS refused (they reappear later anyway)."""
        failed = 0
        ids = list(message_ids)
        for start in range(0, len(ids), SQS_MAX_BATCH_ENTRIES):
            chunk = [self.seen[i] for i in ids[start : start + SQS_MAX_BATCH_ENTRIES]]
            entries = [
                {"Id": str(n), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0} for n, m in enumerate(chunk)
            ]
            try:
                reply = self.sqs.change_message_visibility_batch(QueueUrl=self.url, Entries=entries)
            except (ClientError, BotoCoreError) as exc:
                log.warning("dlq: cannot make messages visible again", extra={"error": str(exc)})
                failed += len(chunk)
                continue
            failed += len(reply.get("Failed", []))
        return failed

    def delete(self, message_ids: Sequence[str], attempts: int = 3, sleep: Callable[[float], None] = time.sleep) -> int:
        """Delete these messages (entries SQS refuses for a passing reason are retried); returns how many
        could not be deleted (they become visible again, and a later run deletes them)."""
        entries = [Entry({"ReceiptHandle": self.seen[i].receipt_handle}, 0) for i in message_ids]
        delete_batch = SqsBatch(self.sqs, self.url, "delete_message_batch")
        try:
            results = put_until_acknowledged(
                entries, delete_batch, budget=Budget(attempts), sleep=sleep, on_call=_log_delete_failure
            )
        except DeliveryUnavailableError as exc:
            return len(exc.unacknowledged)
        return sum(isinstance(result, Rejected) for result in results)


def _log_delete_failure(report: CallReport) -> None:
    if report.failed:
        log.warning("dlq: delete failed", extra={"error": report.error, "attempt": report.attempt})


@dataclass
class StatsResult:
    queue_url: str
    total: int
    by_reason: dict[str, int]
    approximate: dict[str, int]
    incomplete: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue_url,
            "total": self.total,
            "byReason": self.by_reason,
            "approximate": self.approximate,
            "complete": not self.incomplete,
        }


def stats(sqs: Any, url: str, visibility_timeout: int = 60, wait_seconds: int = 1) -> StatsResult:
    """Count every message by reason without deleting any."""
    approximate = approximate_counts(sqs, url)  # before the scan puts everything in flight
    scanner = Scanner(sqs, url, visibility_timeout, wait_seconds)
    try:
        for _ in scanner.batches():
            pass
    finally:
        scanner.release(list(scanner.seen))
    messages = list(scanner.seen.values())
    incomplete = scanner.incomplete or len(messages) < approximate["visible"]
    return StatsResult(url, len(messages), count_by_reason(messages), approximate, incomplete)


def peek(
    sqs: Any,
    s3: Any,
    url: str,
    n: int,
    visibility_timeout: int = 60,
    wait_seconds: int = 1,
    *,
    bucket: str,
    prefix: str = DEFAULT_S3_PREFIX,
) -> list[dict[str, Any]]:
    """Up to `n` messages with their payload previews; none is deleted. Payloads in S3 are read only
    from `bucket` under `prefix` (where the worker puts them)."""
    scanner = Scanner(sqs, url, visibility_timeout, wait_seconds)
    shown: list[QueuedMessage] = []
    try:
        for batch in scanner.batches(limit=n):
            shown.extend(batch)
    finally:
        scanner.release(list(scanner.seen))
    rows = []
    for message in shown[:n]:
        payload, error = None, ""
        if message.body is not None:
            try:
                payload = letter_payload(message.body, s3, bucket=bucket, prefix=prefix)
            except PayloadUnavailableError as exc:
                error = f"<payload unavailable: {exc}>"
        rows.append(peek_row(message, payload, error))
    return rows
