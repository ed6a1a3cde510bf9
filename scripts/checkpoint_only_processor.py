"""The baseline of `scripts/bench_capacity.py`: a record processor that only checkpoints.

The shape of the KCL's Python sample (amazon_kclpy's `sample_kclpy_app.py`, v3 interface): amazon_kclpy
reads the daemon's messages (`KCLProcess`: `json.loads` and a `Record` per record) and `process_records`
does nothing with the records but checkpoint at the last one, at the end of every batch. What the
daemon and the protocol cost with any processor at all; `streamkpi consume` is measured against it.

The daemon runs it as `<venv python> scripts/checkpoint_only_processor.py` (it splits `executableName`
on spaces, so neither path may have one).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from amazon_kclpy import kcl
from amazon_kclpy.checkpoint_error import CheckpointError
from amazon_kclpy.v3 import processor

CHECKPOINT_RETRIES = 5
RETRY_SLEEP_SECONDS = 0.5


class CheckpointOnlyProcessor(processor.RecordProcessorBase):
    def initialize(self, initialize_input: Any) -> None:
        self.shard_id = initialize_input.shard_id

    def process_records(self, process_records_input: Any) -> None:
        records = process_records_input.records
        if records:
            last = records[-1]
            self.checkpoint(process_records_input.checkpointer, last.sequence_number, last.sub_sequence_number)

    def lease_lost(self, lease_lost_input: Any) -> None:
        pass

    def shard_ended(self, shard_ended_input: Any) -> None:
        self.checkpoint(shard_ended_input.checkpointer)

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        self.checkpoint(shutdown_requested_input.checkpointer)

    def checkpoint(self, checkpointer: Any, sequence_number: str | None = None, sub: int | None = None) -> None:
        """As the sample does: retry throttling, give up on a lost lease (the new owner goes on)."""
        for _ in range(CHECKPOINT_RETRIES):
            try:
                checkpointer.checkpoint(sequence_number, sub)
                return
            except CheckpointError as exc:
                if exc.value == "ShutdownException":
                    return
                if exc.value != "ThrottlingException":
                    sys.stderr.write(f"checkpoint failed: {exc.value}\n")
                    return
                time.sleep(RETRY_SLEEP_SECONDS)


if __name__ == "__main__":
    kcl.KCLProcess(CheckpointOnlyProcessor()).run()
