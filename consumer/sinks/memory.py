"""The in-memory sink the tests use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from delivery.errors import DeliveryUnavailableError

if TYPE_CHECKING:
    from consumer.sinks import ForwardPair


class MemorySink:
    """`events` received, `available` (False raises DeliveryUnavailableError), `calls`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[ForwardPair] = []
        self.available = True
        self.calls = 0

    def send(self, events: Sequence[ForwardPair]) -> None:
        self.calls += 1
        if not self.available:
            raise DeliveryUnavailableError(
                f"sink {self.name!r} is unavailable (test outage); {len(events)} events pending"
            )
        self.events.extend(events)
