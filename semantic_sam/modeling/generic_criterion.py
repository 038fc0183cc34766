"""Losses of the generic queries: Hungarian-matched sets, two-stage ``interm`` outputs, denoising groups
(SEMANTIC_SPEC §5.5-5.6, Mask DINO's set criterion).

Shape shorthand: B = images, Q = queries of a set, G_i = GT segments of image i, C_o / C_p = object / part
classes, M = supervised (query, GT) pairs, P = loss points per mask (``TRAIN_NUM_POINTS``), (h, w) = mask-logit
size, (Hp, Wp) = padded GT size. Boxes are cxcywh normalized to the padded frame.

**Output sets and their keys.** ``generic_{name}_{s}`` for the final output (s = 0) and
``outputs["aux_outputs"][s - 1]`` (s = 1 .. L: the initial prediction, then decoder layers 0 .. L-2);
``generic_{name}_0_interm`` for ``outputs["interm_outputs"]`` (the two-stage selection; the reference's
``loss_mask_cls_0_interm``); ``generic_{name}_{s}_dn`` for the denoising outputs ``outputs["dn_outputs"]``
(s = 0) and their own ``aux_outputs`` (s = 1 ..). The names are those of :data:`GENERIC_LOSS_NAMES`;
:func:`generic_weight_dict` builds the weights of every key.

**Pairs.** Each generic set (final, every auxiliary one, ``interm``) is matched on its own outputs by the
Hungarian matcher (§5.5). Denoising sets use the fixed group pairing: with G groups of m = max_gt rows, DN
query ``g * m + j`` of image i is paired with its GT j for j < G_i; rows j >= G_i are batch padding and get
no mask or box loss (:func:`denoising_pairs`).

**Normalizer.** N = the batch's GT count averaged over processes, clamped >= 1; N * G for denoising sets.

**Terms** (each a sum, divided by the set's normalizer):

- ``loss_mask_cls``: sigmoid focal loss over all queries of the set and all C_o classes; a paired query's
  target is one-hot at its GT's object class, every other query's target all zeros. On denoising sets this
  is Mask DINO's form (§5.6): all DN rows, the padding rows as all-zero (no-object) targets.
- ``loss_mask_part_cls`` (outputs with ``pred_logits_part``, part data): the same over C_p, one-hot at the
  GT's part class. A paired query whose GT has no part (part label -1, a whole object) gets all zeros, like
  an unpaired query: a whole object should score low on every part class (the inference keeps a part label
  only above a score threshold).
- ``loss_mask_bce`` / ``loss_mask_dice``: per pair, mean BCE / dice (+1 smoothing) on P points: the 75 % most
  uncertain of 3P uniform candidates plus 25 % uniform points, the GT sampled at full padded resolution.
- ``loss_bbox``: L1 summed over the 4 coordinates; ``loss_giou``: 1 - GIoU.

A set without pairs (no GT in the batch) still gives finite losses connected to its outputs: the class terms
against all-zero targets, the mask and box terms ``0 * sum(outputs)``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from detectron2.config import configurable
from torch import Tensor

from semantic_sam.config import ConfigError
from semantic_sam.utils.random_draws import RandomSource, resolve_random_source

from .criterion import _OPTIONS, _num_normalizer
from .generic_matcher import GenericHungarianMatcher, check_generic_target, target_part_labels
from .losses import box_l1_loss, dice_loss, giou_loss, sigmoid_ce_loss, sigmoid_focal_loss
from .point_sampling import point_sample, sample_binary_masks, sample_uncertain_points

__all__ = [
    "GENERIC_LOSS_NAMES",
    "GenericCriterion",
    "build_generic_criterion",
    "denoising_pairs",
    "generic_loss_key",
    "generic_weight_dict",
]

GENERIC_LOSS_NAMES = (
    "loss_mask_cls",
    "loss_mask_part_cls",
    "loss_mask_bce",
    "loss_mask_dice",
    "loss_bbox",
    "loss_giou",
)
_SET_KINDS = ("", "interm", "dn")

Pairs = List[Tuple[Tensor, Tensor]]


def generic_loss_key(name: str, set_index: int, kind: str = "") -> str:
    """The key of loss ``name`` of output set ``set_index``: ``generic_{name}_{s}`` (kind ``""``),
    ``generic_{name}_{s}_interm`` or ``generic_{name}_{s}_dn``."""
    if kind not in _SET_KINDS:
        raise ValueError(f"kind must be one of {_SET_KINDS}, got {kind!r}")
    return f"generic_{name}_{set_index}" + (f"_{kind}" if kind else "")


def generic_weight_dict(base: Mapping[str, float], num_sets: int) -> Dict[str, float]:
    """Weights of every key the generic criterion can produce.

    Args:
        base: weight of each loss name of :data:`GENERIC_LOSS_NAMES` (without prefix or suffix).
        num_sets: output sets per pass, final + auxiliary (``DEC_LAYERS + 1``: the final layer, the initial
            prediction and decoder layers 0 .. L-2).

    Returns:
        ``generic_{name}_{s}`` and ``generic_{name}_{s}_dn`` for s = 0 .. num_sets - 1, and
        ``generic_{name}_0_interm``, each with ``base[name]``.
    """
    unknown = set(base) - set(GENERIC_LOSS_NAMES)
    if unknown:
        raise ValueError(f"unknown generic loss names {sorted(unknown)}; known: {GENERIC_LOSS_NAMES}")
    weights = {}
    for name, weight in base.items():
        for s in range(num_sets):
            weights[generic_loss_key(name, s)] = float(weight)
            weights[generic_loss_key(name, s, "dn")] = float(weight)
        weights[generic_loss_key(name, 0, "interm")] = float(weight)
    return weights


def denoising_pairs(num_groups: int, max_gt: int, counts: Sequence[int]) -> Pairs:
    """Fixed pairing of the denoising queries with the GT (SEMANTIC_SPEC §5.3).

    Query ``g * m + j`` (group g, row j; m = ``max_gt``) is group g's noised copy of GT j; rows with
    j >= the image's GT count are padding and are not paired.

    Args:
        num_groups: G.
        max_gt: m, the largest GT count of the batch.
        counts: B GT counts, each <= m.

    Returns:
        B pairs ``(query_idx, target_idx)`` of int64 CPU tensors of length G * G_i, group-major (sorted by query).
    """
    pairs = []
    for b, n in enumerate(counts):
        if n > max_gt:
            raise ValueError(f"image {b} has {n} GT segments but the denoising groups hold max_gt = {max_gt}")
        rows = torch.arange(n, dtype=torch.int64)
        query_idx = (torch.arange(num_groups, dtype=torch.int64)[:, None] * max_gt + rows[None]).flatten()
        pairs.append((query_idx, rows.repeat(num_groups)))
    return pairs


class GenericCriterion:
    """Computes the unweighted losses of every generic output set (see the module docstring).

    Holds no parameters or buffers (it is not an ``nn.Module``). ``weight_dict`` maps every loss key to its
    weight; the model multiplies each loss by it.
    """

    @configurable
    def __init__(
        self,
        matcher: GenericHungarianMatcher,
        weight_dict: Mapping[str, float],
        num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        denoising: bool = False,
    ):
        """
        Args:
            matcher: the Hungarian matcher of the generic sets.
            weight_dict: weight of every key this criterion produces (:func:`generic_weight_dict`); a call
                that would produce a key missing from it raises ``ValueError``.
            num_points: P, loss points per mask (``TRAIN_NUM_POINTS``).
            oversample_ratio, importance_sample_ratio: uncertainty point sampling (3.0, 0.75).
            focal_alpha, focal_gamma: focal-loss parameters (0.25, 2; alpha -1: no alpha weighting).
            denoising: DN training is on (``DN: seg``, ``DN_NUM > 0``). A step without ``dn_outputs`` (no GT in the
                batch, or more GT than ``DN_NUM``) then still returns the ``_dn`` keys, as zeros connected to the
                generic outputs, one per generic set, so that every step and process reports the same keys.
        """
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.denoising = denoising

    @classmethod
    def from_config(cls, cfg) -> Dict[str, Any]:
        """The criterion's and its matcher's options from ``cfg.MODEL.DECODER``, checked first.

        Raises:
            ConfigError: a value they cannot use, named by its key.
        """
        check_generic_criterion_options(cfg)
        dec = cfg.MODEL.DECODER
        base = {
            "loss_mask_cls": dec.CLASS_WEIGHT,
            "loss_mask_part_cls": dec.PART_CLASS_WEIGHT,
            "loss_mask_bce": dec.MASK_WEIGHT,
            "loss_mask_dice": dec.DICE_WEIGHT,
            "loss_bbox": dec.BOX_WEIGHT,
            "loss_giou": dec.GIOU_WEIGHT,
        }
        return {
            "matcher": GenericHungarianMatcher(cfg),
            "weight_dict": generic_weight_dict(base, dec.DEC_LAYERS + 1),
            "num_points": dec.TRAIN_NUM_POINTS,
            "oversample_ratio": dec.OVERSAMPLE_RATIO,
            "importance_sample_ratio": dec.IMPORTANCE_SAMPLE_RATIO,
            "focal_alpha": dec.FOCAL_ALPHA,
            "focal_gamma": dec.FOCAL_GAMMA,
            "denoising": dec.DN == "seg" and dec.DN_NUM > 0,
        }

    # ------------------------------------------------------------------ entry point
    def __call__(
        self,
        outputs: Mapping[str, Any],
        targets: Sequence[Mapping[str, Tensor]],
        rng: Optional[RandomSource] = None,
        generator: Optional[torch.Generator] = None,
        details: Optional[Dict[str, Any]] = None,
    ) -> Dict[str, Tensor]:
        """Unweighted losses of every output set.

        Args:
            outputs: ``pred_logits`` (B, Q, C_o) raw, optional ``pred_logits_part`` (B, Q, C_p), ``pred_masks``
                (B, Q, h, w) logits, ``pred_boxes`` (B, Q, 4) cxcywh normalized; ``aux_outputs``: list of such
                dicts (the initial prediction, then decoder layers 0 .. L-2); optional ``interm_outputs`` (such
                a dict); optional ``dn_outputs`` (such a dict over the G * m denoising queries, with its own
                ``aux_outputs``) and ``dn_meta = {"num_groups": G, "max_gt": m}``, either in ``outputs`` or in
                ``outputs["dn_outputs"]``.
            targets: B dicts: ``labels`` (G_i,) int64 object classes, ``part_labels`` (G_i,) int64 (-1: none;
                needed when the outputs have part logits), ``masks`` (G_i, Hp, Wp) bool, ``boxes`` (G_i, 4)
                cxcywh normalized.
            rng: source of the matcher's and the losses' random points, drawn set by set (final, auxiliary
                sets in order, interm, denoising sets), each set's matcher points before its loss points;
                default: torch's global generator (or ``generator``).
            generator: draw the random points from this generator.
            details: if a dict is given, it receives ``num_masks`` (N), ``num_groups`` (G, when denoising)
                and ``indices``: per set suffix (``"0"``, ``"1"``, ..., ``"0_interm"``, ``"0_dn"``, ...) the B
                ``(query_idx, target_idx)`` pairs it was supervised with.

        Returns:
            ``{key: scalar tensor}`` with the keys of the module docstring (``loss_mask_part_cls`` only for sets
            with part logits).

        Raises:
            ValueError: wrong batch size, a label out of range, part logits without ``part_labels``, denoising
                outputs that do not fit ``dn_meta``, or a key missing from ``weight_dict``.
        """
        num_images = outputs["pred_logits"].shape[0]
        if len(targets) != num_images:
            raise ValueError(f"{len(targets)} targets for a batch of {num_images} images")
        for b, target in enumerate(targets):
            check_generic_target(target, outputs["pred_logits"].shape[-1], b)
            if "pred_logits_part" in outputs:
                target_part_labels(target, outputs["pred_logits_part"].shape[-1], b)
        rng = resolve_random_source(rng, generator)
        counts = [len(t["labels"]) for t in targets]
        device = outputs["pred_logits"].device
        num_masks = _num_normalizer(sum(counts), device)
        if details is not None:
            details["num_masks"] = num_masks
            details["indices"] = {}

        losses: Dict[str, Tensor] = {}
        # (set index, kind, outputs) of the Hungarian-matched sets, in the order their points are drawn.
        aux_sets = outputs.get("aux_outputs") or []
        matched_sets = [(0, "", outputs)] + [(i + 1, "", aux) for i, aux in enumerate(aux_sets)]
        if outputs.get("interm_outputs") is not None:
            matched_sets.append((0, "interm", outputs["interm_outputs"]))
        for s, kind, set_outputs in matched_sets:
            pairs = self.matcher(set_outputs, targets, rng=rng)
            self._add_set(losses, details, s, kind, set_outputs, targets, pairs, num_masks, rng)

        dn_outputs = outputs.get("dn_outputs")
        if dn_outputs is not None:
            num_groups, max_gt = self._dn_meta(outputs, dn_outputs)
            if details is not None:
                details["num_groups"] = num_groups
            pairs = denoising_pairs(num_groups, max_gt, counts)
            dn_sets = [dn_outputs] + list(dn_outputs.get("aux_outputs") or [])
            for s, set_outputs in enumerate(dn_sets):
                if set_outputs["pred_logits"].shape[1] != num_groups * max_gt:
                    raise ValueError(
                        f"denoising set {s} has {set_outputs['pred_logits'].shape[1]} queries, dn_meta says "
                        f"G * m = {num_groups} * {max_gt}"
                    )
                self._add_set(losses, details, s, "dn", set_outputs, targets, pairs, num_masks * num_groups, rng)
        elif self.denoising:
            num_sets = 1 + len(aux_sets)
            zeros = self._zero_losses(outputs)
            for s in range(num_sets):
                losses.update({generic_loss_key(name, s, "dn"): value for name, value in zeros.items()})

        missing = sorted(k for k in losses if k not in self.weight_dict)
        if missing:
            more = " ..." if len(missing) > 6 else ""
            raise ValueError(f"losses without a weight in weight_dict: {missing[:6]}{more}")
        return losses

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _dn_meta(outputs: Mapping[str, Any], dn_outputs: Mapping[str, Any]) -> Tuple[int, int]:
        meta = dn_outputs.get("dn_meta", outputs.get("dn_meta"))
        if meta is None:
            raise ValueError("dn_outputs without dn_meta = {'num_groups': G, 'max_gt': m}")
        num_groups, max_gt = int(meta["num_groups"]), int(meta["max_gt"])
        if num_groups < 1 or max_gt < 1:
            raise ValueError(f"dn_meta needs num_groups >= 1 and max_gt >= 1, got {dict(meta)}")
        return num_groups, max_gt

    def _add_set(
        self,
        losses: Dict[str, Tensor],
        details: Optional[Dict[str, Any]],
        set_index: int,
        kind: str,
        set_outputs: Mapping[str, Tensor],
        targets: Sequence[Mapping[str, Tensor]],
        pairs: Pairs,
        normalizer: float,
        rng: RandomSource,
    ) -> None:
        set_losses = self.set_losses(set_outputs, targets, pairs, normalizer, rng)
        losses.update({generic_loss_key(name, set_index, kind): value for name, value in set_losses.items()})
        if details is not None:
            details["indices"][f"{set_index}_{kind}" if kind else str(set_index)] = pairs

    def set_losses(
        self,
        outputs: Mapping[str, Tensor],
        targets: Sequence[Mapping[str, Tensor]],
        pairs: Pairs,
        normalizer: float,
        rng: Optional[RandomSource] = None,
    ) -> Dict[str, Tensor]:
        """The losses of one output set with given pairs.

        Args:
            outputs: one set (``pred_logits``, optional ``pred_logits_part``, ``pred_masks``, ``pred_boxes``).
            targets: the B target dicts.
            pairs: B ``(query_idx, target_idx)`` int64 tensors (the matcher's or :func:`denoising_pairs`).
            normalizer: N (or N * G).
            rng: source of the loss points (default: torch's global generator).

        Returns:
            ``{name: scalar}`` for the names of :data:`GENERIC_LOSS_NAMES` (``loss_mask_part_cls`` only with
            part logits).
        """
        rng = resolve_random_source(rng)
        device = outputs["pred_logits"].device
        batch_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(pairs)]).to(device)
        query_idx = torch.cat([q for q, _ in pairs]).to(device)

        def gather(key: str) -> Tensor:
            return torch.cat([t[key].to(device)[tgt.to(device)] for t, (_, tgt) in zip(targets, pairs)])

        labels = gather("labels")
        losses = {"loss_mask_cls": self._class_loss(outputs["pred_logits"], batch_idx, query_idx, labels, normalizer)}
        if "pred_logits_part" in outputs:
            losses["loss_mask_part_cls"] = self._class_loss(
                outputs["pred_logits_part"], batch_idx, query_idx, gather("part_labels"), normalizer
            )
        if len(query_idx) == 0:
            zeros = self._zero_losses(outputs)
            losses.update({name: zeros[name] for name in ("loss_mask_bce", "loss_mask_dice", "loss_bbox", "loss_giou")})
            return losses

        bce, dice = self._point_losses(outputs["pred_masks"], batch_idx, query_idx, targets, pairs, rng)
        pred_boxes = outputs["pred_boxes"][batch_idx, query_idx].float()
        gt_boxes = gather("boxes").float()
        losses.update(
            loss_mask_bce=bce.sum() / normalizer,
            loss_mask_dice=dice.sum() / normalizer,
            loss_bbox=box_l1_loss(pred_boxes, gt_boxes).sum() / normalizer,
            loss_giou=giou_loss(pred_boxes, gt_boxes).sum() / normalizer,
        )
        return losses

    def _class_loss(
        self, logits: Tensor, batch_idx: Tensor, query_idx: Tensor, classes: Tensor, normalizer: float
    ) -> Tensor:
        """Focal loss of (B, Q, C) logits: paired queries one-hot at ``classes`` (M,) (-1: all zeros), the
        others all zeros; summed over images, queries and classes, divided by ``normalizer``."""
        logits = logits.float()
        onehot = torch.zeros_like(logits)
        keep = classes >= 0
        onehot[batch_idx[keep], query_idx[keep], classes[keep]] = 1.0
        return sigmoid_focal_loss(logits, onehot, self.focal_alpha, self.focal_gamma).sum() / normalizer

    def _point_losses(
        self,
        pred_masks: Tensor,
        batch_idx: Tensor,
        query_idx: Tensor,
        targets: Sequence[Mapping[str, Tensor]],
        pairs: Pairs,
        rng: RandomSource,
    ) -> Tuple[Tensor, Tensor]:
        """Per-pair mask BCE and dice on uncertainty-sampled points; pairs are grouped by image. Two (M,)."""
        src = pred_masks[batch_idx, query_idx][:, None].float()
        coords = sample_uncertain_points(
            src.detach(), self.num_points, self.oversample_ratio, self.importance_sample_ratio, rng
        )
        labels, start = [], 0
        for target, (_, tgt) in zip(targets, pairs):
            end = start + len(tgt)
            if end > start:
                labels.append(
                    sample_binary_masks(target["masks"].to(coords.device), tgt.to(coords.device), coords[start:end])
                )
            start = end
        labels = torch.cat(labels)
        logits = point_sample(src, coords, align_corners=False).squeeze(1)
        return sigmoid_ce_loss(logits, labels), dice_loss(logits, labels)

    @staticmethod
    def _zero_losses(outputs: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """Zero losses connected to the set's outputs (``0 * sum``), one per loss name the set has."""
        mask_zero = outputs["pred_masks"].sum() * 0.0
        box_zero = outputs["pred_boxes"].sum() * 0.0
        zeros = {"loss_mask_cls": outputs["pred_logits"].sum() * 0.0}
        if "pred_logits_part" in outputs:
            zeros["loss_mask_part_cls"] = outputs["pred_logits_part"].sum() * 0.0
        zeros.update(loss_mask_bce=mask_zero, loss_mask_dice=mask_zero, loss_bbox=box_zero, loss_giou=box_zero)
        return zeros

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_points={self.num_points}, oversample_ratio={self.oversample_ratio}, "
            f"importance_sample_ratio={self.importance_sample_ratio}, focal_alpha={self.focal_alpha}, "
            f"focal_gamma={self.focal_gamma}, denoising={self.denoising}, matcher={self.matcher!r}, "
            f"weight_dict={self.weight_dict})"
        )


_GENERIC_WEIGHT_KEYS = (
    "CLASS_WEIGHT", "PART_CLASS_WEIGHT", "MASK_WEIGHT", "DICE_WEIGHT", "BOX_WEIGHT", "GIOU_WEIGHT",
)
_GENERIC_COST_KEYS = (
    "COST_CLASS_WEIGHT", "COST_MASK_WEIGHT", "COST_DICE_WEIGHT", "COST_BOX_WEIGHT", "COST_GIOU_WEIGHT",
)
_GENERIC_OPTION_KEYS = (
    "TRAIN_NUM_POINTS", "OVERSAMPLE_RATIO", "IMPORTANCE_SAMPLE_RATIO", "FOCAL_ALPHA", "FOCAL_GAMMA", "DEC_LAYERS",
)


def check_generic_criterion_options(cfg) -> None:
    """Raise a :class:`~semantic_sam.config.ConfigError` naming the first ``MODEL.DECODER`` key that the
    generic criterion or its matcher cannot use."""
    dec = cfg.MODEL.DECODER
    weight_check = _OPTIONS["MASK_WEIGHT"]
    for key in (*_GENERIC_OPTION_KEYS, *_GENERIC_WEIGHT_KEYS, *_GENERIC_COST_KEYS):
        ok, allowed = _OPTIONS.get(key, weight_check)
        if not ok(dec[key]):
            raise ConfigError(f"invalid value for config key 'MODEL.DECODER.{key}': {dec[key]!r}; allowed: {allowed}")
    if all(dec[key] == 0 for key in _GENERIC_COST_KEYS):
        raise ConfigError(
            f"invalid value for config key 'MODEL.DECODER.{_GENERIC_COST_KEYS[0]}': 0; allowed: a positive weight "
            f"for at least one of {', '.join('MODEL.DECODER.' + k for k in _GENERIC_COST_KEYS)}"
        )


def build_generic_criterion(cfg) -> GenericCriterion:
    """The generic criterion configured by ``cfg.MODEL.DECODER`` (weights ``*_WEIGHT``, matching costs
    ``COST_*_WEIGHT``, points, focal parameters, ``DEC_LAYERS + 1`` output sets, ``DN``/``DN_NUM``).

    Raises:
        ConfigError: an option the criterion or its matcher cannot use, named by its key.
    """
    return GenericCriterion(cfg)
