"""The interactive multi-granularity query decoder (the reference's ``IMaskDINODecoder``).

Shape shorthand: B = images, N = prompts per image, K = tokens per prompt (``NUM_INTERACTIVE_TOKENS``),
Q = N * K queries (query q = i * K + k is prompt i, token k), C = hidden dim, L = decoder layers,
h, w = 1/4 of the padded image size.

Each prompt (a point as a tiny box, or a box; normalized cxcywh of the padded frame) becomes K
queries sharing one anchor. A DINO-style deformable decoder refines the queries and anchors over
the multi-scale features, flattened coarse to fine (1/64, 1/32, 1/16, 1/8), and every layer predicts,
per query, a mask (dot product with the 1/4-resolution mask features), a box and an IoU score.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import torch
from detectron2.config import configurable
from torch import Tensor, nn

from ..language.base import l2_normalize
from ..registry import DECODER, register
from .layers import MLP, DeformableDecoderLayer, DeformableTransformerDecoder, inverse_sigmoid
from .prompt_encoder import (
    anchor_queries,
    check_attn_mask_mode,
    check_decoder_prompts,
    content_queries,
    noise_anchor_boxes,
    self_attn_mask,
)

__all__ = ["InteractiveDecoder"]


@register(DECODER, "interactive_mask_dino")
class InteractiveDecoder(nn.Module):
    """Prompt queries -> per-layer masks, boxes and IoU scores.

    State-dict names and shapes are those of the released checkpoints under
    ``sem_seg_head.predictor.``, including the aliases of shared modules: ``decoder_norm`` is
    ``decoder.norm``, and ``_bbox_embed``, ``bbox_embed.{l}`` and ``decoder.bbox_embed.{l}`` are one MLP.
    ``class_embed`` and ``class_embed_part`` (C, D) project the normed outputs into the text space
    for the object and part logits (SEMANTIC_SPEC §3) when the decoder has a text encoder
    (``lang_encoder``, state-dict prefix ``sem_seg_head.predictor.lang_encoder.``, absent with
    ``MODEL.TEXT.ARCH: noencoder`` as in every released model); ``lang_mapper`` is kept for checkpoint
    compatibility (the generic denoising queries' text content).
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        hidden_dim: int = 256,
        mask_dim: int = 256,
        num_heads: int = 8,
        dim_feedforward: int = 2048,
        dec_layers: int = 9,
        dropout: float = 0.0,
        num_feature_levels: int = 4,
        dec_n_points: int = 4,
        num_tokens: int = 6,
        dim_proj: int = 512,
        enforce_input_proj: bool = False,
        noise_scale: float = 0.4,
        point_noise_factor: float = 0.01,
        lang_encoder: Optional[nn.Module] = None,
        num_queries: int = 0,
        dn_num: int = 100,
    ) -> None:
        """
        Args:
            in_channels: channels of the pixel decoder's multi-scale features.
            hidden_dim: query width C.
            mask_dim: channels of the mask features (output width of ``mask_embed``).
            num_heads: heads of the self- and cross-attention (the reference always uses 8).
            dim_feedforward: FFN width of each layer.
            dec_layers: number of decoder layers L.
            dropout: dropout of the decoder layers.
            num_feature_levels: multi-scale feature levels attended to (4).
            dec_n_points: deformable sampling points per head and feature level.
            num_tokens: K, content queries per prompt.
            dim_proj: width of the (unused) language projections.
            enforce_input_proj: project features with a 1x1 conv + GN even when ``in_channels == hidden_dim``.
            noise_scale: training-time anchor jitter (``DN_NOISE_SCALE``); 0 disables it.
            point_noise_factor: extra factor on the jitter of point prompts (0.01 in the reference).
            lang_encoder: the text encoder (a :class:`~semantic_sam.modeling.language.TextEncoder`
                with ``logit_scale`` and ``dim_proj`` = ``dim_proj``), or None (no labels).
            num_queries: generic queries (``NUM_OBJECT_QUERIES``; 0: no generic path, the released models).
                With generic queries the decoder has two more modules, ``enc_output`` (Linear C -> C) and
                ``enc_output_norm`` (LayerNorm), for the two-stage selection (:meth:`forward_generic`).
            dn_num: denoising queries per training batch (``DN_NUM``; 0 or ``DN: no`` disables them).
        """
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_feature_levels = num_feature_levels
        self.num_tokens = num_tokens
        self.num_layers = dec_layers
        self.noise_scale = noise_scale
        self.point_noise_factor = point_noise_factor

        if lang_encoder is not None and int(lang_encoder.dim_proj) != dim_proj:
            raise ValueError(f"the text encoder embeds in {lang_encoder.dim_proj} dimensions, the heads in {dim_proj}")
        self.lang_encoder = lang_encoder
        if num_queries < 0 or dn_num < 0:
            raise ValueError(f"num_queries and dn_num must be >= 0, got {num_queries} and {dn_num}")
        if num_queries > 0 and lang_encoder is None:
            raise ValueError("generic queries classify with the text encoder: build the decoder with lang_encoder")
        self.num_queries = num_queries
        self.dn_num = dn_num
        if num_queries > 0:
            self.enc_output = nn.Linear(hidden_dim, hidden_dim)
            self.enc_output_norm = nn.LayerNorm(hidden_dim)
        # Language-side projections (released keys): the text content of generic denoising queries,
        # the object head and the part head.
        self.lang_mapper = nn.Parameter(torch.empty(dim_proj, hidden_dim))
        self.class_embed = nn.Parameter(torch.empty(hidden_dim, dim_proj))
        self.class_embed_part = nn.Parameter(torch.empty(hidden_dim, dim_proj))
        for p in (self.lang_mapper, self.class_embed, self.class_embed_part):
            nn.init.trunc_normal_(p, std=0.02)

        self.input_proj = nn.ModuleList()
        for _ in range(num_feature_levels):
            if in_channels != hidden_dim or enforce_input_proj:
                conv = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
                nn.init.xavier_uniform_(conv.weight, gain=1)
                nn.init.constant_(conv.bias, 0)
                self.input_proj.append(nn.Sequential(conv, nn.GroupNorm(32, hidden_dim)))
            else:
                self.input_proj.append(nn.Sequential())

        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        layer = DeformableDecoderLayer(
            hidden_dim, dim_feedforward, dropout, num_feature_levels, num_heads, dec_n_points
        )
        self.decoder = DeformableTransformerDecoder(layer, dec_layers, self.decoder_norm, hidden_dim)

        self._bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        nn.init.constant_(self._bbox_embed.layers[-1].weight, 0)
        nn.init.constant_(self._bbox_embed.layers[-1].bias, 0)
        self.bbox_embed = nn.ModuleList([self._bbox_embed] * dec_layers)
        self.decoder.bbox_embed = self.bbox_embed

        self.iou_prediction_head = MLP(hidden_dim, hidden_dim, 1, 3)
        self.mask_tokens = nn.Embedding(num_tokens, hidden_dim)  # the K tokens (reference's state-dict name)
        self.pb_embedding = nn.Embedding(2, hidden_dim)
        self.label_enc = nn.Embedding(2, hidden_dim)

    @classmethod
    def from_config(cls, cfg, in_channels: int) -> dict:
        from ...config import ConfigError
        from ..language import build_text_encoder

        dec = cfg.MODEL.DECODER
        generic = dec.NUM_OBJECT_QUERIES > 0
        required = {
            "MODEL.DECODER.TWO_STAGE": (dec.TWO_STAGE, generic),
            "MODEL.DECODER.INITIAL_PRED": (dec.INITIAL_PRED, generic),
            "MODEL.DECODER.LEARN_TGT": (dec.LEARN_TGT, False),
            "MODEL.DECODER.PRE_NORM": (dec.PRE_NORM, False),
        }
        for key, (value, supported) in required.items():
            if value != supported:
                mode = "with generic queries (NUM_OBJECT_QUERIES > 0)" if generic else "without generic queries"
                raise ConfigError(
                    f"{key}={value!r} is not supported {mode}: only {supported!r} (as Mask DINO / OpenSeeD's panoptic "
                    "configs and every released Semantic-SAM config)"
                )
        if dec.NUM_OBJECT_QUERIES < 0:
            raise ConfigError(f"MODEL.DECODER.NUM_OBJECT_QUERIES={dec.NUM_OBJECT_QUERIES}: must be >= 0")
        if generic and cfg.MODEL.TEXT.ARCH == "noencoder":
            raise ConfigError(
                "MODEL.DECODER.NUM_OBJECT_QUERIES > 0 (generic, labelled segmentation) needs a text encoder: set "
                "MODEL.TEXT.ARCH to unicl or open_clip (it is 'noencoder')"
            )
        if dec.DN not in ("seg", "no"):
            raise ConfigError(f"MODEL.DECODER.DN={dec.DN!r}: expected 'seg' (denoising queries) or 'no'")
        num_heads = dec.QUERY_DECODER_NHEADS
        if num_heads <= 0:
            num_heads = dec.NHEADS
        return {
            "in_channels": in_channels,
            "hidden_dim": dec.HIDDEN_DIM,
            "mask_dim": cfg.MODEL.ENCODER.MASK_DIM,
            "num_heads": num_heads,
            "dim_feedforward": dec.DIM_FEEDFORWARD,
            "dec_layers": dec.DEC_LAYERS,
            "dropout": dec.DROPOUT,
            "num_feature_levels": dec.TOTAL_NUM_FEATURE_LEVELS,
            "dec_n_points": dec.DEC_N_POINTS,
            "num_tokens": dec.NUM_INTERACTIVE_TOKENS,
            "dim_proj": cfg.MODEL.DIM_PROJ,
            "enforce_input_proj": dec.ENFORCE_INPUT_PROJ,
            "noise_scale": dec.DN_NOISE_SCALE,
            "point_noise_factor": dec.POINT_NOISE_FACTOR,
            "lang_encoder": build_text_encoder(cfg),
            "num_queries": dec.NUM_OBJECT_QUERIES,
            "dn_num": dec.DN_NUM if dec.DN == "seg" else 0,
        }

    # ------------------------------------------------------------------------------------------
    def flatten_memory(self, multi_scale_features: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Project and flatten the feature levels, coarsest first (the reverse of the pixel decoder's order).

        Args:
            multi_scale_features: L_f tensors (B, C_in, H_l, W_l) at strides 8, 16, 32, 64.

        Returns:
            ``(memory (B, S, C), spatial_shapes (L_f, 2) int64 (H, W), feature_level_start_index (L_f,))``,
            feature levels in the order strides 64, 32, 16, 8.
        """
        if len(multi_scale_features) != self.num_feature_levels:
            raise ValueError(
                f"expected {self.num_feature_levels} multi-scale feature levels, got {len(multi_scale_features)}"
            )
        flat, shapes = [], []
        for idx in reversed(range(self.num_feature_levels)):
            x = self.input_proj[idx](multi_scale_features[idx])
            shapes.append(x.shape[-2:])
            flat.append(x.flatten(2).transpose(1, 2))
        memory = torch.cat(flat, dim=1)
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=memory.device)
        feature_level_start_index = torch.cat(
            (spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1])
        )
        return memory, spatial_shapes, feature_level_start_index

    def precompute_memory(self, multi_scale_features: Sequence[Tensor]) -> dict:
        """Everything the decoder derives from the image alone, to reuse across prompt batches.

        Returns:
            ``{"memory": (B, S, C), "spatial_shapes": (L_f, 2), "feature_level_start_index": (L_f,),
            "values": [L x (B, S, C)]}`` (each layer's projected cross-attention values; about
            ``L * S * C`` floats, e.g. 106 MB for SwinT at 640 x 853).
        """
        memory, spatial_shapes, feature_level_start_index = self.flatten_memory(multi_scale_features)
        return {
            "memory": memory,
            "spatial_shapes": spatial_shapes,
            "feature_level_start_index": feature_level_start_index,
            "values": self.decoder.project_memory(memory),
        }

    def class_logits(self, out: Tensor, class_embeddings: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Object and part logits of normed decoder outputs (SEMANTIC_SPEC §3).

        ``z = exp(logit_scale) * normalize(out @ W) @ T^T`` with W = ``class_embed`` (object) or
        ``class_embed_part`` (part), ``normalize(v) = v / (||v|| + 1e-7)``, T the unit-norm class embeddings.

        Args:
            out: (B, Q, C) decoder outputs after ``decoder_norm``.
            class_embeddings: ``"object"``: (C_o, D) and optionally ``"part"``: (C_p, D) class embeddings.

        Returns:
            ``pred_logits`` (B, Q, C_o) and, with ``"part"``, ``pred_logits_part`` (B, Q, C_p); raw logits.
        """
        if self.lang_encoder is None:
            raise ValueError("class logits need a text encoder: this model was built with MODEL.TEXT.ARCH noencoder")
        unknown = set(class_embeddings) - {"object", "part"}
        if unknown or "object" not in class_embeddings:
            raise ValueError(f"class_embeddings needs an 'object' entry (and optionally 'part'), got {sorted(class_embeddings)}")
        scale = self.lang_encoder.logit_scale.exp()
        logits = {}
        for key, name, weight in (("object", "pred_logits", self.class_embed), ("part", "pred_logits_part", self.class_embed_part)):
            if key not in class_embeddings:
                continue
            emb = class_embeddings[key]
            if emb.dim() != 2 or emb.shape[1] != weight.shape[1] or emb.shape[0] == 0:
                raise ValueError(f"class_embeddings[{key!r}] must be (C, {weight.shape[1]}) with C >= 1, got {tuple(emb.shape)}")
            visual = l2_normalize(out @ weight.to(out.dtype))
            logits[name] = scale * visual @ emb.to(visual.dtype).t()
        return logits

    def prediction_heads(
        self,
        hs: Tensor,
        reference: Tensor,
        mask_features: Tensor,
        num_prompts: int,
        class_embeddings: Optional[Mapping[str, Tensor]] = None,
    ) -> dict[str, Tensor]:
        """Masks, boxes, IoU scores (and, given class embeddings, class logits) of one layer.

        The heads apply ``decoder_norm`` once more on ``hs`` (which is already ``decoder.norm(out)``):
        the reference's double LayerNorm, kept because the released weights were trained with it.

        Args:
            hs: (B, Q, C) normed output of the layer.
            reference: (B, Q, 4) the layer's input anchor (sigmoid, cxcywh), not detached.
            mask_features: (B, C_mask, h, w).
            num_prompts: N.
            class_embeddings: see :meth:`class_logits`; None: no class logits.

        Returns:
            ``pred_masks`` (B, Q, h, w) logits, ``pred_boxes`` (B, Q, 4) cxcywh in [0, 1],
            ``pred_ious`` (B, N, K) raw scores; with class embeddings also :meth:`class_logits`' entries.
        """
        out = self.decoder_norm(hs)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(out), mask_features)
        boxes = (self._bbox_embed(out) + inverse_sigmoid(reference)).sigmoid()
        ious = self.iou_prediction_head(out).view(out.shape[0], num_prompts, self.num_tokens)
        heads = {"pred_masks": masks, "pred_boxes": boxes, "pred_ious": ious}
        if class_embeddings is not None:
            heads.update(self.class_logits(out, class_embeddings))
        return heads

    def forward(
        self,
        multi_scale_features: Sequence[Tensor],
        mask_features: Tensor,
        boxes: Tensor,
        pb: Tensor,
        attn_mask: str = "block",
        num_point_prompts: Union[Sequence[int], Tensor, None] = None,
        anchor_noise: Optional[Tensor] = None,
        return_aux: bool = True,
        memory_cache: Optional[dict] = None,
        class_embeddings: Optional[Mapping[str, Tensor]] = None,
    ) -> dict:
        """Decode N prompts per image into N * K masks, boxes and IoU scores.

        Args:
            multi_scale_features: 4 tensors (B, C_in, H_l, W_l) at strides 8, 16, 32, 64.
            mask_features: (B, C_mask, h, w) at stride 4.
            boxes: (B, N, 4) prompt boxes, cxcywh normalized to the padded frame (a point is a tiny box).
            pb: (B, N) prompt-type flags indexing ``pb_embedding`` (0 at inference in the reference).
            attn_mask: ``"block"``: each prompt's K queries attend only to each other; ``"none"``: all
                queries attend to all (the reference's demo/automatic-generation mode).
            num_point_prompts: per image, how many leading prompts are points (only used by the
                training anchor noise, which is 100x smaller for points); None = all.
            anchor_noise: (B, N, 4) uniform [0, 1) draws for the training anchor noise instead of
                ``torch.rand_like`` (for reproducibility tests); ignored in eval mode.
            return_aux: compute the heads of layers 0..L-2 too (``aux_outputs``); if False,
                ``aux_outputs`` is an empty list.
            memory_cache: the result of :meth:`precompute_memory` for these features (same images);
                it skips the per-call memory projections and gives the same outputs.
            class_embeddings: ``{"object": (C_o, D), "part": (C_p, D)}`` unit-norm class embeddings
                (``"part"`` optional): every layer also returns ``pred_logits`` (B, Q, C_o) and
                ``pred_logits_part`` (B, Q, C_p). Needs a text encoder.

        Returns:
            dict with ``pred_masks`` (B, Q, h, w) logits, ``pred_boxes`` (B, Q, 4) cxcywh normalized to the
            padded frame, ``pred_ious`` (B, N, K) raw, all of the last layer, and ``aux_outputs``: a list of
            L - 1 dicts with the same keys for layers 0..L-2.
        """
        self._check_inputs(boxes, pb, attn_mask, mask_features)
        b, n, _ = boxes.shape
        if memory_cache is None:
            memory, spatial_shapes, feature_level_start_index = self.flatten_memory(multi_scale_features)
            values = None
        else:
            memory, spatial_shapes = memory_cache["memory"], memory_cache["spatial_shapes"]
            feature_level_start_index, values = memory_cache["feature_level_start_index"], memory_cache["values"]
        if memory.shape[0] != b:
            raise ValueError(f"features have batch size {memory.shape[0]} but boxes have {b}")

        if self.training and self.noise_scale > 0:
            boxes = noise_anchor_boxes(
                boxes, self.noise_scale, num_point_prompts, self.point_noise_factor, anchor_noise
            )
        tgt = content_queries(self.label_enc, self.pb_embedding, self.mask_tokens, pb)
        refpoints_unsigmoid = anchor_queries(boxes, self.num_tokens)
        tgt_mask = self_attn_mask(attn_mask, n, self.num_tokens, boxes.device)

        hs, references = self.decoder(
            tgt=tgt,
            refpoints_unsigmoid=refpoints_unsigmoid,
            memory=memory,
            spatial_shapes=spatial_shapes,
            feature_level_start_index=feature_level_start_index,
            tgt_mask=tgt_mask,
            values=values,
        )
        layers = range(len(hs)) if return_aux else [len(hs) - 1]
        per_layer = [
            self.prediction_heads(hs[l], references[l], mask_features, n, class_embeddings) for l in layers
        ]
        out = dict(per_layer[-1])
        out["aux_outputs"] = per_layer[:-1]
        return out

    def forward_generic(
        self,
        multi_scale_features: Sequence[Tensor],
        mask_features: Tensor,
        class_embeddings: Mapping[str, Tensor],
        targets: Optional[Sequence[Mapping[str, Tensor]]] = None,
        return_aux: bool = True,
        generator: Optional[torch.Generator] = None,
    ) -> dict:
        """Segment the images with the generic queries (see :mod:`.generic_queries`).

        Args:
            multi_scale_features, mask_features: as :meth:`forward`.
            class_embeddings: ``{"object": (C_o, D), "part": (C_p, D)}`` (``"part"`` optional).
            targets: training only: per image ``"labels"``, optional ``"part_labels"``, ``"boxes"`` (cxcywh
                normalized to the padded frame): denoising queries are made from them (``dn_num`` > 0).
            return_aux: also return the initial prediction and layers 0..L-2 (``aux_outputs``).
            generator: source of the denoising box noise.

        Returns:
            ``pred_logits`` (B, Q, C_o), ``pred_logits_part`` (B, Q, C_p) with parts, ``pred_masks`` (B, Q, h, w),
            ``pred_boxes`` (B, Q, 4) of the last layer; ``aux_outputs``: L dicts (initial prediction, layers
            0..L-2); ``interm_outputs``: the two-stage selection's; with denoising queries ``dn_outputs`` (the
            same keys and ``aux_outputs``) and ``dn_meta`` ``{"num_groups": G, "max_gt": m}``.
        """
        from .generic_queries import denoising_queries, generic_heads, generic_self_attn_mask, select_queries

        if self.num_queries == 0:
            raise ValueError("this decoder has no generic queries (MODEL.DECODER.NUM_OBJECT_QUERIES is 0)")
        memory, spatial_shapes, feature_level_start_index = self.flatten_memory(multi_scale_features)
        content, anchors, interm = select_queries(
            self, memory, spatial_shapes, mask_features, class_embeddings, self.num_queries
        )
        dn = None
        if self.training and targets is not None and self.dn_num > 0:
            dn = denoising_queries(targets, class_embeddings, self.lang_mapper, self.dn_num, self.noise_scale, generator)
        num_dn, dn_meta = 0, None
        if dn is not None:
            dn_content, dn_anchors, dn_meta = dn
            num_dn = dn_content.shape[1]
            content = torch.cat([dn_content.to(content.dtype), content], dim=1)
            anchors = torch.cat([dn_anchors.to(anchors.dtype), anchors], dim=1)
        tgt_mask = None
        if num_dn:
            tgt_mask = generic_self_attn_mask(num_dn, dn_meta["num_groups"], content.shape[1] - num_dn, content.device)
        hs, references = self.decoder(
            tgt=content,
            refpoints_unsigmoid=anchors,
            memory=memory,
            spatial_shapes=spatial_shapes,
            feature_level_start_index=feature_level_start_index,
            tgt_mask=tgt_mask,
        )
        sets = []
        if return_aux:
            sets.append(generic_heads(self, content, anchors.sigmoid(), mask_features, class_embeddings, True))
        layers = range(len(hs)) if return_aux else [len(hs) - 1]
        sets += [generic_heads(self, hs[l], references[l], mask_features, class_embeddings) for l in layers]

        def split(part: slice) -> list[dict]:
            return [{k: v[:, part] for k, v in outputs.items()} for outputs in sets]

        generic = split(slice(num_dn, None))
        out = {**generic[-1], "aux_outputs": generic[:-1], "interm_outputs": interm}
        if num_dn:
            dn_sets = split(slice(0, num_dn))
            out["dn_outputs"] = {**dn_sets[-1], "aux_outputs": dn_sets[:-1]}
            out["dn_meta"] = dn_meta
        return out

    @staticmethod
    def _check_inputs(boxes: Tensor, pb: Tensor, attn_mask: str, mask_features: Tensor) -> None:
        check_decoder_prompts(boxes, pb)
        check_attn_mask_mode(attn_mask)
        if mask_features.dim() != 4 or mask_features.shape[0] != boxes.shape[0]:
            raise ValueError(
                f"mask_features must be (B={boxes.shape[0]}, C, h, w), got {tuple(mask_features.shape)}"
            )
