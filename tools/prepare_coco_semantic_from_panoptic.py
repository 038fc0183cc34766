"""Write the semantic PNGs (and, when absent, the instances JSON) that generic COCO evaluation reads.

    python -m tools.prepare_coco_semantic_from_panoptic ROOT [--split val2017] [--instances auto|always|never]

Reads ``ROOT/coco/panoptic_<split>/*.png`` with ``ROOT/coco/annotations/panoptic_<split>.json`` and writes

* ``ROOT/coco/panoptic_semseg_<split>/<PNG name>``: uint8, each pixel the contiguous COCO panoptic class
  (0-132, things 0-79) of its segment, crowd segments included, 255 = void (the layout of Mask DINO's
  ``prepare_coco_semantic_annos_from_panoptic_annos.py``);
* ``ROOT/coco/annotations/instances_<split>.json`` (``--instances auto``, the default: only when the file
  does not exist; COCO's own ``instances_val2017.json`` is the reference): one COCO instance annotation
  per thing segment (RLE mask, box, area, ``iscrowd``), the 80 thing categories.

Every panoptic PNG is checked against its ``segments_info`` first; a mismatch, a category outside COCO
panoptic's 133 or a missing file stops the tool with exit status 2 and a one-line ``error:`` naming the
file and the id. See DATASET.md, "Generic evaluation".
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from datasets.register_coco_panoptic_generic import prepare_generic_annotations
from semantic_sam.utils.cli import report_user_error

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; a user error (missing file, bad JSON, PNG/segments mismatch) exits with status 2."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="dataset root (what $DETECTRON2_DATASETS points to), holding coco/")
    parser.add_argument("--split", default="val2017", help="COCO split (default val2017)")
    parser.add_argument(
        "--instances",
        choices=("auto", "always", "never"),
        default="auto",
        help="write coco/annotations/instances_<split>.json: when absent (auto), always, or never",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        done = prepare_generic_annotations(args.root, args.split, args.instances)
    except Exception as e:
        return report_user_error(e)
    print(f"wrote {done['images']} semantic PNGs to {done['sem_seg_root']}")
    if done["instances_json"]:
        print(f"wrote {done['instances_json']} from the panoptic thing segments")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
