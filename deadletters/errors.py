"""The exceptions of the DLQ tools."""

from __future__ import annotations


class DlqAdminError(Exception):
    """Something is wrong that the operator must fix; the message says what and how."""
