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

With ``--labelled panoptic parts`` (default: neither), the labelled layouts of both splits too, read by
``datasets/register_builtin_labelled.py`` (``builtin_panoptic_{train,val}``, ``builtin_parts_{train,val}``;
their images are those of ``ROOT/sa1b_json/{train,val}``)::

    ROOT/builtin_panoptic/panoptic_{train,val}/sa_N.png    objects and stuff, COCO panoptic
    ROOT/builtin_panoptic/panoptic_{train,val}.json
    ROOT/builtin_parts/{train,val}.json                    parts and sub-parts, VLPart's Pascal-Part JSON
    ROOT/builtin_panoptic/panoptic_semseg_val/sa_N.png     (panoptic) val semantic PNGs, 255 = void
    ROOT/builtin_panoptic/instances_val.json               (panoptic) val thing segments as COCO instances

The last two are what generic evaluation (``builtin_panoptic_val_generic``: PQ, AP, mIoU) reads besides the
panoptic layout, derived from it as for COCO (:func:`write_builtin_generic_annotations`).

The train scenes are images ``0..num_train-1`` of seed ``--seed`` (ids from 1), the val
scenes images ``0..num_val-1`` of seed ``--seed + 1`` (ids from 1000001), so val is held out.
The train TSV shards are written by the project's converter (tools/convert_sa1b_to_tsv.py).

The COCO-panoptic copy of a val scene is its finest partition: every pixel goes to the
smallest annotated mask that contains it (masks nest, so that is the deepest one); each
segment's category is the tier of its mask in the scene hierarchy (stuff / group / object / part / subpart).

The labelled layouts name every mask by its scene name (``synthetic.name``; the classes of
:mod:`datasets.builtin_labels`). *Panoptic*: one segment per object (thing) and per stuff region; an
object's segment is its whole mask, parts included. A group is not a segment: its members are; the
group's pixels outside its members' masks (a member whose mask the generator dropped) form one more
segment of the members' object class, unless smaller than ``min_area``. *Parts*: every part and sub-part
mask as an ``object:part`` annotation (its SA-1B RLE and box), ``object`` being the name of the nearest
enclosing object (or group); all the part classes are listed as ``categories`` in every split.

Deterministic in ``--seed``; importable: :func:`make_builtin_data`, :func:`finest_partition`,
:func:`write_builtin_panoptic`, :func:`write_builtin_generic_annotations`, :func:`write_builtin_parts`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Iterable, Sequence

import numpy as np
from panopticapi.utils import id2rgb
from PIL import Image
from pycocotools import mask as mask_utils

if __name__ == "__main__" and not __package__:
    raise SystemExit("run it from the repository root as a module: python -m tools.make_builtin_data [options]")

from datasets.builtin_labels import builtin_panoptic_categories, builtin_part_categories  # noqa: E402
from datasets.register_builtin_labelled import (  # noqa: E402
    builtin_panoptic_generic_paths,
    builtin_panoptic_generic_spec,
    builtin_panoptic_paths,
    builtin_parts_paths,
)
from datasets.register_coco_panoptic_generic import write_generic_annotations  # noqa: E402
from datasets.register_coco_panoptic_interactive import coco_panoptic_val_paths  # noqa: E402
from datasets.tiny_coco_panoptic import segment_info  # noqa: E402
from tools.convert_sa1b_to_tsv import convert_sa1b_to_tsv  # noqa: E402
from tools.make_synthetic_sa1b import COLOURS, TIERS, check_colours, make_synthetic_sa1b  # noqa: E402

__all__ = [
    "LABELLED_LAYOUTS",
    "PANOPTIC_CATEGORIES",
    "VAL_START_ID",
    "builtin_env",
    "finest_partition",
    "main",
    "make_builtin_data",
    "write_builtin_generic_annotations",
    "write_builtin_panoptic",
    "write_builtin_parts",
]

VAL_START_ID = 1000001
LABELLED_LAYOUTS = ("panoptic", "parts")
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


# -- labelled layouts ---------------------------------------------------------------------------
def _read_scene(json_path: str) -> tuple[dict, list[dict], list[int | None]]:
    """A scene's SA-1B record, its annotations' ``synthetic`` entries and each one's parent index."""
    with open(json_path, encoding="utf-8") as f:
        record = json.load(f)
    anns = record["annotations"]
    index = {a["id"]: k for k, a in enumerate(anns)}
    scene = []
    for a in anns:
        syn = a.get("synthetic")
        if not (isinstance(syn, dict) and {"name", "level", "parent"} <= set(syn)):
            raise ValueError(
                f"{json_path}: annotation {a.get('id')} has no 'synthetic' name, level and parent "
                "(not a scene of tools/make_synthetic_sa1b.py)"
            )
        scene.append(syn)
    return record, scene, [index.get(syn["parent"]) for syn in scene]


def _ancestor(k: int | None, scene: list[dict], parents: list[int | None], tiers: tuple[str, ...]) -> int | None:
    """The nearest of annotation ``k`` and its ancestors whose tier is one of ``tiers``."""
    while k is not None and scene[k]["level"] not in tiers:
        k = parents[k]
    return k


def _object_of(k: int, scene: list[dict], parents: list[int | None], json_path: str) -> int:
    """The enclosing object (or group, named after its members) of part ``k``."""
    obj = _ancestor(k, scene, parents, ("object", "group"))
    if obj is None:
        raise ValueError(f"{json_path}: {scene[k]['level']} {scene[k]['name']!r} lies in no object")
    return obj


def _image_entry(record: dict, jpg: str, image_root: str) -> dict:
    if os.path.abspath(os.path.dirname(jpg)) != os.path.abspath(image_root):
        raise ValueError(f"{jpg}: the labelled layouts read their images from {image_root}, not from here")
    img = record["image"]
    return {
        "id": int(img["image_id"]),
        "file_name": os.path.basename(jpg),
        "height": int(img["height"]),
        "width": int(img["width"]),
    }


def _builtin_panoptic_record(jpg: str, json_path: str, paths: dict, min_area: int) -> tuple[dict, dict]:
    record, scene, parents = _read_scene(json_path)
    image_entry = _image_entry(record, jpg, paths["image_root"])
    h, w = image_entry["height"], image_entry["width"]
    masks = np.stack([mask_utils.decode(a["segmentation"]).astype(bool) for a in record["annotations"]])
    # A pixel's segment is the stuff region, object or group (none of its members) of its finest mask.
    roots = [_ancestor(k, scene, parents, ("stuff", "object", "group")) for k in range(len(scene))]
    for k, r in enumerate(roots):
        if r is None:
            raise ValueError(f"{json_path}: {scene[k]['level']} {scene[k]['name']!r} lies in no object")
    segment_of = np.array([*roots, -1], np.int64)[finest_partition(masks)]  # owner -1 (no mask) -> -1
    category = {(c["isthing"], c["name"]): c["id"] for c in builtin_panoptic_categories()}
    ids = np.zeros((h, w), np.int64)
    segments = []
    for r in sorted(set(roots)):
        seg = segment_of == r
        tier, name = scene[r]["level"], scene[r]["name"]
        if not seg.any() or (tier == "group" and seg.sum() < min_area):
            continue
        cid = category.get((int(tier != "stuff"), name))
        if cid is None:
            kind = "stuff" if tier == "stuff" else "object"
            raise ValueError(f"{json_path}: {tier} {name!r} is not a built-in {kind} class (datasets/builtin_labels)")
        ids[seg] = r + 1
        segments.append(segment_info(r + 1, cid, seg))
    stem = os.path.splitext(image_entry["file_name"])[0]
    Image.fromarray(id2rgb(ids)).save(os.path.join(paths["panoptic_root"], stem + ".png"))
    return image_entry, {"image_id": image_entry["id"], "file_name": stem + ".png", "segments_info": segments}


def _progress(items: Sequence, desc: str, progress: bool) -> Iterable:
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img")


def write_builtin_panoptic(
    pairs: Sequence[tuple[str, str]], root: str, split: str, min_area: int = 1, progress: bool = False
) -> str:
    """Write the scenes ``pairs`` ((jpg, json) paths, the jpgs in ``ROOT/sa1b_json/<split>``) as the
    ``builtin_panoptic_<split>`` layout under ``root`` (see the module docstring).

    Args:
        min_area: a group's leftover segment (pixels outside its members' masks) smaller than this is void.
        progress: show a progress bar.

    Returns:
        The panoptic JSON path.
    """
    paths = builtin_panoptic_paths(split, root)
    for d in (paths["panoptic_root"], os.path.dirname(paths["panoptic_json"])):
        os.makedirs(d, exist_ok=True)
    data = {"images": [], "annotations": [], "categories": builtin_panoptic_categories()}
    for jpg, js in _progress(pairs, f"builtin_panoptic_{split}", progress):
        image_entry, ann_entry = _builtin_panoptic_record(jpg, js, paths, min_area)
        data["images"].append(image_entry)
        data["annotations"].append(ann_entry)
    with open(paths["panoptic_json"], "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))
    return paths["panoptic_json"]


def write_builtin_generic_annotations(root: str, split: str = "val") -> dict:
    """Write the semantic PNGs and the instances JSON of the ``builtin_panoptic_<split>`` layout under ``root``
    (:func:`datasets.register_builtin_labelled.builtin_panoptic_generic_paths`), derived from its panoptic PNGs
    and JSON as for COCO (:func:`datasets.register_coco_panoptic_generic.write_generic_annotations`: semantic
    PNG = contiguous class 0-13 of each pixel's segment, 255 void; one instance per thing segment, the 9
    thing categories). Both are overwritten.

    Returns:
        ``{"images": n, "sem_seg_root": path, "instances_json": path}``.
    """
    return write_generic_annotations(
        builtin_panoptic_generic_paths(split, root), instances="always", spec=builtin_panoptic_generic_spec()
    )


def write_builtin_parts(pairs: Sequence[tuple[str, str]], root: str, split: str, progress: bool = False) -> str:
    """Write the scenes ``pairs`` ((jpg, json) paths, the jpgs in ``ROOT/sa1b_json/<split>``) as the
    ``builtin_parts_<split>`` layout under ``root``: VLPart's Pascal-Part JSON (see the module docstring);
    ``progress`` shows a progress bar.

    Returns:
        The JSON path.
    """
    paths = builtin_parts_paths(split, root)
    os.makedirs(os.path.dirname(paths["json_file"]), exist_ok=True)
    categories = builtin_part_categories()
    category = {c["name"]: c["id"] for c in categories}
    data: dict = {"images": [], "annotations": [], "categories": categories}
    for jpg, js in _progress(pairs, f"builtin_parts_{split}", progress):
        record, scene, parents = _read_scene(js)
        image_entry = _image_entry(record, jpg, paths["image_root"])
        data["images"].append(image_entry)
        for k, (ann, syn) in enumerate(zip(record["annotations"], scene)):
            if syn["level"] not in ("part", "subpart"):
                continue
            name = f"{scene[_object_of(k, scene, parents, js)]['name']}:{syn['name']}"
            if name not in category:
                raise ValueError(f"{js}: annotation {ann['id']}: {name!r} is not a built-in part class")
            data["annotations"].append(
                {
                    "id": ann["id"],
                    "image_id": image_entry["id"],
                    "category_id": category[name],
                    "segmentation": ann["segmentation"],
                    "bbox": ann["bbox"],
                    "area": ann["area"],
                    "iscrowd": 0,
                }
            )
    with open(paths["json_file"], "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))
    return paths["json_file"]


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
    labelled: Sequence[str] = (),
    colours: str = "random",
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
        labelled: labelled layouts of both splits to write as well, of :data:`LABELLED_LAYOUTS`
            (``"panoptic"``, ``"parts"``; ``"panoptic"`` also writes the val split's derived files of
            generic evaluation); they leave the other outputs unchanged.
        colours: colour scheme of the scenes, one of :data:`tools.make_synthetic_sa1b.COLOURS`
            (``"typical"``: most regions in an everyday colour of their class; the stage-2 recipe's data).

    Returns:
        :func:`builtin_env` of ``output``.
    """
    unknown = [k for k in labelled if k not in LABELLED_LAYOUTS]
    if unknown:
        raise ValueError(f"labelled: unknown layout {unknown[0]!r}; expected some of {LABELLED_LAYOUTS}")
    env = builtin_env(output)
    check_colours(colours)
    train = make_synthetic_sa1b(env["SAM_JSON"], num_train, seed=seed, size=size, progress=progress, colours=colours)
    drop_small_masks(train, min_area)
    convert_sa1b_to_tsv(env["SAM_JSON"], env["SAM_DATASET"], min(num_shards, max(1, len(train))), progress=progress)
    val = make_synthetic_sa1b(
        env["SAM_JSON_VAL"], num_val, seed=seed + 1, size=size, start_id=VAL_START_ID, progress=progress,
        colours=colours,
    )
    drop_small_masks(val, min_area)
    write_coco_panoptic(val, output)
    for split, pairs in (("train", train), ("val", val)):
        if "panoptic" in labelled:
            write_builtin_panoptic(pairs, output, split, min_area, progress)
            if split == "val":
                write_builtin_generic_annotations(output, split)
        if "parts" in labelled:
            write_builtin_parts(pairs, output, split, progress)
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
    parser.add_argument(
        "--labelled",
        nargs="+",
        choices=LABELLED_LAYOUTS,
        default=[],
        help="also write these labelled layouts of both splits (builtin_panoptic_*, builtin_parts_*)",
    )
    parser.add_argument(
        "--colours", choices=COLOURS, default="random",
        help="region colours: random (default; the stage-1 data) or typical of the class (the stage-2 data)",
    )
    args = parser.parse_args(argv)
    try:
        env = make_builtin_data(
            args.output,
            args.num_train,
            args.num_val,
            seed=args.seed,
            size=args.size,
            min_area=args.min_area,
            num_shards=args.num_shards,
            progress=not args.no_progress,
            labelled=args.labelled,
            colours=args.colours,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("wrote the built-in data; point train_net.py at it with:")
    print(" ".join(f"{k}={v}" for k, v in env.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
