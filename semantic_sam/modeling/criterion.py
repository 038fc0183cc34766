"""Training losses of Semantic-SAM: many-to-many (default) and many-to-one ("reproduce SAM").

Shape shorthand: B = images, N = prompts per image, K = output tokens per prompt, Q = N * K queries
(query q = prompt q // K, token q % K), L = decoder layers, M = supervised (query, target) pairs,
P = points per mask (``TRAIN_NUM_POINTS``). Boxes are cxcywh normalized.

Loss names: ``loss_mask_bce``, ``loss_mask_dice``, ``iou_score_loss``, ``loss_bbox``, ``loss_giou``,
each with a layer suffix: ``_0`` is the **last** decoder layer (``outputs``), ``_{i+1}`` is
``outputs["aux_outputs"][i]`` (decoder layer i). Every term is a sum over the supervised pairs
divided by ``num_masks``, the number of targets (many-to-many) or of prompts with a target
(many-to-one), averaged over processes and clamped at 1.

Per layer and pair (query q, GT mask g):

- points: ``sample_uncertain_points`` on the layer's own logits of q (3x oversampling, 75 % most
  uncertain, 25 % uniform); labels: bilinear samples of GT g at full padded resolution;
- ``loss_mask_bce``: mean BCE over the points; ``loss_mask_dice``: dice with +1 smoothing;
- ``iou_score_loss``: ``(pred_ious[q] - (1 - dice)) ** 2`` with the raw IoU score; the target is not
  detached in the reference (``detach_iou_target`` detaches it). With ``iou_target="prompt"`` the
  IoU-score term instead covers all K outputs of every prompt, each against its binary IoU with the
  prompt's own GT mask (:meth:`SemanticSamCriterion._prompt_iou_errors`), still divided by ``num_masks``;
- ``loss_bbox``: L1 summed over the 4 coordinates; ``loss_giou``: ``1 - GIoU``.

Many-to-many: the pairs are the matcher's assignment, computed once on the last layer and reused for
every layer (``match_each_layer`` re-matches each layer). Many-to-one: the target of every output
of prompt i is the GT the prompt was drawn from; per layer, only the output with the smallest
``bce + dice`` is supervised.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.utils.comm import get_world_size
from torch import Tensor

from semantic_sam.config import ConfigError
from semantic_sam.utils.random_draws import RandomSource, resolve_random_source

from .losses import box_l1_loss, dice_loss, giou_loss, iou_score_loss, sigmoid_ce_loss, sigmoid_focal_loss
from .matcher import ManyToManyMatcher
from .point_sampling import point_sample, sample_binary_masks, sample_uncertain_points

__all__ = ["CLASS_LOSS_NAMES", "LOSS_NAMES", "SemanticSamCriterion", "build_criterion", "check_criterion_options", "expand_weight_dict"]

IOU_TARGETS = ("matched", "prompt")
CLASS_LOSS_NORMALIZATIONS = ("reference", "num_masks")
_COST_KEYS = ("COST_MASK_WEIGHT", "COST_DICE_WEIGHT", "COST_BOX_WEIGHT", "COST_GIOU_WEIGHT")
LOSS_NAMES = ("loss_mask_bce", "loss_mask_dice", "iou_score_loss", "loss_bbox", "loss_giou")
# Labelled clicks (many-to-one only): object and part class losses of each click's best output.
CLASS_LOSS_NAMES = ("loss_mask_cls", "loss_mask_part_cls")


def expand_weight_dict(base: Mapping[str, float], num_layers: int, deep_supervision: bool = True) -> Dict[str, float]:
    """Per-layer loss weights: ``{name}_{s}`` for suffix s = 0 (last layer) .. L-1 (aux layers).

    Args:
        base: weight of each loss name (without suffix).
        num_layers: L, decoder layers (``DEC_LAYERS``).
        deep_supervision: False keeps the last layer's suffix ``_0`` only.
    """
    suffixes = range(num_layers) if deep_supervision else range(1)
    return {f"{name}_{s}": float(w) for s in suffixes for name, w in base.items()}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_WEIGHT_KEYS = (
    "MASK_WEIGHT", "DICE_WEIGHT", "BOX_WEIGHT", "GIOU_WEIGHT", "IOU_WEIGHT", "CLASS_WEIGHT", "PART_CLASS_WEIGHT",
    *_COST_KEYS,
)
_FLAG_KEYS = ("MANY_TO_ONE", "DEEP_SUPERVISION", "DETACH_IOU_TARGET", "MATCH_EACH_LAYER")
# The MODEL.DECODER keys that the criterion and its matcher read: key -> (value check, allowed values).
_OPTIONS: Dict[str, Tuple[Callable[[Any], bool], str]] = {
    "TRAIN_NUM_POINTS": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "OVERSAMPLE_RATIO": (lambda v: _is_number(v) and v >= 1, "a number >= 1"),
    "IMPORTANCE_SAMPLE_RATIO": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "NUM_INTERACTIVE_TOKENS": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "DEC_LAYERS": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "IOU_TARGET": (lambda v: v in IOU_TARGETS, f"one of {', '.join(map(repr, IOU_TARGETS))}"),
    "CLASS_LOSS_NORMALIZATION": (
        lambda v: v in CLASS_LOSS_NORMALIZATIONS, f"one of {', '.join(map(repr, CLASS_LOSS_NORMALIZATIONS))}"
    ),
    "FOCAL_ALPHA": (lambda v: _is_number(v) and (0 <= v <= 1 or v == -1), "a number in [0, 1], or -1 (no alpha)"),
    "FOCAL_GAMMA": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    **{key: (lambda v: isinstance(v, bool), "True or False") for key in _FLAG_KEYS},
    **{key: (lambda v: _is_number(v) and v >= 0, "a number >= 0 (a weight)") for key in _WEIGHT_KEYS},
}


def check_criterion_options(cfg) -> None:
    """Raise a :class:`~semantic_sam.config.ConfigError` naming the first ``MODEL.DECODER`` key that the
    criterion or its matcher cannot use (also for a config changed after loading, which
    :func:`~semantic_sam.config.load_config`'s checks did not see)."""
    dec = cfg.MODEL.DECODER
    for key, (ok, allowed) in _OPTIONS.items():
        if not ok(dec[key]):
            raise ConfigError(f"invalid value for config key 'MODEL.DECODER.{key}': {dec[key]!r}; allowed: {allowed}")
    if all(dec[key] == 0 for key in _COST_KEYS):
        raise ConfigError(
            f"invalid value for config key 'MODEL.DECODER.{_COST_KEYS[0]}': 0; allowed: a positive weight for at "
            f"least one of {', '.join('MODEL.DECODER.' + k for k in _COST_KEYS)}"
        )


def _num_normalizer(count: int, device: torch.device) -> float:
    """``count`` averaged over processes (``all_reduce`` when distributed), clamped at 1."""
    total = torch.as_tensor([float(count)], dtype=torch.float, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
    return torch.clamp(total / get_world_size(), min=1).item()


class SemanticSamCriterion:
    """Computes the unweighted training losses of every decoder layer.

    Holds no parameters or buffers (it is not an ``nn.Module``), so building it changes no state-dict key.
    ``weight_dict`` maps every loss key to its weight; the model multiplies each loss by it.
    """

    @configurable
    def __init__(
        self,
        *,
        matcher: ManyToManyMatcher,
        weight_dict: Mapping[str, float],
        num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
        num_tokens: int,
        many_to_one: bool = False,
        deep_supervision: bool = True,
        detach_iou_target: bool = False,
        match_each_layer: bool = False,
        iou_target: str = "matched",
        class_losses: bool = False,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        class_loss_normalization: str = "reference",
    ):
        """
        Args:
            matcher: the many-to-many matcher (unused when ``many_to_one``).
            weight_dict: weight of each loss key (see :func:`expand_weight_dict`).
            num_points: P, loss points per mask.
            oversample_ratio, importance_sample_ratio: uncertainty point sampling (3.0, 0.75).
            num_tokens: K, outputs per prompt.
            many_to_one: supervise only the best of each prompt's K outputs against the prompt's own
                GT (``MODEL.DECODER.MANY_TO_ONE``).
            deep_supervision: also supervise the auxiliary layers (``DEEP_SUPERVISION``).
            detach_iou_target: detach ``1 - dice`` in the IoU-score loss (``DETACH_IOU_TARGET``).
            match_each_layer: many-to-many: match every layer on its own outputs (``MATCH_EACH_LAYER``).
            iou_target: ``"matched"`` (reference): the IoU score of each supervised output learns
                ``1 - dice`` against its GT; ``"prompt"``: every output of every prompt learns its
                binary IoU with the GT mask the prompt was drawn from (``IOU_TARGET``, see
                :meth:`_prompt_iou_errors`).
            class_losses: labelled clicks: with ``labels`` given to :meth:`__call__`, also the sigmoid
                focal losses ``loss_mask_cls`` (object) and ``loss_mask_part_cls`` (part) of each click's
                best output (needs ``many_to_one``).
            focal_alpha, focal_gamma: focal-loss parameters (0.25, 2).
            class_loss_normalization: ``"reference"``: ``(Q / num_masks) * mean over clicks of the sum over
                classes`` (Q = queries per image; the reference's many-to-one criterion, 6x the mask
                losses' scale at 60 clicks); ``"num_masks"``: sum over clicks and classes / ``num_masks``.
        """
        if iou_target not in IOU_TARGETS:
            raise ValueError(f"MODEL.DECODER.IOU_TARGET must be one of {IOU_TARGETS}, got {iou_target!r}")
        if class_loss_normalization not in CLASS_LOSS_NORMALIZATIONS:
            raise ValueError(
                f"class_loss_normalization must be one of {CLASS_LOSS_NORMALIZATIONS}, got {class_loss_normalization!r}"
            )
        if class_losses and not many_to_one:
            raise ValueError("class losses are computed for many-to-one (labelled) clicks only")
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.num_tokens = num_tokens
        self.many_to_one = many_to_one
        self.deep_supervision = deep_supervision
        self.detach_iou_target = detach_iou_target
        self.match_each_layer = match_each_layer
        self.iou_target = iou_target
        self.class_losses = class_losses
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.class_loss_normalization = class_loss_normalization

    @classmethod
    def from_config(cls, cfg, labelled: bool = False) -> Dict[str, Any]:
        """The criterion's and its matcher's options from ``cfg.MODEL.DECODER``, checked first.

        ``labelled``: the criterion of labelled clicks (COCO, part datasets): many-to-one whatever
        ``MANY_TO_ONE`` says, plus the class losses weighted by ``CLASS_WEIGHT`` and ``PART_CLASS_WEIGHT``.

        Raises:
            ConfigError: a value they cannot use (:func:`check_criterion_options`).
        """
        check_criterion_options(cfg)
        dec = cfg.MODEL.DECODER
        base = {
            "loss_mask_bce": dec.MASK_WEIGHT,
            "loss_mask_dice": dec.DICE_WEIGHT,
            "iou_score_loss": dec.IOU_WEIGHT,
            "loss_bbox": dec.BOX_WEIGHT,
            "loss_giou": dec.GIOU_WEIGHT,
        }
        if labelled:
            base.update(loss_mask_cls=dec.CLASS_WEIGHT, loss_mask_part_cls=dec.PART_CLASS_WEIGHT)
        return {
            "matcher": ManyToManyMatcher(cfg),
            "weight_dict": expand_weight_dict(base, dec.DEC_LAYERS, dec.DEEP_SUPERVISION),
            "num_points": dec.TRAIN_NUM_POINTS,
            "oversample_ratio": dec.OVERSAMPLE_RATIO,
            "importance_sample_ratio": dec.IMPORTANCE_SAMPLE_RATIO,
            "num_tokens": dec.NUM_INTERACTIVE_TOKENS,
            "many_to_one": dec.MANY_TO_ONE or labelled,
            "deep_supervision": dec.DEEP_SUPERVISION,
            "detach_iou_target": dec.DETACH_IOU_TARGET,
            "match_each_layer": dec.MATCH_EACH_LAYER,
            "iou_target": dec.IOU_TARGET,
            "class_losses": labelled,
            "focal_alpha": dec.FOCAL_ALPHA,
            "focal_gamma": dec.FOCAL_GAMMA,
            "class_loss_normalization": dec.CLASS_LOSS_NORMALIZATION,
        }

    # ------------------------------------------------------------------ entry point
    def __call__(
        self,
        outputs: Dict[str, Any],
        targets: List[Dict[str, Any]],
        rng: Optional[RandomSource] = None,
        generator: Optional[torch.Generator] = None,
        details: Optional[Dict[str, Any]] = None,
        labels: Optional[List[Mapping[str, Tensor]]] = None,
    ) -> Dict[str, Tensor]:
        """Unweighted losses of all decoder layers.

        Args:
            outputs: the decoder's training outputs: ``pred_masks`` (B, Q, h, w) logits,
                ``pred_boxes`` (B, Q, 4), ``pred_ious`` (B, N, K) raw, ``aux_outputs`` (list of
                L-1 dicts with the same keys, decoder layers 0 .. L-2).
            targets: B dicts from :func:`semantic_sam.data.prompt_sampling.prepare_click_targets`,
                the boxes in the frame of ``pred_boxes``.
            rng: source of the matcher's and the losses' random points, drawn in the reference's
                order (matcher, then the last layer's losses, then aux layers 0, 1, ...);
                default: torch's global generator (or ``generator``).
            generator: draw the random points from this generator.
            details: if a dict is given, it is filled with ``indices`` (the matcher's assignment,
                many-to-many), ``num_masks`` and per decoder layer ``layers[l]`` the per-pair
                tensors (``point_coords``, ``point_labels``, ``point_logits``, ``bce``, ``dice``, ...).
            labels: labelled clicks (a criterion built with ``class_losses``): per image
                ``{"object": (N,) int64, "part": (N,) int64}``, each prompt's object and part class
                (-1: none; that prompt gets no loss of that kind). The outputs then carry
                ``pred_logits`` (B, Q, C_o) (and ``pred_logits_part`` (B, Q, C_p) for part data).

        Returns:
            ``{f"{name}_{s}": scalar tensor}`` for the names in ``LOSS_NAMES`` (then ``loss_mask_cls`` when
            the outputs have ``pred_logits`` and ``loss_mask_part_cls`` when they have
            ``pred_logits_part``, with ``labels``), s = 0 (last layer), 1 .. L-1 (aux layers 0 .. L-2).
        """
        pred_masks = outputs["pred_masks"]
        num_images, num_queries = pred_masks.shape[:2]
        if len(targets) != num_images:
            raise ValueError(f"{len(targets)} targets for a batch of {num_images} images")
        if num_queries % self.num_tokens:
            raise ValueError(f"{num_queries} queries is not a multiple of K = {self.num_tokens}")
        if labels is not None:
            if not self.class_losses:
                raise ValueError("labels given to a criterion without class losses (build it with labelled=True)")
            if len(labels) != num_images:
                raise ValueError(f"{len(labels)} label sets for a batch of {num_images} images")
        rng = resolve_random_source(rng, generator)
        aux = list(outputs.get("aux_outputs") or [])
        # (suffix, decoder layer, outputs), last layer first as the reference.
        layers = [(0, len(aux), outputs)]
        if self.deep_supervision:
            layers += [(i + 1, i, out) for i, out in enumerate(aux)]

        if self.many_to_one:
            count = sum(int((t["prompt_gt_inds"] >= 0).sum()) for t in targets)
        else:
            count = sum(len(t["target_gt_inds"]) for t in targets)
        num_masks = _num_normalizer(count, pred_masks.device)
        if details is not None:
            details["num_masks"] = num_masks
            details["layers"] = {}

        indices = None
        if not self.many_to_one:
            indices = self.matcher(outputs, targets, rng=rng)
            if details is not None:
                details["indices"] = indices

        # the prompts' GT masks at logit resolution, shared by every layer's IoU-score term
        prompt_gts = self._prompt_gts(targets, pred_masks) if self.iou_target == "prompt" else None
        losses: Dict[str, Tensor] = {}
        for suffix, layer, layer_outputs in layers:
            layer_details: Optional[Dict[str, Tensor]] = {} if details is not None else None
            if self.many_to_one:
                layer_losses = self._many_to_one_losses(
                    layer_outputs, targets, num_masks, rng, layer_details, prompt_gts, labels
                )
            else:
                layer_indices = indices
                if self.match_each_layer and suffix != 0:
                    layer_indices = self.matcher(layer_outputs, targets, rng=rng)
                    if layer_details is not None:
                        layer_details["indices"] = layer_indices
                layer_losses = self._many_to_many_losses(
                    layer_outputs, targets, layer_indices, num_masks, rng, layer_details, prompt_gts
                )
            if details is not None:
                details["layers"][layer] = layer_details
            losses.update({f"{name}_{suffix}": layer_losses[name] for name in (*LOSS_NAMES, *CLASS_LOSS_NAMES)
                           if name in layer_losses})
        return losses

    # ------------------------------------------------------------------ shared pieces
    def _point_losses(
        self,
        pred_masks: Tensor,
        batch_idx: Tensor,
        query_idx: Tensor,
        gt_idx: Tensor,
        targets: List[Dict[str, Any]],
        rng: RandomSource,
        details: Optional[Dict[str, Tensor]],
    ) -> Tuple[Tensor, Tensor]:
        """Per-pair mask BCE and dice on uncertainty-sampled points. Returns two (M,) tensors."""
        src = pred_masks[batch_idx, query_idx][:, None].float()
        coords = sample_uncertain_points(
            src.detach(), self.num_points, self.oversample_ratio, self.importance_sample_ratio, rng
        )
        labels = torch.empty(coords.shape[:2], dtype=torch.float32, device=coords.device)
        for b, target in enumerate(targets):
            sel = batch_idx == b
            if bool(sel.any()):
                labels[sel] = sample_binary_masks(target["ori_masks"].to(coords.device), gt_idx[sel], coords[sel])
        logits = point_sample(src, coords, align_corners=False).squeeze(1)
        bce = sigmoid_ce_loss(logits, labels)
        dice = dice_loss(logits, labels)
        if details is not None:
            details.update(point_coords=coords, point_labels=labels, point_logits=logits, bce=bce, dice=dice)
        return bce, dice

    def _iou_target(self, dice: Tensor) -> Tensor:
        target = 1 - dice
        return target.detach() if self.detach_iou_target else target

    def _prompt_gts(self, targets: List[Dict[str, Any]], pred_masks: Tensor) -> List[Optional[Tuple[Tensor, Tensor]]]:
        """Per image: the prompts that have a GT mask (n,) and those masks area-averaged to the
        mask-logit size, (n, 1, h, w) in [0, 1] (masks smaller than a logit cell still count);
        None for an image without such prompts."""
        h, w = pred_masks.shape[-2:]
        out: List[Optional[Tuple[Tensor, Tensor]]] = []
        for target in targets:
            gt_of_prompt = target["prompt_gt_inds"].to(pred_masks.device)
            keep = (gt_of_prompt >= 0).nonzero().squeeze(1)
            if len(keep) == 0:
                out.append(None)
                continue
            gt = target["ori_masks"].to(pred_masks.device)[gt_of_prompt[keep]]
            out.append((keep, F.interpolate(gt[:, None].float(), size=(h, w), mode="area")))
        return out

    def _prompt_iou_errors(
        self, outputs: Dict[str, Any], prompt_gts: List[Optional[Tuple[Tensor, Tensor]]]
    ) -> Tuple[Tensor, Tensor]:
        """IoU-score errors of all K outputs of every prompt against the prompt's own GT mask.

        The target is the binary IoU of the output (logits > 0, at the mask-logit resolution
        (h, w)) with the GT mask the prompt was drawn from (from :meth:`_prompt_gts`):
        ``IoU = sum(p * g) / (sum(p) + sum(g) - sum(p * g))`` with p binary and g in [0, 1].
        No gradient reaches the masks.

        Returns:
            ``(pred_ious, errors)``, both (M,) with M = K x (prompts with a GT), prompt-major.
        """
        pred_masks, k = outputs["pred_masks"], self.num_tokens
        h, w = pred_masks.shape[-2:]
        preds, errs = [], []
        for b, image_gts in enumerate(prompt_gts):
            if image_gts is None:
                continue
            keep, gt = image_gts
            with torch.no_grad():
                binary = (pred_masks[b].view(-1, k, h, w)[keep] > 0).float()
                inter = (binary * gt).flatten(2).sum(-1)
                union = binary.flatten(2).sum(-1) + gt.flatten(2).sum(-1) - inter
                iou = inter / union.clamp(min=1e-6)
            pred = outputs["pred_ious"][b][keep].float()
            preds.append(pred.flatten())
            errs.append(iou_score_loss(pred.flatten(), iou.flatten()))
        if not preds:
            zero = outputs["pred_ious"].sum() * 0.0
            return zero[None], zero[None]
        return torch.cat(preds), torch.cat(errs)

    @staticmethod
    def _zero_losses(outputs: Dict[str, Any], labels: Optional[List[Mapping[str, Tensor]]] = None) -> Dict[str, Tensor]:
        """Zero losses that keep the outputs in the graph (an image batch without any target)."""
        mask_zero = outputs["pred_masks"].sum() * 0.0
        box_zero = outputs["pred_boxes"].sum() * 0.0
        zeros = {}
        if labels is not None:
            for name, key in zip(CLASS_LOSS_NAMES, ("pred_logits", "pred_logits_part")):
                if key in outputs:
                    zeros[name] = outputs[key].sum() * 0.0
        return {
            **zeros,
            "loss_mask_bce": mask_zero,
            "loss_mask_dice": mask_zero,
            "iou_score_loss": mask_zero + outputs["pred_ious"].sum() * 0.0,
            "loss_bbox": box_zero,
            "loss_giou": box_zero,
        }

    @staticmethod
    def _normalized_losses(
        bce: Tensor, dice: Tensor, iou_err: Tensor, l1: Tensor, giou: Tensor, num_masks: float
    ) -> Dict[str, Tensor]:
        """Per-pair terms (P,) -> the loss dict: each summed over pairs and divided by ``num_masks``."""
        return {
            "loss_mask_bce": bce.sum() / num_masks,
            "loss_mask_dice": dice.sum() / num_masks,
            "iou_score_loss": iou_err.sum() / num_masks,
            "loss_bbox": l1.sum() / num_masks,
            "loss_giou": giou.sum() / num_masks,
        }

    # ------------------------------------------------------------------ many-to-many
    def _many_to_many_losses(
        self,
        outputs: Dict[str, Any],
        targets: List[Dict[str, Any]],
        indices: Sequence[Tuple[Tensor, Tensor]],
        num_masks: float,
        rng: RandomSource,
        details: Optional[Dict[str, Tensor]],
        prompt_gts: Optional[List[Optional[Tuple[Tensor, Tensor]]]] = None,
    ) -> Dict[str, Tensor]:
        pred_masks = outputs["pred_masks"]
        device = pred_masks.device
        batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)]).to(device)
        query_idx = torch.cat([src for src, _ in indices]).to(device)
        gt_idx = torch.cat([t["target_gt_inds"].to(device)[tgt.to(device)] for t, (_, tgt) in zip(targets, indices)])
        if len(query_idx) == 0:
            return self._zero_losses(outputs)

        bce, dice = self._point_losses(pred_masks, batch_idx, query_idx, gt_idx, targets, rng, details)
        if prompt_gts is not None:
            pred_ious, iou_err = self._prompt_iou_errors(outputs, prompt_gts)
        else:
            pred_ious = outputs["pred_ious"].flatten(1)[batch_idx, query_idx].float()
            iou_err = iou_score_loss(pred_ious, self._iou_target(dice))
        pred_boxes = outputs["pred_boxes"][batch_idx, query_idx].float()
        gt_boxes = torch.cat(
            [
                t["ori_boxes"].to(device)[t["target_gt_inds"].to(device)[tgt.to(device)]]
                for t, (_, tgt) in zip(targets, indices)
            ]
        ).float()
        l1 = box_l1_loss(pred_boxes, gt_boxes)
        giou = giou_loss(pred_boxes, gt_boxes)
        if details is not None:
            details.update(
                iou_pred=pred_ious, iou_sq_err=iou_err, box_pred=pred_boxes, box_target=gt_boxes, l1=l1, giou_loss=giou
            )
        return self._normalized_losses(bce, dice, iou_err, l1, giou, num_masks)

    # ------------------------------------------------------------------ many-to-one
    def _many_to_one_losses(
        self,
        outputs: Dict[str, Any],
        targets: List[Dict[str, Any]],
        num_masks: float,
        rng: RandomSource,
        details: Optional[Dict[str, Tensor]],
        prompt_gts: Optional[List[Optional[Tuple[Tensor, Tensor]]]] = None,
        labels: Optional[List[Mapping[str, Tensor]]] = None,
    ) -> Dict[str, Tensor]:
        pred_masks = outputs["pred_masks"]
        device = pred_masks.device
        k = self.num_tokens
        # Every output of every prompt that has a target, prompt-major: (b, i, token).
        batch_of_prompt, prompt_idx, gt_of_prompt = [], [], []
        for b, target in enumerate(targets):
            gt = target["prompt_gt_inds"].to(device)
            keep = (gt >= 0).nonzero().squeeze(1)
            batch_of_prompt.append(torch.full_like(keep, b))
            prompt_idx.append(keep)
            gt_of_prompt.append(gt[keep])
        batch_of_prompt = torch.cat(batch_of_prompt)
        prompt_idx = torch.cat(prompt_idx)
        gt_of_prompt = torch.cat(gt_of_prompt)
        if len(prompt_idx) == 0:
            return self._zero_losses(outputs, labels)
        tokens = torch.arange(k, device=device)
        batch_idx = batch_of_prompt.repeat_interleave(k)
        query_idx = (prompt_idx[:, None] * k + tokens[None, :]).flatten()
        gt_idx = gt_of_prompt.repeat_interleave(k)

        bce, dice = self._point_losses(pred_masks, batch_idx, query_idx, gt_idx, targets, rng, details)
        best = (bce + dice).view(-1, k).min(1).indices

        def pick(per_output: Tensor) -> Tensor:
            return per_output.view(-1, k).gather(1, best[:, None]).squeeze(1)

        bce_best, dice_best = pick(bce), pick(dice)
        if prompt_gts is not None:
            pred_ious, iou_err = self._prompt_iou_errors(outputs, prompt_gts)
        else:
            pred_ious = outputs["pred_ious"][batch_of_prompt, prompt_idx].float().gather(1, best[:, None]).squeeze(1)
            iou_err = iou_score_loss(pred_ious, self._iou_target(dice_best))
        pred_boxes = outputs["pred_boxes"][batch_idx, query_idx].float()
        gt_boxes = torch.cat([t["ori_boxes"].to(device)[gt_idx[batch_idx == b]] for b, t in enumerate(targets)]).float()
        l1 = pick(box_l1_loss(pred_boxes, gt_boxes))
        giou = pick(giou_loss(pred_boxes, gt_boxes))
        if details is not None:
            details.update(best_token=best, iou_pred=pred_ious, iou_sq_err=iou_err, l1=l1, giou_loss=giou)
        losses = self._normalized_losses(bce_best, dice_best, iou_err, l1, giou, num_masks)
        if labels is not None:
            best_query = prompt_idx * k + best
            for name, logit_key, label_key in zip(CLASS_LOSS_NAMES, ("pred_logits", "pred_logits_part"), ("object", "part")):
                if logit_key not in outputs:
                    continue
                logits = outputs[logit_key][batch_of_prompt, best_query]
                classes = torch.cat(
                    [labels[b][label_key].to(device)[prompt_idx[batch_of_prompt == b]] for b in range(len(targets))]
                )
                losses[name] = self._class_loss(logits, classes, outputs[logit_key].shape[1], num_masks)
                if details is not None:
                    details[f"{label_key}_logits"], details[f"{label_key}_classes"] = logits, classes
        return losses

    def _class_loss(self, logits: Tensor, classes: Tensor, num_queries: int, num_masks: float) -> Tensor:
        """Sigmoid focal loss of the best outputs' logits (M, C) against their classes (M,) (-1: skipped).

        ``"reference"`` normalisation: ``num_queries / num_masks * mean_j sum_c FL``; ``"num_masks"``:
        ``sum_j sum_c FL / num_masks``.
        """
        valid = classes >= 0
        if not bool(valid.any()):
            return logits.sum() * 0.0
        logits = logits[valid].float()
        classes = classes[valid]
        if int(classes.max()) >= logits.shape[1]:
            raise ValueError(f"class id {int(classes.max())} is out of range for {logits.shape[1]} class logits")
        onehot = torch.zeros_like(logits).scatter_(1, classes[:, None], 1.0)
        per_click = sigmoid_focal_loss(logits, onehot, self.focal_alpha, self.focal_gamma).sum(-1)
        if self.class_loss_normalization == "reference":
            return per_click.mean() * num_queries / num_masks
        return per_click.sum() / num_masks

    def __repr__(self) -> str:
        mode = "many_to_one" if self.many_to_one else "many_to_many"
        return (
            f"{type(self).__name__}(mode={mode}, num_points={self.num_points}, "
            f"oversample_ratio={self.oversample_ratio}, importance_sample_ratio={self.importance_sample_ratio}, "
            f"num_tokens={self.num_tokens}, detach_iou_target={self.detach_iou_target}, "
            f"iou_target={self.iou_target!r}, "
            f"match_each_layer={self.match_each_layer}, matcher={self.matcher!r}, weight_dict={self.weight_dict})"
        )


def build_criterion(cfg, labelled: bool = False) -> SemanticSamCriterion:
    """The training criterion configured by ``cfg.MODEL.DECODER`` (many-to-one if ``MANY_TO_ONE``);
    ``labelled``: the many-to-one criterion with class losses for labelled clicks.

    Raises:
        ConfigError: an option the criterion or its matcher cannot use, named by its key.
    """
    return SemanticSamCriterion(cfg, labelled=labelled)
