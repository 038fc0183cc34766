"""SA-1B dataset mapper: a record -> augmented image + instance masks for the model.

Training augmentation (``SAM.INPUT``, as the reference): horizontal flip (p = 0.5), resize
so the image fits in ``IMAGE_SIZE`` x U(``MIN_SCALE``, ``MAX_SCALE``) (the long side becomes
~1024), then a fixed-size crop/pad to ``IMAGE_SIZE``² (image padded with 128 at the bottom
and right). Evaluation: ``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)`` (800, 1333).

Corrupt records (bad base64 or JSON, RLE size not the image size, RLE runs that do not cover
the image, no masks, or no mask left after augmentation) are logged once per record and
process and counted. In training (``replace_corrupt``) each is replaced by another record
chosen deterministically from the failing index (a fixed stride that visits every record
once); after ``max_retries`` corrupt replacements in a row the mapper raises
:class:`CorruptDatasetError`. In evaluation nothing is substituted: the
:class:`~semantic_sam.data.sa1b.CorruptRecordError` propagates (the evaluation mapper turns it
into a skipped record).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Boxes, Instances

from semantic_sam.data.sa1b import CorruptRecordError, SA1BRecord, decode_rle
from semantic_sam.errors import UserError

from .register_sa1b import get_sa1b_source

__all__ = ["CorruptDatasetError", "SA1BDatasetMapper", "build_transform_gen"]

logger = logging.getLogger(__name__)

IMAGE_PAD_VALUE = 128.0
# Masks are padded with 0 (background). detectron2's FixedSizeCrop default seg_pad_value=255 is
# meant for semantic label maps; on binary RLE masks it would mark the padding as foreground.
MASK_PAD_VALUE = 0


class CorruptDatasetError(RuntimeError, UserError):
    """A record and every replacement tried for it were corrupt."""


class _EmptyAfterAugmentation(CorruptRecordError):
    """Every mask was cropped away or became empty; random, so the record is not blacklisted."""


def build_transform_gen(cfg_input: Any, is_train: bool) -> list[T.Augmentation]:
    """Augmentations from ``cfg.SAM.INPUT``.

    Train: ``[RandomFlip] + [ResizeScale(MIN_SCALE, MAX_SCALE, IMAGE_SIZE²), FixedSizeCrop(IMAGE_SIZE²)]``.
    Eval: ``[ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)]``.
    """
    if not is_train:
        return [T.ResizeShortestEdge(int(cfg_input.MIN_SIZE_TEST), int(cfg_input.MAX_SIZE_TEST))]
    size = int(cfg_input.IMAGE_SIZE)
    augs: list[T.Augmentation] = []
    flip = cfg_input.RANDOM_FLIP
    if flip not in ("none", "horizontal", "vertical"):
        raise ValueError(f"SAM.INPUT.RANDOM_FLIP must be 'none', 'horizontal' or 'vertical', got {flip!r}")
    if flip != "none":
        augs.append(T.RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical"))
    augs.append(T.ResizeScale(float(cfg_input.MIN_SCALE), float(cfg_input.MAX_SCALE), size, size))
    augs.append(T.FixedSizeCrop((size, size), pad_value=IMAGE_PAD_VALUE, seg_pad_value=MASK_PAD_VALUE))
    return augs


def _coprime_stride(n: int) -> int:
    """A stride near n/golden-ratio that is coprime with n, so k -> (i + k*stride) % n visits all."""
    if n <= 2:
        return 1
    s = max(1, int(round(n * 0.6180339887))) % n or 1
    while math.gcd(s, n) != 1:
        s = s + 1 if s + 1 < n else 1
    return s


class SA1BDatasetMapper:
    """Map an SA-1B dataset dict to the model's training input.

    1. Read the record (TSV row or image + JSON files) through ``source``; validate it.
    2. Apply the augmentations to the image and, mask by mask, to the decoded RLEs.
    3. Build ``Instances``: ``gt_masks`` (BitMasks), ``gt_boxes`` (tight boxes of the
       augmented masks, XYXY pixels), ``gt_classes`` (zeros); drop empty instances.
    4. On a corrupt record, log it once and count it; then map a replacement record instead
       (``replace_corrupt``, training) or raise its ``CorruptRecordError`` (evaluation).

    Returns a dict with ``"image"`` uint8 (3, H', W') in ``image_format`` order,
    ``"instances"``, ``"height"``/``"width"`` (original image size), ``"file_name"``,
    ``"image_id"``, and ``"bad_rows"``: how many corrupt records were skipped to produce it
    (sum it over batches for a training metric). ``mapper.bad_rows`` is the running count in
    this process.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        source: Any,
        augmentations: Sequence[T.Augmentation | T.Transform],
        image_format: str = "RGB",
        max_retries: int = 100,
        replace_corrupt: bool | None = None,
    ):
        """
        Args:
            is_train: training or evaluation (only recorded; the augmentations decide).
            source: record source with ``__len__``, ``index_of(dict)``, ``load(i)`` and
                ``describe(i)`` (``semantic_sam.data.sa1b.TSVShardSource`` or ``JsonFolderSource``).
            augmentations: detectron2 augmentations applied in order.
            image_format: "RGB" or "BGR".
            max_retries: corrupt replacement records tried before giving up (>= 0).
            replace_corrupt: replace a corrupt record by another one (training); when False
                (evaluation, where a substitute would be scored in its place) raise its
                ``CorruptRecordError`` instead. Default: ``is_train``.
        """
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.is_train = is_train
        self.source = source
        self.augmentations = T.AugmentationList(list(augmentations))
        self.image_format = image_format
        self.max_retries = int(max_retries)
        self.replace_corrupt = bool(is_train if replace_corrupt is None else replace_corrupt)
        self.bad_rows = 0
        self._known_bad: set[int] = set()
        self._logged: set[int] = set()
        logger.info("SA1BDatasetMapper (%s) augmentations: %s", "train" if is_train else "eval", self.augmentations)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, dataset_name: str | None = None) -> dict:
        """Config -> constructor kwargs; ``dataset_name`` defaults to the first of
        ``DATASETS.TRAIN`` (train) or ``DATASETS.TEST`` (eval) and must be a registered SA-1B
        dataset (``datasets.register_sa1b.register_all_sa1b``)."""
        if dataset_name is None:
            names = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
            if not names:
                raise ValueError(f"cfg.DATASETS.{'TRAIN' if is_train else 'TEST'} is empty")
            dataset_name = names[0]
        return {
            "is_train": is_train,
            "source": get_sa1b_source(dataset_name),
            "augmentations": build_transform_gen(cfg.SAM.INPUT, is_train),
            "image_format": cfg.SAM.INPUT.FORMAT,
            "max_retries": cfg.SAM.DATASET.CORRUPT_ROW_RETRIES,
            "replace_corrupt": is_train,
        }

    # -- corrupt-record policy -----------------------------------------------------------------
    def _candidates(self, index: int) -> Iterator[int]:
        n = len(self.source)
        yield index
        stride = _coprime_stride(n)
        for k in range(1, min(self.max_retries, n - 1) + 1):
            yield (index + k * stride) % n

    def _record_bad(self, index: int, err: CorruptRecordError) -> None:
        self.bad_rows += 1
        if not isinstance(err, _EmptyAfterAugmentation):
            self._known_bad.add(index)
        if index not in self._logged:
            self._logged.add(index)
            what = "a replacement is used" if self.replace_corrupt else "not replaced"
            logger.warning("skipping corrupt SA-1B record, %s: %s (%s)", err.where, err.reason, what)

    def __call__(self, dataset_dict: dict) -> dict:
        index = self.source.index_of(dataset_dict)
        if not self.replace_corrupt:
            try:
                out = self.map_record(self.source.load(index))
            except CorruptRecordError as e:
                self._record_bad(index, e)
                raise
            out["bad_rows"] = 0
            return out
        skipped = 0
        last_err: CorruptRecordError | None = None
        for candidate in self._candidates(index):
            if candidate in self._known_bad:
                self.bad_rows += 1
                skipped += 1
                continue
            try:
                out = self.map_record(self.source.load(candidate))
            except CorruptRecordError as e:
                self._record_bad(candidate, e)
                skipped += 1
                last_err = e
                continue
            out["bad_rows"] = skipped
            return out
        last = f"; last error: {last_err}" if last_err is not None else ""
        raise CorruptDatasetError(
            f"SA-1B record {self.source.describe(index)} and {skipped - 1} replacement(s) are all corrupt "
            f"({len(self.source)} records in the dataset{last}). Re-create the data (tools/convert_sa1b_to_tsv.py "
            "verifies shards) or raise SAM.DATASET.CORRUPT_ROW_RETRIES."
        )

    # -- one record ----------------------------------------------------------------------------
    def map_record(self, record: SA1BRecord) -> dict:
        """Augment one validated record (from ``source.load``: its RLE runs are not checked
        again); raises ``CorruptRecordError`` if no mask survives."""
        image = record.image
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        h, w = image.shape[:2]

        # Mask by mask (SA-1B has ~100 full-resolution masks per image): decode, transform, and
        # take the tight box (XYXY, exclusive max, as BitMasks.get_bounding_boxes) while the mask
        # is small in cache; masks emptied by the crop are dropped.
        masks, boxes = [], []
        for k, ann in enumerate(record.annotations):
            # The record's RLEs were checked when it was loaded (validate_annotations).
            rle = decode_rle(ann["segmentation"], f"{record.where} annotation {k}", check_counts=False)
            m = transforms.apply_segmentation(rle)
            rows, cols = m.any(axis=1), m.any(axis=0)
            if not rows.any():
                continue
            y0, y1 = int(rows.argmax()), len(rows) - int(rows[::-1].argmax())
            x0, x1 = int(cols.argmax()), len(cols) - int(cols[::-1].argmax())
            masks.append(m.astype(bool, copy=False))
            boxes.append((x0, y0, x1, y1))
        if not masks:
            raise _EmptyAfterAugmentation("no masks left after augmentation", record.where)
        instances = Instances((h, w))
        instances.gt_masks = BitMasks(torch.from_numpy(np.stack(masks)))
        instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        instances.gt_classes = torch.zeros(len(masks), dtype=torch.int64)

        if self.image_format == "BGR":
            image = image[:, :, ::-1]
        return {
            "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "instances": instances,
            "height": record.height,
            "width": record.width,
            "file_name": record.file_name,
            "image_id": record.image_info.get("image_id"),
        }
