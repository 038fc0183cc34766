"""The evaluators of generic (whole-image) evaluation: detectron2's PQ, box and mask AP and mIoU, and part AP.

    model = GenericInference(model, MetadataCatalog.get(name))     # .generic_inference; embeds the names once
    evaluator = build_generic_evaluator(name, output_dir)
    results = inference_on_dataset(model, loader, evaluator)

Which evaluators (SEMANTIC_SPEC §9):

* **COCO panoptic** (``evaluator_type`` ``coco_panoptic_seg``, e.g. ``coco_2017_val_panoptic_generic``):
  detectron2's ``COCOPanopticEvaluator`` (PQ, SQ, RQ; things, stuff) after a check that every GT PNG
  matches its ``segments_info`` (:func:`~.generic.check_panoptic_segments`), ``COCOEvaluator`` (box and mask AP
  on the thing instances of ``metadata.json_file``; GT annotation ids made safe for pycocotools,
  :class:`CheckedCOCOEvaluator`) and ``SemSegEvaluator`` (mIoU on the 133-class semantic PNGs),
  combined by :class:`GenericEvaluator`.
* **Part datasets** (metadata ``config_section`` one of :data:`~.generic.PART_CONFIG_SECTIONS`, e.g.
  ``pascal_part_val``): :class:`PartAPEvaluator`, a ``COCOEvaluator`` over the dataset's
  ``object:part`` classes that also averages AP and AP50 over the seen (base) and unseen (novel)
  classes of Pascal-Part (SEMANTIC_SPEC §6 "Part AP").

Results are detectron2's (``panoptic_seg``, ``bbox``, ``segm``, ``sem_seg``), written with the
evaluated weights to ``generic_results.json`` (non-finite numbers as ``null``); :func:`~.summary.summary_table`
puts the headline numbers of several datasets, interactive ones included, in one table.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import tempfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.evaluation import COCOEvaluator, COCOPanopticEvaluator, DatasetEvaluators, SemSegEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from tabulate import tabulate

from ..data.label_spaces import PASCAL_PART_NOVEL_OBJECTS, split_object_part
from .generic import (
    GENERIC_EVALUATOR_TYPES,
    GenericEvaluationError,
    check_panoptic_segments,
    is_part_dataset,
    read_panoptic_ids,
    read_semantic_png,
)
from .summary import summary_table

__all__ = [
    "CheckedCOCOEvaluator",
    "CheckedPanopticEvaluator",
    "GenericEvaluator",
    "PartAPEvaluator",
    "build_generic_evaluator",
    "format_per_class_pq",
]

logger = logging.getLogger(__name__)

GENERIC_RESULTS_FILE = "generic_results.json"


class CheckedPanopticEvaluator(COCOPanopticEvaluator):
    """detectron2's ``COCOPanopticEvaluator`` with two guards.

    * Each input's GT is checked first: its panoptic PNG (``pan_seg_file_name``) must hold exactly the
      segments of its ``segments_info`` (:func:`check_panoptic_segments`). panopticapi itself ignores PNG
      ids without a segment and counts a listed segment without pixels as missed, which would give a
      wrong PQ silently.
    * PQ is computed over the dataset's whole label space: when the GT JSON's ``categories`` lack some of
      the metadata's classes (a subset of COCO, such as the tiny test set), panopticapi would stop at the
      first prediction of such a class, so the evaluation reads a copy of the JSON that lists them all
      (classes without GT count only when predicted, as false positives, as with COCO's own JSON).

    It also reports PQ, SQ and RQ per class (panopticapi's per-class numbers, which detectron2 does not
    pass on): ``PQ/<class>``, ``SQ/<class>``, ``RQ/<class>`` in ``panoptic_seg`` (percent) for every class
    with GT segments or predictions, logged as a table.
    """

    def evaluate(self):
        if not comm.is_main_process():
            return super().evaluate()
        gt_json = self._metadata.panoptic_json
        with PathManager.open(gt_json, "r") as f:
            data = json.load(f)
        recorded: dict = {}
        with _recording_pq_compute(recorded):
            results = self._evaluate_over_label_space(data)
        if results and "pq" in recorded:
            per_class = self._per_class(recorded["pq"], data)
            results["panoptic_seg"].update(per_class)
            if per_class:
                name = self._metadata.get("name", gt_json)
                logger.info("Per-class PQ of %s:\n%s", name, format_per_class_pq(per_class))
        return results

    def _evaluate_over_label_space(self, data: dict):
        gt_json = self._metadata.panoptic_json
        listed = {c.get("id") for c in data.get("categories", [])}
        missing = [c for c in self._label_space_categories() if c["id"] not in listed]
        if not missing:
            return super().evaluate()
        data = dict(data)
        metadata = self._metadata
        with tempfile.TemporaryDirectory(prefix="panoptic_gt") as tmp:
            data["categories"] = list(data.get("categories", [])) + missing
            patched = os.path.join(tmp, os.path.basename(gt_json))
            with open(patched, "w", encoding="utf-8") as f:
                json.dump(data, f)
            logger.info("%s lists %d of the %d classes; PQ is computed over all of them", gt_json, len(listed),
                        len(listed) + len(missing))
            self._metadata = Metadata(**dict(metadata.as_dict(), panoptic_json=patched))
            try:
                return super().evaluate()
            finally:
                self._metadata = metadata

    def _per_class(self, pq_res: dict, data: dict) -> OrderedDict[str, float]:
        """``PQ/<name>``, ``SQ/<name>``, ``RQ/<name>`` of the classes with (non-crowd) GT segments or
        predictions, in class order, from panopticapi's ``per_class`` results (keyed by category id)."""
        present = {
            int(seg["category_id"])
            for ann in data.get("annotations", [])
            for seg in ann.get("segments_info", [])
            if not seg.get("iscrowd", 0)
        }
        present |= {int(seg["category_id"]) for p in self._predictions for seg in p.get("segments_info", [])}
        out: OrderedDict[str, float] = OrderedDict()
        per_class = pq_res.get("per_class", {})
        for cat in self._label_space_categories():
            if cat["id"] in present and cat["id"] in per_class:
                for metric in ("PQ", "SQ", "RQ"):
                    out[f"{metric}/{cat['name']}"] = 100.0 * float(per_class[cat["id"]][metric.lower()])
        return out

    def _label_space_categories(self) -> list[dict]:
        """``{"id", "name", "isthing"}`` of every class of the metadata (things and stuff)."""
        names = self._metadata.get("stuff_classes", None) or []
        things = dict(self._metadata.thing_dataset_id_to_contiguous_id)
        classes = {**self._metadata.stuff_dataset_id_to_contiguous_id, **things}
        return [
            {"id": int(d), "name": names[c] if c < len(names) else str(d), "isthing": int(d in things)}
            for d, c in sorted(classes.items())
        ]

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp in inputs:
            png = inp.get("pan_seg_file_name")
            if png is None or "segments_info" not in inp:
                raise KeyError(
                    f"input {inp.get('file_name')!r} has no 'pan_seg_file_name' / 'segments_info' (the generic "
                    "evaluation mapper keeps them)"
                )
            where = f"{png} (image_id {inp.get('image_id')!r}, {self._metadata.get('panoptic_json', 'panoptic JSON')})"
            check_panoptic_segments(read_panoptic_ids(png), inp["segments_info"], where)
        super().process(inputs, outputs)


@contextlib.contextmanager
def _recording_pq_compute(recorded: dict):
    """Within the block, panopticapi's ``pq_compute`` (which ``COCOPanopticEvaluator.evaluate`` imports when
    it runs) also puts its result, per-class numbers included, in ``recorded["pq"]``."""
    import panopticapi.evaluation as panoptic_evaluation

    original = panoptic_evaluation.pq_compute

    def recording(*args, **kwargs):
        recorded["pq"] = original(*args, **kwargs)
        return recorded["pq"]

    panoptic_evaluation.pq_compute = recording
    try:
        yield
    finally:
        panoptic_evaluation.pq_compute = original


def format_per_class_pq(per_class: Mapping[str, float]) -> str:
    """A class x (PQ, SQ, RQ) table of :class:`CheckedPanopticEvaluator`'s per-class keys."""
    names = [k[len("PQ/"):] for k in per_class if k.startswith("PQ/")]
    rows = [[name] + [f"{per_class[f'{m}/{name}']:.2f}" for m in ("PQ", "SQ", "RQ")] for name in names]
    return tabulate(rows, headers=["class", "PQ", "SQ", "RQ"], tablefmt="pipe", stralign="right", disable_numparse=True)


class CheckedCOCOEvaluator(COCOEvaluator):
    """detectron2's ``COCOEvaluator`` that makes the GT annotations safe for pycocotools first.

    ``COCOeval`` records a match by the GT annotation's id, so a GT whose id is 0 is never counted as
    matched and a perfect detection of it scores AP 0; ids shared by several annotations mix their
    matches. It also needs ``iscrowd`` and ``area`` on every GT, which LVIS-style JSONs (PACO) omit.
    So, in this evaluator's in-memory copy (the file is not changed), with a log line saying what
    changed: annotations are renumbered 1..N when the ids are not distinct positive ints, a missing
    ``iscrowd`` is 0 and a missing ``area`` is the area of the annotation's mask.
    """

    def __init__(self, dataset_name: str, *args, **kwargs):
        super().__init__(dataset_name, *args, **kwargs)
        from pycocotools import mask as mask_util

        annotations = self._coco_api.dataset.get("annotations", [])
        changes = []
        ids = [a.get("id") for a in annotations]
        if any(isinstance(i, bool) or not isinstance(i, int) or i <= 0 for i in ids) or len(set(ids)) != len(ids):
            for new_id, ann in enumerate(annotations, start=1):
                ann["id"] = new_id
            changes.append(f"ids renumbered 1..{len(annotations)} (the JSON has ids <= 0 or repeated ids)")
        no_crowd = [a for a in annotations if "iscrowd" not in a]
        for ann in no_crowd:
            ann["iscrowd"] = 0
        if no_crowd:
            changes.append(f"iscrowd 0 for {len(no_crowd)} annotations without it")
        no_area = [a for a in annotations if "area" not in a]
        for ann in no_area:
            if ann.get("segmentation"):
                ann["area"] = float(mask_util.area(self._coco_api.annToRLE(ann)))
            else:
                ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
        if no_area:
            changes.append(f"area from the mask for {len(no_area)} annotations without it")
        if changes:
            with contextlib.redirect_stdout(io.StringIO()):
                self._coco_api.createIndex()
            self._logger.info("%s: GT annotations adjusted for pycocotools: %s", dataset_name, "; ".join(changes))


class PartAPEvaluator(CheckedCOCOEvaluator):
    """COCO box and mask AP over a part dataset's ``object:part`` classes, plus seen/unseen averages.

    The GT is the dataset's COCO-style JSON (``metadata.json_file``); predictions are ``instances`` whose
    ``pred_classes`` are the dataset's class ids (index into ``metadata.thing_classes``). A JSON category
    is matched to a class by ``metadata.thing_dataset_id_to_contiguous_id`` when the metadata has it,
    else by name (case and spacing ignored), so the JSON's own category ids may be anything.

    Besides detectron2's ``AP``, ``AP50``, ... and ``AP-<class>``, ``bbox`` and ``segm`` get ``AP_seen``,
    ``AP50_seen``, ``AP_unseen`` and ``AP50_unseen``: the mean over the seen (base) / unseen (novel)
    classes of each class's AP (IoU 0.5:0.95) and AP50, over the classes that have GT (NaN when none
    has). For Pascal-Part the unseen classes are those of ``bus`` and ``dog`` (16 of 93); other
    datasets get the averages only when ``novel_classes`` is given.

    Args:
        dataset_name: a registered part dataset.
        output_dir: where detectron2 writes the predictions.
        novel_classes: names of the unseen classes (default: Pascal-Part's for a Pascal-Part dataset).
        distributed, max_dets_per_image: as for ``COCOEvaluator``.

    Raises:
        FileNotFoundError: the JSON is missing.
        GenericEvaluationError: a JSON category that is not a class of the dataset, or classes the JSON
            does not list.
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: str | None = None,
        *,
        novel_classes: Sequence[str] | None = None,
        distributed: bool = True,
        max_dets_per_image: int | None = None,
    ):
        meta = MetadataCatalog.get(dataset_name)
        if meta.get("thing_classes", None) is None:
            DatasetCatalog.get(dataset_name)  # PACO: the label space is set when it is loaded
        json_file = meta.get("json_file", None)
        if not json_file or not os.path.isfile(json_file):
            raise FileNotFoundError(
                f"{dataset_name}: annotation JSON not found: expected {json_file!r}. Set $DETECTRON2_DATASETS (or "
                "$DATASET) to the folder that holds the dataset folders (see DATASET.md)"
            )
        super().__init__(
            dataset_name,
            tasks=("bbox", "segm"),
            distributed=distributed,
            output_dir=output_dir,
            max_dets_per_image=max_dets_per_image,
        )
        classes = list(meta.thing_classes)
        id_map = meta.get("thing_dataset_id_to_contiguous_id", None) or self._id_map_by_name(json_file, classes)
        # detectron2 names its per-class APs by thing_classes in the order of the sorted JSON category ids.
        self._metadata = Metadata(
            **dict(
                meta.as_dict(),
                thing_dataset_id_to_contiguous_id=dict(id_map),
                thing_classes=[classes[id_map[cid]] for cid in sorted(id_map)],
            )
        )
        self._class_of_category = dict(id_map)
        if novel_classes is None and meta.get("label_family", None) == "pascal_part":
            novel_classes = [n for n in classes if split_object_part(n)[0] in PASCAL_PART_NOVEL_OBJECTS]
        self._novel: set[int] | None = None
        if novel_classes is not None:
            unknown = [n for n in novel_classes if n not in classes]
            if unknown:
                raise GenericEvaluationError(
                    f"{dataset_name}: novel class {unknown[0]!r} is not a class of the dataset"
                )
            self._novel = {classes.index(n) for n in novel_classes}

    def _id_map_by_name(self, json_file: str, classes: list[str]) -> dict[int, int]:
        def key(name: str) -> str:
            return " ".join(str(name).lower().split())

        index = {key(n): i for i, n in enumerate(classes)}
        id_map = {}
        for cid, cat in sorted(self._coco_api.cats.items()):
            if key(cat.get("name", "")) not in index:
                raise GenericEvaluationError(
                    f"{json_file}: category {cid} ({cat.get('name')!r}) is not a class of the dataset "
                    f"({len(classes)} classes)"
                )
            id_map[cid] = index[key(cat["name"])]
        missing = sorted(set(range(len(classes))) - set(id_map.values()))
        if missing:
            raise GenericEvaluationError(
                f"{json_file}: 'categories' lacks {len(missing)} of the dataset's {len(classes)} classes, e.g. "
                f"{classes[missing[0]]!r}; part AP needs them all"
            )
        return id_map

    def _derive_coco_results(self, coco_eval, iou_type: str, class_names=None) -> dict:
        results = super()._derive_coco_results(coco_eval, iou_type, class_names=class_names)
        if self._novel is None:
            return results
        splits = {"seen": lambda c: c not in self._novel, "unseen": lambda c: c in self._novel}
        for split, member in splits.items():
            if coco_eval is None:
                results[f"AP_{split}"] = results[f"AP50_{split}"] = float("nan")
                continue
            precision = coco_eval.eval["precision"]  # (IoU thresholds, recall, K, area ranges, max dets)
            iou_50 = int(np.flatnonzero(np.isclose(coco_eval.params.iouThrs, 0.5))[0])
            columns = [k for k, cid in enumerate(coco_eval.params.catIds) if member(self._class_of_category[cid])]
            results[f"AP_{split}"] = _mean_class_ap(precision[:, :, columns, 0, -1])
            results[f"AP50_{split}"] = _mean_class_ap(precision[iou_50 : iou_50 + 1, :, columns, 0, -1])
        self._logger.info(
            "%s AP over seen / unseen classes: %.3f / %.3f (AP50 %.3f / %.3f)", iou_type,
            results["AP_seen"], results["AP_unseen"], results["AP50_seen"], results["AP50_unseen"],
        )
        return results


def _mean_class_ap(precision: np.ndarray) -> float:
    """Mean over classes of each class's AP in percent, from (T, R, K) precisions (-1 = no GT);
    classes without GT are left out; NaN when none is left."""
    aps = []
    for k in range(precision.shape[2]):
        p = precision[:, :, k]
        p = p[p > -1]
        if p.size:
            aps.append(float(np.mean(p)))
    return 100.0 * float(np.mean(aps)) if aps else float("nan")


class GenericEvaluator(DatasetEvaluators):
    """detectron2 evaluators of one dataset, combined; on the main process ``evaluate`` also logs the
    headline numbers and writes ``generic_results.json`` (with ``"weights"``) to ``output_dir``."""

    def __init__(
        self, evaluators: list, dataset_name: str, output_dir: str | None = None, weights: str | None = None
    ):
        super().__init__(evaluators)
        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self.weights = weights

    def evaluate(self) -> "OrderedDict[str, dict]":
        results = super().evaluate()
        if not comm.is_main_process():
            return results
        logger.info("Generic evaluation of %s:\n%s", self.dataset_name, summary_table({self.dataset_name: results}))
        if self.output_dir:
            PathManager.mkdirs(self.output_dir)
            record = dict(results, weights=self.weights) if self.weights else dict(results)
            with PathManager.open(os.path.join(self.output_dir, GENERIC_RESULTS_FILE), "w") as f:
                json.dump(_finite_or_none(record), f, indent=2, allow_nan=False)
        return results


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def build_generic_evaluator(
    dataset_name: str,
    output_dir: str | None = None,
    weights: str | None = None,
    *,
    max_dets_per_image: int = 100,
) -> GenericEvaluator:
    """The evaluators of a generic dataset (see the module docstring), combined in a :class:`GenericEvaluator`.

    For COCO panoptic the dataset is loaded first, so that a missing file (image or PNG folder, JSONs,
    semantic PNGs) is reported by its loader with the path and the variable that sets it.

    Raises:
        GenericEvaluationError: the dataset is neither COCO panoptic (generic) nor a part dataset.
    """
    meta = MetadataCatalog.get(dataset_name)
    if is_part_dataset(meta):
        evaluators: list = [PartAPEvaluator(dataset_name, output_dir, max_dets_per_image=max_dets_per_image)]
    elif meta.get("evaluator_type", None) in GENERIC_EVALUATOR_TYPES:
        DatasetCatalog.get(dataset_name)
        evaluators = [
            CheckedPanopticEvaluator(dataset_name, output_dir),
            CheckedCOCOEvaluator(
                dataset_name, tasks=("bbox", "segm"), output_dir=output_dir, max_dets_per_image=max_dets_per_image
            ),
            SemSegEvaluator(dataset_name, output_dir=output_dir, sem_seg_loading_fn=read_semantic_png),
        ]
    else:
        raise GenericEvaluationError(
            f"{dataset_name}: not a generic evaluation dataset (evaluator_type {meta.get('evaluator_type', None)!r}, "
            f"config_section {meta.get('config_section', None)!r})"
        )
    return GenericEvaluator(evaluators, dataset_name, output_dir, weights)
