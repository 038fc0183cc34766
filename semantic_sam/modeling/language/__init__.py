"""The language side: CLIP BPE tokenizer, text encoders, prompt templates, class-embedding cache.

Not wired into the model yet. A text encoder (:class:`TextEncoder`) offers:

* ``tokenize(texts) -> LongTensor (N, L)``;
* ``encode_ids(ids (N, L), normalize=True) -> (N, D)``, unit norm (``x / (||x|| + 1e-7)``);
* ``encode_text(texts) -> (N, D)``; ``forward(ids)`` = ``encode_ids(ids)``;
* ``logit_scale`` (learnable scalar), ``context_length`` (L), ``dim_proj`` (D), ``cache_signature()``.

Importing this package does not import open_clip (seconds); the first tokenizer or template use does.
"""
from .base import LANG_ENCODER_PREFIX, LanguageWeightsError, TextEncoder, l2_normalize
from .build import TEXT_ARCHS, build_text_embedding_cache, build_text_encoder
from .open_clip_text import OpenClipTextEncoder, load_open_clip_text_weights
from .templates import (
    NUM_TEMPLATES,
    VocabularyError,
    evaluation_text_embeddings,
    normalize_class_name,
    prompt_templates,
    sample_training_texts,
    training_text_embeddings,
)
from .tokenizer import BOS_ID, EOT_ID, VOCAB_SIZE, ClipTokenizer, tokenize
from .unicl import LanguageLoadReport, UniclTextEncoder, language_state_dict_shapes, load_language_weights
from .vocabulary import DEFAULT_CACHE_DIR, TextEmbeddingCache, text_weights_hash

__all__ = [
    "BOS_ID",
    "DEFAULT_CACHE_DIR",
    "EOT_ID",
    "LANG_ENCODER_PREFIX",
    "NUM_TEMPLATES",
    "TEXT_ARCHS",
    "VOCAB_SIZE",
    "ClipTokenizer",
    "LanguageLoadReport",
    "LanguageWeightsError",
    "OpenClipTextEncoder",
    "TextEmbeddingCache",
    "TextEncoder",
    "UniclTextEncoder",
    "VocabularyError",
    "build_text_embedding_cache",
    "build_text_encoder",
    "evaluation_text_embeddings",
    "l2_normalize",
    "language_state_dict_shapes",
    "load_language_weights",
    "load_open_clip_text_weights",
    "normalize_class_name",
    "prompt_templates",
    "sample_training_texts",
    "text_weights_hash",
    "tokenize",
    "training_text_embeddings",
]
