"""SA-1B records: parsing, validation, RLE decoding, and the two on-disk sources.

An SA-1B record is one image and its annotation JSON (the original SA-1B per-image file)::

    {"image": {"image_id", "width", "height", "file_name"},
     "annotations": [{"id", "segmentation": {"size": [H, W], "counts": <COCO RLE>}, "bbox": [x, y, w, h],
                      "area", "predicted_iou", "stability_score", "point_coords": [[x, y]], "crop_box"}]}

Two sources hold records:

* :class:`TSVShardSource`: TSV shards, one row per image, ``<file name>\\t<json>\\t<base64 jpeg>``
  (written by ``tools/convert_sa1b_to_tsv.py``);
* :class:`JsonFolderSource`: the SA-1B download layout, ``sa_N.jpg`` next to ``sa_N.json``.

Every problem with a record raises :class:`CorruptRecordError`, whose message names where
the record lives (shard and row, or file). This module does not import detectron2.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from .tsv import TSVFormatError, TSVShardSet

__all__ = [
    "CorruptRecordError",
    "JsonFolderSource",
    "SA1BRecord",
    "TSVShardSource",
    "decode_image_base64",
    "decode_image_bytes",
    "decode_masks",
    "decode_rle",
    "encode_mask_rle",
    "find_sa1b_pairs",
    "natural_sort_key",
    "parse_annotation_json",
    "record_from_files",
    "record_from_tsv_row",
    "validate_annotations",
]

TSV_NUM_FIELDS = 3


class CorruptRecordError(ValueError):
    """A record cannot be used. ``where`` says where it lives, ``reason`` what is wrong."""

    def __init__(self, reason: str, where: str):
        super().__init__(f"{where}: {reason}")
        self.reason = reason
        self.where = where


@dataclass
class SA1BRecord:
    """One decoded SA-1B image with its (validated) annotations.

    Attributes:
        file_name: SA-1B file name, e.g. ``sa_1.jpg``.
        image: (H, W, 3) uint8 RGB.
        image_info: the JSON's ``image`` entry.
        annotations: the JSON's ``annotations`` list (segmentations still RLE).
        where: human-readable location (``shard X row R`` or the file path).
    """

    file_name: str
    image: np.ndarray
    image_info: dict
    annotations: list[dict]
    where: str

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


def natural_sort_key(text: str) -> list:
    """Sort key that orders digit runs numerically: ``sa_2 < sa_10``, ``part-9 < part-10``."""
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", text)]


# -- images -------------------------------------------------------------------------------------
def decode_image_bytes(data: bytes, where: str) -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, ...) -> (H, W, 3) uint8 RGB."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = img.convert("RGB")
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        raise CorruptRecordError(f"image cannot be decoded ({type(e).__name__}: {e})", where) from None
    return np.asarray(rgb, dtype=np.uint8)


def decode_image_base64(b64: str | bytes, where: str) -> np.ndarray:
    """Base64 text of an encoded image -> (H, W, 3) uint8 RGB."""
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as e:
        raise CorruptRecordError(f"image field is not valid base64 ({e})", where) from None
    return decode_image_bytes(data, where)


# -- annotations --------------------------------------------------------------------------------
def _check_segmentation(seg: Any, k: int, where: str) -> tuple[int, int]:
    if not isinstance(seg, dict) or "size" not in seg or "counts" not in seg:
        raise CorruptRecordError(f"annotation {k}: 'segmentation' must be an RLE dict with 'size' and 'counts'", where)
    size = seg["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        raise CorruptRecordError(f"annotation {k}: RLE 'size' must be [height, width], got {size!r}", where)
    if not isinstance(seg["counts"], (str, list)):
        raise CorruptRecordError(
            f"annotation {k}: RLE 'counts' must be a string or a list, got {type(seg['counts']).__name__}", where
        )
    return int(size[0]), int(size[1])


def parse_annotation_json(text: str | bytes, where: str) -> dict:
    """Parse and check the structure of an SA-1B annotation JSON.

    Checks: valid JSON; an ``image`` mapping; an ``annotations`` list whose items each have an
    RLE ``segmentation`` with ``size`` [H, W] and ``counts``. Does not check sizes against the
    image (see :func:`validate_annotations`).

    Returns:
        The parsed dict.
    """
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptRecordError(f"annotation JSON cannot be parsed ({e})", where) from None
    if not isinstance(data, dict):
        raise CorruptRecordError(f"annotation JSON must be an object, got {type(data).__name__}", where)
    if not isinstance(data.get("image"), dict):
        raise CorruptRecordError("annotation JSON has no 'image' object", where)
    anns = data.get("annotations")
    if not isinstance(anns, list):
        raise CorruptRecordError("annotation JSON has no 'annotations' list", where)
    for k, ann in enumerate(anns):
        if not isinstance(ann, dict):
            raise CorruptRecordError(f"annotation {k} is not an object", where)
        _check_segmentation(ann.get("segmentation"), k, where)
    return data


def validate_annotations(data: dict, image_hw: tuple[int, int], where: str) -> None:
    """Check a parsed annotation JSON against its image.

    Raises :class:`CorruptRecordError` when there are no annotations, when the JSON's
    ``image`` width/height (if given) differ from the decoded image, or when an RLE ``size``
    differs from the image size.
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    info = data["image"]
    jh, jw = info.get("height"), info.get("width")
    if jh is not None and jw is not None and (int(jh), int(jw)) != (h, w):
        raise CorruptRecordError(f"JSON image size {int(jh)}x{int(jw)} (HxW) differs from the image's {h}x{w}", where)
    anns = data["annotations"]
    if not anns:
        raise CorruptRecordError("no masks (empty 'annotations')", where)
    for k, ann in enumerate(anns):
        rh, rw = _check_segmentation(ann.get("segmentation"), k, where)
        if (rh, rw) != (h, w):
            raise CorruptRecordError(
                f"annotation {k} (id {ann.get('id')}): RLE size {rh}x{rw} differs from the image size {h}x{w}", where
            )


def decode_rle(segmentation: dict, where: str = "<rle>") -> np.ndarray:
    """A COCO RLE (compressed ``counts`` string or uncompressed list) -> (H, W) uint8 {0, 1}
    (Fortran-ordered, as pycocotools returns it)."""
    h, w = _check_segmentation(segmentation, 0, where)
    counts = segmentation["counts"]
    try:
        if isinstance(counts, list):
            rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        else:
            rle = {"size": [h, w], "counts": counts.encode("ascii")}
        m = mask_utils.decode(rle)
    except (ValueError, TypeError, UnicodeEncodeError) as e:
        raise CorruptRecordError(f"RLE cannot be decoded ({e})", where) from None
    return m


def decode_masks(annotations: Sequence[dict], where: str = "<annotations>") -> np.ndarray:
    """All annotations' RLEs -> (M, H, W) bool. The annotations must share one size."""
    masks = [decode_rle(a["segmentation"], f"{where} annotation {k}") for k, a in enumerate(annotations)]
    if not masks:
        raise CorruptRecordError("no masks (empty 'annotations')", where)
    return np.stack(masks).astype(bool)


def encode_mask_rle(mask: np.ndarray) -> dict:
    """(H, W) bool/uint8 mask -> SA-1B segmentation ``{"size": [H, W], "counts": str}``."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


# -- records ------------------------------------------------------------------------------------
def record_from_tsv_row(fields: Sequence[str], where: str) -> SA1BRecord:
    """A TSV row ``[file name, json, base64 jpeg]`` -> validated :class:`SA1BRecord`."""
    if len(fields) != TSV_NUM_FIELDS:
        raise CorruptRecordError(
            f"expected {TSV_NUM_FIELDS} tab-separated fields (name, json, base64 image), got {len(fields)}", where
        )
    name, text, b64 = fields
    data = parse_annotation_json(text, where)
    image = decode_image_base64(b64, where)
    validate_annotations(data, image.shape[:2], where)
    file_name = data["image"].get("file_name") or name
    return SA1BRecord(file_name, image, data["image"], data["annotations"], where)


def record_from_files(image_path: str, json_path: str) -> SA1BRecord:
    """``sa_N.jpg`` + ``sa_N.json`` -> validated :class:`SA1BRecord`."""
    where = image_path
    try:
        with open(json_path, "rb") as f:
            text = f.read()
        with open(image_path, "rb") as f:
            data_bytes = f.read()
    except FileNotFoundError as e:
        raise CorruptRecordError(f"file missing: {e.filename}", where) from None
    data = parse_annotation_json(text, json_path)
    image = decode_image_bytes(data_bytes, where)
    validate_annotations(data, image.shape[:2], where)
    file_name = data["image"].get("file_name") or os.path.basename(image_path)
    return SA1BRecord(file_name, image, data["image"], data["annotations"], where)


def find_sa1b_pairs(folder: str, recursive: bool = False) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Pair ``sa_N.jpg`` with ``sa_N.json`` in ``folder`` (the SA-1B download layout).

    Args:
        folder: directory to scan.
        recursive: also scan sub-folders.

    Returns:
        ``(pairs, unpaired)``: ``pairs`` is a naturally sorted list of ``(image, json)`` paths;
        ``unpaired`` lists ``(path, reason)`` for images without JSON and JSON without image.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"SA-1B folder not found: {folder}")
    images: dict[str, str] = {}
    jsons: dict[str, str] = {}
    if recursive:
        walk = [(d, files) for d, _, files in os.walk(folder)]
    else:
        walk = [(folder, os.listdir(folder))]
    for d, files in walk:
        for name in files:
            stem, ext = os.path.splitext(name)
            key = os.path.join(os.path.relpath(d, folder), stem)
            ext = ext.lower()
            if ext in (".jpg", ".jpeg"):
                images[key] = os.path.join(d, name)
            elif ext == ".json":
                jsons[key] = os.path.join(d, name)
    pairs = [(images[k], jsons[k]) for k in sorted(images.keys() & jsons.keys(), key=natural_sort_key)]
    unpaired = [(images[k], "missing json") for k in sorted(images.keys() - jsons.keys(), key=natural_sort_key)]
    unpaired += [(jsons[k], "missing jpg") for k in sorted(jsons.keys() - images.keys(), key=natural_sort_key)]
    return pairs, unpaired


class TSVShardSource:
    """SA-1B records in TSV shards, addressed by a global index over the shards in order.

    Dataset dicts are ``{"shard": s, "row": r}`` with ``s`` the position in ``tsv_paths``.
    """

    def __init__(self, tsv_paths: Sequence[str], max_open_files: int = 16):
        self.shards = TSVShardSet(tsv_paths, max_open_files=max_open_files)

    def __len__(self) -> int:
        return len(self.shards)

    def dataset_dicts(self) -> list[dict]:
        dicts = []
        for s, f in enumerate(self.shards.files):
            dicts.extend({"shard": s, "row": r} for r in range(len(f)))
        return dicts

    def index_of(self, dataset_dict: dict) -> int:
        try:
            return self.shards.global_index(int(dataset_dict["shard"]), int(dataset_dict["row"]))
        except KeyError as e:
            raise KeyError(f"SA-1B TSV dataset dict needs 'shard' and 'row', got keys {sorted(dataset_dict)}") from e

    def describe(self, index: int) -> str:
        s, r = self.shards.locate(index)
        return f"shard {self.shards.files[s].tsv_path} row {r}"

    def load(self, index: int) -> SA1BRecord:
        s, r = self.shards.locate(index)
        where = f"shard {self.shards.files[s].tsv_path} row {r}"
        try:
            fields = self.shards.read_row(s, r)
        except TSVFormatError as e:
            raise CorruptRecordError(str(e), where) from None
        return record_from_tsv_row(fields, where)


class JsonFolderSource:
    """SA-1B records as ``(image, json)`` file pairs. Dataset dicts carry both paths and ``index``."""

    def __init__(self, pairs: Sequence[tuple[str, str]]):
        self.pairs = [(str(a), str(b)) for a, b in pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def dataset_dicts(self) -> list[dict]:
        return [{"file_name": img, "annotation_file": ann, "index": i} for i, (img, ann) in enumerate(self.pairs)]

    def index_of(self, dataset_dict: dict) -> int:
        if "index" not in dataset_dict:
            raise KeyError(f"SA-1B JSON dataset dict needs 'index', got keys {sorted(dataset_dict)}")
        i = int(dataset_dict["index"])
        if not 0 <= i < len(self.pairs):
            raise IndexError(f"index {i} out of range ({len(self.pairs)} images)")
        return i

    def describe(self, index: int) -> str:
        return f"file {self.pairs[index][0]}"

    def load(self, index: int) -> SA1BRecord:
        return record_from_files(*self.pairs[index])
