"""What every text encoder offers, and helpers shared by the encoders and their weight loaders.

Shape shorthand: N = texts, L = context length (ids per text), W = transformer width,
D = embedding dimension (``MODEL.DIM_PROJ``, 512 in every released config).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...checkpoint import CheckpointError

__all__ = [
    "LANG_ENCODER_PREFIX",
    "LanguageWeightsError",
    "TextEncoder",
    "interpolate_positional_embedding",
    "l2_normalize",
]

logger = logging.getLogger(__name__)

# Where the text encoder sits in the segmentation model (OpenSeeD / X-Decoder naming,
# SEMANTIC_SPEC §1 and §2.2); the released Semantic-SAM files add a leading "model.".
LANG_ENCODER_PREFIX = "sem_seg_head.predictor.lang_encoder."

NORM_EPS = 1e-7  # the reference's epsilon when normalising text (and visual) embeddings


class LanguageWeightsError(CheckpointError):
    """Text-encoder weights that cannot be loaded: missing, unexpected or mismatched keys, or no
    text-encoder keys at all. The message names the keys."""


def l2_normalize(x: Tensor, eps: float = NORM_EPS) -> Tensor:
    """``x / (||x|| + eps)`` along the last dimension (the reference's normalisation, not ``F.normalize``)."""
    return x / (x.norm(dim=-1, keepdim=True) + eps)


def interpolate_positional_embedding(pos: Tensor, length: int) -> Tensor:
    """Resize a positional embedding (L1, W) to (length, W) by linear interpolation along L.

    Same as the reference's ``Transformer.load_pretrained`` (``F.interpolate(mode='linear')``,
    ``align_corners=False``): output row i samples input position ``(i + 0.5) * L1 / length - 0.5``,
    clamped to ``[0, L1 - 1]``. Computed in float32, returned in ``pos``'s dtype.
    """
    if pos.dim() != 2:
        raise ValueError(f"positional embedding must be (L, W), got shape {tuple(pos.shape)}")
    grid = pos.detach().float().t().unsqueeze(0)  # (1, W, L1)
    out = F.interpolate(grid, size=length, mode="linear", align_corners=False)
    return out.squeeze(0).t().contiguous().to(pos.dtype)


class TextEncoder(nn.Module):
    """Interface of the text encoders (:class:`~.unicl.UniclTextEncoder`,
    :class:`~.open_clip_text.OpenClipTextEncoder`).

    Attributes:
        context_length: L, ids per text.
        dim_proj: D, the size of the embeddings.
        logit_scale: learnable scalar parameter ``s``; logits are ``exp(s) * cos`` (SEMANTIC_SPEC §3).
    """

    context_length: int
    dim_proj: int
    logit_scale: nn.Parameter

    def tokenize(self, texts: str | Sequence[str]) -> Tensor:
        """Texts -> LongTensor (N, L) of token ids (on CPU)."""
        raise NotImplementedError

    def encode_ids(self, input_ids: Tensor, normalize: bool = True) -> Tensor:
        """Token ids (N, L) -> embeddings (N, D); unit norm (``x / (||x|| + 1e-7)``) if ``normalize``."""
        raise NotImplementedError

    def cache_signature(self) -> str:
        """What, besides the weights, decides the embeddings (architecture, tokenizer, context
        length): part of the embedding-cache key (see :mod:`.vocabulary`)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def encode_text(self, texts: str | Sequence[str], normalize: bool = True) -> Tensor:
        """Texts -> embeddings (N, D) on the encoder's device (gradients flow unless under ``no_grad``)."""
        return self.encode_ids(self.tokenize(texts).to(self.device), normalize=normalize)

    def forward(self, input_ids: Tensor) -> Tensor:
        """``encode_ids(input_ids)``: unit-norm embeddings (N, D)."""
        return self.encode_ids(input_ids)


def format_key_list(keys: list[str], limit: int = 8) -> str:
    """``a, b, c`` (at most ``limit`` names, then ``... and N more``)."""
    shown = ", ".join(keys[:limit])
    return shown + (f", ... and {len(keys) - limit} more" if len(keys) > limit else "")
