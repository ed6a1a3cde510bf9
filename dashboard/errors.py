"""The dashboard's errors: each message says where and why, or what to do."""

from __future__ import annotations


class PublishError(Exception):
    """A snapshot could not be written; the message says where and why."""


class ServeError(Exception):
    """The server cannot start; the message says what to do."""
