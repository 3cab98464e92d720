"""Errors the CLI turns into one line and an exit code, instead of a traceback."""


class UserError(Exception):
    """Bad input from the user (file, field, value). The CLI prints `error: <message>` and exits 2.

    Messages name the file, the key/field and the offending value, on one line.
    """


class HarnessError(Exception):
    """The harness itself failed (not a point): exit 1."""
