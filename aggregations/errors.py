"""The errors of the aggregations package; each says what the caller does next."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aggregations.partials import WindowKey


class StoreError(Exception):
    """Base of store errors."""


class StoreUnavailableError(StoreError):
    """The store did not answer or refused for a transient reason: back off, do not checkpoint."""


class StoreAccessError(StoreUnavailableError):
    """The store refused the login or its TLS certificate was not trusted: a setting is wrong (the message says
    which). Still retried like any outage: a rotated password or certificate can come right while waiting."""


class StoreRejectedError(StoreError):
    """The store refused items as invalid (e.g. over its item size limit): retrying cannot help. The
    bounds should make this impossible; the worker folds the windows' groups and writes them again."""

    def __init__(self, message: str, keys: Sequence[WindowKey]) -> None:
        super().__init__(message)
        self.keys = list(keys)


class QueryError(ValueError):
    """The query cannot be answered as asked; the message says what to ask instead."""
