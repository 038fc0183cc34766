"""``MODEL.TEXT.ARCH: open_clip``: the text tower of an open_clip model, for users who have CLIP
weights, behind the same interface as the UniCL encoder (ids -> unit-norm (N, D), ``logit_scale``).

Shape shorthand: N = texts, L = the tower's context length (77 for CLIP), D = its ``embed_dim``.

The tower is built from an open_clip model config (a built-in name such as ``ViT-B-32``, a
``local-dir:/path`` holding ``open_clip_config.json``, or a config dict) with no weights, then filled
from a local file by :func:`load_open_clip_text_weights`: nothing is downloaded. Only towers that use
open_clip's own CLIP BPE tokenizer are supported (not HuggingFace text towers or tokenizers, which
would need the hub).

Weight files: an open_clip checkpoint (``open_clip_pytorch_model.bin`` or ``.pt``/``.pth`` via
``torch.load(weights_only=True)``, or ``.safetensors``): either the ``CLIP`` layout
(``token_embedding.weight``, ``positional_embedding``, ``transformer.resblocks.*``, ``ln_final.*``,
``text_projection``, ``logit_scale``, ``visual.*``) or the ``CustomTextCLIP`` layout (``text.*``);
optionally under ``state_dict`` and with ``module.`` prefixes. Image-tower keys (``visual.*``,
``logit_bias``) are ignored. OpenAI's TorchScript archives cannot be read with ``weights_only``; use
open_clip's converted checkpoints.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ...checkpoint import read_checkpoint_file, state_dict_from_checkpoint
from .base import TextEncoder, l2_normalize
from .tokenizer import VOCAB_SIZE, Texts, check_texts
from .unicl import LanguageLoadReport, apply_text_weights, map_weight_keys

__all__ = ["OpenClipTextEncoder", "load_open_clip_text_weights", "open_clip_model_config"]

_TOWER_ROOTS = ("token_embedding.", "transformer.", "ln_final.", "text_projection")
_TOWER_PARAMS = ("positional_embedding", "text_projection", "cls_emb")
_IGNORED_ROOTS = ("visual.",)
_IGNORED_KEYS = ("logit_bias", "input_resolution", "context_length", "vocab_size")


def open_clip_model_config(model_name: str) -> dict[str, Any]:
    """The open_clip model config of ``model_name`` (a built-in name or ``local-dir:/path``), checked
    to be usable offline with the CLIP BPE tokenizer.

    Raises:
        ValueError: unknown name, a hub name, or a tower that needs HuggingFace.
    """
    import open_clip

    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f"open_clip model name must be a non-empty string, got {model_name!r}")
    if model_name.startswith("hf-hub:"):
        raise ValueError(
            f"open_clip model {model_name!r}: 'hf-hub:' names download from the hub; give a built-in name "
            "(e.g. ViT-B-32) or 'local-dir:/path' with open_clip_config.json, and the weights as a local file"
        )
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ValueError(
            f"unknown open_clip model {model_name!r}; built-in names: {', '.join(open_clip.list_models())}"
        )
    if "siglip" in model_name.lower():
        raise ValueError(f"open_clip model {model_name!r} uses a SigLIP tokenizer (downloaded from the hub)")
    return cfg


def _check_text_cfg(text_cfg: Mapping[str, Any], name: str) -> None:
    for key in ("hf_model_name", "hf_tokenizer_name"):
        if text_cfg.get(key):
            raise ValueError(
                f"open_clip model {name!r}: its text tower needs a HuggingFace {key.split('_')[1]} "
                f"({text_cfg[key]!r}), which is downloaded from the hub; use a model with open_clip's own "
                "text transformer and CLIP tokenizer (e.g. ViT-B-32, ViT-B-16, ViT-L-14)"
            )
    if int(text_cfg.get("vocab_size", VOCAB_SIZE)) != VOCAB_SIZE:
        raise ValueError(
            f"open_clip model {name!r}: vocabulary of {text_cfg['vocab_size']} tokens; "
            f"only the CLIP BPE tokenizer ({VOCAB_SIZE} tokens) is supported"
        )


class OpenClipTextEncoder(TextEncoder):
    """The text tower of an open_clip model (child ``text``: open_clip's ``TextTransformer``) and a
    learnable ``logit_scale``.

    Args:
        model_name: an open_clip model name (e.g. ``ViT-B-32``) or ``local-dir:/path``.
        model_cfg: an open_clip model config dict (``embed_dim``, ``text_cfg``, optional ``quick_gelu``)
            instead of ``model_name``, e.g. for a custom tower.
        init_logit_scale: ``logit_scale`` before weights are loaded (CLIP's log(1 / 0.07); a CLIP
            checkpoint brings its own, ~log(100)).

    The tower is built with random weights; load a checkpoint with :func:`load_open_clip_text_weights`.
    """

    def __init__(
        self,
        model_name: str | None = None,
        *,
        model_cfg: Mapping[str, Any] | None = None,
        init_logit_scale: float = math.log(1 / 0.07),
    ):
        super().__init__()
        import open_clip
        from open_clip.model import _build_text_tower  # the builder open_clip's CLIP classes use (3.3.0)

        if (model_name is None) == (model_cfg is None):
            raise ValueError("give exactly one of model_name and model_cfg")
        if model_cfg is None:
            cfg = open_clip_model_config(model_name)
        else:
            cfg = copy.deepcopy(dict(model_cfg))
        name = model_name or "<model_cfg>"
        if "embed_dim" not in cfg or "text_cfg" not in cfg:
            raise ValueError(f"open_clip model config {name!r} needs 'embed_dim' and 'text_cfg'")
        text_cfg = dict(cfg["text_cfg"])
        _check_text_cfg(text_cfg, name)

        self.model_name = name
        self.text = _build_text_tower(cfg["embed_dim"], text_cfg, quick_gelu=bool(cfg.get("quick_gelu", False)))
        self.logit_scale = nn.Parameter(self.text.positional_embedding.new_ones(()) * init_logit_scale)
        self.context_length = int(self.text.context_length)
        self.dim_proj = int(cfg["embed_dim"]) if self.text.text_projection is not None else int(self.text.width)
        self._tokenizer = open_clip.tokenizer.SimpleTokenizer(
            context_length=self.context_length, **text_cfg.get("tokenizer_kwargs", {})
        )
        blob = json.dumps({"embed_dim": cfg["embed_dim"], "quick_gelu": bool(cfg.get("quick_gelu", False)),
                           "text_cfg": text_cfg}, sort_keys=True, default=str)
        self._signature = f"open_clip:{hashlib.sha256(blob.encode()).hexdigest()[:16]}"

    def tokenize(self, texts: Texts) -> Tensor:
        """Texts -> LongTensor (N, L) with open_clip's tokenizer for this tower (pad 0)."""
        return self._tokenizer(check_texts(texts))

    def cache_signature(self) -> str:
        return self._signature

    def encode_ids(self, input_ids: Tensor, normalize: bool = True) -> Tensor:
        """Args: input_ids (N, L) from :meth:`tokenize`. Returns: (N, D), unit norm if ``normalize``
        (``x / (||x|| + 1e-7)``, as the UniCL encoder)."""
        if input_ids.dim() != 2 or input_ids.shape[1] != self.context_length:
            raise ValueError(
                f"input_ids must be (N, {self.context_length}) (the context length), got {tuple(input_ids.shape)}"
            )
        if input_ids.shape[0] == 0:
            return self.logit_scale.new_zeros((0, self.dim_proj))
        t = self.text
        plain = (
            t.cls_emb is None
            and t.attn_mask is not None
            and not getattr(t, "use_pad_mask", False)
            and t.pool_type == "argmax"
        )
        if plain:
            # TextTransformer.forward (open_clip 3.3.0) on the positions up to the batch's last EOT:
            # with a causal mask and argmax pooling the later positions cannot change the result.
            eot = input_ids.argmax(dim=-1)
            n = int(eot.max()) + 1
            cast = t.transformer.get_cast_dtype()
            x = t.token_embedding(input_ids[:, :n]).to(cast) + t.positional_embedding[:n].to(cast)
            x = t.ln_final(t.transformer(x, attn_mask=t.attn_mask[:n, :n]))
            x = x[torch.arange(x.shape[0], device=x.device), eot]
            if isinstance(t.text_projection, nn.Linear):
                x = t.text_projection(x)
            elif t.text_projection is not None:
                x = x @ t.text_projection
        else:
            x = t(input_ids)
            if isinstance(x, tuple):  # towers configured with output_tokens
                x = x[0]
        return l2_normalize(x) if normalize else x


def _tower_key(key: str) -> str | None:
    if key == "logit_scale" or key.startswith("text."):
        return key
    if key in _TOWER_PARAMS or key.startswith(_TOWER_ROOTS):
        return "text." + key  # CLIP layout: the text tower's parts at the top level
    return None


def load_open_clip_text_weights(
    module: OpenClipTextEncoder, weights: str | os.PathLike | Mapping[str, Tensor], strict: bool = True
) -> LanguageLoadReport:
    """Load an open_clip checkpoint's text tower and ``logit_scale`` into ``module``.

    See the module docstring for the accepted layouts. A positional embedding of another length is
    linearly interpolated (and logged); other shape mismatches, and (if ``strict``) missing or
    unexpected keys, are :class:`~.base.LanguageWeightsError` naming them. Keys under
    ``sem_seg_head.predictor.lang_encoder.`` (this encoder saved inside the model) are accepted too.
    """
    if isinstance(weights, (str, os.PathLike)):
        source = os.fspath(weights)
        if source.endswith(".safetensors"):
            if not os.path.isfile(source):
                raise FileNotFoundError(f"checkpoint file not found: {source}")
            from safetensors.torch import load_file

            obj: Any = load_file(source, device="cpu")
        else:
            obj = read_checkpoint_file(source)
    elif isinstance(weights, Mapping):
        source, obj = "<state dict>", weights
    else:
        raise TypeError(f"weights must be a file path or a state dict, got {type(weights).__name__}")
    state, _ = state_dict_from_checkpoint(obj, source)
    state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}  # DDP-wrapped
    state = {k: v for k, v in state.items() if not (k.startswith(_IGNORED_ROOTS) or k in _IGNORED_KEYS)}
    mapped, origin, unexpected, ignored = map_weight_keys(state, _tower_key, "open_clip text", source)
    return apply_text_weights(
        module,
        mapped,
        origin,
        unexpected,
        ignored,
        source=source,
        what="open_clip text",
        strict=strict,
        positional_keys=("text.positional_embedding",),
        example_key="text.token_embedding.weight",
    )
