"""``build_text_encoder(cfg)``: the text encoder chosen by ``MODEL.TEXT.ARCH``.

| ``MODEL.TEXT.ARCH`` | result |
|---|---|
| ``noencoder`` | None: no text encoder (the released configs; the model behaves as before) |
| ``unicl`` | :class:`~.unicl.UniclTextEncoder`, sized by ``MODEL.TEXT.{WIDTH,HEADS,LAYERS,CONTEXT_LENGTH}`` |
| ``open_clip`` | :class:`~.open_clip_text.OpenClipTextEncoder` of ``MODEL.TEXT.OPEN_CLIP_MODEL`` |

The embedding size is ``MODEL.DIM_PROJ``. ``MODEL.TEXT.WEIGHTS`` (optional) is a local file loaded
strictly into the encoder after building.
"""
from __future__ import annotations

import logging
import os

from ...config import CfgNode, ConfigError
from ...config_checks import TEXT_ARCHS
from .base import TextEncoder
from .open_clip_text import OpenClipTextEncoder, load_open_clip_text_weights
from .unicl import UniclTextEncoder, load_language_weights
from .vocabulary import TextEmbeddingCache

__all__ = ["TEXT_ARCHS", "build_text_embedding_cache", "build_text_encoder"]

logger = logging.getLogger(__name__)

# The reference's names for the same choices (its configs say ``vlpencoder``).
_REFERENCE_ARCHS = {"vlpencoder": "unicl", "encoder": "unicl"}


def _positive(value, key: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}: must be an integer >= {minimum}, got {value!r}")
    return value


def _weights_path(cfg: CfgNode) -> str | None:
    path = cfg.MODEL.TEXT.WEIGHTS
    if not path:
        return None
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise ConfigError(f"MODEL.TEXT.WEIGHTS: file not found: {path}")
    return path


def build_text_encoder(cfg: CfgNode) -> TextEncoder | None:
    """The text encoder of ``cfg`` (see the module docstring), on CPU; None for ``noencoder``.

    Raises:
        ConfigError: an unknown ``MODEL.TEXT.ARCH``, or a value the chosen encoder cannot use
            (the message names the key).
        LanguageWeightsError: ``MODEL.TEXT.WEIGHTS`` has missing, unexpected or mismatched keys.
    """
    text = cfg.MODEL.TEXT
    arch = text.ARCH
    if arch not in TEXT_ARCHS:
        hint = f" (the reference's {arch!r} is {_REFERENCE_ARCHS[arch]!r} here)" if arch in _REFERENCE_ARCHS else ""
        raise ConfigError(
            f"MODEL.TEXT.ARCH: unknown value {arch!r}; expected one of {', '.join(map(repr, TEXT_ARCHS))}{hint}"
        )
    if arch == "noencoder":
        return None
    dim_proj = _positive(cfg.MODEL.DIM_PROJ, "MODEL.DIM_PROJ")
    weights = _weights_path(cfg)

    if arch == "unicl":
        if text.TOKENIZER != "clip":
            raise ConfigError(
                f"MODEL.TEXT.TOKENIZER: {text.TOKENIZER!r} is not supported; the UniCL encoder uses 'clip'"
            )
        if text.NAME != "transformer":
            raise ConfigError(f"MODEL.TEXT.NAME: {text.NAME!r} is not supported; the UniCL encoder is 'transformer'")
        width = _positive(text.WIDTH, "MODEL.TEXT.WIDTH")
        heads = _positive(text.HEADS, "MODEL.TEXT.HEADS")
        if width % heads:
            raise ConfigError(f"MODEL.TEXT.HEADS: {heads} does not divide MODEL.TEXT.WIDTH ({width})")
        encoder: TextEncoder = UniclTextEncoder(
            width=width,
            heads=heads,
            layers=_positive(text.LAYERS, "MODEL.TEXT.LAYERS"),
            context_length=_positive(text.CONTEXT_LENGTH, "MODEL.TEXT.CONTEXT_LENGTH", 2),
            dim_proj=dim_proj,
            autoregressive=bool(text.AUTOGRESSIVE),
            logit_scale_init=text.LOGIT_SCALE_INIT,
        )
        if weights:
            report = load_language_weights(encoder, weights)
            logger.info("text encoder: loaded %d tensors from %s", len(report.loaded), weights)
    else:
        if not text.OPEN_CLIP_MODEL:
            raise ConfigError("MODEL.TEXT.OPEN_CLIP_MODEL: required with MODEL.TEXT.ARCH open_clip (e.g. ViT-B-32)")
        try:
            encoder = OpenClipTextEncoder(text.OPEN_CLIP_MODEL)
        except (ValueError, OSError) as e:
            raise ConfigError(f"MODEL.TEXT.OPEN_CLIP_MODEL: {e}") from None
        if encoder.dim_proj != dim_proj:
            raise ConfigError(
                f"MODEL.DIM_PROJ: {dim_proj} differs from the embedding size of open_clip model "
                f"{text.OPEN_CLIP_MODEL!r} ({encoder.dim_proj}); set MODEL.DIM_PROJ: {encoder.dim_proj}"
            )
        if weights:
            report = load_open_clip_text_weights(encoder, weights)
            logger.info("text encoder: loaded %d tensors from %s", len(report.loaded), weights)
    if not weights:
        logger.warning(
            "text encoder %r starts from random weights (MODEL.TEXT.WEIGHTS is empty); a model checkpoint that "
            "holds them (lang_encoder.*) replaces them", arch,
        )
    return encoder


def build_text_embedding_cache(cfg: CfgNode, encoder: TextEncoder) -> TextEmbeddingCache:
    """A :class:`~.vocabulary.TextEmbeddingCache` of ``encoder`` in ``MODEL.TEXT.CACHE_DIR`` (empty: memory only)."""
    return TextEmbeddingCache(encoder, cfg.MODEL.TEXT.CACHE_DIR or None)
