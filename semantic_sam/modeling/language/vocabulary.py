"""Class-embedding cache: each vocabulary's evaluation embeddings (every template, averaged) are
computed once, in memory and on disk.

Encoding a 163-name vocabulary (COCO panoptic's 133 + 30 parts) with all 81 templates is ~13,000
texts through the text encoder; the cache makes that a one-time cost per set of text weights.

**Key.** One entry per class name, keyed by

* a SHA-256 of the encoder's state dict (:func:`text_weights_hash`; recomputed only when a
  parameter changes: its data pointer or in-place version counter moves),
* the encoder's :meth:`~.base.TextEncoder.cache_signature` (architecture, tokenizer, context length),
* the template list, and
* the normalised name (:func:`~.templates.normalize_class_name`: ``sky-other-merged`` and ``sky``
  share an entry).

A vocabulary that adds a few names to a cached one encodes only the new names.

**Disk layout.** ``<cache_dir>/<weights hash, 20 hex>/<entry key, 40 hex>.pt``, each a dict
``{"name", "signature", "templates", "weights", "embedding": float32 (D,)}`` written atomically
(temporary file + rename, safe with several processes) and read with ``torch.load(weights_only=True)``.
An unreadable or inconsistent entry is recomputed and rewritten; a cache folder that cannot be
written is logged once and the cache works in memory only. Delete a weights-hash folder to free
its entries.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ...checkpoint import CheckpointError, read_checkpoint_file
from ...utils.atomic_write import atomic_torch_save
from .base import TextEncoder
from .templates import check_class_names, mean_template_embeddings, prompt_templates

__all__ = ["DEFAULT_CACHE_DIR", "TextEmbeddingCache", "text_weights_hash"]

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "semantic_sam", "text_embeddings")


def text_weights_hash(module: nn.Module) -> str:
    """SHA-256 (hex) of ``module``'s state dict: every key, dtype, shape and byte of data."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _state_version(module: nn.Module) -> tuple:
    """Changes whenever a tensor of the state dict is replaced (data pointer, device) or modified in
    place (PyTorch's version counter, bumped by optimizer steps and ``load_state_dict``)."""
    return tuple(
        (name, t.device.type, t.data_ptr(), t._version) for name, t in module.state_dict(keep_vars=True).items()
    )


class TextEmbeddingCache:
    """Evaluation class embeddings of ``encoder``, cached per name (see the module docstring).

    Args:
        encoder: the text encoder.
        cache_dir: folder of the on-disk cache (``~`` expanded); None or ``""``: memory only.
        templates: prompt templates; default the 81 of :func:`~.templates.prompt_templates`.
        batch_size: texts per encoder call when encoding.

    Attributes:
        encoded_names: how many names the encoder has encoded so far (cache misses).
        disk_hits: how many names were read from disk.

    Example::

        cache = TextEmbeddingCache(encoder, "~/.cache/semantic_sam/text_embeddings")
        T = cache(["person", "wall-brick", "sky-other-merged"])  # (3, D), unit norm
    """

    def __init__(
        self,
        encoder: TextEncoder,
        cache_dir: str | os.PathLike | None = None,
        templates: Sequence[str] | None = None,
        batch_size: int = 1024,
    ):
        self.encoder = encoder
        self.cache_dir = os.path.abspath(os.path.expanduser(os.fspath(cache_dir))) if cache_dir else None
        self.templates = tuple(templates) if templates is not None else prompt_templates()
        if not self.templates or not all(isinstance(t, str) and "{}" in t for t in self.templates):
            raise ValueError("templates must be a non-empty list of strings containing '{}'")
        self.templates_hash = hashlib.sha256(json.dumps(list(self.templates)).encode()).hexdigest()[:16]
        self.batch_size = batch_size
        self.encoded_names = 0
        self.disk_hits = 0
        self._memory: dict[str, Tensor] = {}
        self._hash_memo: tuple[tuple, str] | None = None
        self._disk_ok = True

    def weights_hash(self) -> str:
        """:func:`text_weights_hash` of the encoder, recomputed only after its weights changed."""
        version = _state_version(self.encoder)
        if self._hash_memo is None or self._hash_memo[0] != version:
            self._hash_memo = (version, text_weights_hash(self.encoder))
        return self._hash_memo[1]

    def _entry_key(self, weights_hash: str, name: str) -> str:
        blob = json.dumps([weights_hash, self.encoder.cache_signature(), self.templates_hash, name])
        return hashlib.sha256(blob.encode()).hexdigest()[:40]

    def _path(self, weights_hash: str, key: str) -> str:
        assert self.cache_dir is not None
        return os.path.join(self.cache_dir, weights_hash[:20], key + ".pt")

    def _read(self, path: str, name: str, weights_hash: str) -> Tensor | None:
        if not os.path.isfile(path):
            return None
        try:
            entry = read_checkpoint_file(path)
        except (CheckpointError, OSError) as e:
            logger.warning("text-embedding cache: unreadable entry %s (%s); recomputing it", path, e)
            return None
        emb = entry.get("embedding") if isinstance(entry, dict) else None
        valid = (
            isinstance(emb, Tensor)
            and entry.get("name") == name
            and entry.get("weights") == weights_hash
            and entry.get("signature") == self.encoder.cache_signature()
            and entry.get("templates") == self.templates_hash
            and emb.shape == (self.encoder.dim_proj,)
            and bool(torch.isfinite(emb).all())
        )
        if not valid:
            logger.warning("text-embedding cache: entry %s does not match %r; recomputing it", path, name)
            return None
        return emb.float()

    def _write(self, path: str, name: str, weights_hash: str, emb: Tensor) -> None:
        entry = {
            "name": name,
            "signature": self.encoder.cache_signature(),
            "templates": self.templates_hash,
            "weights": weights_hash,
            "embedding": emb.clone(),
        }
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_torch_save(entry, path)
        except OSError as e:
            logger.warning("text-embedding cache: cannot write to %s (%s); caching in memory only", self.cache_dir, e)
            self._disk_ok = False

    def __call__(self, names: Sequence[str]) -> Tensor:
        """Class embeddings (C, D), float32, unit norm, on the encoder's device; no gradient.

        Raises:
            VocabularyError: empty vocabulary, a non-string name, or a name empty after normalisation.
        """
        normed = check_class_names(names)
        weights_hash = self.weights_hash()
        found: dict[str, Tensor] = {}
        missing: list[str] = []
        for name in dict.fromkeys(normed):  # unique, in order
            key = self._entry_key(weights_hash, name)
            emb = self._memory.get(key)
            if emb is None and self.cache_dir is not None and self._disk_ok:
                emb = self._read(self._path(weights_hash, key), name, weights_hash)
                if emb is not None:
                    self.disk_hits += 1
                    self._memory[key] = emb
            if emb is None:
                missing.append(name)
            else:
                found[name] = emb
        if missing:
            logger.info("text-embedding cache: encoding %d new class names (%d templates each)",
                        len(missing), len(self.templates))
            new = mean_template_embeddings(self.encoder, missing, self.templates, self.batch_size).float().cpu()
            self.encoded_names += len(missing)
            for name, emb in zip(missing, new, strict=True):
                key = self._entry_key(weights_hash, name)
                self._memory[key] = emb
                found[name] = emb
                if self.cache_dir is not None and self._disk_ok:
                    self._write(self._path(weights_hash, key), name, weights_hash, emb)
        return torch.stack([found[n] for n in normed]).to(self.encoder.device)

    def clear_memory(self) -> None:
        """Forget the in-memory entries (the disk cache stays)."""
        self._memory.clear()
