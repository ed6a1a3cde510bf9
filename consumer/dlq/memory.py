"""The in-memory DLQ the tests use."""

from __future__ import annotations

from collections.abc import Sequence

from consumer.dlq import DeadLetter
from delivery.errors import DeliveryUnavailableError


class MemoryDeadLetterQueue:
    """`letters` received; `available` False raises DeliveryUnavailableError."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []
        self.available = True

    def send(self, letters: Sequence[DeadLetter]) -> None:
        if not self.available:
            raise DeliveryUnavailableError("dlq is unavailable (test outage)")
        self.letters.extend(letters)
