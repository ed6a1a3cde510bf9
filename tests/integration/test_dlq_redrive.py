"""`streamkpi dlq redrive` after a schema fix, with the real daemon: fixed records come back and count."""

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

    fixed_stack = Stack(s.settings, {**s.env, "STREAMKPI_CONFIG": str(fixed)})
    dry = cli(fixed_stack, "dlq", "redrive", "--dry-run")
    assert f"would redrive {len(schema_rejects)} letters" in dry.stdout
    done = cli(fixed_stack, "dlq", "redrive")
    assert f"redriven {len(schema_rejects)} letters" in done.stdout

    restarted = start_worker(fixed_stack)
    wait_for(lambda: stored_counts(s, "dynamodb", from_ms, to_ms) == expected, 120, "redriven donations counted")
    assert stored_counts(s, "redis", from_ms, to_ms) == expected
    # What is left in the DLQ is exactly what the generator made invalid.
    assert set(dlq_ids(s)) == set(generator_invalid)
    assert restarted.stop() == 0
