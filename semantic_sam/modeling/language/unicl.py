"""The UniCL / X-Decoder language encoder (SEMANTIC_SPEC §2.1-2.2), with the state-dict layout of
the language-only checkpoint that OpenSeeD and X-Decoder publish, and its loader.

Shape shorthand: N = texts, L = context length, W = width, D = ``dim_proj``.

Architecture (the reference's ``LangEncoder/transformer.py`` + ``vlpencoder.py``):

* x = ``token_embedding[ids] + positional_embedding`` (no scaling, no dropout);
* ``layers`` pre-LN residual blocks: x += Attn(LN1(x)); x += MLP(LN2(x)). Attn is
  ``nn.MultiheadAttention(W, heads)`` with an additive causal mask (-inf above the diagonal; with
  ``autoregressive=False``: no causal mask, a key-padding mask on the positions after the first EOT);
  MLP is ``c_fc`` W -> 4W, QuickGELU x * sigmoid(1.702 x), ``c_proj`` 4W -> W;
* every LayerNorm is TF style (:class:`TFLayerNorm`: float32, eps 1e-12 inside the square root);
* ``ln_final`` on all tokens, then the token at ``ids.argmax(-1)`` (the first EOT) is pooled,
  projected by ``lang_proj`` (W, D) and normalised: t / (||t|| + 1e-7);
* ``logit_scale``: a learnable scalar, 1.0 at init (``MODEL.TEXT.LOGIT_SCALE_INIT``).

:meth:`UniclTextEncoder.encode_ids` runs the transformer only on the positions up to the batch's
last EOT: later positions cannot reach a pooled token, so the embeddings are the full-length ones
(up to float rounding) at a fraction of the cost.

State-dict layout of :class:`UniclTextEncoder` (its keys; in the model it sits at
``sem_seg_head.predictor.lang_encoder.``, giving the table of SEMANTIC_SPEC §2.2)::

    lang_encoder.token_embedding.weight                        (vocab_size, W)   (49408, 512)
    lang_encoder.positional_embedding                          (L, W)            (18 or 77, 512)
    lang_encoder.resblocks.{i}.attn.in_proj_weight             (3W, W)           (1536, 512)
    lang_encoder.resblocks.{i}.attn.in_proj_bias               (3W,)
    lang_encoder.resblocks.{i}.attn.out_proj.weight            (W, W)
    lang_encoder.resblocks.{i}.attn.out_proj.bias              (W,)
    lang_encoder.resblocks.{i}.ln_1.weight / .bias             (W,)
    lang_encoder.resblocks.{i}.mlp.c_fc.weight                 (4W, W)           (2048, 512)
    lang_encoder.resblocks.{i}.mlp.c_fc.bias                   (4W,)
    lang_encoder.resblocks.{i}.mlp.c_proj.weight               (W, 4W)           (512, 2048)
    lang_encoder.resblocks.{i}.mlp.c_proj.bias                 (W,)
    lang_encoder.resblocks.{i}.ln_2.weight / .bias             (W,)
    lang_encoder.ln_final.weight / .bias                       (W,)
    lang_proj                                                  (W, D)            (512, 512)
    logit_scale                                                ()

12 keys per block + 6: 150 keys and 63,428,097 parameters for 512/8/12 at L = 77 (63,397,889 at
L = 18). No buffers: the causal mask is built in ``forward``. :func:`language_state_dict_shapes`
computes this table for any size.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ...checkpoint import read_checkpoint_file, state_dict_from_checkpoint
from .base import (
    LANG_ENCODER_PREFIX,
    LanguageWeightsError,
    TextEncoder,
    format_key_list,
    interpolate_positional_embedding,
    l2_normalize,
)
from .tokenizer import VOCAB_SIZE, ClipTokenizer, Texts

__all__ = [
    "LanguageLoadReport",
    "QuickGELU",
    "ResidualAttentionBlock",
    "TFLayerNorm",
    "UniclTextEncoder",
    "UniclTransformer",
    "language_state_dict_shapes",
    "load_language_weights",
]

logger = logging.getLogger(__name__)


class TFLayerNorm(nn.Module):
    """LayerNorm in the TF style: normalise in float32 with ``eps`` inside the square root, cast back
    to the input dtype, then apply weight and bias. ``nn.LayerNorm`` (eps 1e-5) is not equivalent."""

    def __init__(self, hidden_size: int, eps: float = 1e-12):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float()
        u = x.mean(-1, keepdim=True)
        s = (x - u).pow(2).mean(-1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.variance_epsilon)
        return self.weight * x.to(dtype) + self.bias


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x += Attn(LN1(x)); x += MLP(LN2(x)). Input and output (L, N, W)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = TFLayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(width * 4, width))]
            )
        )
        self.ln_2 = TFLayerNorm(width)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, key_padding_mask: Tensor | None = None) -> Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=attn_mask, key_padding_mask=key_padding_mask)[0]
        return x + self.mlp(self.ln_2(x))


class UniclTransformer(nn.Module):
    """Token + positional embedding, ``layers`` residual blocks, ``ln_final``: ids (N, L) -> (N, L, W).

    The reference's ``Transformer`` (``lang_encoder`` in the state dict). Initialisation as the
    reference: trunc_normal(0.02) for both embeddings and every ``nn.Linear`` weight (``c_fc``,
    ``c_proj``, ``attn.out_proj``), zero biases; ``attn.in_proj_weight`` is not an ``nn.Linear`` and
    keeps PyTorch's xavier-uniform init.
    """

    def __init__(
        self, *, context_length: int, vocab_size: int, width: int, layers: int, heads: int, autoregressive: bool = True
    ):
        super().__init__()
        if width % heads:
            raise ValueError(f"the width ({width}) must be divisible by the number of heads ({heads})")
        self.context_length = context_length
        self.width = width
        self.layers = layers
        self.autoregressive = autoregressive
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])
        self.ln_final = TFLayerNorm(width)

        nn.init.trunc_normal_(self.positional_embedding, std=0.02)
        nn.init.trunc_normal_(self.token_embedding.weight, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, input_ids: Tensor) -> Tensor:
        """Args: input_ids LongTensor (N, L), L <= ``context_length`` (positions 0..L-1).
        Returns: (N, L, W), after ``ln_final``."""
        L = input_ids.shape[1]
        if L > self.context_length:
            raise ValueError(f"{L} ids per text exceed the context length ({self.context_length})")
        x = self.token_embedding(input_ids) + self.positional_embedding[:L]  # (N, L, W)
        attn_mask = key_padding_mask = None
        if self.autoregressive:
            # Additive causal mask: position i attends to positions <= i.
            attn_mask = torch.full((L, L), float("-inf"), dtype=x.dtype, device=x.device).triu_(1)
        else:
            # Bidirectional, ignoring everything after the first EOT (the reference's attention_mask == 0).
            eot = input_ids.argmax(dim=-1, keepdim=True)
            key_padding_mask = torch.arange(L, device=x.device).unsqueeze(0) > eot  # (N, L), True = ignore
        x = x.permute(1, 0, 2)  # NLW -> LNW
        for block in self.resblocks:
            x = block(x, attn_mask=attn_mask, key_padding_mask=key_padding_mask)
        x = x.permute(1, 0, 2)  # LNW -> NLW
        return self.ln_final(x)


class UniclTextEncoder(TextEncoder):
    """The language encoder: CLIP BPE ids -> unit-norm text embeddings (N, D).

    Children and parameters: ``lang_encoder`` (:class:`UniclTransformer`), ``lang_proj`` (W, D),
    ``logit_scale`` () (see the module docstring for the full key table).

    Args:
        width, heads, layers: transformer size (``MODEL.TEXT.WIDTH / HEADS / LAYERS``; 512 / 8 / 12).
        context_length: L (``MODEL.TEXT.CONTEXT_LENGTH``; 18 in Semantic-SAM's configs, 77 in CLIP's).
        vocab_size: rows of ``token_embedding``; 49408 for the CLIP tokenizer.
        dim_proj: D (``MODEL.DIM_PROJ``; 512).
        autoregressive: causal attention (``MODEL.TEXT.AUTOGRESSIVE``; True in every reference config).
        pad_id: the tokenizer's padding id.
        logit_scale_init: initial ``logit_scale`` s (logits are ``exp(s) * cos``; the reference's 1.0).
    """

    def __init__(
        self,
        *,
        width: int = 512,
        heads: int = 8,
        layers: int = 12,
        context_length: int = 77,
        vocab_size: int = VOCAB_SIZE,
        dim_proj: int = 512,
        autoregressive: bool = True,
        pad_id: int = 0,
        logit_scale_init: float = 1.0,
    ):
        super().__init__()
        if vocab_size < VOCAB_SIZE:
            raise ValueError(f"vocab_size must be >= {VOCAB_SIZE} (the CLIP tokenizer's ids), got {vocab_size}")
        self.tokenizer = ClipTokenizer(context_length, pad_id=pad_id)
        self.context_length = context_length
        self.dim_proj = dim_proj
        self.lang_encoder = UniclTransformer(
            context_length=context_length,
            vocab_size=vocab_size,
            width=width,
            layers=layers,
            heads=heads,
            autoregressive=autoregressive,
        )
        self.lang_proj = nn.Parameter(torch.empty(width, dim_proj))
        nn.init.trunc_normal_(self.lang_proj, std=0.02)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))
        self._signature = (
            f"unicl:width={width}:heads={heads}:layers={layers}:context={context_length}:"
            f"vocab={vocab_size}:dim={dim_proj}:autoregressive={autoregressive}:pad={pad_id}"
        )

    def tokenize(self, texts: Texts) -> Tensor:
        return self.tokenizer(texts)

    def cache_signature(self) -> str:
        return self._signature

    def encode_ids(self, input_ids: Tensor, normalize: bool = True) -> Tensor:
        """Args:
            input_ids: LongTensor (N, L) from :meth:`tokenize`, L = ``context_length``.
            normalize: divide by ``||t|| + 1e-7``.

        Returns:
            (N, D): the projected embedding of each text's first EOT token.
        """
        if input_ids.dim() != 2 or input_ids.shape[1] != self.context_length:
            raise ValueError(
                f"input_ids must be (N, {self.context_length}) (the context length), got {tuple(input_ids.shape)}"
            )
        if input_ids.shape[0] == 0:
            return self.lang_proj.new_zeros((0, self.dim_proj))
        eot = input_ids.argmax(dim=-1)  # the first EOT (the largest id): (N,)
        # Positions after the batch's last EOT cannot reach a pooled token (causal mask, or the
        # key-padding mask after EOT): drop them. Same embeddings, and template texts are ~10 of 18 or 77 ids.
        n = int(eot.max()) + 1
        x = self.lang_encoder(input_ids[:, :n])  # (N, n, W)
        x = x[torch.arange(x.shape[0], device=x.device), eot]  # (N, W)
        x = x @ self.lang_proj  # (N, D)
        return l2_normalize(x) if normalize else x


# ------------------------------------------------------------------------------------------------
# Key layout and loading
# ------------------------------------------------------------------------------------------------
_TRANSFORMER_ROOTS = ("token_embedding.", "resblocks.", "ln_final.")


def language_state_dict_shapes(
    *, width: int = 512, layers: int = 12, context_length: int = 77, vocab_size: int = VOCAB_SIZE, dim_proj: int = 512
) -> OrderedDict[str, tuple[int, ...]]:
    """The keys and shapes of :class:`UniclTextEncoder`'s state dict, in order, computed without
    building the module. Prefix them with ``sem_seg_head.predictor.lang_encoder.`` for the keys in a
    model checkpoint (``model.sem_seg_head...`` in Semantic-SAM's released format)."""
    W = width
    shapes: OrderedDict[str, tuple[int, ...]] = OrderedDict()
    # nn.Module order: a module's own parameters before its children's.
    shapes["lang_proj"] = (W, dim_proj)
    shapes["logit_scale"] = ()
    shapes["lang_encoder.positional_embedding"] = (context_length, W)
    shapes["lang_encoder.token_embedding.weight"] = (vocab_size, W)
    for i in range(layers):
        p = f"lang_encoder.resblocks.{i}."
        shapes[p + "attn.in_proj_weight"] = (3 * W, W)
        shapes[p + "attn.in_proj_bias"] = (3 * W,)
        shapes[p + "attn.out_proj.weight"] = (W, W)
        shapes[p + "attn.out_proj.bias"] = (W,)
        shapes[p + "ln_1.weight"] = (W,)
        shapes[p + "ln_1.bias"] = (W,)
        shapes[p + "mlp.c_fc.weight"] = (4 * W, W)
        shapes[p + "mlp.c_fc.bias"] = (4 * W,)
        shapes[p + "mlp.c_proj.weight"] = (W, 4 * W)
        shapes[p + "mlp.c_proj.bias"] = (W,)
        shapes[p + "ln_2.weight"] = (W,)
        shapes[p + "ln_2.bias"] = (W,)
    shapes["lang_encoder.ln_final.weight"] = (W,)
    shapes["lang_encoder.ln_final.bias"] = (W,)
    return shapes


@dataclass
class LanguageLoadReport:
    """What :func:`load_language_weights` did.

    Attributes:
        source: the file, or ``<state dict>``.
        loaded: module keys that received a value.
        missing: module keys with no value (only with ``strict=False``; left at their current values).
        unexpected: file keys that map to no module key (only with ``strict=False``; not used).
        interpolated: ``(key, file length, model length)`` of resized positional embeddings.
        ignored: file keys of other model parts (a full-model checkpoint), not used.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    interpolated: list[tuple[str, int, int]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def _read_weights(weights: str | os.PathLike | Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str]:
    """(state dict with any ``model.`` prefix stripped and a ``model`` / ``state_dict`` wrapper
    removed, its name for messages). Files are read with ``torch.load(weights_only=True)``."""
    if isinstance(weights, (str, os.PathLike)):
        source = os.fspath(weights)
        obj = read_checkpoint_file(source)
    elif isinstance(weights, Mapping):
        source, obj = "<state dict>", weights
    else:
        raise TypeError(f"weights must be a file path or a state dict, got {type(weights).__name__}")
    state, _ = state_dict_from_checkpoint(obj, source)
    return state, source


def _unicl_key(key: str) -> str | None:
    """A module key for a file key without the model prefix, or None."""
    if key in ("lang_proj", "logit_scale") or key.startswith("lang_encoder."):
        return key
    if key == "positional_embedding" or key.startswith(_TRANSFORMER_ROOTS):
        return "lang_encoder." + key  # Transformer-relative (what the reference's load_pretrained sees)
    return None


def map_weight_keys(
    state: Mapping[str, Tensor], to_module_key, what: str, source: str
) -> tuple[dict[str, Tensor], dict[str, str], list[str], list[str]]:
    """Map file keys to module keys: ``(mapped, origin, unexpected, ignored)``; ``origin`` gives the
    file key of each mapped module key.

    If some key starts with ``sem_seg_head.predictor.lang_encoder.`` the file is a model checkpoint:
    only those keys are used, the others (other model parts) are ignored. Otherwise every key must map.
    Two file keys mapping to one module key are an error.
    """
    model_layout = any(k.startswith(LANG_ENCODER_PREFIX) for k in state)
    mapped: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    unexpected: list[str] = []
    ignored: list[str] = []
    for key, value in state.items():
        if model_layout:
            if not key.startswith(LANG_ENCODER_PREFIX):
                ignored.append(key)
                continue
            target = to_module_key(key[len(LANG_ENCODER_PREFIX) :])
        else:
            target = to_module_key(key)
        if target is None:
            unexpected.append(key)
            continue
        if target in mapped:
            raise LanguageWeightsError(
                f"{what} weights {source}: keys {origin[target]!r} and {key!r} both give "
                f"{LANG_ENCODER_PREFIX}{target}; keep one"
            )
        mapped[target] = value
        origin[target] = key
    return mapped, origin, unexpected, ignored


def apply_text_weights(
    module: nn.Module,
    mapped: dict[str, Tensor],
    origin: dict[str, str],
    unexpected: list[str],
    ignored: list[str],
    *,
    source: str,
    what: str,
    strict: bool,
    positional_keys: tuple[str, ...],
    example_key: str,
) -> LanguageLoadReport:
    """Check ``mapped`` (module key -> tensor) against ``module`` and copy it in (shared by both encoders).

    Positional embeddings (``positional_keys``) of another length are interpolated; ``logit_scale``
    stored as (1,) is reshaped. Missing or unexpected keys are errors if ``strict`` (else logged);
    shape mismatches always are. Nothing is copied unless every check passes.
    """
    report = LanguageLoadReport(source=source, ignored=ignored)
    if not mapped:
        raise LanguageWeightsError(
            f"{what} weights {source}: none of its {len(unexpected) + len(ignored)} keys is a {what} key "
            f"(e.g. {format_key_list(unexpected + ignored, 3) or 'none'}); expected keys such as "
            f"{LANG_ENCODER_PREFIX}{example_key} (model-relative, optionally with a leading 'model.')"
        )
    expected = module.state_dict()
    missing = [k for k in expected if k not in mapped]
    unexpected = unexpected + [origin[k] for k in mapped if k not in expected]  # as written in the file
    mismatched: list[str] = []
    final: dict[str, Tensor] = {}
    for key, value in mapped.items():
        if key not in expected:
            continue
        want = expected[key].shape
        if value.shape != want:
            if key in positional_keys and value.dim() == 2 and len(want) == 2 and value.shape[1] == want[1]:
                logger.info(
                    "%s weights %s: interpolating %s from length %d to %d",
                    what, source, key, value.shape[0], want[0],
                )
                report.interpolated.append((key, int(value.shape[0]), int(want[0])))
                value = interpolate_positional_embedding(value, int(want[0]))
            elif key == "logit_scale" and value.numel() == 1:
                value = value.reshape(want)
            else:
                mismatched.append(
                    f"{LANG_ENCODER_PREFIX}{key}: {tuple(value.shape)} in the file vs {tuple(want)} in the model"
                )
                continue
        final[key] = value
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {format_key_list(mismatched)}")
    if strict and missing:
        problems.append(f"{len(missing)} missing keys: {format_key_list([LANG_ENCODER_PREFIX + k for k in missing])}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {format_key_list(unexpected)}")
    if problems:
        raise LanguageWeightsError(f"{what} weights {source} do not fit the model: " + "; ".join(problems))
    if missing:
        logger.warning(
            "%s weights %s: %d keys missing, left as they are: %s", what, source, len(missing), format_key_list(missing)
        )
    if unexpected:
        logger.warning(
            "%s weights %s: %d unexpected keys not used: %s", what, source, len(unexpected), format_key_list(unexpected)
        )
    module.load_state_dict(final, strict=False)
    report.loaded = sorted(final)
    report.missing = missing
    report.unexpected = unexpected
    return report


def load_language_weights(
    module: UniclTextEncoder, weights: str | os.PathLike | Mapping[str, Tensor], strict: bool = True
) -> LanguageLoadReport:
    """Load UniCL text-encoder weights (a file, or a state dict) into ``module``.

    Accepted key forms (mixed forms are fine as long as no key is given twice):

    * model-relative, as in OpenSeeD's ``model_state_dict_only_language.pt``:
      ``sem_seg_head.predictor.lang_encoder.lang_encoder.token_embedding.weight``, ...,
      ``sem_seg_head.predictor.lang_encoder.lang_proj``, ``...logit_scale``. Keys of other model parts
      in the same file (a full-model checkpoint) are ignored;
    * the same with a leading ``model.`` (Semantic-SAM's ``BaseModel`` wrapping), or wrapped in a
      ``{'model': ...}`` / ``{'state_dict': ...}`` dict;
    * module-relative: ``lang_encoder.token_embedding.weight``, ..., ``lang_proj``, ``logit_scale``;
    * Transformer-relative: ``token_embedding.weight``, ``positional_embedding``, ``resblocks.*``,
      ``ln_final.*`` (plus ``lang_proj`` / ``logit_scale`` if the file has them).

    A ``positional_embedding`` of another length is linearly interpolated to the module's context
    length (and logged); every other shape must match.

    Args:
        module: the encoder to fill.
        weights: a file path (read with ``torch.load(weights_only=True)``) or a state dict.
        strict: if True, any missing or unexpected key is an error; if False they are logged and the
            missing parameters keep their values. Shape mismatches are always errors.

    Returns:
        A :class:`LanguageLoadReport`.

    Raises:
        FileNotFoundError, CheckpointError: the file cannot be read.
        LanguageWeightsError: no text-encoder key, a key given twice, or (naming the keys) missing,
            unexpected or mismatched keys. The module is unchanged.
    """
    state, source = _read_weights(weights)
    mapped, origin, unexpected, ignored = map_weight_keys(state, _unicl_key, "text-encoder", source)
    return apply_text_weights(
        module,
        mapped,
        origin,
        unexpected,
        ignored,
        source=source,
        what="text-encoder",
        strict=strict,
        positional_keys=("lang_encoder.positional_embedding",),
        example_key="lang_encoder.token_embedding.weight",
    )
