"""Register SA-1B with detectron2's ``DatasetCatalog`` (TSV shards, or image + JSON folders).

Registration is a function call, never an import side effect::

    from datasets.register_sa1b import register_all_sa1b
    register_all_sa1b()            # reads the environment variables below, now
    DatasetCatalog.get("sam_train")

Names and where their data is looked up (when the dataset is loaded, not when registered):

- ``sam_train``: TSV shards ``*.tsv`` (+ ``.lineidx``) in ``$SAM_DATASET`` (alias ``$SAM_DATASETS``;
  default ``datasets/sa1b``), those whose position in natural sorted file-name order is in
  [``$SAM_DATASET_START``, ``$SAM_DATASET_END``) (aliases ``$SAM_SUBSET_START``, ``$SAM_SUBSET_END``;
  default: all);
- ``sam_val``: every TSV shard in ``$SAM_DATASET_VAL`` (default ``<SAM_DATASET>/val``);
- ``sam_json_train``: ``sa_N.jpg`` + ``sa_N.json`` pairs in ``$SAM_JSON`` (default ``datasets/sa1b_json``);
- ``sam_minival``: ``sa_N.jpg`` + ``sa_N.json`` pairs in ``$SAM_JSON_VAL`` (default ``<SAM_JSON>/val``).

TSV dataset dicts are ``{"shard": s, "row": r}`` (``s`` = position in the sorted, ranged shard
list); JSON dataset dicts are ``{"file_name", "annotation_file", "index"}``. The mapper
(:mod:`datasets.sa1b_dataset_mapper`) reads the records through :func:`get_sa1b_source`.
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass
from typing import Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from semantic_sam.data.sa1b import JsonFolderSource, TSVShardSource, find_sa1b_pairs, natural_sort_key

__all__ = [
    "SA1B_DATASET_NAMES",
    "SA1BSettings",
    "get_sa1b_source",
    "list_tsv_shards",
    "register_all_sa1b",
    "register_sa1b_json",
    "register_sa1b_tsv",
    "sa1b_settings_from_env",
]

logger = logging.getLogger(__name__)

DEFAULT_TSV_ROOT = os.path.join("datasets", "sa1b")
DEFAULT_JSON_ROOT = os.path.join("datasets", "sa1b_json")
# (preferred name, reference-code alias)
ENV_ROOT = ("SAM_DATASET", "SAM_DATASETS")
ENV_START = ("SAM_DATASET_START", "SAM_SUBSET_START")
ENV_END = ("SAM_DATASET_END", "SAM_SUBSET_END")
ENV_VAL_ROOT = ("SAM_DATASET_VAL",)
ENV_JSON_ROOT = ("SAM_JSON",)
ENV_JSON_VAL_ROOT = ("SAM_JSON_VAL",)
SA1B_DATASET_NAMES = ("sam_train", "sam_val", "sam_json_train", "sam_minival")
EVALUATOR_TYPE = "sam_interactive"


def _getenv(names: Sequence[str]) -> tuple[str | None, str]:
    """First set variable among ``names`` -> (value, its name); warns when aliases disagree."""
    found = [(n, os.environ[n]) for n in names if os.environ.get(n, "") != ""]
    if not found:
        return None, names[0]
    if len({v for _, v in found}) > 1:
        settings = ", ".join(f"${n}={v!r}" for n, v in found)
        logger.warning("environment variables disagree (%s); using $%s", settings, found[0][0])
    return found[0][1], found[0][0]


def _getenv_int(names: Sequence[str]) -> int | None:
    value, name = _getenv(names)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${name} must be an integer shard index, got {value!r}") from None


@dataclass(frozen=True)
class SA1BSettings:
    """Where the SA-1B datasets live (see the module docstring for defaults)."""

    tsv_root: str = DEFAULT_TSV_ROOT
    tsv_root_env: str = ENV_ROOT[0]
    start: int = 0
    end: int | None = None
    val_root: str = os.path.join(DEFAULT_TSV_ROOT, "val")
    json_root: str = DEFAULT_JSON_ROOT
    json_val_root: str = os.path.join(DEFAULT_JSON_ROOT, "val")


def sa1b_settings_from_env() -> SA1BSettings:
    """Read ``$SAM_DATASET`` (``$SAM_DATASETS``), the shard range and the JSON folders."""
    root, root_env = _getenv(ENV_ROOT)
    root = root or DEFAULT_TSV_ROOT
    start = _getenv_int(ENV_START)
    end = _getenv_int(ENV_END)
    val_root = _getenv(ENV_VAL_ROOT)[0] or os.path.join(root, "val")
    json_root = _getenv(ENV_JSON_ROOT)[0] or DEFAULT_JSON_ROOT
    json_val_root = _getenv(ENV_JSON_VAL_ROOT)[0] or os.path.join(json_root, "val")
    return SA1BSettings(root, root_env, 0 if start is None else start, end, val_root, json_root, json_val_root)


def list_tsv_shards(root: str, start: int = 0, end: int | None = None, env_name: str = ENV_ROOT[0]) -> list[str]:
    """The ``*.tsv`` files in ``root``, naturally sorted by name, positions [start, end).

    Raises:
        FileNotFoundError: ``root`` is missing (the message names it and ``$env_name``).
        ValueError: no shard falls in the range.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"SA-1B TSV folder not found: {os.path.abspath(root)}. Set ${env_name} to the folder holding the "
            "*.tsv shards and their .lineidx files (see DATASET.md; tools/convert_sa1b_to_tsv.py makes them)."
        )
    shards = sorted(glob.glob(os.path.join(root, "*.tsv")), key=lambda p: natural_sort_key(os.path.basename(p)))
    selected = shards[start:end]
    if not selected:
        raise ValueError(
            f"no SA-1B TSV shard in {os.path.abspath(root)} with index in [{start}, {'end' if end is None else end}) "
            f"({len(shards)} *.tsv files found); check ${ENV_START[0]} / ${ENV_END[0]}"
        )
    return selected


def _json_pairs(folder: str, env_name: str) -> list[tuple[str, str]]:
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"SA-1B image+JSON folder not found: {os.path.abspath(folder)}. Set ${env_name} to a folder of "
            "sa_N.jpg + sa_N.json files (see DATASET.md)."
        )
    pairs, unpaired = find_sa1b_pairs(folder)
    if unpaired:
        logger.warning(
            "%s: ignoring %d unpaired files, e.g. %s",
            folder,
            len(unpaired),
            "; ".join(f"{p} ({why})" for p, why in unpaired[:3]),
        )
    if not pairs:
        raise ValueError(f"no sa_N.jpg + sa_N.json pair in {os.path.abspath(folder)} (set ${env_name})")
    return pairs


def get_sa1b_source(name: str) -> TSVShardSource | JsonFolderSource:
    """The record source behind a registered SA-1B dataset (shards or file pairs listed now)."""
    meta = MetadataCatalog.get(name)
    kind = meta.get("sa1b_format", None)
    if kind == "tsv":
        root = meta.sa1b_root
        start, end = meta.shard_range
        return TSVShardSource(list_tsv_shards(root, start, end, meta.root_env))
    if kind == "json":
        return JsonFolderSource(_json_pairs(meta.sa1b_root, meta.root_env))
    raise KeyError(
        f"dataset {name!r} is not a registered SA-1B dataset; call "
        "datasets.register_sa1b.register_all_sa1b() first (SA-1B names: " + ", ".join(SA1B_DATASET_NAMES) + ")"
    )


def _register(name: str, **metadata) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: get_sa1b_source(name).dataset_dicts())
    MetadataCatalog.get(name).set(evaluator_type=EVALUATOR_TYPE, thing_classes=["object"], **metadata)


def register_sa1b_tsv(
    name: str, root: str, start: int = 0, end: int | None = None, root_env: str = ENV_ROOT[0]
) -> None:
    """Register ``name`` as the TSV shards of ``root`` with index in [start, end).

    Re-registering a name replaces it. ``root_env`` is the variable named in the error when
    ``root`` is missing.
    """
    _register(name, sa1b_format="tsv", sa1b_root=root, shard_range=(int(start), end), root_env=root_env)


def register_sa1b_json(name: str, folder: str, root_env: str = ENV_JSON_ROOT[0]) -> None:
    """Register ``name`` as the ``sa_N.jpg`` + ``sa_N.json`` pairs in ``folder``."""
    _register(name, sa1b_format="json", sa1b_root=folder, root_env=root_env)


def register_all_sa1b(settings: SA1BSettings | None = None) -> SA1BSettings:
    """Register ``sam_train``, ``sam_val``, ``sam_json_train`` and ``sam_minival``.

    Args:
        settings: where the data lives; default: read the environment now.

    Returns:
        The settings used. Missing folders raise only when a dataset is loaded.
    """
    s = settings or sa1b_settings_from_env()
    register_sa1b_tsv("sam_train", s.tsv_root, s.start, s.end, s.tsv_root_env)
    register_sa1b_tsv("sam_val", s.val_root, 0, None, ENV_VAL_ROOT[0])
    register_sa1b_json("sam_json_train", s.json_root, ENV_JSON_ROOT[0])
    register_sa1b_json("sam_minival", s.json_val_root, ENV_JSON_VAL_ROOT[0])
    logger.info(
        "registered SA-1B: sam_train=%s shards [%d, %s), sam_val=%s, sam_json_train=%s, sam_minival=%s",
        s.tsv_root,
        s.start,
        "end" if s.end is None else s.end,
        s.val_root,
        s.json_root,
        s.json_val_root,
    )
    return s
