"""The KCL record processor (amazon_kclpy v3 interface), run by the MultiLangDaemon, one per shard.

Stdout is the KCL protocol channel: nothing else may write to it (logs are JSON on stderr).
`amazon_kclpy` swallows exceptions raised from the callbacks and carries on with the next batch, which
would skip records; so no exception escapes here: a failure we cannot ride out ends the process
(non-zero), the daemon exits with it, and the orchestrator restarts from the last checkpoint.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

from amazon_kclpy.checkpoint_error import CheckpointError
from amazon_kclpy.v3 import processor as v3

from consumer.errors import FatalError, LeaseLostError
from consumer.protocol import pipeline_records
from consumer.worker import ShardWorker
from delivery.backoff import Backoff

CHECKPOINT_BACKOFF = Backoff(base_s=0.2, max_s=5.0)  # between checkpoints the KCL refused as throttled
log = logging.getLogger("streamkpi.processor")

WorkerFactory = Callable[[str], ShardWorker]


class RecordProcessor(v3.RecordProcessorBase):
    def __init__(
        self,
        worker_factory: WorkerFactory,
        sleep: Callable[[float], None] = time.sleep,
        exit: Callable[[int], NoReturn] = sys.exit,
        checkpoint_attempts: int = 8,
    ) -> None:
        self.worker_factory = worker_factory
        self.sleep = sleep
        self.exit = exit
        self.checkpoint_attempts = checkpoint_attempts
        self.worker: ShardWorker | None = None
        self.shard_id = "?"
        self.lease_gone = False

    # -- lifecycle ----------------------------------------------------------------------------------

    def initialize(self, initialize_input: Any) -> None:
        self.shard_id = initialize_input.shard_id
        self._guarded("initialize", lambda: self._initialize(initialize_input))

    def _initialize(self, initialize_input: Any) -> None:
        self.worker = self.worker_factory(self.shard_id)
        # A first report now: a processor that then hangs in its first batch goes silent, and is seen to.
        self.worker.report_health()
        log.info(
            "shard initialized",
            extra={
                "shard": self.shard_id,
                "from_sequence": initialize_input.sequence_number,
                "from_sub_sequence": initialize_input.sub_sequence_number,
            },
        )

    def process_records(self, process_records_input: Any) -> None:
        self._guarded("process_records", lambda: self._process(process_records_input))

    def _process(self, process_records_input: Any) -> None:
        if self.lease_gone:
            return  # a zombie must not write; KCL will shut this processor down
        worker = self._worker()
        worker.process(pipeline_records(process_records_input.records))
        worker.stats.last = {"millis_behind_latest": process_records_input.millis_behind_latest}
        if worker.durable_due() or worker.checkpoint_due():
            worker.flush_durable()
            if worker.checkpoint_due():
                self._checkpoint(process_records_input.checkpointer, worker)
        elif worker.hot_due():
            worker.flush_hot()

    def lease_lost(self, lease_lost_input: Any) -> None:
        # Checkpointing is impossible now; whatever was not checkpointed is redelivered to the new owner.
        log.warning(
            "lease lost; dropping unflushed state",
            extra={"shard": self.shard_id, "reason": "lease_lost", "sequence": self._checkpointed_sequence()},
        )
        self.lease_gone = True
        self.worker = None

    def shard_ended(self, shard_ended_input: Any) -> None:
        def finish() -> None:
            worker = self._worker()
            worker.flush_durable()
            # Checkpoint with no sequence number = SHARD_END: without it the child shards never start.
            self._checkpoint(shard_ended_input.checkpointer, worker, shard_end=True)
            worker.mark_shard_ended()
            log.info(
                "shard ended; checkpointed SHARD_END",
                extra={"shard": self.shard_id, "reason": "shard_end", "sequence": "SHARD_END"},
            )

        self._guarded("shard_ended", finish)

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        def finish() -> None:
            if self.worker is None or self.lease_gone:
                return
            self.worker.flush_durable()
            if self.worker.last_record is not None and self.worker.last_record != self.worker.checkpointed:
                self._checkpoint(shutdown_requested_input.checkpointer, self.worker)
            log.info(
                "shutdown requested; checkpointed",
                extra={
                    "shard": self.shard_id,
                    "reason": "shutdown_requested",
                    "sequence": self._checkpointed_sequence(),
                },
            )

        self._guarded("shutdown_requested", finish)

    # -- helpers ------------------------------------------------------------------------------------

    def _worker(self) -> ShardWorker:
        if self.worker is None:
            raise FatalError(f"shard {self.shard_id}: no worker (initialize failed or lease lost)")
        return self.worker

    def _checkpoint(self, checkpointer: Any, worker: ShardWorker, shard_end: bool = False) -> None:
        seq, sub = (None, None) if shard_end or worker.last_record is None else worker.last_record
        for attempt in range(1, self.checkpoint_attempts + 1):
            try:
                checkpointer.checkpoint(seq, sub)
                worker.mark_checkpointed()
                log.debug("checkpointed", extra={"shard": self.shard_id, "sequence": seq, "sub": sub})
                return
            except CheckpointError as exc:
                error = exc.value
                where = {"shard": self.shard_id, "sequence": seq or "SHARD_END", "sub": sub, "reason": error}
                if error == "ThrottlingException" and attempt < self.checkpoint_attempts:
                    log.warning("checkpoint throttled; retrying", extra={**where, "attempt": attempt})
                    self.sleep(CHECKPOINT_BACKOFF.delay_s(attempt))
                    continue
                log.warning("checkpoint refused", extra={**where, "attempt": attempt})
                if error == "ShutdownException":
                    raise LeaseLostError(f"shard {self.shard_id}: checkpoint refused, lease lost") from exc
                raise FatalError(f"shard {self.shard_id}: checkpoint failed with {error}") from exc

    def _guarded(self, what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except LeaseLostError as exc:
            # Reprocessing follows on the new owner; nothing is lost. Stop writing from here.
            log.warning(
                str(exc),
                extra={"shard": self.shard_id, "reason": "lease_lost", "sequence": self._checkpointed_sequence()},
            )
            self.lease_gone = True
            self.worker = None
        except FatalError as exc:
            where = {"shard": self.shard_id, "reason": type(exc).__name__, "sequence": self._checkpointed_sequence()}
            log.error(f"{what}: {exc}; exiting without checkpoint", extra=where)
            self.exit(2)
        except Exception as exc:
            where = {"shard": self.shard_id, "reason": type(exc).__name__, "sequence": self._checkpointed_sequence()}
            log.exception(f"{what}: unexpected error; exiting without checkpoint", extra=where)
            self.exit(3)

    def _checkpointed_sequence(self) -> str | None:
        """The shard's last checkpoint by this process, where the next owner resumes (None: none yet)."""
        worker = self.worker
        return worker.checkpointed[0] if worker is not None and worker.checkpointed else None
