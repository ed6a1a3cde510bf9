"""The local stack's errors."""

from __future__ import annotations


class LocalStackError(RuntimeError):
    """The local stack cannot start; the message says what is wrong and what to do."""
