"""What ``train_net.py`` needs from the data side: registration, loaders and evaluators by name."""
from __future__ import annotations

import logging
from typing import Iterable, Iterator

from detectron2.data import DatasetCatalog, build_detection_train_loader
from detectron2.utils import comm

from semantic_sam.config import ConfigError
from semantic_sam.evaluation import build_evaluator as _build_evaluator

from . import interactive_eval
from .sa1b_dataset_mapper import SA1BDatasetMapper

__all__ = [
    "register_datasets",
    "unavailable_test_datasets",
    "BadRowCountingLoader",
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


class BadRowCountingLoader:
    """Wraps a training loader and counts, in ``bad_rows``, the corrupt rows the mappers skipped
    (the sum of the batches' ``bad_rows``). The count is this process's; ``train_net.py`` sums it
    over all processes into the ``data/bad_rows`` metric."""

    def __init__(self, loader: Iterable[list[dict]]):
        self.loader = loader
        self.bad_rows = 0

    def __iter__(self) -> Iterator[list[dict]]:
        for batch in self.loader:
            self.bad_rows += sum(int(d.get("bad_rows", 0)) for d in batch)
            yield batch

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]


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


def build_train_loader(cfg):
    """Infinite loader over ``DATASETS.TRAIN`` (one SA-1B dataset) with the SA-1B mapper;
    ``SAM.TRAIN.BATCH_SIZE_TOTAL`` images per iteration across all processes."""
    names = list(cfg.DATASETS.TRAIN)
    if len(names) != 1:
        raise ConfigError(f"DATASETS.TRAIN: expected exactly one SA-1B dataset, got {names}")
    images_per_process(cfg, comm.get_world_size())
    mapper = SA1BDatasetMapper(cfg, is_train=True, dataset_name=names[0])
    loader = build_detection_train_loader(
        DatasetCatalog.get(names[0]),
        mapper=mapper,
        total_batch_size=cfg.SAM.TRAIN.BATCH_SIZE_TOTAL,
        aspect_ratio_grouping=cfg.SAM.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.SAM.DATALOADER.NUM_WORKERS,
    )
    return BadRowCountingLoader(loader)


def build_test_loader(cfg, dataset_name: str):
    return interactive_eval.build_test_loader(cfg, dataset_name)


def build_evaluator(cfg, dataset_name: str, output_dir: str):
    return _build_evaluator(cfg, dataset_name, output_dir)
