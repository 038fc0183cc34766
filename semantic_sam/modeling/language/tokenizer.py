"""The CLIP BPE tokenizer (open_clip's ``SimpleTokenizer`` and its bundled vocabulary), with the
ids laid out the way the text encoders expect them.

Each text becomes ``[BOS] + BPE(text) + [EOT]`` followed by padding, ``context_length`` ids in all.
A text too long for the context keeps its first ``context_length - 2`` BPE tokens and still ends in
EOT (as HuggingFace's ``CLIPTokenizer(truncation=True)`` and open_clip both do), so the encoders'
pooling at ``ids.argmax(-1)`` (the first EOT: 49407 is the largest id) always finds it.

Padding (SEMANTIC_SPEC §2.3): the reference pads with HuggingFace's pad token, open_clip with 0.
With a causal mask and pooling at the first EOT, the pad value cannot change the pooled embedding;
0 is the default here (``pad_id`` chooses).

The vocabulary ships inside the ``open_clip_torch`` package (``open_clip/bpe_simple_vocab_16e6.txt.gz``,
48,894 merges -> 49,408 ids): no download.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Union

import torch
from torch import Tensor

__all__ = ["BOS_ID", "EOT_ID", "VOCAB_SIZE", "ClipTokenizer", "check_texts", "tokenize"]

BOS_ID = 49406  # <start_of_text>
EOT_ID = 49407  # <end_of_text>, the largest id
VOCAB_SIZE = 49408

Texts = Union[str, Sequence[str]]


@functools.cache
def _simple_tokenizer(clean: str = "lower") -> Any:
    """open_clip's BPE tokenizer, built once per cleaning mode (reading the vocabulary takes ~0.3 s).

    open_clip is imported here, not at module import, because importing it costs seconds."""
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer(clean=clean)
    if (tok.sot_token_id, tok.eot_token_id, tok.vocab_size) != (BOS_ID, EOT_ID, VOCAB_SIZE):
        raise RuntimeError(
            "open_clip's CLIP tokenizer has unexpected special ids "
            f"(BOS {tok.sot_token_id}, EOT {tok.eot_token_id}, vocabulary {tok.vocab_size}); "
            f"expected {BOS_ID}, {EOT_ID}, {VOCAB_SIZE}: install open_clip_torch==3.3.0"
        )
    return tok


def check_texts(texts: Texts, what: str = "texts") -> list[str]:
    """``texts`` as a list of strings (a single string becomes a list of one).

    Raises:
        TypeError: ``texts`` is not a string or a sequence of strings; the message names the first
            offending index and its type.
    """
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, Sequence):
        raise TypeError(f"{what} must be a string or a sequence of strings, got {type(texts).__name__}")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{what}[{i}] is {type(t).__name__} ({t!r}), expected str")
    return out


class ClipTokenizer:
    """Texts -> CLIP BPE ids of a fixed length.

    Args:
        context_length: L, the number of ids per text (BOS and EOT included); >= 2.
        pad_id: the id after EOT (0 as open_clip; the pooled embedding does not depend on it).
        clean: open_clip's text cleaning (``"lower"``: ftfy, HTML unescape, whitespace, lower case).

    Example::

        >>> ClipTokenizer(10)(["a photo of a dog."])
        tensor([[49406,   320,  1125,   539,   320,  1929,   269, 49407,     0,     0]])
    """

    bos_id = BOS_ID
    eot_id = EOT_ID
    vocab_size = VOCAB_SIZE

    def __init__(self, context_length: int, pad_id: int = 0, clean: str = "lower"):
        if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 2:
            raise ValueError(f"context_length must be an integer >= 2 (BOS and EOT), got {context_length!r}")
        if isinstance(pad_id, bool) or not isinstance(pad_id, int) or not 0 <= pad_id < VOCAB_SIZE:
            raise ValueError(f"pad_id must be an integer in [0, {VOCAB_SIZE}), got {pad_id!r}")
        self.context_length = context_length
        self.pad_id = pad_id
        self.clean = clean

    def encode(self, text: str) -> list[int]:
        """The BPE ids of one text, without BOS, EOT or truncation."""
        return _simple_tokenizer(self.clean).encode(text)

    def __call__(self, texts: Texts) -> Tensor:
        """Tokenize.

        Args:
            texts: a string or a sequence of N strings.

        Returns:
            LongTensor (N, L): ``BOS, BPE tokens, EOT, pad...``; truncated texts end in EOT.
        """
        texts = check_texts(texts)
        L = self.context_length
        out = torch.full((len(texts), L), self.pad_id, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [BOS_ID] + self.encode(text)[: L - 2] + [EOT_ID]
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def __repr__(self) -> str:
        return f"ClipTokenizer(context_length={self.context_length}, pad_id={self.pad_id}, clean={self.clean!r})"


def tokenize(texts: Texts, context_length: int, pad_id: int = 0) -> Tensor:
    """``ClipTokenizer(context_length, pad_id)(texts)``: LongTensor (N, L) of CLIP BPE ids."""
    return ClipTokenizer(context_length, pad_id)(texts)
