"""Write a tiny synthetic dataset in the COCO panoptic val2017 layout (tests, smoke runs).

    python -m datasets.tiny_coco_panoptic /tmp/tiny_root
    DETECTRON2_DATASETS=/tmp/tiny_root python train_net.py --eval_only ...

Layout written under ``root``: ``coco/val2017/*.jpg``, ``coco/panoptic_val2017/*.png`` and
``coco/annotations/panoptic_val2017.json``, plus what generic evaluation reads, derived from
them (:func:`datasets.register_coco_panoptic_generic.prepare_generic_annotations`): the semantic
PNGs ``coco/panoptic_semseg_val2017/*.png`` and ``coco/annotations/instances_val2017.json``.
Image 1 (48x64) has a "thing" rectangle, a "thing" disc, a "stuff" background and a crowd
region; image 2 (40x40) has only a crowd region, so it has no GT segment.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

import numpy as np
from panopticapi.utils import id2rgb
from PIL import Image

from datasets.register_coco_panoptic_generic import prepare_generic_annotations
from datasets.register_coco_panoptic_interactive import coco_panoptic_val_paths

__all__ = ["CATEGORIES", "write_tiny_coco_panoptic"]

CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "person", "isthing": 1},
    {"id": 18, "name": "dog", "supercategory": "animal", "isthing": 1},
    {"id": 199, "name": "wall-other-merged", "supercategory": "wall", "isthing": 0},
]


def segment_info(seg_id: int, category_id: int, mask: np.ndarray, iscrowd: int = 0) -> dict:
    """The ``segments_info`` entry of a panoptic segment from its (H, W) bool mask (area, xywh box)."""
    ys, xs = np.nonzero(mask)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
    return {"id": seg_id, "category_id": category_id, "iscrowd": iscrowd, "area": int(mask.sum()), "bbox": bbox}


def _images(seed: int) -> list[tuple[str, np.ndarray, np.ndarray, list[dict]]]:
    rng = np.random.default_rng(seed)
    out = []

    h, w = 48, 64
    ids = np.full((h, w), 3000, np.int64)  # stuff: wall
    yy, xx = np.mgrid[:h, :w]
    ids[6:30, 4:28] = 1001  # person rectangle
    ids[(yy - 30) ** 2 + (xx - 46) ** 2 <= 11**2] = 1002  # dog disc
    ids[40:, :12] = 2001  # crowd
    segs = [
        segment_info(1001, 1, ids == 1001),
        segment_info(1002, 18, ids == 1002),
        segment_info(3000, 199, ids == 3000),
        segment_info(2001, 1, ids == 2001, iscrowd=1),
    ]
    out.append(("000000000001", ids, rng.integers(0, 256, (h, w, 3)), segs))

    h, w = 40, 40
    ids = np.zeros((h, w), np.int64)  # id 0 = unlabeled
    ids[10:30, 10:30] = 5001
    out.append(("000000000002", ids, rng.integers(0, 256, (h, w, 3)), [segment_info(5001, 1, ids == 5001, iscrowd=1)]))
    return out


def write_tiny_coco_panoptic(root: str, seed: int = 0) -> dict:
    """Write the dataset under ``root`` and return the panoptic JSON it wrote."""
    paths = coco_panoptic_val_paths(root)
    image_dir, pan_dir = paths["image_root"], paths["panoptic_root"]
    for d in (image_dir, pan_dir, os.path.dirname(paths["panoptic_json"])):
        os.makedirs(d, exist_ok=True)
    data = {"images": [], "annotations": [], "categories": CATEGORIES}
    for image_id, (stem, ids, noise, segs) in enumerate(_images(seed), start=1):
        h, w = ids.shape
        # Each segment gets its own colour (plus noise) so the image shows the segments.
        colour = (ids * 2654435761 % 2**24)[..., None] >> np.array([0, 8, 16]) & 255
        image = (0.7 * colour + 0.3 * noise).astype(np.uint8)
        Image.fromarray(image).save(os.path.join(image_dir, stem + ".jpg"), quality=95)
        Image.fromarray(id2rgb(ids)).save(os.path.join(pan_dir, stem + ".png"))
        data["images"].append({"id": image_id, "file_name": stem + ".jpg", "height": h, "width": w})
        data["annotations"].append({"image_id": image_id, "file_name": stem + ".png", "segments_info": segs})
    with open(paths["panoptic_json"], "w", encoding="utf-8") as f:
        json.dump(data, f)
    prepare_generic_annotations(root, "val2017", instances="always")
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; a root that cannot be written exits with status 2 and an ``error:`` line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="dataset root (what $DETECTRON2_DATASETS will point to)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        write_tiny_coco_panoptic(args.root, args.seed)
    except OSError as e:
        print(f"error: cannot write the tiny COCO panoptic dataset under {args.root}: {e}", file=sys.stderr)
        return 2
    print(f"wrote a tiny COCO panoptic val2017 under {os.path.join(args.root, 'coco')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
