"""The worker's JSON log lines say where and why: dead letters, store retries, checkpoints and exits carry
`shard`, `sequence` and `reason` (docs/runbook.md, "Reading the logs"). The processor runs through the KCL
protocol (KCLReader over pipes, as the daemon drives it) and the lines are read as streamkpi.logs writes them."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import orjson
import pytest

from streamkpi.logs import JsonFormatter
from tests.functional.kcl_harness import ProcessorExited
from tests.functional.test_processor import EAGER, LAZY, Rig, event, record


class Captured:
    """The JSON lines the `streamkpi` loggers write, parsed."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.stream.getvalue().splitlines() if line.strip()]

    def with_msg(self, msg: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["msg"] == msg or line["msg"].endswith(msg)]


@pytest.fixture
def logs() -> Iterator[Captured]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("streamkpi")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield Captured(stream)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class SteppedTime:
    """A monotonic clock that moves only when the worker sleeps (its back-off), so retries run at once."""

    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


SHARD = "shardId-000000000000"


def test_dead_letters_are_logged_once_per_reason_with_their_shard_and_sequences(logs: Captured) -> None:
    rig = Rig(EAGER)
    daemon = rig.start()
    daemon.records(
        [
            record(b"junk", 11),
            record(event(), 12),
            record({"timestamp": 1}, 13),  # no eventType
            record(b"more junk", 14),
        ]
    )
    daemon.close()
    sent = {line["reason"]: line for line in logs.with_msg("dead letters sent")}
    assert set(sent) == {"not_json", "missing_field"}
    assert sent["not_json"] | {"ts": None} == {
        "ts": None,
        "level": "info",
        "logger": "streamkpi.worker",
        "msg": "dead letters sent",
        "shard": SHARD,
        "reason": "not_json",
        "letters": 2,
        "sequence": "11",
        "last_sequence": "14",
    }
    assert (sent["missing_field"]["sequence"], sent["missing_field"]["letters"]) == ("13", 1)
    # The checkpoint that passed them says which position it wrote.
    checkpoints = logs.with_msg("checkpointed")
    assert [(c["shard"], c["sequence"], c["sub"]) for c in checkpoints] == [(SHARD, "14", 0)]


def test_throttled_and_refused_checkpoints_carry_the_kcl_error_as_reason(logs: Captured) -> None:
    rig = Rig(EAGER)
    daemon = rig.start()
    daemon.checkpoint_errors = ["ThrottlingException", "ShutdownException"]
    daemon.records([record(event(), 21)])
    daemon.send({"action": "leaseLost"})
    daemon.close()
    throttled = logs.with_msg("checkpoint throttled; retrying")
    assert [(t["shard"], t["sequence"], t["reason"], t["attempt"]) for t in throttled] == [
        (SHARD, "21", "ThrottlingException", 1)
    ]
    refused = logs.with_msg("checkpoint refused")
    assert [(r["shard"], r["sequence"], r["reason"]) for r in refused] == [(SHARD, "21", "ShutdownException")]
    lost = [line for line in logs.lines() if line.get("reason") == "lease_lost"]
    assert lost and all(line["shard"] == SHARD and "sequence" in line for line in lost)


def test_store_retries_and_the_exit_say_which_store_and_where_the_shard_resumes(logs: Captured) -> None:
    time = SteppedTime()
    rig = Rig(replace(EAGER, store_retry_seconds=5.0, clock=time.clock, sleep=time.sleep))
    daemon = rig.start()
    daemon.records([record(event(), 31)])  # checkpointed at 31
    rig.durable.available = False
    with pytest.raises(ProcessorExited):
        daemon.records([record(event("scroll"), 32)])
    assert daemon.exit_code == 2
    retries = logs.with_msg("store unavailable, backing off")
    assert len(retries) >= 2
    assert {(r["shard"], r["reason"], r["sequence"]) for r in retries} == {(SHARD, "store_unavailable", "31")}
    assert [r["attempt"] for r in retries] == list(range(1, len(retries) + 1))
    [exit_line] = logs.with_msg("; exiting without checkpoint")
    assert (exit_line["level"], exit_line["shard"], exit_line["reason"], exit_line["sequence"]) == (
        "error",
        SHARD,
        "FatalError",
        "31",
    )


def test_a_dlq_outage_is_a_delivery_retry(logs: Captured) -> None:
    time = SteppedTime()
    rig = Rig(replace(EAGER, store_retry_seconds=5.0, clock=time.clock, sleep=time.sleep))
    daemon = rig.start()
    rig.dlq.available = False
    with pytest.raises(ProcessorExited):
        daemon.records([record(b"junk", 41)])
    retries = logs.with_msg("store unavailable, backing off")
    assert retries and {(r["reason"], r["what"], r["sequence"]) for r in retries} == {
        ("delivery_unavailable", "send dead letters", None)  # nothing checkpointed yet
    }
    assert logs.with_msg("dead letters sent") == []  # logged only once the DLQ acknowledged them


def test_shutdown_and_shard_end_say_what_they_checkpointed(logs: Captured) -> None:
    rig = Rig(LAZY)
    daemon = rig.start()
    daemon.records([record(event(), 51), record(event(), 52)])
    daemon.send({"action": "shutdownRequested"})
    daemon.close()
    [shutdown] = logs.with_msg("shutdown requested; checkpointed")
    assert (shutdown["shard"], shutdown["reason"], shutdown["sequence"]) == (SHARD, "shutdown_requested", "52")

    rig = Rig(LAZY)
    daemon = rig.start()
    daemon.records([record(event(), 61)])
    daemon.send({"action": "shardEnded"})
    daemon.close()
    [ended] = logs.with_msg("shard ended; checkpointed SHARD_END")
    assert (ended["shard"], ended["reason"], ended["sequence"]) == (SHARD, "shard_end", "SHARD_END")
