"""Prompt templates, class-name normalisation, and class embeddings for training and evaluation
(SEMANTIC_SPEC §2.4).

Shape shorthand: C = class names, T = templates (81), D = embedding size.

* **Templates**: ``'{}.'`` followed by the 80 OpenAI CLIP ImageNet templates (``a photo of a {}.``,
  ``itap of my {}.``, ...), taken from open_clip's ``zero_shot_metadata``. As a set they equal the
  reference's 81 (its order differs, which does not matter: training samples uniformly, evaluation
  averages).
* **Names** (:func:`normalize_class_name`, one function for training and evaluation, the spec's design
  choice): strip ``-other``, ``-merged``, ``-stuff``; rewrite ``a-b`` as ``b a``; drop ``,``; ``+``
  becomes a space.
* **Training** (:func:`training_text_embeddings`): one template per class, drawn uniformly from the
  given random source at every call; embedded with gradients (the encoder is fine-tuned).
* **Evaluation** (:func:`evaluation_text_embeddings`): under ``no_grad``, every template for every
  class, each embedding unit-normed, averaged over the templates, divided by its norm.
"""
from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from typing import Union

import numpy as np
import torch
from torch import Tensor

from ...errors import UserError
from ...utils.random_draws import RandomSource
from .base import TextEncoder

__all__ = [
    "NUM_TEMPLATES",
    "VocabularyError",
    "check_class_names",
    "class_texts",
    "evaluation_text_embeddings",
    "mean_template_embeddings",
    "normalize_class_name",
    "prompt_templates",
    "sample_training_texts",
    "training_text_embeddings",
]

NUM_TEMPLATES = 81
_STRIPPED_SUFFIXES = ("-other", "-merged", "-stuff")  # in the reference's order

Rng = Union[torch.Generator, np.random.Generator, np.random.RandomState, RandomSource, random.Random, None]


class VocabularyError(ValueError, UserError):
    """A class vocabulary that cannot be encoded: empty, a name that is not a string, or a name that
    is empty after normalisation. The message names the offending entry."""


@functools.lru_cache(maxsize=1)
def prompt_templates() -> tuple[str, ...]:
    """The 81 templates: ``'{}.'`` then open_clip's ``OPENAI_IMAGENET_TEMPLATES`` as format strings."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    templates = ("{}.",) + tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)
    if len(templates) != NUM_TEMPLATES or len(set(templates)) != NUM_TEMPLATES:
        raise RuntimeError(
            f"open_clip's OPENAI_IMAGENET_TEMPLATES gave {len(set(templates))} distinct templates with '{{}}.', "
            f"expected {NUM_TEMPLATES}: install open_clip_torch==3.3.0"
        )
    return templates


def normalize_class_name(name: str) -> str:
    """The text a class name is prompted with.

    Strip ``-other``, ``-merged`` and ``-stuff``; a name of two hyphen-joined words ``a-b`` becomes
    ``b a`` (OpenSeeD's rewrite; names with more hyphens keep them); remove ``,``; ``+`` becomes a
    space; runs of whitespace become one space.

    Examples::

        >>> normalize_class_name("wall-brick"), normalize_class_name("sky-other-merged")
        ('brick wall', 'sky')
    """
    if not isinstance(name, str):
        raise VocabularyError(f"a class name must be a string, got {type(name).__name__} ({name!r})")
    for suffix in _STRIPPED_SUFFIXES:
        name = name.replace(suffix, "")
    parts = name.split("-")
    if len(parts) == 2 and all(p.strip() for p in parts):
        name = f"{parts[1].strip()} {parts[0].strip()}"
    name = name.replace(",", "").replace("+", " ")
    return " ".join(name.split())


def check_class_names(names: Sequence[str], what: str = "vocabulary") -> list[str]:
    """The normalised names of a vocabulary, checked.

    Raises:
        VocabularyError: ``names`` is a single string or not a sequence, is empty, holds a non-string,
            or a name normalises to the empty string (each message names the entry).
    """
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise VocabularyError(f"the {what} must be a list of class names, got {type(names).__name__} ({names!r})")
    if len(names) == 0:
        raise VocabularyError(f"the {what} is empty: give at least one class name")
    out = []
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise VocabularyError(f"{what}[{i}] is {type(name).__name__} ({name!r}); class names must be strings")
        norm = normalize_class_name(name)
        if not norm:
            raise VocabularyError(f"{what}[{i}] ({name!r}) is empty after normalisation")
        out.append(norm)
    return out


def class_texts(name: str, templates: Sequence[str] | None = None) -> list[str]:
    """Every template filled with the normalised ``name`` (T texts)."""
    name = normalize_class_name(name)
    return [t.format(name) for t in (templates if templates is not None else prompt_templates())]


def _draw_indices(rng: Rng, n: int, count: int) -> list[int]:
    """``count`` uniform integers in ``[0, n)`` from ``rng`` (None: NumPy's global generator, as the reference)."""
    if isinstance(rng, torch.Generator):
        return torch.randint(n, (count,), generator=rng, device=rng.device).tolist()
    if isinstance(rng, np.random.Generator):
        return [int(i) for i in rng.integers(0, n, size=count)]
    if isinstance(rng, np.random.RandomState):
        return [int(i) for i in rng.randint(0, n, size=count)]
    if isinstance(rng, RandomSource):
        return [rng.randint(0, n - 1) for _ in range(count)]
    if isinstance(rng, random.Random):
        return [rng.randrange(n) for _ in range(count)]
    if rng is None:
        return [int(np.random.randint(n)) for _ in range(count)]
    raise TypeError(
        "rng must be a torch.Generator, numpy Generator or RandomState, random.Random, a RandomSource or None; "
        f"got {type(rng).__name__}"
    )


def sample_training_texts(
    names: Sequence[str], rng: Rng = None, templates: Sequence[str] | None = None
) -> list[str]:
    """One text per class: a uniformly drawn template filled with the normalised name.

    Args:
        names: C class names.
        rng: the random source (one draw per class, in class order); None uses NumPy's global one.
        templates: default :func:`prompt_templates`.
    """
    normed = check_class_names(names)
    templates = tuple(templates) if templates is not None else prompt_templates()
    idx = _draw_indices(rng, len(templates), len(normed))
    return [templates[i].format(n) for i, n in zip(idx, normed, strict=True)]


def training_text_embeddings(
    encoder: TextEncoder, names: Sequence[str], rng: Rng = None, templates: Sequence[str] | None = None
) -> Tensor:
    """Class embeddings for one training step: (C, D), unit norm, with gradients to the encoder."""
    return encoder.encode_text(sample_training_texts(names, rng, templates))


@torch.no_grad()
def evaluation_text_embeddings(
    encoder: TextEncoder, names: Sequence[str], templates: Sequence[str] | None = None, batch_size: int = 1024
) -> Tensor:
    """Class embeddings for evaluation: (C, D) on the encoder's device, no gradient.

    For each class: embed its T texts (each unit-normed), average them, divide by the norm of the
    average (no epsilon, as the reference). Prompts go through the encoder ``batch_size`` at a time.
    """
    templates = tuple(templates) if templates is not None else prompt_templates()
    return mean_template_embeddings(encoder, check_class_names(names), templates, batch_size)


@torch.no_grad()
def mean_template_embeddings(
    encoder: TextEncoder, normed: Sequence[str], templates: Sequence[str], batch_size: int = 1024
) -> Tensor:
    """:func:`evaluation_text_embeddings` for names already normalised and checked."""
    if not templates:
        raise VocabularyError("no prompt templates given")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    texts = [t.format(n) for n in normed for t in templates]  # class-major: (C * T)
    ids = encoder.tokenize(texts)
    # Batch texts of similar length together (sorted by EOT position): the encoders drop the
    # positions after a batch's last EOT, so short batches cost less.
    order = torch.argsort(ids.argmax(dim=-1), stable=True)
    chunks = [
        encoder.encode_ids(ids[order[i : i + batch_size]].to(encoder.device))
        for i in range(0, len(texts), batch_size)
    ]
    sorted_out = torch.cat(chunks)
    out = torch.empty_like(sorted_out)
    out[order.to(out.device)] = sorted_out
    mean = out.view(len(normed), len(templates), -1).mean(dim=1)  # (C, D)
    return mean / mean.norm(dim=-1, keepdim=True)
