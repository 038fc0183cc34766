"""Object and part labels of predicted masks: the vocabulary and the top label of each mask.

A model with a text encoder scores every mask token against the class embeddings of a vocabulary
(``pred_logits`` (..., C_o) for objects, ``pred_logits_part`` (..., C_p) for parts; raw logits, no
background class). Each mask gets (SEMANTIC_SPEC §6):

* an **object label**: the argmax object, with score sigmoid(its logit);
* a **part label**: the argmax part, given only when its score sigmoid(logit) >= ``part_score_thresh``
  (0.25, the object threshold of the panoptic post-processing reused), else None.

Display text: ``"object"`` or ``"object: part"`` (:func:`label_text`).

Shape shorthand: P = prompts, L = levels (or any leading shape ``...``), C_o / C_p = vocabulary sizes.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from ..modeling.language.templates import check_class_names

__all__ = [
    "LABEL_COLUMNS",
    "LABEL_FIELDS",
    "NO_PART",
    "PART_SCORE_THRESH",
    "MaskLabels",
    "NoTextEncoderError",
    "Vocabulary",
    "default_vocabulary",
    "label_text",
    "top_labels",
]

PART_SCORE_THRESH = 0.25
"""A part label is given only when its score (sigmoid of the logit) is at least this."""

NO_PART = -1
"""Part id of a mask without a part label (score below the threshold, or no part vocabulary)."""


LABEL_COLUMNS = ("object_ids", "object_scores", "part_ids", "part_scores")
"""The per-mask arrays of :func:`top_labels` and :class:`MaskLabels`, in the dataclass's field order."""

LABEL_FIELDS = ("object_label", "object_score", "part_label", "part_score")
"""The label fields a record gains (:meth:`MaskLabels.record`)."""


class NoTextEncoderError(ValueError, UserError):
    """Labels were asked of a model built without a text encoder (``MODEL.TEXT.ARCH: noencoder``)."""


@dataclass(frozen=True)
class Vocabulary:
    """The class names masks are labelled with.

    Attributes:
        objects: C_o object names (non-empty), as given; label ids index this tuple.
        parts: C_p part names; empty: no part labels.
    """

    objects: tuple[str, ...]
    parts: tuple[str, ...] = ()

    @classmethod
    def checked(cls, objects: Sequence[str], parts: Sequence[str] | None = None) -> "Vocabulary":
        """A vocabulary from user input: ``parts=None`` means no part labels.

        Raises:
            VocabularyError: ``objects`` (or ``parts``, when given) is empty, a single string, holds
                a non-string, or a name that is empty once normalised; the message names the entry.
        """
        check_class_names(objects, "object vocabulary")
        if parts is not None:
            check_class_names(parts, "part vocabulary")
        return cls(tuple(objects), tuple(parts) if parts is not None else ())


@functools.lru_cache(maxsize=1)
def default_vocabulary() -> Vocabulary:
    """The reference demo's vocabulary: COCO panoptic's 133 classes as objects (detectron2's order,
    so object id = COCO panoptic contiguous class id) and Pascal-Part's 30 parts.

    The COCO names are given as the text encoder reads them
    (:func:`~semantic_sam.modeling.language.normalize_class_name`): ``sky-other-merged`` is ``sky``,
    ``wall-brick`` is ``brick wall``; the embeddings are the same, the labels read better.
    """
    from ..data.label_spaces import coco_panoptic_label_space, pascal_part_label_space
    from ..modeling.language.templates import normalize_class_name

    objects = tuple(normalize_class_name(n) for n in coco_panoptic_label_space().object_classes)
    return Vocabulary(objects, tuple(pascal_part_label_space().part_classes))


def label_text(object_label: str, part_label: str | None = None) -> str:
    """The display text of a mask's labels: ``"object"`` or ``"object: part"``."""
    return object_label if part_label is None else f"{object_label}: {part_label}"


def top_labels(
    object_logits: Tensor, part_logits: Tensor | None, part_score_thresh: float = PART_SCORE_THRESH
) -> dict[str, Tensor]:
    """The top object and part of each mask from raw class logits.

    Arguments:
        object_logits: (..., C_o) raw object logits.
        part_logits: (..., C_p) raw part logits, or None (no part vocabulary).
        part_score_thresh: the part id is :data:`NO_PART` where the top part scores below this.

    Returns:
        ``object_ids`` (...) int64, ``object_scores`` (...) float32 = sigmoid of the top logit,
        ``part_ids`` (...) int64 (:data:`NO_PART` below the threshold or without parts),
        ``part_scores`` (...) float32 = sigmoid of the top part logit (NaN without parts).
    """
    object_max, object_ids = object_logits.float().max(dim=-1)
    out = {"object_ids": object_ids, "object_scores": object_max.sigmoid()}
    if part_logits is None:
        out["part_ids"] = torch.full_like(object_ids, NO_PART)
        out["part_scores"] = torch.full_like(out["object_scores"], float("nan"))
        return out
    part_max, part_ids = part_logits.float().max(dim=-1)
    part_scores = part_max.sigmoid()
    out["part_ids"] = torch.where(part_scores >= part_score_thresh, part_ids, torch.full_like(part_ids, NO_PART))
    out["part_scores"] = part_scores
    return out


@dataclass(frozen=True)
class MaskLabels:
    """The labels of a grid of masks: (P, L) as :meth:`SemanticSamPredictor.predict` returns them
    (any shape ``S``; the generator keeps one row per record).

    Attributes:
        vocabulary: the vocabulary the ids index.
        object_ids: (P, L) int64 top object of each mask.
        object_scores: (P, L) float32 its score, sigmoid of its logit.
        part_ids: (P, L) int64 top part, or :data:`NO_PART` (score below the threshold, no parts).
        part_scores: (P, L) float32 score of the top part, also below the threshold (NaN without parts).
    """

    vocabulary: Vocabulary
    object_ids: np.ndarray
    object_scores: np.ndarray
    part_ids: np.ndarray
    part_scores: np.ndarray

    @classmethod
    def from_logits(
        cls,
        vocabulary: Vocabulary,
        object_logits: Tensor,
        part_logits: Tensor | None,
        part_score_thresh: float = PART_SCORE_THRESH,
    ) -> "MaskLabels":
        """Labels from (P, L, C_o) object and (P, L, C_p) part logits (see :func:`top_labels`)."""
        top = top_labels(object_logits, part_logits, part_score_thresh)
        arrays = {k: v.cpu().numpy() for k, v in top.items()}
        return cls(vocabulary, **arrays)

    @property
    def shape(self) -> tuple[int, ...]:
        """(P, L) (or ``S``)."""
        return tuple(self.object_ids.shape)

    def object_label(self, index: Any) -> str:
        """The object name of mask ``index`` (e.g. ``(p, l)``)."""
        return self.vocabulary.objects[int(self.object_ids[index])]

    def part_label(self, index: Any) -> str | None:
        """The part name of mask ``index``, or None (no part label)."""
        i = int(self.part_ids[index])
        return None if i == NO_PART else self.vocabulary.parts[i]

    def text(self, index: Any) -> str:
        """:func:`label_text` of mask ``index``."""
        return label_text(self.object_label(index), self.part_label(index))

    def record(self, index: Any) -> dict[str, Any]:
        """The label fields of mask ``index``, as in the predictor's and the generator's records:
        ``object_label`` (str), ``object_score`` (float), ``part_label`` (str or None) and
        ``part_score`` (float: the top part's score, also when ``part_label`` is None; None without
        a part vocabulary)."""
        part_score = float(self.part_scores[index])
        return {
            "object_label": self.object_label(index),
            "object_score": float(self.object_scores[index]),
            "part_label": self.part_label(index),
            "part_score": part_score if self.vocabulary.parts else None,
        }
