"""Evaluation data for ``train_net.py --eval_only``: registration, mapper and loader by dataset.

    register_eval_datasets()
    loader = build_test_loader(cfg, name)                    # mapper chosen by evaluator_type
    evaluator = semantic_sam.evaluation.build_evaluator(cfg, name, output_dir)
    wrapped = PromptedInference(model, precision=cfg.TEST.PRECISION)   # fp16 autocast on CUDA by default
    results = inference_on_dataset(wrapped, loader, evaluator)

The COCO mapper writes each segment's COCO panoptic class and the 133-name vocabulary into the inputs,
so a model with a text encoder is also scored for object labels (``label_acc@Max``, ``label_acc@Oracle``);
SA-1B data has no labels. For a labelled dataset (its metadata holds a label space, e.g.
``builtin_panoptic_val_interactive``, ``builtin_parts_val_interactive``) the same mapper writes that label
space's vocabulary and the segments' object and part classes, so part labels are scored too
(``part_label_acc@Max``, ``part_label_acc@Oracle``).
"""
from __future__ import annotations

from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.utils import comm

from semantic_sam.evaluation.build import INTERACTIVE_EVALUATOR_TYPES, MULTI_GRANULARITY_EVALUATOR_TYPES

from .coco_interactive_dataset_mapper import CocoInteractiveDatasetMapper
from .register_coco_panoptic_interactive import register_coco_panoptic_interactive

__all__ = ["build_test_loader", "build_test_mapper", "register_eval_datasets"]


def register_eval_datasets() -> None:
    """Register COCO panoptic val2017 (interactive) and the SA-1B datasets, reading the
    environment now; files are only read when a dataset is loaded."""
    from .register_sa1b import register_all_sa1b

    register_coco_panoptic_interactive()
    register_all_sa1b()


def _evaluator_type(dataset_name: str) -> str | None:
    if dataset_name not in DatasetCatalog.list():
        raise KeyError(f"dataset {dataset_name!r} is not registered; call register_eval_datasets() first")
    return MetadataCatalog.get(dataset_name).get("evaluator_type", None)


def build_test_mapper(cfg, dataset_name: str):
    """:class:`CocoInteractiveDatasetMapper` for COCO interactive datasets (and the labelled ones in their
    layout, with the dataset's vocabulary), :class:`~datasets.sa1b_eval_mapper.SA1BEvalMapper` for SA-1B ones."""
    evaluator_type = _evaluator_type(dataset_name)
    if evaluator_type in INTERACTIVE_EVALUATOR_TYPES:
        return CocoInteractiveDatasetMapper(cfg, dataset_name=dataset_name)
    if evaluator_type in MULTI_GRANULARITY_EVALUATOR_TYPES:
        from .sa1b_eval_mapper import SA1BEvalMapper

        return SA1BEvalMapper(cfg, dataset_name=dataset_name)
    raise ValueError(f"no evaluation mapper for dataset {dataset_name!r} (evaluator_type {evaluator_type!r})")


def build_test_loader(cfg, dataset_name: str):
    """detectron2 test loader (``InferenceSampler``, so each process maps its share of the
    images) over ``dataset_name`` with :func:`build_test_mapper`. The batch per process is
    ``COCO.TEST.BATCH_SIZE_TOTAL / world size`` (reference: 1 image per GPU)."""
    mapper = build_test_mapper(cfg, dataset_name)
    batch = max(1, cfg.COCO.TEST.BATCH_SIZE_TOTAL // comm.get_world_size())
    return build_detection_test_loader(
        DatasetCatalog.get(dataset_name),
        mapper=mapper,
        batch_size=batch,
        num_workers=cfg.COCO.DATALOADER.NUM_WORKERS,
    )
