"""Exceptions raised by salbench. Every message says what was expected and what to do."""

from __future__ import annotations


class SalbenchError(Exception):
    """Base class of every error salbench raises on purpose."""


class UnknownNameError(SalbenchError, KeyError):
    """A registry name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(SalbenchError, ValueError):
    """A config key or value that does not validate; the message names the key."""


class WeightsNotFoundError(SalbenchError, FileNotFoundError):
    """Model weights that are not on disk; the message names the file and where to put it."""


class BadInputError(SalbenchError, ValueError):
    """An image, label or box that cannot be used; the message gives the reason."""
