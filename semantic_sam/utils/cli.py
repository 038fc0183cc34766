"""Helpers for command-line entry points: user errors exit with status 2 and a message, no traceback."""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

from ..config import ConfigError

__all__ = ["UserError", "exit_on_user_error"]

F = TypeVar("F", bound=Callable)


class UserError(Exception):
    """Invalid input given by the user (a file, an argument); reported without a traceback."""


def exit_on_user_error(fn: F) -> F:
    """Run ``fn``; on :class:`ConfigError`, :class:`UserError` or a missing file, print
    ``error: <message>`` to stderr and exit with status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConfigError, UserError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
