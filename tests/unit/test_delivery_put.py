"""The delivery kit's send loop and retry rule (delivery/put.py, delivery/retryable.py) against a fake
service: order per key under refusals, short replies, budgets, refused and unknown calls."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delivery.backoff import Backoff
from delivery.errors import (
    DeliveryOutcomeUnknownError,
    DeliveryRefusedError,
    DeliveryRejectedError,
    DeliveryUnavailableError,
    OversizeEntryError,
)
from delivery.limits import BatchLimits
from delivery.put import (
    Acknowledged,
    Answer,
    Budget,
    CallReply,
    CallReport,
    Entry,
    Rejected,
    RetryNotice,
    all_acknowledged,
    put_until_acknowledged,
)
from delivery.retryable import CallOutcome, call_outcome, entry_retryable, transport_outcome

# What the fake does with one request entry: store and acknowledge it, refuse it (retryable, not
# stored), reject it for good, or store it and leave it out of the reply.
ACK, REFUSE, REJECT, SILENT = "ack", "refuse", "reject", "silent"
LIMITS = BatchLimits(10, 1_000, 100)
THROTTLED = Rejected("ProvisionedThroughputExceededException", "Rate exceeded", retryable=True)


class FakeService:
    """Stores what it acknowledges (and what it leaves unanswered) in order; notes every call. Fails whole
    calls with the queued `failures` first; checks that no entry overtakes an unsettled one of its key."""

    service = "Fake stream"
    target = "fake"

    def __init__(
        self,
        keys: Sequence[str | None],
        verdict: Callable[[Mapping[str, Any]], str] = lambda request: ACK,
        limits: BatchLimits = LIMITS,
        failures: Sequence[CallReply] = (),
    ) -> None:
        self.keys, self.verdict, self.limits = list(keys), verdict, limits
        self.failures = list(failures)
        self.calls: list[list[int]] = []
        self.stored: list[tuple[str | None, int]] = []
        self.settled: set[int] = set()  # acknowledged, or rejected for good

    def call(self, requests: Sequence[Mapping[str, Any]]) -> CallReply:
        self.calls.append([r["n"] for r in requests])
        for r in requests:  # every earlier entry of its key is settled already
            earlier = {n for n, key in enumerate(self.keys[: r["n"]]) if key is not None and key == r["key"]}
            assert earlier <= self.settled, f"entry {r['n']} sent before earlier entries of {r['key']}"
        if self.failures:
            return self.failures.pop(0)
        answers: list[Answer] = []
        for r in requests:
            verdict = self.verdict(r)
            if verdict in (ACK, SILENT):
                self.stored.append((r["key"], r["n"]))
            if verdict in (ACK, REJECT):
                self.settled.add(r["n"])
            if verdict == ACK:
                answers.append(Acknowledged(f"seq-{r['n']}", "shard-0"))
            elif verdict == REFUSE:
                answers.append(THROTTLED)
            elif verdict == REJECT:
                answers.append(Rejected("KMSDisabledException", "key disabled"))
            else:
                answers.append(None)
        while answers and answers[-1] is None:  # a short reply, as a truncated answer would be
            answers.pop()
        return CallReply(answers=answers)


def entries(keys: Sequence[str | None], size: int = 1) -> list[Entry]:
    return [Entry({"n": n, "key": k}, size, k) for n, k in enumerate(keys)]


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


CEILING = Backoff(random=lambda: 1.0)  # every delay at its ceiling: 0.1, 0.2, 0.4 ...


@settings(max_examples=200, deadline=None)
@given(
    keys=st.lists(st.sampled_from("abcde"), max_size=80),
    seed=st.integers(0, 2**32),
    refuse=st.floats(0, 0.6),
    silent=st.floats(0, 0.3),
)
def test_every_entry_is_acknowledged_once_and_stored_in_order_per_key(
    keys: list[str], seed: int, refuse: float, silent: float
) -> None:
    rng = random.Random(seed)

    def verdict(request: Mapping[str, Any]) -> str:
        draw = rng.random()
        return REFUSE if draw < refuse else SILENT if draw < refuse + silent else ACK

    fake = FakeService(keys, verdict)
    results = put_until_acknowledged(entries(keys), fake, budget=Budget(attempts=10_000), sleep=Sleeps())
    assert results == [Acknowledged(f"seq-{n}", "shard-0") for n in range(len(keys))]
    first_seen: dict[int, int] = {}
    for position, (_, n) in enumerate(fake.stored):
        first_seen.setdefault(n, position)
    assert sorted(first_seen) == list(range(len(keys)))  # every entry stored (unanswered ones maybe twice)
    for k in set(keys):
        mine = sorted((first_seen[n], n) for n, kk in enumerate(keys) if kk == k)
        assert [n for _, n in mine] == sorted(n for _, n in mine), f"order of key {k}"


def test_a_call_holds_one_entry_per_key_and_refused_entries_go_again_before_the_next_batch() -> None:
    refused_once: set[int] = set()

    def verdict(request: Mapping[str, Any]) -> str:
        if request["n"] in (1, 2) and request["n"] not in refused_once:
            refused_once.add(request["n"])
            return REFUSE
        return ACK

    keys = ["a", "b", "a", "c", "b"]
    fake = FakeService(keys, verdict)
    sleeps = Sleeps()
    put_until_acknowledged(entries(keys), fake, backoff=CEILING, sleep=sleeps)
    assert fake.calls == [[0, 1, 3], [1], [2, 4], [2]]
    assert sleeps == [0.1, 0.1]  # the first retry of each batch


def test_entries_without_keys_go_in_plain_order_by_count_and_bytes() -> None:
    fake = FakeService([None] * 8, limits=BatchLimits(3, 25, 10))
    put_until_acknowledged(entries([None] * 8, size=10), fake)
    assert fake.calls == [[0, 1], [2, 3], [4, 5], [6, 7]]  # 25 bytes hold two entries of 10
    fake = FakeService([None] * 7, limits=BatchLimits(3, 1_000, 10))
    put_until_acknowledged(entries([None] * 7), fake)
    assert fake.calls == [[0, 1, 2], [3, 4, 5], [6]]


def test_a_short_reply_fails_only_the_entries_it_does_not_answer() -> None:
    answered_once: set[int] = set()

    def verdict(request: Mapping[str, Any]) -> str:
        if request["n"] >= 2 and request["n"] not in answered_once:
            answered_once.add(request["n"])
            return SILENT
        return ACK

    keys = ["a", "b", "c", "d"]
    fake = FakeService(keys, verdict)
    reports: list[CallReport] = []
    results = put_until_acknowledged(entries(keys), fake, sleep=Sleeps(), on_call=reports.append)
    assert all(isinstance(r, Acknowledged) for r in results)
    assert fake.calls == [[0, 1, 2, 3], [2, 3]]
    assert reports[0].failed == (2, 3) and reports[0].error == "2 unanswered" and not reports[0].call_failed
    assert [i for i, _ in reports[0].acknowledged] == [0, 1]
    assert fake.stored.count(("c", 2)) == 2  # at least once: an unanswered entry may be stored twice


def test_answers_beyond_the_request_are_ignored_and_none_is_unanswered() -> None:
    class Odd(FakeService):
        def call(self, requests: Sequence[Mapping[str, Any]]) -> CallReply:
            self.calls.append([r["n"] for r in requests])
            if len(self.calls) == 1:
                return CallReply(answers=[None, Acknowledged("x"), Acknowledged("y"), Acknowledged("extra")])
            return CallReply(answers=[Acknowledged("again")])

    fake = Odd([None] * 3)
    assert put_until_acknowledged(entries([None, None, None]), fake, sleep=Sleeps()) == [
        Acknowledged("again"),
        Acknowledged("x"),
        Acknowledged("y"),
    ]
    assert fake.calls == [[0, 1, 2], [0]]


def test_the_attempt_budget_ends_with_every_unacknowledged_entry_named() -> None:
    keys = ["a", "b", "b"]
    fake = FakeService(keys, lambda r: ACK if r["n"] == 0 else REFUSE)
    sleeps = Sleeps()
    notices: list[RetryNotice] = []
    with pytest.raises(DeliveryUnavailableError) as raised:
        put_until_acknowledged(
            entries(keys),
            fake,
            budget=Budget(attempts=3),
            backoff=CEILING,
            sleep=sleeps,
            on_retry=notices.append,
        )
    error = raised.value
    assert type(error) is DeliveryUnavailableError
    assert error.unacknowledged == (1, 2) and error.uncertain == () and error.attempts == 3
    assert error.results == (Acknowledged("seq-0", "shard-0"), None, None)
    assert error.last_error == "ProvisionedThroughputExceededException"
    assert "did not acknowledge 2 of 3 entries after 3 attempts" in str(error)
    assert fake.calls == [[0, 1], [1], [1]]  # entry 2 never went: its key's earlier entry was not acknowledged
    assert sleeps == [0.1, 0.2]
    assert [n.unacknowledged for n in notices] == [(1, 2), (1, 2)] and notices[0].delay_s == 0.1


def test_the_time_budget_stops_before_a_call_would_start_past_the_deadline() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    fake = FakeService(["a", "b"], lambda r: REFUSE)
    budget = Budget(attempts=100, deadline=0.65, clock=lambda: now[0])
    with pytest.raises(DeliveryUnavailableError, match="before the deadline") as raised:
        put_until_acknowledged(entries(["a", "b"]), fake, budget=budget, backoff=CEILING, sleep=sleep)
    assert len(fake.calls) == 3  # at 0, 0.1 and 0.3; the fourth would start at 0.7, past 0.65
    assert raised.value.unacknowledged == (0, 1)
    fake = FakeService(["a"])
    with pytest.raises(DeliveryUnavailableError):
        put_until_acknowledged(entries(["a"]), fake, budget=Budget(deadline=0.0, clock=lambda: 0.0))
    assert fake.calls == []


def test_a_refused_call_is_not_sent_again() -> None:
    refused = CallReply(
        failure=CallOutcome.REFUSED, code="ResourceNotFoundException", error="ResourceNotFoundException"
    )
    fake = FakeService(["a", "b"], failures=[refused])
    sleeps = Sleeps()
    with pytest.raises(DeliveryRefusedError, match="ResourceNotFoundException") as raised:
        put_until_acknowledged(entries(["a", "b"]), fake, sleep=sleeps)
    assert raised.value.code == "ResourceNotFoundException" and raised.value.unacknowledged == (0, 1)
    assert len(fake.calls) == 1 and sleeps == []


def test_whole_call_failures_are_sent_again_whole_unless_the_outcome_must_be_known() -> None:
    throttled = CallReply(failure=CallOutcome.NOT_STORED, code="ThrottlingException", error="ThrottlingException")
    timeout = CallReply(failure=CallOutcome.UNKNOWN, error="ReadTimeoutError: read timeout")
    fake = FakeService(["a", "b"], failures=[throttled, timeout])
    assert len(put_until_acknowledged(entries(["a", "b"]), fake, sleep=Sleeps())) == 2
    assert fake.calls == [[0, 1], [0, 1], [0, 1]]

    fake = FakeService([None, None], failures=[throttled, timeout], limits=BatchLimits(1, 1_000, 100))
    with pytest.raises(DeliveryOutcomeUnknownError) as raised:
        put_until_acknowledged(entries([None, None]), fake, sleep=Sleeps(), resend_unknown=False)
    assert fake.calls == [[0], [0]]  # throttled: sent again; timed out: never sent blindly
    assert raised.value.uncertain == (0,) and raised.value.unacknowledged == (0, 1)


def test_an_entry_rejected_for_good_is_a_result_and_does_not_hold_its_key_back() -> None:
    fake = FakeService(["a", "a"], lambda r: REJECT if r["n"] == 0 else ACK)
    sleeps = Sleeps()
    results = put_until_acknowledged(entries(["a", "a"]), fake, sleep=sleeps)
    assert results == [Rejected("KMSDisabledException", "key disabled"), Acknowledged("seq-1", "shard-0")]
    assert fake.calls == [[0], [1]] and sleeps == []


def test_callers_that_need_every_entry_get_an_error_naming_the_rejected_ones() -> None:
    fake = FakeService([None, None, None])
    done = [Acknowledged("1"), Acknowledged("2")]
    assert all_acknowledged(done, fake) == done
    mixed = [Acknowledged("1"), Rejected("KMSDisabledException"), Rejected("KMSNotFoundException")]
    with pytest.raises(DeliveryRejectedError, match=r"refused 2 of 3 entries for good \(KMSDisabled") as raised:
        all_acknowledged(mixed, fake)
    assert raised.value.unacknowledged == (1, 2)
    assert raised.value.last_error == "KMSDisabledException, KMSNotFoundException"
    assert isinstance(raised.value, DeliveryUnavailableError)  # the worker backs off as for an outage


def test_nothing_is_sent_when_an_entry_is_over_the_entry_limit() -> None:
    fake = FakeService([None, None])
    with pytest.raises(OversizeEntryError, match="entry 1 of 101 bytes"):
        put_until_acknowledged([Entry({"n": 0, "key": None}, 5), Entry({"n": 1, "key": None}, 101)], fake)
    assert fake.calls == []
    assert put_until_acknowledged([], fake) == [] and fake.calls == []


@pytest.mark.parametrize(
    ("code", "status", "outcome"),
    [
        ("ProvisionedThroughputExceededException", 400, CallOutcome.NOT_STORED),
        ("KMSThrottlingException", 400, CallOutcome.NOT_STORED),
        ("SomethingNew", 429, CallOutcome.NOT_STORED),
        ("ServiceUnavailableException", 503, CallOutcome.UNKNOWN),
        ("InternalFailure", 500, CallOutcome.UNKNOWN),
        ("", 502, CallOutcome.UNKNOWN),
        ("ResourceNotFoundException", 400, CallOutcome.REFUSED),
        ("AccessDeniedException", 400, CallOutcome.REFUSED),
        ("", 0, CallOutcome.REFUSED),
    ],
)
def test_the_rule_for_failed_calls(code: str, status: int, outcome: CallOutcome) -> None:
    assert call_outcome(code, status) is outcome


def test_the_rule_for_refused_entries_and_transport_failures() -> None:
    assert entry_retryable("ProvisionedThroughputExceededException")
    assert entry_retryable("InternalFailure") and entry_retryable("ServiceUnavailableException")
    assert entry_retryable("AnyCode", sender_fault=False)  # SQS: the service's fault
    assert not entry_retryable("InvalidParameterValue", sender_fault=True)
    assert not entry_retryable("KMSDisabledException")
    assert transport_outcome(request_sent=False) is CallOutcome.NOT_STORED
    assert transport_outcome(request_sent=True) is CallOutcome.UNKNOWN
