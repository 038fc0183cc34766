"""What ``train_net.py`` needs from the data side: registration, loaders and evaluators by name."""
from __future__ import annotations

import logging

from detectron2.data import DatasetCatalog
from detectron2.data.common import DatasetFromList
from detectron2.utils import comm

from semantic_sam.config import ConfigError
from semantic_sam.data.train_stream import ResumableTrainLoader, TrainingStream
from semantic_sam.evaluation import build_evaluator as _build_evaluator

from . import interactive_eval
from .sa1b_dataset_mapper import SA1BDatasetMapper

__all__ = [
    "register_datasets",
    "unavailable_test_datasets",
    "images_per_process",
    "build_train_loader",
    "build_test_loader",
    "build_evaluator",
]

logger = logging.getLogger(__name__)


def register_datasets(cfg) -> None:
    """Register every dataset the configs name (SA-1B TSV/JSON, COCO panoptic interactive).

    Registration only records paths from the environment; files are read when a dataset is
    loaded, and a missing folder is then reported with the path and the variable that sets it.
    """
    interactive_eval.register_eval_datasets()
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        if name not in DatasetCatalog.list():
            raise ConfigError(
                f"DATASETS: unknown dataset {name!r}; registered: {', '.join(sorted(DatasetCatalog.list()))}"
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


def images_per_process(cfg, world_size: int) -> int:
    """``SAM.TRAIN.BATCH_SIZE_TOTAL / world_size``; a :class:`ConfigError` unless the total is a
    positive multiple of the number of processes."""
    total = cfg.SAM.TRAIN.BATCH_SIZE_TOTAL
    if total <= 0 or total % world_size:
        raise ConfigError(
            f"SAM.TRAIN.BATCH_SIZE_TOTAL={total} must be a positive multiple of the number of "
            f"processes ({world_size}); e.g. SAM.TRAIN.BATCH_SIZE_TOTAL={world_size * max(1, total // world_size)}"
        )
    return total // world_size


def build_train_loader(cfg) -> ResumableTrainLoader:
    """Endless, resumable loader over ``DATASETS.TRAIN`` (one SA-1B dataset) with the SA-1B mapper;
    ``SAM.TRAIN.BATCH_SIZE_TOTAL`` images per iteration across all processes.

    The stream is seeded by ``SEED`` (a seed shared by the processes when ``SEED`` < 0) and every
    record's augmentation by its position in the stream (see :mod:`semantic_sam.data.train_stream`),
    so a resumed run reads exactly the records, augmented exactly as, an uninterrupted one. Training
    images are all ``IMAGE_SIZE``² crops, so ``ASPECT_RATIO_GROUPING`` has nothing to group.
    """
    names = list(cfg.DATASETS.TRAIN)
    if len(names) != 1:
        raise ConfigError(f"DATASETS.TRAIN: expected exactly one SA-1B dataset, got {names}")
    world_size = comm.get_world_size()
    per_process = images_per_process(cfg, world_size)
    mapper = SA1BDatasetMapper(cfg, is_train=True, dataset_name=names[0])
    seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    stream = TrainingStream(
        DatasetFromList(DatasetCatalog.get(names[0]), copy=False, serialize=True),
        mapper,
        seed=seed,
        images_per_process=per_process,
        rank=comm.get_rank(),
        world_size=world_size,
    )
    return ResumableTrainLoader(stream, num_workers=cfg.SAM.DATALOADER.NUM_WORKERS)


def build_test_loader(cfg, dataset_name: str):
    return interactive_eval.build_test_loader(cfg, dataset_name)


def build_evaluator(cfg, dataset_name: str, output_dir: str, weights: str | None = None):
    return _build_evaluator(cfg, dataset_name, output_dir, weights)
