"""Renamed keyword arguments: the old name keeps working for a while, with a ``DeprecationWarning``.

Used where a public function or class took a concept under another name than the project's one
(levels = user granularities 1-6, tokens = the K content queries of a prompt, feature levels =
scales of the pixel decoder).
"""
from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Mapping, TypeVar

__all__ = ["DeprecatedAlias", "renamed_kwargs", "warn_deprecated"]

F = TypeVar("F", bound=Callable[..., Any])


def warn_deprecated(message: str, stacklevel: int = 2) -> None:
    """A ``DeprecationWarning`` attributed to the caller's caller (``stacklevel`` as ``warnings.warn``)."""
    warnings.warn(message, DeprecationWarning, stacklevel=stacklevel + 1)


def renamed_kwargs(old_to_new: Mapping[str, str], note: str = "") -> Callable[[F], F]:
    """Decorator: each keyword ``old`` of ``old_to_new`` is a deprecated alias of keyword ``new``.

    Calling with ``old=value`` warns (``DeprecationWarning``, pointing at the caller) and passes
    ``new=value``; giving both names is a ``TypeError``. Positional arguments are untouched, and
    ``inspect.signature`` shows the new names (``functools.wraps``).

    Args:
        old_to_new: deprecated keyword -> its new name.
        note: appended to the warning (e.g. what the new name means).
    """
    old_to_new = dict(old_to_new)

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(
                            f"{func.__qualname__}() got both {old!r} (deprecated) and {new!r}; give only {new!r}"
                        )
                    warn_deprecated(
                        f"{func.__qualname__}(): {old!r} is deprecated, use {new!r}" + (f" ({note})" if note else ""),
                        stacklevel=2,
                    )
                    kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


class DeprecatedAlias:
    """Class attribute: a read-only, deprecated alias of the attribute ``new`` of the same object.

    ``num_levels = DeprecatedAlias("num_tokens")`` in a class body makes ``obj.num_levels`` warn
    (``DeprecationWarning``, pointing at the caller) and return ``obj.num_tokens``.
    """

    def __init__(self, new: str) -> None:
        self.new = new
        self.old = "?"
        self.owner = "?"

    def __set_name__(self, owner: type, name: str) -> None:
        self.old, self.owner = name, owner.__name__

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        warn_deprecated(f"{self.owner}.{self.old} is deprecated, use {self.new}")
        return getattr(obj, self.new)
