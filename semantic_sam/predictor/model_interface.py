"""What the predictor and the mask generator need from a model: :class:`PromptableModel`.

``SemanticSAM`` satisfies it; so can a test double. Shape shorthand: B = images, N = prompts,
K = tokens per prompt, Hp, Wp = padded input size.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from detectron2.structures import ImageList
from torch import Tensor

from ..utils.deprecation import warn_deprecated

__all__ = ["PromptableModel", "model_num_tokens"]


@runtime_checkable
class PromptableModel(Protocol):
    """A model that encodes an image once and decodes prompt boxes into K masks per prompt.

    Attributes:
        num_tokens: K, the masks (tokens) per prompt. (A model that names it ``num_mask_tokens``, the
            former name, still works with a ``DeprecationWarning``; see :func:`model_num_tokens`.)
        device: where the model's inputs go.

    Labels (optional, not part of the protocol): a model whose ``text_encoder`` attribute is not None
    also offers ``class_embeddings(objects, parts) -> {"object": (C_o, D), "part": (C_p, D)}`` and
    takes ``decode_prompts(..., class_embeddings=...)``, which adds ``pred_logits`` (B, N*K, C_o) and
    ``pred_logits_part`` (B, N*K, C_p) raw logits (as ``SemanticSAM``); the predictor then labels masks.
    """

    num_tokens: int

    @property
    def device(self) -> torch.device: ...

    def eval(self) -> PromptableModel:
        """Switch to inference mode and return the model itself (``nn.Module.eval``)."""
        ...

    def preprocess_image(self, images: Sequence[Tensor]) -> ImageList:
        """(3, h, w) RGB 0-255 tensors -> normalized, zero-padded ``ImageList`` (B, 3, Hp, Wp)."""
        ...

    def encode_image(self, images: ImageList, cache_decoder_memory: bool = False) -> dict:
        """Image features for :meth:`decode_prompts`; ``cache_decoder_memory`` also precomputes the
        decoder's prompt-independent work, reused by every later decode of the same features."""
        ...

    def decode_prompts(
        self,
        features: Mapping[str, Any],
        boxes: Tensor,
        pb: Tensor,
        attn_mask: str = "block",
        return_aux: bool = True,
    ) -> dict:
        """(B, N, 4) prompt boxes (cxcywh normalized to the padded frame) and (B, N) flags ->
        ``pred_masks`` (B, N*K, Hp/4, Wp/4) logits and ``pred_ious`` (B, N, K) (prompt-major)."""
        ...

    def postprocess_masks(
        self,
        mask_logits: Tensor,
        padded_size: Sequence[int],
        image_size: Sequence[int],
        output_size: Sequence[int],
    ) -> Tensor:
        """(..., Hp/4, Wp/4) logits -> (..., h, w) logits at ``output_size``."""
        ...


def model_num_tokens(model: Any) -> int:
    """K of ``model``: its ``num_tokens``, or (deprecated, with a warning) its ``num_mask_tokens``.

    Raises:
        TypeError: the model has neither attribute.
    """
    if hasattr(model, "num_tokens"):
        return int(model.num_tokens)
    if hasattr(model, "num_mask_tokens"):
        warn_deprecated(
            f"{type(model).__name__}.num_mask_tokens is deprecated: PromptableModel names K num_tokens", stacklevel=3
        )
        return int(model.num_mask_tokens)
    raise TypeError(f"{type(model).__name__} is not a PromptableModel: it has no num_tokens (K, tokens per prompt)")
