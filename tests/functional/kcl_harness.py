"""A scripted stand-in for the MultiLangDaemon side of the KCL protocol.

The production `consumer.protocol.KCLReader` (amazon_kclpy's KCLProcess with a faster message parse), or
amazon_kclpy's own `KCLProcess`, runs in a thread over OS pipes; this side writes the daemon's JSON lines,
answers checkpoint requests (optionally with an error) and collects what the processor said.
"""

from __future__ import annotations

import base64
import io
import os
import threading
from collections.abc import Callable
from typing import Any

import orjson
from amazon_kclpy import kcl

from consumer.protocol import KCLReader


class ProcessorExited(Exception):
    pass


class FakeDaemon:
    def __init__(self, processor: Any, process_class: type[kcl.KCLProcess] = KCLReader) -> None:
        to_child_r, self._to_child_w = os.pipe()
        self._from_child_r, from_child_w = os.pipe()
        self._writer = io.TextIOWrapper(os.fdopen(self._to_child_w, "wb"), write_through=True)
        self._reader = io.TextIOWrapper(os.fdopen(self._from_child_r, "rb"))
        child_in = io.TextIOWrapper(os.fdopen(to_child_r, "rb"))
        child_out = io.TextIOWrapper(os.fdopen(from_child_w, "wb"), write_through=True)
        self.errors = io.StringIO()
        self.checkpoints: list[tuple[str | None, int | None]] = []
        self.checkpoint_errors: list[str] = []  # errors to answer the next checkpoints with, in order
        self.exit_code: int | None = None

        def run() -> None:
            try:
                process_class(processor, child_in, child_out, self.errors).run()
            except SystemExit as exc:
                self.exit_code = int(exc.code or 0)
            finally:
                child_out.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def send(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one action and serve the processor until it reports done (or exits)."""
        self._write(message)
        while True:
            line = self._reader.readline()
            if not line:
                self._thread.join(5)
                raise ProcessorExited(f"processor exited with {self.exit_code} during {message['action']}")
            if not line.strip():
                continue  # amazon_kclpy writes a newline before each message
            reply = orjson.loads(line)
            if reply["action"] == "checkpoint":
                seq, sub = reply.get("sequenceNumber"), reply.get("subSequenceNumber")
                error = self.checkpoint_errors.pop(0) if self.checkpoint_errors else None
                if error is None:
                    self.checkpoints.append((seq, sub))
                answer: dict[str, Any] = {"action": "checkpoint", "sequenceNumber": seq, "subSequenceNumber": sub}
                if error:
                    answer["error"] = error
                self._write(answer)
                continue
            assert reply == {"action": "status", "responseFor": message["action"]}, reply
            return reply

    def _write(self, message: dict[str, Any]) -> None:
        self._writer.write(orjson.dumps(message).decode() + "\n")
        self._writer.flush()

    def initialize(self, shard_id: str = "shardId-000000000000") -> None:
        self.send(
            {"action": "initialize", "shardId": shard_id, "sequenceNumber": "TRIM_HORIZON", "subSequenceNumber": 0}
        )

    def records(self, records: list[dict[str, Any]], millis_behind: int = 0) -> None:
        self.send({"action": "processRecords", "records": records, "millisBehindLatest": millis_behind})

    def close(self) -> None:
        self._writer.close()
        self._thread.join(5)


def kinesis_record(data: bytes, seq: int, arrival_ms: int, partition_key: str = "pk", sub: int = 0) -> dict[str, Any]:
    return {
        "action": "record",  # the daemon tags each record like this; amazon_kclpy's decoder requires it
        "data": base64.b64encode(data).decode(),
        "partitionKey": partition_key,
        "sequenceNumber": str(seq),
        "subSequenceNumber": sub,
        "approximateArrivalTimestamp": arrival_ms,
    }


def raising_exit(code: int) -> Any:
    raise SystemExit(code)


ExitFn = Callable[[int], Any]
