"""The model wrapper of interactive evaluation and the evaluation numerics (``TEST.PRECISION``).

:class:`PromptedInference` runs ``model.inference`` on the inputs that have prompts (with the class
embeddings of their vocabulary when the model names its outputs) and gives the rest empty outputs;
:data:`EVAL_PRECISIONS` and :func:`evaluation_dtype` set the autocast dtype of it and of
:class:`~.generic_inference.GenericInference`.
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

import torch
from torch import nn

from ..utils.precision import inference_autocast

__all__ = ["EVAL_PRECISIONS", "PromptedInference", "evaluation_dtype"]

logger = logging.getLogger(__name__)

# Numerics of the model during evaluation (TEST.PRECISION): "auto" = float16 autocast on CUDA, as
# the reference evaluates, and float32 elsewhere; "fp32"; "fp16" = float16 autocast on any device.
EVAL_PRECISIONS = ("auto", "fp32", "fp16")


def evaluation_dtype(precision: str, device: torch.device | str) -> torch.dtype:
    """The autocast dtype of ``precision`` (one of :data:`EVAL_PRECISIONS`) on ``device``:
    float32 means no autocast."""
    if precision not in EVAL_PRECISIONS:
        raise ValueError(f"unknown evaluation precision {precision!r}; expected one of {EVAL_PRECISIONS}")
    if precision == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    return torch.float16 if precision == "fp16" else torch.float32


class PromptedInference(nn.Module):
    """Run ``model.inference`` on the inputs that have prompts; give empty outputs to the rest.

    Images without GT segments have no prompts, which the model rejects; the evaluators
    still count them. Use it as the model of ``inference_on_dataset``. The wrapper starts in
    the model's train/eval mode, so that ``inference_on_dataset``, which restores the mode of
    the module it is given, leaves the model as it found it.

    Object labels: when the model has a text encoder (``model.text_encoder`` is not None) and an
    input carries a ``"vocabulary"`` (``{"object": names, "part": names}``, as the COCO evaluation
    mapper writes it), the model also returns ``pred_logits`` for that vocabulary. Its class
    embeddings (``model.class_embeddings``, every prompt template averaged) are computed once per
    vocabulary by this wrapper, in float32, outside autocast. A model without a text encoder gets
    exactly the calls it got before (no vocabulary, no logits).

    Args:
        model: a model with ``inference(batched_inputs, **inference_kwargs)``.
        precision: ``TEST.PRECISION``, one of :data:`EVAL_PRECISIONS`. The default ``"auto"``
            runs the model under float16 autocast on CUDA, as the reference evaluates (its
            outputs are then float16), and in plain float32 on the CPU.
        inference_kwargs: passed to ``model.inference`` (e.g. ``tokens``); an explicit
            ``class_embeddings`` is passed as is, for every input.
    """

    def __init__(self, model: nn.Module, *, precision: str = "auto", **inference_kwargs):
        super().__init__()
        if precision not in EVAL_PRECISIONS:
            raise ValueError(f"TEST.PRECISION: unknown {precision!r}; expected one of {EVAL_PRECISIONS}")
        self.model = model
        self.precision = precision
        self.inference_kwargs = inference_kwargs
        self._logged_dtype = False
        self._class_embeddings: dict[tuple, dict[str, torch.Tensor]] = {}
        self.train(model.training)

    @staticmethod
    def num_prompts(inp: dict) -> int:
        return sum(len(inp[k]) for k in ("points", "boxes") if inp.get(k) is not None)

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        todo = [i for i, x in enumerate(batched_inputs) if self.num_prompts(x) > 0]
        outputs: list[dict] = [{} for _ in batched_inputs]
        if not todo:
            return outputs
        device = _device_of(self.model)
        dtype = evaluation_dtype(self.precision, device)
        if not self._logged_dtype:
            how = "float32" if dtype == torch.float32 else f"{dtype} autocast"
            logger.info("Evaluating on %s in %s (TEST.PRECISION=%s)", device, how, self.precision)
            self._logged_dtype = True
        groups: dict[tuple | None, list[int]] = {}  # inputs by vocabulary (one group without labels)
        for i in todo:
            groups.setdefault(self._vocabulary_key(batched_inputs[i]), []).append(i)
        for vocabulary, indices in groups.items():
            kwargs = self.inference_kwargs
            if vocabulary is not None:
                kwargs = dict(kwargs, class_embeddings=self.class_embeddings(*vocabulary))
            with inference_autocast(device, dtype):
                results = self.model.inference([batched_inputs[i] for i in indices], **kwargs)
            for i, out in zip(indices, results):
                outputs[i] = out
        return outputs

    def _vocabulary_key(self, inp: dict) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """``(object names, part names)`` of the input's vocabulary if the model names outputs with it."""
        vocabulary = inp.get("vocabulary")
        if vocabulary is None or "class_embeddings" in self.inference_kwargs:
            return None
        if getattr(self.model, "text_encoder", None) is None:
            return None
        return tuple(vocabulary["object"]), tuple(vocabulary.get("part") or ())

    def class_embeddings(self, objects: Sequence[str], parts: Sequence[str] = ()) -> dict[str, torch.Tensor]:
        """``model.class_embeddings(objects, parts)`` (``{"object": (C_o, D), "part": (C_p, D)}``),
        computed on the first call for a vocabulary and kept for this wrapper's lifetime."""
        key = (tuple(objects), tuple(parts))
        if key not in self._class_embeddings:
            start = time.perf_counter()
            self._class_embeddings[key] = self.model.class_embeddings(list(key[0]), list(key[1]) or None)
            logger.info(
                "Object labels: embedded a vocabulary of %d object and %d part names in %.1f s",
                len(key[0]), len(key[1]), time.perf_counter() - start,
            )
        return self._class_embeddings[key]


def _device_of(model: nn.Module) -> torch.device:
    """The model's device: its ``device`` attribute, else that of its first parameter, else the CPU."""
    device = getattr(model, "device", None)
    if isinstance(device, (torch.device, str)):
        return torch.device(device)
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
