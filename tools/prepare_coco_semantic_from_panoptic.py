"""Write the semantic PNGs (and, when absent, the instances JSON) that generic COCO evaluation reads.

    python -m tools.prepare_coco_semantic_from_panoptic ROOT [--split val2017] [--instances auto|always|never]
    python -m tools.prepare_coco_semantic_from_panoptic ROOT --builtin [--split val]

Reads ``ROOT/coco/panoptic_<split>/*.png`` with ``ROOT/coco/annotations/panoptic_<split>.json`` and writes

* ``ROOT/coco/panoptic_semseg_<split>/<PNG name>``: uint8, each pixel the contiguous COCO panoptic class
  (0-132, things 0-79) of its segment, crowd segments included, 255 = void (the layout of Mask DINO's
  ``prepare_coco_semantic_annos_from_panoptic_annos.py``);
* ``ROOT/coco/annotations/instances_<split>.json`` (``--instances auto``, the default: only when the file
  does not exist; COCO's own ``instances_val2017.json`` is the reference): one COCO instance annotation
  per thing segment (RLE mask, box, area, ``iscrowd``), the 80 thing categories.

``--builtin``: ROOT is the built-in model's data root (``tools.make_builtin_data --labelled panoptic``, which
writes these files itself): reads ``ROOT/builtin_panoptic/panoptic_<split>/`` and ``panoptic_<split>.json``
(split ``val`` by default) and writes ``ROOT/builtin_panoptic/panoptic_semseg_<split>/`` (classes 0-13) and
``ROOT/builtin_panoptic/instances_<split>.json`` (the 9 thing categories), for ``builtin_panoptic_val_generic``.

Every panoptic PNG is checked against its ``segments_info`` first; a mismatch, a category outside the
dataset's (COCO panoptic's 133, the built-in 14) or a missing file stops the tool with exit status 2 and a
one-line ``error:`` naming the file and the id. See DATASET.md, "Generic evaluation".
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from datasets.register_builtin_labelled import (
    builtin_panoptic_generic_paths,
    builtin_panoptic_generic_spec,
)
from datasets.register_coco_panoptic_generic import (
    prepare_generic_annotations,
    write_generic_annotations,
)
from semantic_sam.utils.cli import report_user_error

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; a user error (missing file, bad JSON, PNG/segments mismatch) exits with status 2."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="dataset root (what $DETECTRON2_DATASETS points to), holding coco/")
    parser.add_argument("--split", default=None, help="split (default val2017; with --builtin, val)")
    parser.add_argument(
        "--instances",
        choices=("auto", "always", "never"),
        default="auto",
        help="write the instances JSON (coco/annotations/instances_<split>.json): when absent (auto), always, or never",
    )
    parser.add_argument(
        "--builtin",
        action="store_true",
        help="ROOT is a tools.make_builtin_data root: derive builtin_panoptic/panoptic_semseg_<split> and "
        "builtin_panoptic/instances_<split>.json from its builtin_panoptic layout",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.builtin:
            paths = builtin_panoptic_generic_paths(args.split or "val", args.root)
            done = write_generic_annotations(paths, args.instances, builtin_panoptic_generic_spec())
        else:
            done = prepare_generic_annotations(args.root, args.split or "val2017", args.instances)
    except Exception as e:
        return report_user_error(e)
    print(f"wrote {done['images']} semantic PNGs to {done['sem_seg_root']}")
    if done["instances_json"]:
        print(f"wrote {done['instances_json']} from the panoptic thing segments")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
