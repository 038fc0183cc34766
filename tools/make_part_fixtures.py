"""Write tiny synthetic labelled datasets in the real formats (tests, smoke runs).

    python -m tools.make_part_fixtures /tmp/labelled_root
    DETECTRON2_DATASETS=/tmp/labelled_root python -c "..."   # then register and load as usual

Under ``root`` it writes, in the layouts of DATASET.md ("Labelled data"):

* **Pascal-Part**, VLPart's JSON layout: ``pascal_part/VOCdevkit/VOC2010/JPEGImages/2008_00000N.jpg``
  and ``pascal_part/{train,val,train_base}.json`` (93 categories ``object:part`` with VLPart's ids;
  ``train_base.json`` lists the 77 base categories numbered 1-77 and only their annotations, and
  leaves out images without any, as VLPart's converter does). Segmentations are compressed RLEs,
  boxes ``[x, y, w, h]``. ``train.json`` also holds one crowd annotation (``iscrowd: 1``), which
  VLPart's files never have, so that the crowd rule is exercised.
* **PartImageNet**, the COCO JSON of VLPart's ``partimagenet_format_json.py``:
  ``partimagenet/{train,val}/<synset>/<synset>_N.JPEG`` and ``partimagenet/{train,val}_format.json``
  (40 categories, ids 0-39, ``"Supercategory Part"`` names with ``supercategory``; polygons).
* **PACO-LVIS**, COCO JSON: ``coco/{train,val}2017/*.jpg`` and
  ``paco/annotations/paco_lvis_v1_{train,val}.json``: a few real PACO category names (LVIS
  qualifiers such as ``car_(automobile)``, object entries and ``object:part`` entries, the same
  list in both files), image file names relative to ``coco/``, polygons, ``obj_ann_id`` on parts.
* **COCO panoptic train2017**: ``coco/train2017/00000000000N.jpg``, ``coco/panoptic_train2017/*.png``,
  ``coco/annotations/panoptic_train2017.json`` (a thing, a stuff and a crowd segment).

Every annotated shape is an axis-aligned rectangle (RLE, panoptic) or a polygon, painted in the
image in its own flat colour over low-amplitude noise, later shapes on top (a PACO object is painted
before its parts), so masks can be checked against the pixels. The output depends only on ``seed``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["PACO_CATEGORIES", "make_part_fixtures"]

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), pixels

# ------------------------------------------------------------------------------------------ scenes
# Pascal-Part (VLPart): image stem, (height, width), [(class, rect)], [(class, rect)] crowd.
_PASCAL_TRAIN = [
    (
        "2008_000001",
        (48, 64),
        [
            ("car:wheel", (4, 32, 16, 44)),
            ("car:wheel", (40, 32, 52, 44)),
            ("car:window", (12, 8, 36, 20)),
            ("car:license plate", (24, 36, 32, 40)),
            ("person:head", (54, 2, 62, 10)),
        ],
        [("car:door", (38, 8, 50, 24))],
    ),
    ("2008_000002", (40, 40), [("dog:head", (4, 4, 16, 16)), ("bus:wheel", (20, 24, 36, 36))], []),
]
_PASCAL_VAL = [
    ("2008_000003", (40, 48), [("cat:ear", (6, 6, 12, 12)), ("potted plant:pot", (20, 20, 36, 36))], []),
]

# PartImageNet: split, synset, index, (height, width), [(class, polygon [x0, y0, x1, y1, ...])].
_PARTIMAGENET = [
    ("train", "n02690373", 1, (40, 56), [
        ("Aeroplane Body", [8, 16, 48, 16, 48, 24, 8, 24]),
        ("Aeroplane Wing", [20, 4, 32, 4, 28, 15]),
    ]),
    ("train", "n02814533", 2, (48, 48), [
        ("Car Body", [6, 10, 42, 10, 42, 30, 6, 30]),
        ("Car Tier", [8, 32, 18, 32, 18, 42, 8, 42]),
        ("Car Tier", [30, 32, 40, 32, 40, 42, 30, 42]),
        ("Car Side Mirror", [42, 12, 46, 12, 46, 16, 42, 16]),
    ]),
    ("val", "n01440764", 3, (32, 48), [
        ("Fish Head", [4, 8, 14, 8, 14, 24, 4, 24]),
        ("Fish Fin", [24, 2, 34, 2, 29, 9]),
    ]),
]

PACO_CATEGORIES = [
    {"id": 35, "name": "handbag", "supercategory": "OBJECT"},
    {"id": 207, "name": "car_(automobile)", "supercategory": "OBJECT"},
    {"id": 708, "name": "mug", "supercategory": "OBJECT"},
    {"id": 2000, "name": "car_(automobile):antenna", "supercategory": "PART"},
    {"id": 2011, "name": "cellular_telephone:back_cover", "supercategory": "PART"},
    {"id": 2230, "name": "handbag:strap", "supercategory": "PART"},
    {"id": 2231, "name": "handbag:handle", "supercategory": "PART"},
    {"id": 2300, "name": "mug:handle", "supercategory": "PART"},
    {"id": 2450, "name": "car_(automobile):wheel", "supercategory": "PART"},
    {"id": 230, "name": "cellular_telephone", "supercategory": "OBJECT"},
]
"""Real PACO names (and, for the objects, their LVIS ids); the part ids are made up."""

# PACO: split, image id, (height, width), [(category id, polygon, parent index or None)].
_PACO = [
    ("train", 9, (48, 64), [
        (35, [4, 4, 30, 4, 30, 40, 4, 40], None),  # handbag (whole)
        (2230, [8, 6, 26, 6, 26, 10, 8, 10], 0),  # handbag:strap
        (2231, [12, 14, 22, 14, 22, 20, 12, 20], 0),  # handbag:handle
        (207, [34, 10, 62, 10, 62, 44, 34, 44], None),  # car (whole)
        (2450, [36, 34, 44, 34, 44, 42, 36, 42], 3),  # car:wheel
        (2000, [56, 12, 58, 12, 58, 20, 56, 20], 3),  # car:antenna
    ]),
    ("train", 25, (40, 40), [
        (708, [6, 6, 30, 6, 30, 34, 6, 34], None),  # mug (whole)
        (2300, [30, 12, 36, 12, 36, 24, 30, 24], None),  # mug:handle (outside the mug's polygon)
    ]),
    ("val", 139, (40, 48), [
        (230, [10, 4, 30, 4, 30, 36, 10, 36], None),  # cellular telephone (whole)
        (2011, [14, 8, 26, 8, 26, 30, 14, 30], 0),  # cellular_telephone:back_cover
    ]),
]

_COCO_CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "person", "isthing": 1},
    {"id": 18, "name": "dog", "supercategory": "animal", "isthing": 1},
    {"id": 184, "name": "tree-merged", "supercategory": "plant", "isthing": 0},
]
# COCO panoptic train2017: stem, (height, width), [(segment id, COCO category id, rect, iscrowd)],
# stuff segment (id, category) covering the rest (None: unlabeled).
_COCO_PANOPTIC = [
    ("000000000001", (48, 64), [(11, 1, (6, 6, 28, 30), 0), (12, 18, (36, 20, 60, 44), 0), (13, 1, (0, 40, 10, 48), 1)],
     (20, 184)),
    ("000000000002", (32, 32), [(21, 1, (8, 8, 24, 24), 1)], None),  # only a crowd segment
]


# ------------------------------------------------------------------------------------------ drawing
def _colour(k: int) -> np.ndarray:
    """Flat colour of the k-th shape of an image: distinct, saturated, away from the padding value."""
    palette = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
               (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]
    return np.array(palette[k % len(palette)], np.float64)


def _paint(size: tuple[int, int], masks: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    h, w = size
    image = 90.0 + rng.normal(0, 6, (h, w, 3))
    for k, m in enumerate(masks):
        image[m] = _colour(k) + rng.normal(0, 3, (int(m.sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _rect_mask(size: tuple[int, int], rect: Rect) -> np.ndarray:
    m = np.zeros(size, bool)
    x0, y0, x1, y1 = rect
    m[y0:y1, x0:x1] = True
    return m


def _poly_mask(size: tuple[int, int], poly: list[float]) -> np.ndarray:
    from pycocotools import mask as mask_util

    h, w = size
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects([poly], h, w))).astype(bool)


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def _save(image: np.ndarray, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(image).save(path, format="JPEG", quality=95)


def _dump(data: dict, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


# ------------------------------------------------------------------------------------------ writers
def _write_pascal_part(root: str, rng: np.random.Generator) -> dict[str, str]:
    from semantic_sam.data.label_spaces import pascal_part_class_names

    full = [{"id": i + 1, "name": n} for i, n in enumerate(pascal_part_class_names())]
    base = [{"id": i + 1, "name": n} for i, n in enumerate(pascal_part_class_names(base_only=True))]
    image_dir = os.path.join(root, "pascal_part", "VOCdevkit", "VOC2010", "JPEGImages")
    shapes: dict[str, tuple] = {}
    for stem, size, parts, crowd in _PASCAL_TRAIN + _PASCAL_VAL:
        masks = [_rect_mask(size, r) for _, r in parts + crowd]
        _save(_paint(size, masks, rng), os.path.join(image_dir, stem + ".jpg"))
        shapes[stem] = (size, parts, crowd, masks)

    def build(scenes: list, categories: list[dict], with_crowd: bool) -> dict:
        cat_id = {c["name"]: c["id"] for c in categories}
        images, anns = [], []
        for stem, *_ in scenes:
            size, parts, crowd, masks = shapes[stem]
            image_id = int(stem[:4] + stem[5:])
            entries = [(n, m, 0) for (n, _), m in zip(parts, masks)]
            if with_crowd:
                entries += [(n, m, 1) for (n, _), m in zip(crowd, masks[len(parts):])]
            kept = [(n, m, c) for n, m, c in entries if n in cat_id]
            for name, m, iscrowd in kept:
                box = _box(m)
                anns.append({"id": len(anns) + 1, "segmentation": _rle(m), "bbox": box, "category_id": cat_id[name],
                             "image_id": image_id, "iscrowd": iscrowd, "area": box[2] * box[3]})
            if kept:  # VLPart writes only images with annotations
                images.append({"id": image_id, "file_name": stem + ".jpg", "height": size[0], "width": size[1]})
        return {"categories": categories, "images": images, "annotations": anns}

    out = {}
    for name, scenes, cats, crowd in (("train", _PASCAL_TRAIN, full, True), ("val", _PASCAL_VAL, full, False),
                                      ("train_base", _PASCAL_TRAIN, base, False)):
        out[name] = os.path.join(root, "pascal_part", name + ".json")
        _dump(build(scenes, cats, crowd), out[name])
    return out


def _write_partimagenet(root: str, rng: np.random.Generator) -> dict[str, str]:
    from semantic_sam.data.label_spaces import partimagenet_class_names

    names = partimagenet_class_names()
    categories = [{"id": i, "name": n, "supercategory": n.split(" ")[0]} for i, n in enumerate(names)]
    cat_id = {c["name"]: c["id"] for c in categories}
    data = {s: {"categories": categories, "images": [], "annotations": []} for s in ("train", "val")}
    n_ann = 1  # COCO annotation ids start at 1 (pycocotools never matches id 0)
    for split, synset, index, size, parts in _PARTIMAGENET:
        file_name = f"{synset}/{synset}_{index}.JPEG"
        masks = [_poly_mask(size, poly) for _, poly in parts]
        _save(_paint(size, masks, rng), os.path.join(root, "partimagenet", split, file_name))
        data[split]["images"].append({"id": index, "file_name": file_name, "height": size[0], "width": size[1]})
        for (name, poly), m in zip(parts, masks):
            data[split]["annotations"].append({"id": n_ann, "image_id": index, "category_id": cat_id[name],
                                               "segmentation": [[float(v) for v in poly]], "bbox": _box(m),
                                               "area": int(m.sum()), "iscrowd": 0})
            n_ann += 1
    out = {}
    for split in ("train", "val"):
        out[split] = os.path.join(root, "partimagenet", f"{split}_format.json")
        _dump(data[split], out[split])
    return out


def _write_paco(root: str, rng: np.random.Generator) -> dict[str, str]:
    data = {s: {"categories": PACO_CATEGORIES, "images": [], "annotations": []} for s in ("train", "val")}
    n_ann = 1
    for split, image_id, size, entries in _PACO:
        file_name = f"{split}2017/{image_id:012d}.jpg"
        masks = [_poly_mask(size, poly) for _, poly, _ in entries]
        _save(_paint(size, masks, rng), os.path.join(root, "coco", file_name))
        data[split]["images"].append({"id": image_id, "file_name": file_name, "height": size[0], "width": size[1],
                                      "neg_category_ids": [], "not_exhaustive_category_ids": []})
        first = n_ann
        for (cid, poly, parent), m in zip(entries, masks):
            ann = {"id": n_ann, "image_id": image_id, "category_id": cid, "segmentation": [[float(v) for v in poly]],
                   "bbox": _box(m), "area": int(m.sum()), "attribute_ids": []}
            if parent is not None:
                ann["obj_ann_id"] = first + parent
            data[split]["annotations"].append(ann)
            n_ann += 1
    out = {}
    for split in ("train", "val"):
        out[split] = os.path.join(root, "paco", "annotations", f"paco_lvis_v1_{split}.json")
        _dump(data[split], out[split])
    return out


def _write_coco_panoptic_train(root: str, rng: np.random.Generator) -> dict[str, str]:
    from panopticapi.utils import id2rgb

    from datasets.tiny_coco_panoptic import segment_info

    image_dir = os.path.join(root, "coco", "train2017")
    pan_dir = os.path.join(root, "coco", "panoptic_train2017")
    os.makedirs(pan_dir, exist_ok=True)
    data: dict[str, Any] = {"images": [], "annotations": [], "categories": _COCO_CATEGORIES}
    for image_id, (stem, size, segs, stuff) in enumerate(_COCO_PANOPTIC, start=1):
        ids = np.zeros(size, np.int64)
        if stuff is not None:
            ids[:] = stuff[0]
        for seg_id, _, rect, _ in segs:
            ids[_rect_mask(size, rect)] = seg_id
        order = ([stuff[0]] if stuff is not None else []) + [s[0] for s in segs]
        _save(_paint(size, [ids == s for s in order], rng), os.path.join(image_dir, stem + ".jpg"))
        Image.fromarray(id2rgb(ids)).save(os.path.join(pan_dir, stem + ".png"))
        info = [segment_info(seg_id, cid, ids == seg_id, crowd) for seg_id, cid, _, crowd in segs]
        if stuff is not None:
            info.append(segment_info(stuff[0], stuff[1], ids == stuff[0]))
        data["images"].append({"id": image_id, "file_name": stem + ".jpg", "height": size[0], "width": size[1]})
        data["annotations"].append({"image_id": image_id, "file_name": stem + ".png", "segments_info": info})
    path = os.path.join(root, "coco", "annotations", "panoptic_train2017.json")
    _dump(data, path)
    return {"train": path}


def make_part_fixtures(root: str, seed: int = 0) -> dict[str, dict[str, str]]:
    """Write every fixture dataset under ``root``; returns ``{family: {split: annotation file}}``."""
    rng = np.random.default_rng(seed)
    return {
        "pascal_part": _write_pascal_part(root, rng),
        "partimagenet": _write_partimagenet(root, rng),
        "paco_lvis": _write_paco(root, rng),
        "coco_panoptic": _write_coco_panoptic_train(root, rng),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; a root that cannot be written exits with status 2 and an ``error:`` line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="dataset root (what $DETECTRON2_DATASETS will point to)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        written = make_part_fixtures(args.root, args.seed)
    except OSError as e:
        print(f"error: cannot write the labelled fixtures under {args.root}: {e}", file=sys.stderr)
        return 2
    for family, files in written.items():
        print(f"{family}: {', '.join(sorted(files))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
