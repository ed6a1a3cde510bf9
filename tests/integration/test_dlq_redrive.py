"""`streamkpi dlq redrive` after a schema fix, with the real daemon: fixed records come back and count,
once each, however many copies of a letter the queue holds and however often redrive runs."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from streamkpi.config import default_config_text
from tests.integration.conftest import Stack, wait_for
from tests.integration.test_failures import window_range
from tests.integration.test_kcl_end_to_end import checkpoints, cli, dlq_ids, last_sequence_per_shard, stored_counts

pytestmark = pytest.mark.integration

# A schema mistake: donations above 20 are refused (the generator sends up to a few hundred).
TOO_STRICT = default_config_text().replace(
    'amount = { type = "number", minimum = 0 }', 'amount = { type = "number", minimum = 0, maximum = 20 }'
)


def letter_bodies(stack: Stack, ids: set[str]) -> dict[str, str]:
    """The message bodies of these letters (read without deleting; every message visible again after)."""
    sqs = stack.client("sqs")
    url = sqs.get_queue_url(QueueName=stack.settings.dlq_queue)["QueueUrl"]
    bodies: dict[str, str] = {}
    handles: list[str] = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=300).get(
        "Messages", []
    ):
        for message in messages:
            handles.append(message["ReceiptHandle"])
            letter_id = json.loads(message["Body"])["id"]
            if letter_id in ids:
                bodies[letter_id] = message["Body"]
    for start in range(0, len(handles), 10):
        chunk = handles[start : start + 10]
        entries = [{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0} for i, h in enumerate(chunk)]
        sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries)
    return bodies


def send_again(stack: Stack, bodies: dict[str, str]) -> None:
    """What a worker does after a crash before its checkpoint: the same letters once more (at least once)."""
    sqs = stack.client("sqs")
    url = sqs.get_queue_url(QueueName=stack.settings.dlq_queue)["QueueUrl"]
    for body in bodies.values():
        sqs.send_message(QueueUrl=url, MessageBody=body)


def test_redrive_after_a_schema_fix_moves_exactly_the_fixed_records_back(
    stack: Stack, start_worker: Any, tmp_path: Path
) -> None:
    strict, fixed = tmp_path / "strict.toml", tmp_path / "fixed.toml"
    strict.write_text(TOO_STRICT)
    fixed.write_text(default_config_text())
    assert default_config_text() != TOO_STRICT
    s = stack.fresh(shards=2, STREAMKPI_CONFIG=str(strict))
    truth_file = tmp_path / "truth.json"
    cli(s, "generate", "--rate", "1000", "--duration", "2", "--seed", "21", "--invalid-fraction", "0.03",
        "--truth", str(truth_file))  # fmt: skip
    truth = json.loads(truth_file.read_text())
    expected = truth["counts"]["events"]["1m"]
    from_ms, to_ms = window_range(expected)

    worker = start_worker(s)
    last = last_sequence_per_shard(s)
    wait_for(lambda: checkpoints(s) == last, 120, "first pass checkpointed")
    letters = dlq_ids(s)
    generator_invalid = {entry["id"]: entry["reason"] for entry in truth["invalid"]}
    schema_rejects = {i for i, reason in letters.items() if reason == "schema"}
    assert schema_rejects and set(letters) == set(generator_invalid) | schema_rejects
    short = stored_counts(s, "dynamodb", from_ms, to_ms)
    assert sum(w.get("donation.made", 0) for w in short.values()) == sum(
        w.get("donation.made", 0) for w in expected.values()
    ) - len(schema_rejects)
    assert worker.stop(signal.SIGTERM) == 0

    # The worker sent some letters twice (a crash before its checkpoint) ...
    twice = letter_bodies(s, set(sorted(schema_rejects)[: max(1, len(schema_rejects) // 2)]))
    assert twice
    send_again(s, twice)
    fixed_stack = Stack(s.settings, {**s.env, "STREAMKPI_CONFIG": str(fixed)})
    dry = cli(fixed_stack, "dlq", "redrive", "--dry-run")
    assert f"would redrive {len(schema_rejects)} letters" in dry.stdout
    done = cli(fixed_stack, "dlq", "redrive")
    assert f"redriven {len(schema_rejects)} letters" in done.stdout
    assert f"{len(twice)} of them duplicates" in done.stdout
    redriven = last_sequence_per_shard(s)
    # ... and again after they were redriven: each later run deletes them and puts nothing.
    for _ in range(2):
        send_again(s, twice)
        summary = json.loads(cli(fixed_stack, "dlq", "redrive", "--format", "json").stdout)
        assert (summary["redriven"], summary["duplicates"], summary["deleted"]) == (0, len(twice), len(twice))
    assert last_sequence_per_shard(s) == redriven  # nothing more went into the stream

    restarted = start_worker(fixed_stack)
    wait_for(lambda: stored_counts(s, "dynamodb", from_ms, to_ms) == expected, 120, "redriven donations counted")
    assert stored_counts(s, "redis", from_ms, to_ms) == expected
    # What is left in the DLQ is exactly what the generator made invalid.
    assert set(dlq_ids(s)) == set(generator_invalid)
    assert restarted.stop() == 0
