"""The DLQ's consumer during an integration test: receives and deletes letters as they come, in a thread.

moto's ReceiveMessage costs O(queue length) per message, so reading a queue of a thousand letters at the
end takes minutes; draining it as the worker fills it keeps every read short. Subclasses keep what they
need of each message body (`keep`)."""

from __future__ import annotations

import json
import threading
from typing import Any

from tests.integration.conftest import Stack


class DlqDrain:
    def __init__(self, stack: Stack, interval: float = 0.5) -> None:
        self.sqs = stack.client("sqs")
        self.url = self.sqs.get_queue_url(QueueName=stack.settings.dlq_queue)["QueueUrl"]
        self.messages = 0
        self.error: BaseException | None = None
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def keep(self, body: dict[str, Any]) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.drain()
                self._stop.wait(self.interval)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def drain(self, calls: int | None = None) -> None:
        """Receive and delete until the queue is empty, or at most `calls` receives (a running worker may
        never let it be empty)."""
        while calls is None or calls > 0:
            calls = None if calls is None else calls - 1
            batch = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, VisibilityTimeout=300)
            messages = batch.get("Messages", [])
            if not messages:
                return
            for message in messages:
                self.keep(json.loads(message["Body"]))
            self.messages += len(messages)
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
            failed = self.sqs.delete_message_batch(QueueUrl=self.url, Entries=entries).get("Failed")
            assert not failed, failed

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(60)

    def finish(self) -> None:
        """Stop the background reader (raising what it met) and read what is left."""
        self.stop()
        if self.error is not None:
            raise self.error
        self.drain()
