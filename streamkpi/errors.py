"""The errors of the settings, the config file and the KCL daemon launcher: each message says what to do."""

from __future__ import annotations


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message says which and what to do."""


class ConfigError(ValueError):
    """The configuration file has a mistake; the message names where and what to write instead."""


class DaemonError(RuntimeError):
    """The daemon cannot start; the message says what is missing and how to get it."""
