"""Write the built-in model's data: synthetic multi-granularity scenes, train and held-out val.

    python -m tools.make_builtin_data --output datasets/builtin [--num-train 3000] [--num-val 50]

(from the repository root: it imports the top-level ``datasets`` and ``tools`` packages).

Layout under ``--output`` (``ROOT``), and the variables that point ``train_net.py`` at it::

    ROOT/sa1b/sa1b-*.tsv (+ .lineidx)            train split, TSV shards     SAM_DATASET=ROOT/sa1b
    ROOT/sa1b_json/train/sa_N.jpg + sa_N.json    train split, SA-1B layout   (converter input)
    ROOT/sa1b_json/val/sa_N.jpg + sa_N.json      val split, SA-1B layout     SAM_JSON_VAL=ROOT/sa1b_json/val
    ROOT/coco/val2017/sa_N.jpg                   val split, COCO panoptic    DETECTRON2_DATASETS=ROOT
    ROOT/coco/panoptic_val2017/sa_N.png
    ROOT/coco/annotations/panoptic_val2017.json

The train scenes are images ``0..num_train-1`` of seed ``--seed`` (ids from 1), the val
scenes images ``0..num_val-1`` of seed ``--seed + 1`` (ids from 1000001), so val is held out.
The train TSV shards are written by the project's converter (tools/convert_sa1b_to_tsv.py).

The COCO-panoptic copy of a val scene is its finest partition: every pixel goes to the
smallest annotated mask that contains it (masks nest, so that is the deepest one); each
segment's category is the tier of its mask in the scene hierarchy (stuff / group / object / part / subpart).
Deterministic in ``--seed``; importable: :func:`make_builtin_data`, :func:`finest_partition`.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Sequence

import numpy as np
from panopticapi.utils import id2rgb
from PIL import Image
from pycocotools import mask as mask_utils

if __name__ == "__main__" and not __package__:
    raise SystemExit("run it from the repository root as a module: python -m tools.make_builtin_data [options]")

from datasets.register_coco_panoptic_interactive import coco_panoptic_val_paths  # noqa: E402
from datasets.tiny_coco_panoptic import segment_info  # noqa: E402
from tools.convert_sa1b_to_tsv import convert_sa1b_to_tsv  # noqa: E402
from tools.make_synthetic_sa1b import TIERS, make_synthetic_sa1b  # noqa: E402

__all__ = ["PANOPTIC_CATEGORIES", "VAL_START_ID", "builtin_env", "finest_partition", "make_builtin_data", "main"]

VAL_START_ID = 1000001
# One category per tier of the scene hierarchy; "stuff" regions are COCO stuff (isthing 0).
PANOPTIC_CATEGORIES = [
    {"id": k + 1, "name": tier, "supercategory": tier, "isthing": int(tier != "stuff")}
    for k, tier in enumerate(TIERS)
]


def finest_partition(masks: np.ndarray) -> np.ndarray:
    """Assign every pixel to the smallest mask that contains it.

    Args:
        masks: (N, H, W) bool, nested (two masks are disjoint or one contains the other).

    Returns:
        (H, W) int64: index of the owning mask, -1 where no mask covers the pixel.
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
    owner = np.full(masks.shape[1:], -1, np.int64)
    areas = masks.reshape(len(masks), -1).sum(1)
    for k in np.argsort(-areas, kind="stable"):  # largest first, so the smallest paints last
        owner[masks[k]] = k
    return owner


def _panoptic_record(json_path: str, png_dir: str) -> tuple[dict, dict]:
    """COCO panoptic ``images`` entry and ``annotations`` entry of one SA-1B JSON; writes its PNG."""
    with open(json_path, encoding="utf-8") as f:
        record = json.load(f)
    img = record["image"]
    h, w = int(img["height"]), int(img["width"])
    anns = record["annotations"]
    masks = np.stack([mask_utils.decode(a["segmentation"]).astype(bool) for a in anns])
    owner = finest_partition(masks)
    tier_id = {c["name"]: c["id"] for c in PANOPTIC_CATEGORIES}
    ids = np.zeros((h, w), np.int64)
    segments = []
    for k, ann in enumerate(anns):
        seg = owner == k
        if not seg.any():
            continue
        seg_id = k + 1
        ids[seg] = seg_id
        tier = ann.get("synthetic", {}).get("level", "object")  # the synthetic format's key for the tier
        segments.append(segment_info(seg_id, tier_id[tier], seg))
    stem = os.path.splitext(img["file_name"])[0]
    Image.fromarray(id2rgb(ids)).save(os.path.join(png_dir, stem + ".png"))
    image_entry = {"id": int(img["image_id"]), "file_name": img["file_name"], "height": h, "width": w}
    ann_entry = {"image_id": int(img["image_id"]), "file_name": stem + ".png", "segments_info": segments}
    return image_entry, ann_entry


def write_coco_panoptic(pairs: Sequence[tuple[str, str]], root: str) -> str:
    """Write the scenes ``pairs`` ((jpg, json) paths) as COCO panoptic val2017 under ``root/coco``.

    Returns:
        The panoptic JSON path.
    """
    paths = coco_panoptic_val_paths(root)
    image_dir, png_dir, path = paths["image_root"], paths["panoptic_root"], paths["panoptic_json"]
    for d in (image_dir, png_dir, os.path.dirname(path)):
        os.makedirs(d, exist_ok=True)
    data = {"images": [], "annotations": [], "categories": PANOPTIC_CATEGORIES}
    for jpg, js in pairs:
        image_entry, ann_entry = _panoptic_record(js, png_dir)
        with open(jpg, "rb") as src, open(os.path.join(image_dir, image_entry["file_name"]), "wb") as dst:
            dst.write(src.read())
        data["images"].append(image_entry)
        data["annotations"].append(ann_entry)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return path


def drop_small_masks(pairs: Sequence[tuple[str, str]], min_area: int) -> int:
    """Remove annotations with ``area < min_area`` pixels from the JSON files of ``pairs``.

    Masks nest and a parent is never smaller than its child, so every kept mask keeps its
    parent. Returns the number of annotations removed.
    """
    removed = 0
    for _, js in pairs:
        with open(js, encoding="utf-8") as f:
            record = json.load(f)
        keep = [a for a in record["annotations"] if a["area"] >= min_area]
        if not keep:  # keep the largest mask so that the image still has one
            keep = [max(record["annotations"], key=lambda a: a["area"])]
        removed += len(record["annotations"]) - len(keep)
        record["annotations"] = keep
        with open(js, "w", encoding="utf-8") as f:
            json.dump(record, f, separators=(",", ":"))
    return removed


def builtin_env(root: str) -> dict[str, str]:
    """The environment variables that point the dataset registrations at ``root``'s splits."""
    root = os.path.abspath(root)
    return {
        "SAM_DATASET": os.path.join(root, "sa1b"),
        "SAM_JSON": os.path.join(root, "sa1b_json", "train"),
        "SAM_JSON_VAL": os.path.join(root, "sa1b_json", "val"),
        "DETECTRON2_DATASETS": root,
    }


def make_builtin_data(
    output: str,
    num_train: int = 3000,
    num_val: int = 50,
    seed: int = 0,
    size: int = 224,
    min_area: int = 48,
    num_shards: int = 4,
    progress: bool = False,
) -> dict[str, str]:
    """Write the train split (SA-1B JSON + TSV shards) and the val split (SA-1B JSON + COCO panoptic).

    Args:
        output: root folder (created).
        num_train: training scenes (seed ``seed``).
        num_val: held-out validation scenes (seed ``seed + 1``).
        seed: data seed.
        size: long side of the images in pixels.
        min_area: masks smaller than this many pixels are dropped (too small for the model's
            stride-4 masks to resolve).
        num_shards: TSV shards of the train split.
        progress: show progress bars.

    Returns:
        :func:`builtin_env` of ``output``.
    """
    env = builtin_env(output)
    train = make_synthetic_sa1b(env["SAM_JSON"], num_train, seed=seed, size=size, progress=progress)
    drop_small_masks(train, min_area)
    convert_sa1b_to_tsv(env["SAM_JSON"], env["SAM_DATASET"], min(num_shards, max(1, len(train))), progress=progress)
    val = make_synthetic_sa1b(
        env["SAM_JSON_VAL"], num_val, seed=seed + 1, size=size, start_id=VAL_START_ID, progress=progress
    )
    drop_small_masks(val, min_area)
    write_coco_panoptic(val, output)
    return env


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=os.path.join("datasets", "builtin"), help="root folder")
    parser.add_argument("--num-train", type=int, default=3000)
    parser.add_argument("--num-val", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=224, help="long side in pixels (default 224)")
    parser.add_argument("--min-area", type=int, default=48, help="drop masks under this many pixels (default 48)")
    parser.add_argument("--num-shards", type=int, default=4)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    env = make_builtin_data(
        args.output,
        args.num_train,
        args.num_val,
        seed=args.seed,
        size=args.size,
        min_area=args.min_area,
        num_shards=args.num_shards,
        progress=not args.no_progress,
    )
    print("wrote the built-in data; point train_net.py at it with:")
    print(" ".join(f"{k}={v}" for k, v in env.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
