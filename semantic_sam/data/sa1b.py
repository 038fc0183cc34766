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
the record lives (shard and row, or file). That includes an RLE whose runs do not cover
exactly its ``size`` H x W pixels (:class:`CorruptRLEError`): pycocotools decodes such an RLE
without complaint into a mask with uninitialized pixels, so every record is checked with
:func:`rle_counts_problem` when it is validated, before any mask is decoded. This module does
not import detectron2.
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

from ..errors import UserError
from .tsv import TSVFormatError, TSVShardSet

__all__ = [
    "CorruptRLEError",
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
    "rle_counts_from_string",
    "rle_counts_problem",
    "validate_annotations",
]

TSV_NUM_FIELDS = 3


class CorruptRecordError(ValueError, UserError):
    """A record cannot be used. ``where`` says where it lives, ``reason`` what is wrong."""

    def __init__(self, reason: str, where: str):
        super().__init__(f"{where}: {reason}")
        self.reason = reason
        self.where = where


class CorruptRLEError(CorruptRecordError):
    """An RLE's ``counts`` are malformed, hold a negative run, or do not cover ``size`` exactly."""


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


# -- RLE counts ---------------------------------------------------------------------------------
# COCO compressed counts (pycocotools maskApi.c, rleToString / rleFrString): each count is
# written as little-endian 5-bit groups, one character per group, character = 48 + group, with
# 0x20 set on every group but the last; bit 0x10 of the last group is the sign (two's
# complement). Counts from index 3 on are stored as the difference to the count two places
# before (index 2 is not: the C code tests ``i > 2``).
_RLE_CHAR_OFFSET = 48
# pycocotools shifts each group in a C int: a count of more than 6 groups (|value| >= 2**29,
# an image of over 500 million pixels) overflows there, so such a string is called malformed.
_RLE_MAX_GROUPS = 6


def rle_counts_from_string(counts: str | bytes) -> np.ndarray:
    """Decode a COCO compressed RLE ``counts`` string into its run lengths.

    Vectorized (no Python loop over characters). Runs alternate background / foreground in
    column-major order, starting with background.

    Args:
        counts: the compressed string (``str`` or ASCII ``bytes``).

    Returns:
        int64 (R,) run lengths, as pycocotools would decode them when none is negative (a
        negative one, which pycocotools wraps to a huge unsigned run, is returned as is).

    Raises:
        ValueError: a character outside ``'0'``..``'o'``, a string that ends inside a count, or
            a count written in more than 6 characters.
    """
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError as e:
            raise ValueError(f"non-ASCII character {counts[e.start]!r} at position {e.start}") from None
    c = np.frombuffer(counts, dtype=np.uint8) - np.uint8(_RLE_CHAR_OFFSET)  # below '0' wraps to >= 208
    n = c.size
    if n == 0:
        return np.zeros(0, np.int64)
    if c.max() > 63:
        p = int(np.argmax(c > 63))
        raise ValueError(f"character {chr(counts[p])!r} at position {p} is not a COCO RLE character ('0'..'o')")
    ends = np.flatnonzero(c < 0x20)  # last group of each count: no continuation bit
    if ends.size == 0 or ends[-1] != n - 1:
        raise ValueError("the string ends inside a count (its last character has the continuation bit)")
    groups = np.diff(ends, prepend=-1)
    if groups.max() > _RLE_MAX_GROUPS:
        i = int(np.argmax(groups > _RLE_MAX_GROUPS))
        raise ValueError(f"count {i} is written in {int(groups[i])} characters (at most {_RLE_MAX_GROUPS})")
    # Position of each character inside its count: index minus the index of the count's first
    # character (a running maximum of the starts).
    first = np.zeros(n, np.int64)
    first[ends[:-1] + 1] = ends[:-1] + 1
    np.maximum.accumulate(first, out=first)
    shifted = (c & 0x1F).astype(np.int64) << (5 * (np.arange(n) - first))
    total = np.cumsum(shifted)
    x = total[ends]
    x[1:] -= total[ends[:-1]]
    x -= ((c[ends] & 0x10) != 0) * (np.int64(1) << (5 * groups))  # sign-extend negative counts
    x[2::2] = np.cumsum(x[2::2])  # undo the deltas: x[i] += x[i - 2] for i > 2
    x[1::2] = np.cumsum(x[1::2])
    return x


def rle_counts_problem(segmentation: dict) -> str | None:
    """Why an RLE's ``counts`` cannot be decoded into its ``size``, or ``None`` when they can.

    Checks that a compressed string is well formed (:func:`rle_counts_from_string`) or that an
    uncompressed list holds integers, that no run is negative, and that the runs cover exactly
    H x W pixels. ``segmentation`` must already have a ``size`` [H, W] and ``counts`` of type
    ``str`` or ``list``.
    """
    h, w = (int(v) for v in segmentation["size"])
    counts = segmentation["counts"]
    if isinstance(counts, str):
        try:
            runs = rle_counts_from_string(counts)
        except ValueError as e:
            return f"RLE cannot be decoded: malformed counts string ({e})"
    else:
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in counts):
            bad = next(v for v in counts if isinstance(v, bool) or not isinstance(v, (int, np.integer)))
            return f"RLE cannot be decoded: the counts list holds a non-integer, {bad!r}"
        runs = np.array(counts, dtype=object)  # exact for any Python int
    if len(runs) and runs.min() < 0:
        i = int(np.argmax(runs < 0))
        return f"RLE run {i} is negative ({int(runs[i])})"
    covered = int(runs.sum()) if len(runs) else 0
    if covered != h * w:
        return f"RLE counts cover {covered} pixels, expected {h * w} ({h}x{w})"
    return None


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
    differs from the image size; :class:`CorruptRLEError` when an RLE's runs are malformed,
    negative, or do not cover its size exactly (:func:`rle_counts_problem`). The message names
    the annotation's index and id.
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
        problem = rle_counts_problem(ann["segmentation"])
        if problem is not None:
            raise CorruptRLEError(f"annotation {k} (id {ann.get('id')}): {problem}", where)


def decode_rle(segmentation: dict, where: str = "<rle>", *, check_counts: bool = True) -> np.ndarray:
    """A COCO RLE (compressed ``counts`` string or uncompressed list) -> (H, W) uint8 {0, 1}
    (Fortran-ordered, as pycocotools returns it).

    Args:
        segmentation: ``{"size": [H, W], "counts": str | list}``.
        where: location named in errors (e.g. ``"shard X row R annotation K"``).
        check_counts: check the runs first (:func:`rle_counts_problem`, 40-140 us for an
            SA-1B mask); pass ``False`` only for an RLE already checked, e.g. by
            :func:`validate_annotations`.

    Raises:
        CorruptRLEError: malformed counts, a negative run, or runs that do not cover H x W.
        CorruptRecordError: no RLE dict, or a bad ``size``.
    """
    h, w = _check_segmentation(segmentation, 0, where)
    if check_counts:
        problem = rle_counts_problem(segmentation)
        if problem is not None:
            raise CorruptRLEError(problem, where)
    counts = segmentation["counts"]
    try:
        if isinstance(counts, list):
            rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        else:
            rle = {"size": [h, w], "counts": counts.encode("ascii")}
        m = mask_utils.decode(rle)
    except (ValueError, TypeError, OverflowError, UnicodeEncodeError) as e:
        raise CorruptRLEError(f"RLE cannot be decoded ({e})", where) from None
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
    validate_annotations(data, image.shape[:2], json_path)
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
    A shard without rows is refused (:class:`~semantic_sam.data.tsv.TSVFormatError` naming
    it) when the rows are first counted: it is a failed or interrupted conversion, not data.
    """

    def __init__(self, tsv_paths: Sequence[str], max_open_files: int = 16):
        self.shards = TSVShardSet(tsv_paths, max_open_files=max_open_files)
        self._checked = False

    def _check_not_empty(self) -> None:
        if self._checked:
            return
        for f in self.shards.files:
            if len(f) == 0:
                raise TSVFormatError(
                    f"{f.tsv_path} is an empty SA-1B shard (no rows in {os.path.basename(f.lineidx_path)}); "
                    "re-run tools/convert_sa1b_to_tsv.py, or delete the shard and its .lineidx"
                )
        self._checked = True

    def __len__(self) -> int:
        self._check_not_empty()
        return len(self.shards)

    def dataset_dicts(self) -> list[dict]:
        self._check_not_empty()
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
