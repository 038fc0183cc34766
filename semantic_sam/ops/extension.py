"""Lazy, guarded import of the compiled extension ``semantic_sam._C``."""
from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Optional

__all__ = ["compiled_extension"]

logger = logging.getLogger(__name__)

_UNSET = object()
_module: object = _UNSET


def compiled_extension() -> Optional[ModuleType]:
    """``semantic_sam._C`` when it was built, else None. Imported once, on first use.

    A missing module is normal (no compiled ops); a module that exists but fails to load (e.g. built
    against another torch) is logged as a warning, and the op falls back to its other paths.
    """
    global _module
    if _module is _UNSET:
        try:
            _module = importlib.import_module("semantic_sam._C")
        except ModuleNotFoundError as e:
            if e.name != "semantic_sam._C":
                raise
            _module = None
        except ImportError as e:
            logger.warning("semantic_sam._C exists but cannot be loaded (%s); rebuild it with `pip install -e .`", e)
            _module = None
    return _module  # type: ignore[return-value]
