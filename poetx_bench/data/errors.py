"""The data package's error type: bad data is the user's to fix, so it is a UserError (exit 2, one line)."""

from __future__ import annotations

from ..errors import UserError


class DataError(UserError):
    """A data file, corpus or cache that cannot be used. The message is one line and names the file."""


def one_line(text: object) -> str:
    """Collapse a message (e.g. a library's exception text) onto one line, so CLI output stays one line."""
    return " ".join(str(text).split())
