"""Config of the labelled datasets (``semantic_sam/config_defaults/80_labelled_data.yaml``): the
section each dataset family reads, and the load-time checks of those keys.

:func:`check_labelled_data_config` takes the checker of :mod:`semantic_sam.config_checks` (anything
with its ``get`` / ``fail`` / ``integer`` / ``number`` / ``one_of`` methods), so its errors are the
same one-line ``ConfigError`` naming the key, its value and the file that set it.
"""
from __future__ import annotations

from typing import Any

__all__ = [
    "LABELLED_SECTIONS",
    "REFERENCE_PSACAL_PART_INPUT",
    "WHOLE_INSTANCE_POLICIES",
    "check_labelled_data_config",
]

LABELLED_SECTIONS = ("COCO", "PASCAL_PART", "PARTIMAGENET", "PACO")
"""Config sections of the labelled dataset families (``<SECTION>.INPUT``); a registered labelled
dataset names its section in its metadata (``config_section``)."""

WHOLE_INSTANCE_POLICIES = ("drop", "object_only", "whole_part")
"""What the labelled mapper does with PACO's object entries (see ``PACO.DATASET.WHOLE_INSTANCES``)."""

# The values of the reference's PSACAL_PART.INPUT (its released configs); nothing reads that section.
REFERENCE_PSACAL_PART_INPUT = {
    "IMAGE_SIZE": 1024,
    "MIN_SCALE": 0.1,
    "MAX_SCALE": 2.0,
    "RANDOM_FLIP": "horizontal",
    "FORMAT": "RGB",
    "MIN_SIZE_TEST": 800,
    "MAX_SIZE_TEST": 1333,
}

_IMAGE_FORMATS = ("RGB", "BGR")
_RANDOM_FLIPS = ("none", "horizontal", "vertical")


def check_labelled_data_config(c: Any) -> None:
    """Check ``<SECTION>.INPUT`` of every labelled family, ``PACO.DATASET.WHOLE_INSTANCES`` and the
    reference's ``PSACAL_PART.INPUT`` (refused when changed: it is not read).

    Args:
        c: the config checker (``semantic_sam.config_checks._Checker``).

    Raises:
        ConfigError: through ``c.fail``, naming the key.
    """
    for section in LABELLED_SECTIONS:
        s = f"{section}.INPUT."
        c.integer(s + "IMAGE_SIZE", 1, " (side of the square training crop)")
        low = c.number(s + "MIN_SCALE", 0, low_open=True)
        c.number(s + "MAX_SCALE", low, why=f" (>= {s}MIN_SCALE)")
        c.one_of(s + "RANDOM_FLIP", _RANDOM_FLIPS)
        c.one_of(s + "FORMAT", _IMAGE_FORMATS)
        c.integer(s + "MIN_SIZE_TEST", 1)
        c.integer(s + "MAX_SIZE_TEST", 1)
        c.integer(f"{section}.TRAIN.BATCH_SIZE_TOTAL", 1, " (images of this family per training step, all processes)")
    c.one_of("PACO.DATASET.WHOLE_INSTANCES", WHOLE_INSTANCE_POLICIES)
    for key, value in REFERENCE_PSACAL_PART_INPUT.items():
        if c.get(f"PSACAL_PART.INPUT.{key}") != value:
            c.fail(
                f"PSACAL_PART.INPUT.{key}",
                f"{value!r} only: PSACAL_PART is the reference's misspelt section, kept so its configs load, "
                f"and is not read; set PASCAL_PART.INPUT.{key} instead",
            )
