"""The model wrapper of generic (whole-image) evaluation: :class:`GenericInference` segments whole images
with the model's generic queries in a dataset's label space (COCO panoptic, or a part dataset's
``object:part`` classes), for ``inference_on_dataset`` and the evaluators of :mod:`.generic_evaluators`.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import torch
from detectron2.data import DatasetCatalog
from detectron2.data.catalog import Metadata
from torch import nn

from ..utils.precision import inference_autocast
from .generic import GenericEvaluationError, is_part_dataset
from .prompted_inference import EVAL_PRECISIONS, _device_of, evaluation_dtype

__all__ = ["GenericInference"]

logger = logging.getLogger(__name__)


class GenericInference(nn.Module):
    """Segment whole images with the model's generic queries in a dataset's label space.

    Use it as the model of ``inference_on_dataset``. The dataset's class names are embedded once, on
    the first call (``model.class_embeddings``, every prompt template averaged, float32, outside
    autocast), then every batch goes through ``model.segment`` under ``TEST.PRECISION``:

    * **COCO panoptic** metadata (``stuff_classes``: all C class names by contiguous id,
      ``thing_dataset_id_to_contiguous_id``: which are things): panoptic, instance and semantic outputs
      (``"panoptic_seg"``, ``"instances"`` with thing classes only, ``"sem_seg"`` (C, h, w)).
    * **Part** metadata (``object_classes``, ``part_classes``, ``class_to_object``, ``class_to_part``):
      ``"instances"`` whose ``pred_classes`` are the dataset's K ``object:part`` class ids, scored
      ``sigmoid(object) * sigmoid(part)``.

    Inputs are the generic evaluation mapper's (``"image"`` (3, H, W) uint8 resized for the test
    size, ``"height"``/``"width"`` = the original size), so outputs are at the original size. The
    wrapper starts in the model's train/eval mode, so that ``inference_on_dataset`` leaves the model
    as it found it.

    Args:
        model: a ``SemanticSAM`` with generic queries and a text encoder.
        metadata: the dataset's detectron2 metadata.
        precision: ``TEST.PRECISION``, one of :data:`EVAL_PRECISIONS` (``"auto"``: float16 autocast on
            CUDA, float32 on the CPU).

    Raises:
        GenericEvaluationError: the model has no generic queries or no text encoder, or the metadata
            lacks the class names.
    """

    def __init__(self, model: nn.Module, metadata: Metadata, *, precision: str = "auto"):
        super().__init__()
        if precision not in EVAL_PRECISIONS:
            raise ValueError(f"TEST.PRECISION: unknown {precision!r}; expected one of {EVAL_PRECISIONS}")
        name = metadata.get("name", "N/A")
        if not getattr(model, "has_generic_queries", False) or getattr(model, "text_encoder", None) is None:
            raise GenericEvaluationError(
                f"{name}: generic evaluation needs generic queries: MODEL.DECODER.NUM_OBJECT_QUERIES > 0 and a "
                "text encoder (MODEL.TEXT.ARCH unicl or open_clip); this model segments prompts only"
            )
        self.model = model
        self.precision = precision
        self.dataset_name = name
        self.part_classes: tuple[list[int], list[int]] | None = None
        self.is_thing: list[bool] | None = None
        if is_part_dataset(metadata):
            if metadata.get("class_to_part", None) is None:
                DatasetCatalog.get(name)  # PACO: the label space comes from its JSON, set when it is loaded
            self.objects = list(_required(metadata, "object_classes"))
            self.parts = list(_required(metadata, "part_classes"))
            self.part_classes = (
                list(_required(metadata, "class_to_object")),
                list(_required(metadata, "class_to_part")),
            )
        else:
            self.objects = list(_required(metadata, "stuff_classes"))
            self.parts = []
            things = set(_required(metadata, "thing_dataset_id_to_contiguous_id").values())
            self.is_thing = [c in things for c in range(len(self.objects))]
        self._class_embeddings: dict[str, torch.Tensor] | None = None
        self._logged_dtype = False
        self.train(model.training)

    def class_embeddings(self) -> dict[str, torch.Tensor]:
        """``{"object": (C_o, D), "part": (C_p, D)}`` of the dataset's vocabulary, computed on the first call."""
        if self._class_embeddings is None:
            start = time.perf_counter()
            self._class_embeddings = self.model.class_embeddings(self.objects, self.parts or None)
            logger.info(
                "%s: embedded %d object and %d part names in %.1f s",
                self.dataset_name, len(self.objects), len(self.parts), time.perf_counter() - start,
            )
        return self._class_embeddings

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        embeddings = self.class_embeddings()
        device = _device_of(self.model)
        dtype = evaluation_dtype(self.precision, device)
        if not self._logged_dtype:
            how = "float32" if dtype == torch.float32 else f"{dtype} autocast"
            logger.info("Segmenting %s on %s in %s (TEST.PRECISION=%s)", self.dataset_name, device, how, self.precision)
            self._logged_dtype = True
        with inference_autocast(device, dtype):
            if self.part_classes is not None:
                return self.model.segment(batched_inputs, embeddings, part_classes=self.part_classes)
            return self.model.segment(batched_inputs, embeddings, is_thing=self.is_thing)


def _required(metadata: Metadata, key: str) -> Any:
    value = metadata.get(key, None)
    if value is None:
        raise GenericEvaluationError(f"{metadata.get('name', 'N/A')}: the dataset's metadata has no {key!r}")
    return value
