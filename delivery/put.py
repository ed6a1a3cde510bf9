"""Put entries until each is acknowledged or refused for good: the one send loop of every batch put.

Entries are split into calls (`batching`): entries with keys keep their order per key (an entry is
never sent before an earlier entry of its key is acknowledged); entries without keys go in plain order.
Each batch is sent until every entry of it is settled before the next one goes: only the entries the
reply refuses with a retryable code (`retryable.entry_retryable`) or leaves unanswered are sent again,
after a backoff. A short or malformed reply is a failure of the entries it does not answer, never a
crash. A failed call is sent again whole unless the service refused it for good (`DeliveryRefusedError`
at once) or, with `resend_unknown=False`, it may have stored its entries (`DeliveryOutcomeUnknownError`).

The budget: a batch is sent at most `Budget.attempts` times, and no call starts once `Budget.clock()`
reaches `Budget.deadline`; then `DeliveryUnavailableError` says which entries are unacknowledged.
Otherwise every entry's result comes back: `Acknowledged` (with the service's sequence number or
message/record id, and the Kinesis shard) or `Rejected` for good (with its code and message).

Delivery is at least once: an entry whose call timed out, or which the reply left unanswered, may be
stored twice when it is sent again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from delivery.backoff import DEFAULT_BACKOFF, Backoff
from delivery.batching import split_batches, take_keyed_batch
from delivery.errors import (
    DeliveryOutcomeUnknownError,
    DeliveryRefusedError,
    DeliveryRejectedError,
    DeliveryUnavailableError,
    OversizeEntryError,
)
from delivery.limits import BatchLimits
from delivery.retryable import CallOutcome


@dataclass(frozen=True, slots=True)
class Entry:
    """One thing to put: the service's own request entry, the bytes it counts against the batch limit,
    and the key whose order must hold (Kinesis partition key, SQS FIFO group; None: no order)."""

    request: Mapping[str, Any]
    size: int
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Acknowledged:
    id: str  # Kinesis sequence number, SQS message id, Firehose record id
    shard_id: str = ""  # Kinesis: the shard holding the record


@dataclass(frozen=True, slots=True)
class Rejected:
    code: str
    message: str = ""
    retryable: bool = False  # in a reply: worth sending again; in the results: always False


Answer = Acknowledged | Rejected | None  # one entry's part of a reply; None: the reply does not say


@dataclass(frozen=True, slots=True)
class CallReply:
    """One call as the service answered it: one answer per request entry, in order, or a failed call."""

    answers: Sequence[Answer] = ()
    failure: CallOutcome | None = None
    code: str = ""  # the failed call's error code
    error: str = ""  # the failed call's error, readable


class BatchService(Protocol):
    """One batch action of one target (`aws.py`): sends requests, never raises for a service error."""

    service: str  # what the target is, for messages: "Kinesis stream"
    target: str
    limits: BatchLimits

    def call(self, requests: Sequence[Mapping[str, Any]]) -> CallReply: ...


@dataclass(frozen=True, slots=True)
class Budget:
    attempts: int = 8  # calls per batch (its refused entries again each time)
    deadline: float | None = None  # no call starts once clock() reaches it (in the clock's units)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"budget: attempts must be at least 1, got {self.attempts}")


@dataclass(frozen=True, slots=True)
class CallReport:
    """After each call: what it settled and what is to be sent again."""

    attempt: int  # of its batch, from 1
    sent: tuple[int, ...]  # entry indexes
    acknowledged: tuple[tuple[int, Acknowledged], ...]
    failed: tuple[int, ...]  # refused with a retryable code, unanswered, or the whole call failed
    error: str  # what went wrong ("" if nothing)
    call_failed: bool  # the whole call failed


@dataclass(frozen=True, slots=True)
class RetryNotice:
    """Before the backoff sleep of a retry."""

    report: CallReport
    delay_s: float
    unacknowledged: tuple[int, ...]  # the failed entries and those not sent yet


DEFAULT_BUDGET = Budget()


def put_until_acknowledged(
    entries: Sequence[Entry],
    service: BatchService,
    *,
    budget: Budget = DEFAULT_BUDGET,
    backoff: Backoff = DEFAULT_BACKOFF,
    sleep: Callable[[float], None] = time.sleep,
    resend_unknown: bool = True,
    on_call: Callable[[CallReport], None] | None = None,
    on_retry: Callable[[RetryNotice], None] | None = None,
) -> list[Acknowledged | Rejected]:
    """Every entry's result, in order; see the module doc for what is sent when, and what is raised."""
    run = _Run(entries, service)
    for batch in _batches(entries, service.limits):
        pending = batch
        attempt = 0
        while pending:
            if budget.deadline is not None and budget.clock() >= budget.deadline:
                raise run.error(DeliveryUnavailableError, "before the deadline", attempt)
            attempt += 1
            reply = service.call([entries[i].request for i in pending])
            report, unknown = run.settle(attempt, pending, reply)
            if on_call is not None:
                on_call(report)
            if reply.failure is CallOutcome.REFUSED:
                raise run.error(DeliveryRefusedError, "(the call was refused)", attempt)
            if not report.failed:
                break
            if unknown and not resend_unknown:
                raise run.error(DeliveryOutcomeUnknownError, "(the outcome of the last call is unknown)", attempt)
            if attempt >= budget.attempts:
                raise run.error(DeliveryUnavailableError, f"after {attempt} attempts", attempt)
            delay = backoff.delay_s(attempt)
            if on_retry is not None:
                on_retry(RetryNotice(report, delay, run.unacknowledged()))
            sleep(delay)
            pending = list(report.failed)
    return [result for result in run.results if result is not None]


def all_acknowledged(results: Sequence[Acknowledged | Rejected], service: BatchService) -> list[Acknowledged]:
    """`results` when every entry was acknowledged; else DeliveryRejectedError naming the rejected ones."""
    acknowledged = [result for result in results if isinstance(result, Acknowledged)]
    if len(acknowledged) == len(results):
        return acknowledged
    rejected = [index for index, result in enumerate(results) if isinstance(result, Rejected)]
    codes = ", ".join(sorted({result.code for result in results if isinstance(result, Rejected)}))
    raise DeliveryRejectedError(
        f"{service.service} {service.target!r} refused {len(rejected)} of {len(results)} entries for good ({codes})",
        unacknowledged=rejected,
        results=results,
        last_error=codes,
    )


class _Run:
    """The results of one put so far, and what an error says about them."""

    def __init__(self, entries: Sequence[Entry], service: BatchService) -> None:
        for index, entry in enumerate(entries):  # every limit is checked before anything is sent
            if entry.size > service.limits.max_entry_bytes:
                raise OversizeEntryError(
                    f"entry {index} of {entry.size} bytes is over the {service.service} limit of "
                    f"{service.limits.max_entry_bytes} bytes"
                )
        self.service = service
        self.results: list[Answer] = [None] * len(entries)
        self.uncertain: set[int] = set()  # unacknowledged entries a call may have stored all the same
        self.last_error = ""
        self.last_code = ""

    def settle(self, attempt: int, pending: list[int], reply: CallReply) -> tuple[CallReport, list[int]]:
        """Record what the reply says; the report, and the entries whose outcome is unknown."""
        if reply.failure is not None:
            self.last_error, self.last_code = reply.error or reply.code, reply.code
            unknown = pending if reply.failure is CallOutcome.UNKNOWN else []
            self.uncertain.update(unknown)
            return CallReport(attempt, tuple(pending), (), tuple(pending), self.last_error, True), unknown
        answers = list(reply.answers[: len(pending)])
        answers += [None] * (len(pending) - len(answers))  # a short reply: the rest is unanswered
        acknowledged: list[tuple[int, Acknowledged]] = []
        failed: list[int] = []
        unknown = []
        codes: set[str] = set()
        for index, answer in zip(pending, answers, strict=True):
            if isinstance(answer, Acknowledged):
                self.results[index] = answer
                acknowledged.append((index, answer))
            elif isinstance(answer, Rejected) and not answer.retryable:
                self.results[index] = answer
            else:
                failed.append(index)
                if isinstance(answer, Rejected):
                    codes.add(answer.code)
                else:
                    unknown.append(index)
        self.uncertain.update(unknown)
        error = ", ".join(sorted(codes) + ([f"{len(unknown)} unanswered"] if unknown else []))
        if error:
            self.last_error, self.last_code = error, ""
        return CallReport(attempt, tuple(pending), tuple(acknowledged), tuple(failed), error, False), unknown

    def unacknowledged(self) -> tuple[int, ...]:
        return tuple(index for index, result in enumerate(self.results) if result is None)

    def error(self, kind: type[DeliveryUnavailableError], when: str, attempts: int) -> DeliveryUnavailableError:
        waiting = self.unacknowledged()
        message = (
            f"{self.service.service} {self.service.target!r} did not acknowledge {len(waiting)} of "
            f"{len(self.results)} entries {when} (last error: {self.last_error or 'none'})"
        )
        return kind(
            message,
            unacknowledged=waiting,
            uncertain=sorted(self.uncertain.intersection(waiting)),
            results=self.results,
            attempts=attempts,
            last_error=self.last_error,
            code=self.last_code,
        )


def _batches(entries: Sequence[Entry], limits: BatchLimits) -> Iterator[list[int]]:
    """Entry indexes per call. The next batch is taken only once the previous one is settled."""

    def size(index: int) -> int:
        return entries[index].size

    keys = [entry.key for entry in entries if entry.key is not None]
    if len(keys) < len(entries):  # (every entry of a Kinesis or FIFO put has a key)
        yield from split_batches(range(len(entries)), limits.max_entries, limits.max_batch_bytes, size)
        return

    queue = list(range(len(entries)))
    while queue:
        taken = take_keyed_batch(queue, keys.__getitem__, size, limits.max_entries, limits.max_batch_bytes)
        yield [queue[i] for i in taken]
        chosen = set(taken)
        queue = [index for i, index in enumerate(queue) if i not in chosen]
