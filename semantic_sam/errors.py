"""The base class of errors caused by what the user gave (a file, a config value, an argument).

Command-line entry points wrapped in :func:`semantic_sam.utils.cli.exit_on_user_error` report any
subclass as a one-line ``error: <message>`` on stderr with exit status 2, without a traceback.
This module imports nothing, so every module of the project (and ``datasets/``, ``tools/``) can
derive its error types from :class:`UserError` without import cycles, next to the builtin base
that callers catch::

    class CorruptRecordError(ValueError, UserError): ...
"""

__all__ = ["UserError"]


class UserError(Exception):
    """Invalid input given by the user; the message says what is wrong and where (file, key, flag)."""

    def one_line(self) -> str:
        """The message on one line (command-line tools print it after ``error:``)."""
        lines = [line.strip() for line in str(self).splitlines() if line.strip()]
        return "; ".join(lines) or type(self).__name__
