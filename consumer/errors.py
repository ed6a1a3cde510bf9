"""The consumer's errors; each says what happens next."""

from __future__ import annotations


class FatalError(Exception):
    """Processing cannot go on without losing or corrupting data: exit without checkpointing."""


class ZombieError(FatalError):
    """Another writer stored a newer partial for this shard: this worker lost its lease."""


class LeaseLostError(Exception):
    """Checkpointing failed with ShutdownException: another worker has the lease. Stop writing."""


class TimestampError(ValueError):
    """An event's timestamp is not one the validation reads; the event is dead-lettered."""
