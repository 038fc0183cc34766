"""What ``train_net.py`` needs from the data side: registration, loaders and evaluators by name."""
from __future__ import annotations

import logging

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.common import DatasetFromList
from detectron2.utils import comm

from semantic_sam.config import ConfigError
from semantic_sam.data.train_stream import JointTrainLoader, ResumableTrainLoader, TrainingStream, dataset_seed
from semantic_sam.evaluation import build_evaluator as _build_evaluator
from semantic_sam.evaluation.generic import is_generic_dataset

from . import interactive_eval
from .generic_eval import build_generic_test_loader
from .labelled_dataset_mapper import LabelledDatasetMapper
from .register_coco_panoptic_generic import register_coco_panoptic_generic
from .register_builtin_labelled import register_builtin_eval_datasets, register_builtin_labelled
from .register_coco_panoptic_labelled import register_coco_panoptic_labelled
from .register_part_datasets import register_all_part_datasets
from .sa1b_dataset_mapper import SA1BDatasetMapper

__all__ = [
    "register_datasets",
    "unavailable_test_datasets",
    "images_per_process",
    "build_train_loader",
    "train_dataset_section",
    "build_test_loader",
    "build_evaluator",
]

logger = logging.getLogger(__name__)


def register_datasets(cfg) -> None:
    """Register every dataset the configs name (SA-1B TSV/JSON, COCO panoptic interactive, generic and
    labelled, Pascal-Part, PartImageNet, PACO-LVIS, the built-in model's labelled synthetic scenes and their val
    split's interactive and generic evaluation sets).

    Registration only records paths from the environment; files are read when a dataset is
    loaded, and a missing folder is then reported with the path and the variable that sets it.

    Raises:
        ConfigError: a dataset name is not registered, or ``DATASETS.TEST`` names a generic dataset
            (COCO panoptic generic, a part dataset) for a model without generic queries or text encoder.
    """
    interactive_eval.register_eval_datasets()
    register_coco_panoptic_generic()
    register_coco_panoptic_labelled()
    register_all_part_datasets()
    register_builtin_labelled()
    register_builtin_eval_datasets()
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        if name not in DatasetCatalog.list():
            raise ConfigError(
                f"DATASETS: unknown dataset {name!r}; registered: {', '.join(sorted(DatasetCatalog.list()))}"
            )
    generic = [name for name in cfg.DATASETS.TEST if is_generic_dataset(name)]
    if generic and (cfg.MODEL.DECODER.NUM_OBJECT_QUERIES <= 0 or cfg.MODEL.TEXT.ARCH == "noencoder"):
        raise ConfigError(
            f"DATASETS.TEST: {generic[0]!r} is evaluated by whole-image segmentation, which needs generic queries: "
            f"MODEL.DECODER.NUM_OBJECT_QUERIES > 0 and a text encoder (MODEL.TEXT.ARCH unicl or open_clip); "
            f"this config has NUM_OBJECT_QUERIES={cfg.MODEL.DECODER.NUM_OBJECT_QUERIES}, "
            f"MODEL.TEXT.ARCH={cfg.MODEL.TEXT.ARCH!r}"
        )


def unavailable_test_datasets(cfg) -> dict[str, str]:
    """``{name: reason}`` for the test datasets whose files cannot be read (e.g. COCO not
    downloaded); a training run warns about them at the start instead of failing at the end."""
    missing = {}
    for name in cfg.DATASETS.TEST:
        try:
            DatasetCatalog.get(name)
        except (FileNotFoundError, OSError) as e:
            missing[name] = str(e)
    return missing


def images_per_process(cfg, world_size: int, section: str = "SAM") -> int:
    """``<section>.TRAIN.BATCH_SIZE_TOTAL / world_size``; a :class:`ConfigError` unless the total is a
    positive multiple of the number of processes."""
    key = f"{section}.TRAIN.BATCH_SIZE_TOTAL"
    total = cfg[section].TRAIN.BATCH_SIZE_TOTAL
    if total <= 0 or total % world_size:
        raise ConfigError(
            f"{key}={total} must be a positive multiple of the number of "
            f"processes ({world_size}); e.g. {key}={world_size * max(1, total // world_size)}"
        )
    return total // world_size


def train_dataset_section(name: str) -> str | None:
    """The config section of a labelled training dataset (``COCO``, ``PASCAL_PART``, ...), None for SA-1B."""
    return MetadataCatalog.get(name).get("config_section", None)


def _train_mapper(cfg, name: str):
    section = train_dataset_section(name)
    if section is None:
        return SA1BDatasetMapper(cfg, is_train=True, dataset_name=name)
    if cfg.MODEL.TEXT.ARCH == "noencoder":
        raise ConfigError(
            f"DATASETS.TRAIN: {name!r} is labelled data, whose object and part labels need a text encoder; "
            "set MODEL.TEXT.ARCH to unicl or open_clip (MODEL.TEXT.ARCH is 'noencoder')"
        )
    return LabelledDatasetMapper(cfg, is_train=True, dataset_name=name)


def build_train_loader(cfg) -> ResumableTrainLoader | JointTrainLoader:
    """Endless, resumable loader over ``DATASETS.TRAIN``.

    One dataset: a :class:`ResumableTrainLoader` whose batches are lists of mapped dicts. Several
    (joint training, e.g. ``[sa1b_train, coco_2017_train_panoptic_interactive_labelled,
    pascal_part_train]``): a :class:`JointTrainLoader` whose steps are ``{dataset name: batch}``. SA-1B
    datasets use the SA-1B mapper and ``SAM.TRAIN.BATCH_SIZE_TOTAL`` images per step over all
    processes; a labelled dataset uses :class:`LabelledDatasetMapper` (large-scale jitter) and its
    family's ``<SECTION>.TRAIN.BATCH_SIZE_TOTAL`` (the mixing ratio).

    Each stream is seeded by ``SEED`` (a seed shared by the processes when ``SEED`` < 0; the i-th
    dataset of a joint run by a seed derived from it) and every record's augmentation by its position
    in the stream (see :mod:`semantic_sam.data.train_stream`), so a resumed run reads exactly the
    records, augmented exactly as, an uninterrupted one. Training images are all ``IMAGE_SIZE``² crops,
    so ``ASPECT_RATIO_GROUPING`` has nothing to group.
    """
    names = list(cfg.DATASETS.TRAIN)
    if not names:
        raise ConfigError("DATASETS.TRAIN: empty; name at least one training dataset")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"DATASETS.TRAIN: {duplicates} named more than once")
    world_size = comm.get_world_size()
    seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    mappers = [_train_mapper(cfg, name) for name in names]  # config errors before any dataset is read
    loaders = {}
    for index, (name, mapper) in enumerate(zip(names, mappers)):
        section = train_dataset_section(name) or "SAM"
        stream = TrainingStream(
            DatasetFromList(DatasetCatalog.get(name), copy=False, serialize=True),
            mapper,
            seed=dataset_seed(seed, index),
            images_per_process=images_per_process(cfg, world_size, section),
            rank=comm.get_rank(),
            world_size=world_size,
        )
        loaders[name] = ResumableTrainLoader(stream, num_workers=cfg.SAM.DATALOADER.NUM_WORKERS)
    if len(loaders) == 1:
        return loaders[names[0]]
    logger.info(
        "joint training: %s images per step",
        ", ".join(f"{name}: {loader.images_per_step}" for name, loader in loaders.items()),
    )
    return JointTrainLoader(loaders)


def build_test_loader(cfg, dataset_name: str):
    """The test loader of ``dataset_name``: whole images for generic datasets (COCO panoptic generic, part
    datasets; :mod:`datasets.generic_eval`), images with prompts for interactive ones
    (:mod:`datasets.interactive_eval`)."""
    if is_generic_dataset(dataset_name):
        return build_generic_test_loader(cfg, dataset_name)
    return interactive_eval.build_test_loader(cfg, dataset_name)


def build_evaluator(cfg, dataset_name: str, output_dir: str, weights: str | None = None):
    return _build_evaluator(cfg, dataset_name, output_dir, weights)
