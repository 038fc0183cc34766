"""Command-line entry points: the one place that turns user errors into ``error: <message>``, exit 2.

A *user error* is an input the user can fix (a file, a config value, a flag, a checkpoint, data):

* any :class:`semantic_sam.errors.UserError`: ``ConfigError``, ``CheckpointError`` (and
  ``CheckpointMismatchError``), ``CorruptRecordError``, ``TSVFormatError``, ``UnsupportedImageError``,
  the data pipeline's and the tools' own errors;
* a file that is missing, is a directory, is under a non-directory or cannot be opened
  (``FileNotFoundError``, ``IsADirectoryError``, ``NotADirectoryError``, ``PermissionError``).

Its message is printed on one line (:meth:`UserError.one_line`), without a traceback. Other
exceptions propagate unchanged.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

from ..errors import UserError

__all__ = ["UserError", "check_launch_args", "exit_on_user_error", "report_user_error", "user_error_message"]

F = TypeVar("F", bound=Callable)

_FILE_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def user_error_message(e: BaseException) -> str | None:
    """The one-line message for a user error (see the module docstring), or None for any other exception."""
    if isinstance(e, UserError):
        return e.one_line()
    if not isinstance(e, _FILE_ERRORS):
        return None
    if e.filename is not None and e.strerror:
        target = f" -> {e.filename2}" if e.filename2 is not None else ""
        return f"{e.filename}{target}: {e.strerror}"
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return "; ".join(lines) or type(e).__name__


def report_user_error(e: Exception) -> int:
    """For a tool's ``main() -> int``: print a user error's ``error: <message>`` line and return 2;
    re-raise any other exception."""
    message = user_error_message(e)
    if message is None:
        raise e
    print(f"error: {message}", file=sys.stderr)
    return 2


def exit_on_user_error(fn: F) -> F:
    """Run ``fn``; on a user error print ``error: <one-line message>`` to stderr and exit with status 2.

    Any other exception propagates with its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            sys.exit(report_user_error(e))

    return wrapper  # type: ignore[return-value]


def check_launch_args(num_gpus: int, num_machines: int, machine_rank: int) -> None:
    """Check ``--num-gpus``, ``--num-machines`` and ``--machine-rank`` before any process is started.

    Raises:
        UserError: ``num_gpus`` < 1, ``num_machines`` < 1, or ``machine_rank`` outside [0, num_machines).
    """
    if num_gpus < 1:
        raise UserError(f"--num-gpus {num_gpus} is invalid; allowed: an integer >= 1 (processes per machine)")
    if num_machines < 1:
        raise UserError(f"--num-machines {num_machines} is invalid; allowed: an integer >= 1")
    if not 0 <= machine_rank < num_machines:
        raise UserError(
            f"--machine-rank {machine_rank} is invalid; allowed: 0 to {num_machines - 1} "
            f"(--num-machines {num_machines})"
        )
