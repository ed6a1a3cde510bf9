"""`streamkpi dlq redrive`: put the letters that now validate back into the stream, each exactly once.

Exactly once across runs, duplicate messages and crashes, through the ledger (`redrive_ledger.py`):
for each letter, in this order, (1) a pending entry is written (conditional: one run owns a letter),
(2) PutRecords, (3) the record is claimed and the entry marked done, (4) the messages are deleted.
A later run deletes messages of done letters without putting them; a letter left pending by a crash
is looked for in the stream (`redrive_search.py`) once its run can no longer put it, and put only if
its record is not there. A put whose outcome is unknown (a timeout, a 5xx) is never retried blindly:
it stays pending for a later run to settle. The Kinesis client must not retry on its own either
(`NO_RETRY_CONFIG`): botocore would send a timed-out PutRecords again.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from consumer.bounds import DEFAULT_LIMITS, Limits
from consumer.dlq import DEFAULT_S3_PREFIX, PayloadUnavailableError, letter_payload
from consumer.validate import Rules
from deadletters.admin import (
    PAYLOAD_UNAVAILABLE,
    PUT_FAILED,
    REDRIVE_PENDING,
    REDRIVE_UNVERIFIED,
    UNREADABLE,
    QueuedMessage,
    Scanner,
    judge,
)
from deadletters.errors import DlqAdminError
from deadletters.ledger import (
    DEFAULT_TIMING,
    Action,
    LedgerEntry,
    RedriveLedger,
    Timing,
    decide,
    new_entry,
)
from deadletters.search import find_puts
from delivery.aws import KinesisPutRecords, kinesis_record
from delivery.batching import split_batches
from delivery.errors import DeliveryOutcomeUnknownError, DeliveryRefusedError, DeliveryUnavailableError
from delivery.limits import KINESIS_MAX_BATCH_BYTES, KINESIS_MAX_RECORDS
from delivery.put import Acknowledged, Answer, Budget, CallReport, put_until_acknowledged

log = logging.getLogger("streamkpi.redrive")

# For the Kinesis client of a redrive: no automatic retries (a retried PutRecords after a read timeout
# may put twice) and short timeouts, so a call in flight is over well within Timing.settle_ms.
NO_RETRY_CONFIG = Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=30)


@dataclass
class RedriveResult:
    stream: str
    dry_run: bool
    redriven: int = 0  # letters put back into the stream (dry run: would be)
    recovered: int = 0  # letters an interrupted run had put: found in the stream, marked done, not put again
    deleted: int = 0  # messages deleted because their letter is back in the stream (duplicates included)
    duplicates: int = 0  # further messages of a letter already back (this run or an earlier one)
    kept: dict[str, int] = field(default_factory=dict)  # reason -> messages left in the queue
    not_deleted: int = 0  # back in the stream, but the delete failed: the next run deletes them
    retry_after_ms: int | None = None  # when letters kept as redrive_pending can be settled
    incomplete: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "dryRun": self.dry_run,
            "redriven": self.redriven,
            "recovered": self.recovered,
            "deleted": self.deleted,
            "duplicates": self.duplicates,
            "kept": sum(self.kept.values()),
            "keptByReason": dict(sorted(self.kept.items(), key=lambda item: (-item[1], item[0]))),
            "notDeleted": self.not_deleted,
            "retryAfterMs": self.retry_after_ms,
            "complete": not self.incomplete,
        }


@dataclass
class _Item:
    """One letter to put back: its payload, partition key and every message that carries it."""

    letter_id: str
    payload: bytes
    partition_key: str
    message_ids: list[str]
    stale: LedgerEntry | None = None  # a settled pending entry of an earlier run: search before putting
    entry: LedgerEntry | None = None  # this run's pending entry, once written


@dataclass(frozen=True, slots=True)
class _Put:
    acknowledged: list[tuple[_Item, str, str]]  # with (shard id, sequence number)
    refused: list[_Item]  # surely not in the stream
    unknown: list[_Item]  # the call failed in a way that does not say


@dataclass(frozen=True)
class Context:
    """What a redrive run works with besides the queue."""

    kinesis: Any
    stream: str
    rules: Rules
    ledger: RedriveLedger
    s3: Any
    bucket: str
    prefix: str = DEFAULT_S3_PREFIX
    retention_ms: int = 24 * 3_600_000
    timing: Timing = DEFAULT_TIMING
    now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000  # arrival time for judging
    clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000  # the ledger's times
    sleep: Callable[[float], None] = time.sleep
    attempts: int = 5
    limits: Limits = DEFAULT_LIMITS  # the worker's bounds (STREAMKPI_MAX_*), so letters are judged alike


class _Redrive:
    def __init__(self, ctx: Context, scanner: Scanner, dry_run: bool) -> None:
        self.ctx, self.scanner, self.dry_run = ctx, scanner, dry_run
        self.run_id = uuid.uuid4().hex
        self.result = RedriveResult(ctx.stream, dry_run)
        self.kept: list[str] = []  # message ids to release at the end
        self.pending: dict[str, _Item] = {}  # letter id -> item waiting for the next flush
        self.done: set[str] = set()  # letter ids back in the stream (this run, or found done)
        self.waiting: dict[str, str] = {}  # letter id -> REDRIVE_PENDING or REDRIVE_UNVERIFIED: kept

    def run(self) -> RedriveResult:
        try:
            for batch in self.scanner.batches():
                self._consider_batch(batch)
                if not self.dry_run and (
                    len(self.pending) >= KINESIS_MAX_RECORDS
                    or sum(len(i.payload) for i in self.pending.values()) >= KINESIS_MAX_BATCH_BYTES
                ):
                    self._flush()
            if not self.dry_run:
                self._flush()
        finally:
            # Whatever was not deleted becomes visible again: kept letters, and on an error everything else.
            self.kept += [mid for item in self.pending.values() for mid in item.message_ids]
            if self.dry_run:
                self.result.redriven = len(self.pending)
            self.scanner.release(self.kept)
        self.result.incomplete = self.scanner.incomplete
        return self.result

    # -- reading the queue ------------------------------------------------------------------------

    def _consider_batch(self, batch: list[QueuedMessage]) -> None:
        known = self.done | set(self.waiting) | set(self.pending)
        ids = [m.letter_id for m in batch if m.body is not None and m.letter_id not in known]
        entries = self.ctx.ledger.get(self.ctx.stream, ids) if ids else {}
        for message in batch:
            self._consider(message, entries.get(message.letter_id))

    def _keep(self, message_id: str, reason: str) -> None:
        self.kept.append(message_id)
        self.result.kept[reason] = self.result.kept.get(reason, 0) + 1

    def _wait(self, message_ids: list[str], reason: str, letter_id: str, settled_ms: int | None = None) -> None:
        self.waiting[letter_id] = reason
        for mid in message_ids:
            self._keep(mid, reason)
        if settled_ms is not None and reason == REDRIVE_PENDING:
            self.result.retry_after_ms = max(self.result.retry_after_ms or 0, settled_ms)

    def _consider(self, message: QueuedMessage, entry: LedgerEntry | None) -> None:
        if message.body is None:
            self._keep(message.message_id, UNREADABLE)
            return
        letter_id = message.letter_id
        if letter_id in self.done:  # a duplicate of a letter already back in the stream
            self.result.duplicates += 1
            self._delete([message.message_id])
            return
        if letter_id in self.pending:
            self.result.duplicates += 1
            self.pending[letter_id].message_ids.append(message.message_id)
            return
        if letter_id in self.waiting:
            self._keep(message.message_id, self.waiting[letter_id])
            return
        action = decide(entry, self.ctx.clock_ms(), self.ctx.timing)
        if action is Action.DUPLICATE:  # put back by an earlier run
            self.done.add(letter_id)
            self.result.duplicates += 1
            self._delete([message.message_id])
            return
        if action is Action.WAIT:
            assert entry is not None
            self._wait([message.message_id], REDRIVE_PENDING, letter_id, self.ctx.timing.settled_ms(entry.pending_ms))
            return
        try:
            payload = letter_payload(message.body, self.ctx.s3, bucket=self.ctx.bucket, prefix=self.ctx.prefix)
        except PayloadUnavailableError as exc:
            log.warning("dlq redrive: payload unavailable", extra={"id": letter_id, "error": str(exc)})
            self._keep(message.message_id, PAYLOAD_UNAVAILABLE)
            return
        verdict = judge(payload, message.partition_key, self.ctx.now_ms(), self.ctx.rules, self.ctx.limits)
        if not verdict.ok:
            self._keep(message.message_id, verdict.reason)
            return
        stale = entry if action is Action.SEARCH else None
        self.pending[letter_id] = _Item(letter_id, payload, message.partition_key, [message.message_id], stale)

    def _delete(self, message_ids: list[str]) -> None:
        if self.dry_run:  # they stay, visible again at the end
            self.kept.extend(message_ids)
            return
        failed = self.scanner.delete(message_ids, sleep=self.ctx.sleep)
        self.result.deleted += len(message_ids) - failed
        self.result.not_deleted += failed

    # -- settling and putting ---------------------------------------------------------------------

    def _flush(self) -> None:
        self._settle([i for i in self.pending.values() if i.stale is not None])
        for batch in split_batches(list(self.pending.values()), KINESIS_MAX_RECORDS, KINESIS_MAX_BATCH_BYTES, _bytes):
            self._put_batch(batch)

    def _settle(self, items: list[_Item]) -> None:
        """Interrupted runs left these letters pending: are their records in the stream?"""
        stale = {i.letter_id: i.stale for i in items if i.stale is not None}
        if not stale:
            return
        outcomes = find_puts(
            self.ctx.kinesis,
            self.ctx.stream,
            list(stale.values()),
            self.ctx.ledger.claim,
            now_ms=self.ctx.clock_ms(),
            retention_ms=self.ctx.retention_ms,
            timing=self.ctx.timing,
            sleep=self.ctx.sleep,
        )
        for item in items:
            outcome = outcomes[item.letter_id]
            if outcome.found is not None:
                self.ctx.ledger.finish(stale[item.letter_id], *outcome.found)
                del self.pending[item.letter_id]
                self.done.add(item.letter_id)
                self.result.recovered += 1
                log.info("dlq redrive: found in the stream", extra={"id": item.letter_id, "record": outcome.found})
                self._delete(item.message_ids)
            elif not outcome.complete:
                del self.pending[item.letter_id]
                log.warning(
                    "dlq redrive: cannot tell whether it was put", extra={"id": item.letter_id, "why": outcome.detail}
                )
                self._wait(item.message_ids, REDRIVE_UNVERIFIED, item.letter_id)
            # Not found: the stale entry is taken over and the letter put like a new one.

    def _put_batch(self, items: list[_Item]) -> None:
        held: list[_Item] = []
        for item in items:
            entry = new_entry(
                self.ctx.stream, item.letter_id, self.run_id, self.ctx.clock_ms(), item.partition_key, item.payload
            )
            owned = self.ctx.ledger.take_over(item.stale, entry) if item.stale else self.ctx.ledger.begin(entry)
            if not owned:  # another run wrote an entry since we read the ledger
                del self.pending[item.letter_id]
                self._wait(
                    item.message_ids, REDRIVE_PENDING, item.letter_id, self.ctx.timing.settled_ms(entry.pending_ms)
                )
                continue
            item.entry = entry
            held.append(item)
        outcome = self._put(held)
        for item, shard_id, sequence_number in outcome.acknowledged:
            self._record(item, shard_id, sequence_number)
            del self.pending[item.letter_id]
            self.done.add(item.letter_id)
            self.result.redriven += 1
            self._delete(item.message_ids)
        for item in outcome.refused:
            del self.pending[item.letter_id]
            self._abort(item)
            for mid in item.message_ids:
                self._keep(mid, PUT_FAILED)
        for item in outcome.unknown:
            del self.pending[item.letter_id]
            assert item.entry is not None
            self._wait(
                item.message_ids, REDRIVE_PENDING, item.letter_id, self.ctx.timing.settled_ms(item.entry.pending_ms)
            )

    def _record(self, item: _Item, shard_id: str, sequence_number: str) -> None:
        """The put is acknowledged: claim the record and mark the letter done. If the ledger fails here,
        the messages are deleted all the same (the letter is in the stream); a duplicate message found
        later settles the pending entry by finding this record."""
        assert item.entry is not None
        try:
            if not self.ctx.ledger.claim(item.entry, shard_id, sequence_number):
                log.error("dlq redrive: another letter claimed the record just put", extra={"id": item.letter_id})
            self.ctx.ledger.finish(item.entry, shard_id, sequence_number)
        except (ClientError, BotoCoreError) as exc:
            log.warning(
                "dlq redrive: ledger not updated after the put", extra={"id": item.letter_id, "error": str(exc)}
            )

    def _abort(self, item: _Item) -> None:
        assert item.entry is not None
        try:
            self.ctx.ledger.abort(item.entry)
        except (ClientError, BotoCoreError) as exc:  # it stays pending: a later run searches, then puts
            log.warning("dlq redrive: ledger entry not removed", extra={"id": item.letter_id, "error": str(exc)})

    def _put(self, items: list[_Item]) -> _Put:
        """Put the items; sent again only while Kinesis surely stored nothing of them, and only within their
        put window (no call starts after the earliest of their deadlines, by the ledger's clock)."""
        if not items:
            return _Put([], [], [])
        deadline = min(self.ctx.timing.put_deadline_ms(i.entry.pending_ms) for i in items if i.entry is not None)
        uncertain: set[int] = set()
        try:
            results: Sequence[Answer] = put_until_acknowledged(
                [kinesis_record(i.payload, i.partition_key) for i in items],
                KinesisPutRecords(self.ctx.kinesis, self.ctx.stream),
                budget=Budget(self.ctx.attempts, deadline, self.ctx.clock_ms),
                sleep=self.ctx.sleep,
                resend_unknown=False,  # a timed-out put is settled by a later run, never sent blindly
                on_call=_log_put_failure,
            )
        except DeliveryUnavailableError as exc:
            results, uncertain = exc.results, set(exc.uncertain)
            if isinstance(exc, DeliveryOutcomeUnknownError):
                log.warning("dlq redrive: put_records outcome unknown", extra={"error": exc.last_error})
            if isinstance(exc, DeliveryRefusedError) and exc.code == "ResourceNotFoundException":
                for n, item in enumerate(items):
                    if not isinstance(results[n], Acknowledged) and n not in uncertain:
                        self._abort(item)
                raise DlqAdminError(
                    f"the stream {self.ctx.stream!r} does not exist; is the stack up? `streamkpi local up` "
                    "(or name another with --stream)."
                ) from None
        result = _Put([], [], [])
        for n, (item, answer) in enumerate(zip(items, results, strict=True)):
            if isinstance(answer, Acknowledged):
                result.acknowledged.append((item, answer.shard_id, answer.id))
            elif n in uncertain:
                result.unknown.append(item)
            else:  # refused, or never sent: surely not in the stream
                result.refused.append(item)
        return result


def _bytes(item: _Item) -> int:
    return len(item.payload) + len(item.partition_key.encode())


def _log_put_failure(report: CallReport) -> None:
    if report.call_failed:
        log.warning("dlq redrive: put_records failed", extra={"error": report.error, "attempt": report.attempt})


def check_stream(kinesis: Any, stream: str) -> int:
    """The stream's retention in ms, or a DlqAdminError that says what to do."""
    try:
        summary = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            raise DlqAdminError(
                f"the stream {stream!r} does not exist; is the stack up? `streamkpi local up` "
                "(or name another with --stream)."
            ) from None
        raise DlqAdminError(f"cannot describe the stream {stream!r}: {exc}; check the AWS credentials.") from None
    except BotoCoreError as exc:
        raise DlqAdminError(f"cannot reach Kinesis ({exc}); is the stack up? `streamkpi local status`.") from None
    return int(summary.get("RetentionPeriodHours", 24)) * 3_600_000


def redrive(
    sqs: Any,
    url: str,
    ctx: Context,
    *,
    dry_run: bool = False,
    visibility_timeout: int = 300,
    wait_seconds: int = 1,
) -> RedriveResult:
    """Put every letter whose payload now validates back into `ctx.stream` once, then delete its messages.

    Letters that still fail stay in the queue (made visible again), and so do letters another run may
    be putting (`redrive_pending`: run again after `retry_after_ms`). With `dry_run` nothing is put,
    written or deleted; the result says what would happen.
    """
    ctx = dataclasses.replace(ctx, retention_ms=check_stream(ctx.kinesis, ctx.stream))
    scanner = Scanner(sqs, url, visibility_timeout, wait_seconds)
    return _Redrive(ctx, scanner, dry_run).run()
