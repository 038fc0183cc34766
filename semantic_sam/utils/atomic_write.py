"""Write files so that a reader sees the old content or the new, never a partial file.

The data goes to a temporary file in the same folder, which is flushed and ``fsync``-ed, then
renamed over the target (``os.replace`` is atomic on POSIX and Windows); the folder is synced too
so that the rename survives a power loss. A process killed mid-write leaves at most a stray
``.<name>.tmp-<pid>`` file, never a truncated target.
"""
from __future__ import annotations

import os
from typing import IO, Callable

import torch

__all__ = ["atomic_write", "atomic_torch_save", "atomic_write_text"]


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows, where folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> str:
    """Call ``write(f)`` on a temporary binary file, then rename it to ``path``.

    Returns:
        ``path`` as a string. On any error the temporary file is removed and ``path`` is untouched.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(folder)
    return path


def atomic_torch_save(obj: object, path: str | os.PathLike) -> str:
    """``torch.save(obj, path)``, atomically."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str | os.PathLike) -> str:
    """Write ``text`` (UTF-8) to ``path``, atomically."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))
