"""Test helper: undo dataset registrations so that modules registering the same names do not collide."""
from __future__ import annotations

from typing import Iterable

from detectron2.data import DatasetCatalog, MetadataCatalog


def unregister(names: Iterable[str]) -> None:
    """Remove each name from detectron2's dataset and metadata catalogs (names absent from either are skipped)."""
    for n in names:
        if n in DatasetCatalog.list():
            DatasetCatalog.remove(n)
        if n in MetadataCatalog.list():
            MetadataCatalog.remove(n)
