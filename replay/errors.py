"""The exceptions of the replay package."""

from __future__ import annotations


class ReplayError(RuntimeError):
    """The replay cannot start or go on; the message says what to do."""


class ReplayAbortedError(ReplayError):
    """The stream refused for good; what was acknowledged is recorded, the rest can be resumed."""


class PathError(ValueError):
    """A partition-key path that cannot be used; the message says why."""


class ProgressError(ValueError):
    """The resume file cannot be used; the message says why and what to do."""


class CompressionError(Exception):
    """A gzip stream is corrupt or cut short."""
