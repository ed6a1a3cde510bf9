"""Chaos (issue 4): the real daemon, moto and redis-server, SIGKILLed again and again while events pour in.

More than 20,000 events over 2 shards (objects, arrays, NDJSON and gzip records; invalid, late,
in-future and too-old events), and the whole worker (daemon and children) SIGKILLed at seeded random
moments while it processes, at least 3 times while the generator sends, and restarted each time. The kills
land between checkpoints (1 s cadence, batches of at most 250 records), so every restart redelivers
records the killed worker had already folded in, and often written to DynamoDB and Redis or
dead-lettered (every other kill waits for such a moment). At the end every aggregate of every metric at
every resolution, in DynamoDB and in Redis, must equal an independent reference computed from the events
as sent (tests/integration/reference.py), and the DLQ's distinct identities must be exactly the
generator's rejected events with their reasons.

Run with -s to see what happened (kills, checkpoints each restart resumed from, DLQ repeats, timings).
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Stack, Worker, wait_for
from tests.integration.reference import DEFAULT_CONFIG, Reference, read_config, read_events
from tests.integration.test_kcl_end_to_end import checkpoints, cli, last_sequence_per_shard
from tests.integration.verify import DlqReader, partial_positions, store_problems

pytestmark = pytest.mark.integration

SEED = 20_251_124
RATE, DURATION = 400, 52  # 20,800 events
INVALID, LATE = 0.05, 0.05
MIN_KILLS, MAX_KILLS = 3, 6  # at least 3; more while the generator still sends
PROGRESS_WAIT_S = 5.0  # at most this long, after its first records, for a restarted worker's checkpoint
KILL_DELAY_S = (0.3, 2.0)  # then this random delay
# Every other kill waits (up to this long) for the moment the worker has aggregates in DynamoDB past its
# checkpoint, i.e. in the middle of a flush: the restart must then skip what is already there.
MID_FLUSH_WAIT_S = 3.0


def both_shards_initialized(worker: Worker) -> bool:
    assert worker.process.poll() is None, f"the worker exited:\n{worker.logs()[-3000:]}"
    return worker.logs().count("shard initialized") >= 2


def processing(worker: Worker) -> bool:
    """The daemon handed the worker's children their first records."""
    assert worker.process.poll() is None, f"the worker exited:\n{worker.logs()[-3000:]}"
    return "Writing ProcessRecordsMessage" in worker.logs()


def resumed_from(log: str) -> list[str]:
    """The checkpoint each shard of a worker started from (KCL redelivers everything after it)."""
    out = []
    for line in log.splitlines():
        if "shard initialized" in line:
            try:
                out.append(str(json.loads(line).get("from_sequence")))
            except ValueError:
                continue
    return out


def seq_of(checkpoint: str | None) -> int:
    return int(checkpoint) if checkpoint and checkpoint.isdigit() else -1


def durable_positions(stack: Stack) -> dict[str, int]:
    """Per shard, the highest sequence number any of its partials in DynamoDB includes."""
    return {shard: int(position.split(".")[0]) for shard, position in partial_positions(stack).items()}


def durable_past_checkpoint(stack: Stack, at: dict[str, str]) -> bool:
    return any(seq > seq_of(at.get(shard)) for shard, seq in durable_positions(stack).items())


def test_sigkill_storm_every_aggregate_and_every_letter_equals_the_independent_truth(
    stack: Stack, start_worker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    began = time.monotonic()
    summary: dict[str, Any] = {}

    def mark(phase: str) -> None:
        summary.setdefault("seconds", {})[phase] = round(time.monotonic() - began, 1)

    # Batches of at most 250 records: a restarted worker checkpoints soon after it starts, and kills land
    # between checkpoints rather than all inside one catch-up batch of the whole backlog.
    s = stack.fresh(shards=2, STREAMKPI_KCL_MAX_RECORDS="250")
    assert s.settings.config_path is None, "the reference reads the built-in default config"
    worker = start_worker(s)
    workers = [worker]
    wait_for(functools.partial(both_shards_initialized, worker), 90, "worker started")
    mark("worker_started")

    truth_file, events_file = tmp_path / "truth.json", tmp_path / "events.ndjson"
    failures: list[BaseException] = []

    def send() -> None:
        try:
            cli(s, "generate", "--rate", str(RATE), "--duration", str(DURATION), "--seed", str(SEED),
                "--invalid-fraction", str(INVALID), "--late-fraction", str(LATE),
                "--truth", str(truth_file), "--events-out", str(events_file))  # fmt: skip
        except BaseException as exc:  # re-raised in the test thread
            failures.append(exc)

    sender = threading.Thread(target=send, daemon=True)
    dlq = DlqReader(s)
    sender.start()
    dlq.start()
    try:
        # The storm: kill the whole worker (its process group: the daemon and the Python children) at
        # random moments once it processes records (not while the JVM starts up: that tests nothing), as a
        # rule after its first checkpoint, so that the checkpoints move on between the kills.
        rng = random.Random(SEED)
        kills: list[dict[str, Any]] = []
        summary["kills"] = kills
        while len(kills) < MIN_KILLS or (sender.is_alive() and len(kills) < MAX_KILLS):
            at_start = checkpoints(s)
            wait_for(functools.partial(processing, worker), 120, f"worker {len(kills)} processing")
            deadline = time.monotonic() + PROGRESS_WAIT_S
            while time.monotonic() < deadline and checkpoints(s) == at_start:
                time.sleep(0.2)
            time.sleep(rng.uniform(*KILL_DELAY_S))
            targeted = len(kills) % 2 == 1
            if targeted:
                deadline = time.monotonic() + MID_FLUSH_WAIT_S
                while time.monotonic() < deadline and not durable_past_checkpoint(s, checkpoints(s)):
                    time.sleep(0.1)
            os.killpg(worker.process.pid, signal.SIGKILL)
            worker.process.wait(10)
            at_kill = checkpoints(s)
            kills.append(
                {
                    "at_s": round(time.monotonic() - began, 1),
                    "sending": sender.is_alive(),
                    "targeted": targeted,
                    # Aggregates in DynamoDB past the checkpoint: the next worker gets those records again.
                    "durable_past_checkpoint": durable_past_checkpoint(s, at_kill),
                    "checkpoints": at_kill,
                }
            )
            worker = start_worker(s)
            workers.append(worker)
        sender.join(240)
        assert not sender.is_alive(), "the generator did not finish"
        if failures:
            raise failures[0]
        mark("sent")

        truth = json.loads(truth_file.read_text())
        summary.update(
            events=truth["events_sent"], valid=truth["valid"], late=truth["late"], invalid=truth["invalid_by_reason"]
        )
        assert truth["events_sent"] >= 20_000 and truth["late"] > 500
        assert {"in_future", "too_old", "not_json", "wrong_type"} <= set(truth["invalid_by_reason"])

        last = last_sequence_per_shard(s)
        assert len(last) == 2
        wait_for(lambda: checkpoints(s) == last, 150, "every shard checkpointed at its last record after the storm")
        wait_for(functools.partial(both_shards_initialized, worker), 90, "the last worker started")
        mark("caught_up")
        for kill in kills:  # checkpoints behind the stream's end at the kill: the next worker got records again
            kill["behind"] = any(seq_of(kill["checkpoints"].get(shard)) < seq_of(seq) for shard, seq in last.items())
        summary["resumed_from"] = [resumed_from(w.logs()) for w in workers]

        reference = Reference(read_config(DEFAULT_CONFIG.read_text()), read_events(events_file))
        assert reference.events == truth["valid"]
        mark("reference")

        # Every metric x resolution x store, read_metric and the CLI as a user runs it, against the reference.
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            monkeypatch.setenv(key, s.env[key])
        problems, compared = store_problems(s, reference)
        mark("compared")
        summary["windows_compared"] = compared
        assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:60])

        # The DLQ: redelivered letters may repeat, but the distinct identities are exactly the rejected events.
        letters = dlq.finish()  # every letter is in the queue: they are sent before the checkpoints
        summary.update(dlq_messages=dlq.messages, dlq_ids=len(letters))
        assert letters == {entry["id"]: entry["reason"] for entry in truth["invalid"]}
        mark("dlq")

        # The storm did what it is for: at least 3 kills mid-stream, each leaving records to redeliver.
        assert len(kills) >= MIN_KILLS and sum(k["sending"] and k["behind"] for k in kills) >= MIN_KILLS, kills
    finally:
        dlq.stop()
        print("chaos:", json.dumps(summary))
