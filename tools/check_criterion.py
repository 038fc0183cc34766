"""Check the training criterion against a recorded training step of the reference implementation.

Usage (from the repository root)::

    python -m tools.check_criterion DIR [--threads N] [--quiet]

The golden directory DIR (the format of ``tests/fixtures/criterion_tiny``, whose README.md documents every
``golden.pt`` entry) holds exactly one ``*.yaml`` config and ``golden.pt``, a flat ``dict[str, Tensor]`` (read
with ``torch.load(weights_only=True)``). Nothing else is read: the criterion is replayed on the recorded
decoder outputs, so the image and the checkpoint of the directory are not needed.

What is read, and from where (nothing is fitted to one case):

* the config: the criterion (``build_criterion``) and the target sampling options of the model
  (``MAX_NUM_INSTANCE`` N, ``NUM_INTERACTIVE_TOKENS`` K, ``DEC_LAYERS`` L, ``DN_NOISE_SCALE``, ...). The
  entries ``meta.num_clicks``, ``meta.num_mask_tokens`` (K), ``meta.num_decoder_layers``, ``meta.num_points``,
  ``meta.oversample_ratio`` and ``meta.importance_sample_ratio`` are compared with it. The entry names are
  the format's; its "level targets" of a click are what this project calls the click's targets (the GT
  masks containing it), not user levels;
* ``meta.image_size_hw`` (H, W; boxes are normalized by it) and ``meta.padded_size_hw`` (the frame of
  the GT masks and of the 1/4-resolution logits);
* the inputs ``input.gt_masks`` (G, h, w) bool, ``input.gt_boxes_xyxy`` (G, 4) and the decoder outputs
  ``outputs.layer{l}.pred_masks / pred_boxes / pred_ious`` for l < L (layer L-1 is the final one);
* the recorded random draws, fed back in the order the reference made them
  (:class:`~semantic_sam.utils.random_draws.ReplayRandom`, one stream for the whole step):

  1. ``targets.box_start_draw``;
  2. ``targets.randperm``;
  3. per click i, ``targets.click_candidate_choice[i]``, followed for a click whose pixel lies in more than K
     GT masks (``targets.level_targets_full_count[i] > K``) by its target shuffle (draw 4). The
     format records that shuffle as the click's stored targets (``targets.level_target_inds_flat``,
     ``targets.level_target_count``): they are its first K entries, the only ones kept. The shuffle fed
     back is those K, then the click's other masks (``targets.level_targets_full_flat``) in ascending
     order, which keeps the same K in the same order;
  4. ``forward.dn_rand`` (the anchor jitter), ``matcher.point_coords``;
  5. ``criterion.layer{l}.oversampled_coords`` and ``criterion.layer{l}.random_coords`` for l in the
     recorded processing order ``criterion.layer_order``.

* ``meta.run_seed`` (optional): the seed the reference set before the step. When present, the step is
  also run from the seed through the reference's own sources (Python's ``random`` and torch's global
  generator, CPU) and its total loss and loss points are compared; when absent, that row says WARN.

Compared (the tolerances the README suggests): the targets (``targets.click_gt_index``, ``clicks_xy``,
``level_target_inds_flat``, ``level_target_click``, ``level_target_count``, ``max_num_tgt_per_click``:
exact; ``points``, ``boxes_dn``, ``ori_boxes``, ``pb``: 1e-5), ``meta.num_masks`` and the assignment
``matcher.src_idx`` / ``tgt_idx`` (exact), ``criterion.layer_order``, the loss keys and their order, every
weight (exact), every loss term before and after weighting (1e-5 + 1e-5 |golden|), ``loss.total`` (1e-4),
the per-pair values of every layer (``point_coords``, ``point_labels``, ``point_logits``, ``bce_per_pair``,
``dice_per_pair``, ``iou_pred``, ``iou_sq_err``, ``box_pred``, ``box_target``, ``giou_loss_per_pair``:
1e-4; ``l1`` summed over the 4 coordinates: 1e-5) and the gradients ``grad.layer{l}.*`` of the total
(1e-4 times the tensor's largest magnitude). The other documented entries (the image, the matcher's cost
matrices, the decoder inputs ``forward.*``, ``importance_idx``, ...) are not used.

The exit status is 0 if every check passed, 1 if one failed, 2 for a user error (a missing file, a missing
or malformed entry, a config that is not the many-to-many criterion).

``tests/tools/test_check_criterion.py`` runs this check on ``tests/fixtures/criterion_tiny`` and, when the
environment variable ``SEMANTIC_SAM_CRITERION_GOLDEN`` names another directory in this format, on that one.
"""
from __future__ import annotations

import sys

if __name__ == "__main__" and not __package__:  # run as a script: the repository's `tools` is not importable
    print("error: run this tool from the repository root as: python -m tools.check_criterion DIR", file=sys.stderr)
    sys.exit(2)

import argparse
import errno
import os
import random
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from semantic_sam.utils.cli import report_user_error
from tools.check_parity import (
    GoldenFormatError,
    Result,
    _find_one,
    format_result,
    largest_float_error,
    load_golden,
    require_entries,
)

LOSS_ATOL = LOSS_RTOL = 1e-5
TOTAL_ATOL = 1e-4
PAIR_ATOL = 1e-4
L1_ATOL = 1e-5
TARGET_ATOL = 1e-5
GRAD_RELATIVE = 1e-4
OUTPUT_KEYS = ("pred_masks", "pred_boxes", "pred_ious")
# criterion details key -> golden entry criterion.layer{l}.<entry>, compared with PAIR_ATOL
PER_PAIR = {
    "point_coords": "point_coords",
    "point_labels": "point_labels",
    "point_logits": "point_logits",
    "bce": "bce_per_pair",
    "dice": "dice_per_pair",
    "iou_pred": "iou_pred",
    "iou_sq_err": "iou_sq_err",
    "box_pred": "box_pred",
    "box_target": "box_target",
    "giou_loss": "giou_loss_per_pair",
}
_CASE_ENTRIES = (
    "meta.image_size_hw",
    "meta.padded_size_hw",
    "meta.num_clicks",
    "meta.num_mask_tokens",
    "meta.num_decoder_layers",
    "meta.num_points",
    "meta.oversample_ratio",
    "meta.importance_sample_ratio",
    "meta.num_masks",
    "input.gt_masks",
    "input.gt_boxes_xyxy",
    "targets.box_start_draw",
    "targets.randperm",
    "targets.click_candidate_choice",
    "targets.level_targets_full_flat",
    "targets.level_targets_full_count",
    "targets.level_target_inds_flat",
    "targets.level_target_count",
    "targets.click_gt_index",
    "targets.clicks_xy",
    "targets.level_target_click",
    "targets.max_num_tgt_per_click",
    "targets.points",
    "targets.boxes_dn",
    "targets.ori_boxes",
    "targets.pb",
    "forward.dn_rand",
    "matcher.point_coords",
    "matcher.src_idx",
    "matcher.tgt_idx",
    "criterion.layer_order",
    "loss.total",
)


def _split(flat: torch.Tensor, counts: torch.Tensor, name: str) -> list[list[int]]:
    if int(counts.sum()) != flat.numel():
        raise GoldenFormatError(f"golden.pt: the counts of '{name}' add up to {int(counts.sum())}, not {flat.numel()}")
    out, start = [], 0
    for c in counts.tolist():
        out.append(flat[start : start + c].tolist())
        start += c
    return out


@dataclass
class CriterionCase:
    """One golden directory in the criterion format (see the module docstring)."""

    directory: str
    cfg: Any
    golden: dict
    image_size: tuple[int, int]
    padded_size: tuple[int, int]
    num_clicks: int  # N, from the config
    num_tokens: int  # K, from the config
    num_layers: int  # L, from the config
    layer_order: list[int]  # recorded processing order of the decoder layers

    def outputs(self, requires_grad: bool = False) -> tuple[dict, list[dict]]:
        """The recorded decoder outputs as the criterion takes them (leaf copies) and per layer."""
        layers = [
            {k: self.golden[f"outputs.layer{l}.{k}"].clone().requires_grad_(requires_grad) for k in OUTPUT_KEYS}
            for l in range(self.num_layers)
        ]
        return dict(layers[-1], aux_outputs=layers[:-1]), layers

    def target_shuffles(self) -> dict[int, list[int]]:
        """Click -> the order fed back to its target shuffle (clicks in more than K masks only)."""
        g = self.golden
        full = _split(g["targets.level_targets_full_flat"], g["targets.level_targets_full_count"], "level_targets_full")
        stored = _split(g["targets.level_target_inds_flat"], g["targets.level_target_count"], "level_target_inds")
        if len(full) != len(stored):
            raise GoldenFormatError(
                f"golden.pt: {len(full)} clicks in 'targets.level_targets_full_count' but {len(stored)} in "
                "'targets.level_target_count'"
            )
        shuffles = {}
        for i, (all_masks, kept) in enumerate(zip(full, stored)):
            if len(all_masks) <= self.num_tokens:
                continue
            if len(kept) != self.num_tokens or len(set(kept)) != len(kept) or not set(kept) <= set(all_masks):
                raise GoldenFormatError(
                    f"golden.pt: click {i} lies in masks {all_masks} (more than K = {self.num_tokens}), so its stored "
                    f"targets must be {self.num_tokens} distinct ones of them, got {kept}"
                )
            shuffles[i] = kept + [m for m in all_masks if m not in kept]
        return shuffles

    def target_draws(self) -> list:
        """Draws 1-5 (target preparation and anchor jitter), in the reference's order."""
        g = self.golden
        choices = g["targets.click_candidate_choice"].tolist()
        shuffles = self.target_shuffles()
        draws: list = [int(g["targets.box_start_draw"]), g["targets.randperm"]]
        for i, choice in enumerate(choices):
            draws.append(int(choice))
            if i in shuffles:
                draws.append(shuffles[i])
        draws.append(g["forward.dn_rand"])
        return draws

    def loss_draws(self) -> list:
        """Draws 6-8 (matcher points, then the loss points of each layer in the recorded order)."""
        g = self.golden
        draws = [g["matcher.point_coords"]]
        for l in self.layer_order:
            draws += [g[f"criterion.layer{l}.oversampled_coords"], g[f"criterion.layer{l}.random_coords"]]
        return draws

    def targets(self, rng=None) -> Any:
        """The image's training targets (``prepare_click_targets``), prepared with the model's options from the
        config (``rng`` None: the reference's sources, torch's global generator and Python's ``random``)."""
        from semantic_sam.data.prompt_sampling import prepare_click_targets

        dec = self.cfg.MODEL.DECODER
        return prepare_click_targets(
            self.golden["input.gt_masks"],
            self.image_size,
            self.padded_size,
            self.num_clicks,
            self.num_tokens,
            box_prompts=dec.get("TRAIN_BOX_PROMPTS", False),
            noise_scale=dec.DN_NOISE_SCALE,
            training=True,
            gt_boxes=self.golden["input.gt_boxes_xyxy"],
            rng=rng,
            padded_frame=dec.get("TRAIN_BOXES_PADDED_FRAME", False),
        )


def load_case(directory: str, overrides: Sequence[str] = ()) -> CriterionCase:
    """Read and check a golden directory in the criterion format (``overrides``: config ``KEY=VALUE``).

    Raises:
        FileNotFoundError, GoldenFormatError, ConfigError: user errors.
    """
    from semantic_sam.config import load_config

    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, "criterion golden directory not found", directory)
    golden = load_golden(directory)
    cfg = load_config(_find_one(directory, "*.yaml"), list(overrides))
    where = os.path.join(directory, "golden.pt")
    dec = cfg.MODEL.DECODER
    if dec.MANY_TO_ONE:
        raise GoldenFormatError(
            f"{directory}: the config sets MODEL.DECODER.MANY_TO_ONE; this format records the many-to-many criterion"
        )
    num_layers = int(dec.DEC_LAYERS)
    layer_entries = [f"outputs.layer{l}.{k}" for l in range(num_layers) for k in OUTPUT_KEYS]
    layer_entries += [f"grad.layer{l}.{k}" for l in range(num_layers) for k in OUTPUT_KEYS]
    layer_entries += [f"criterion.layer{l}.{e}" for l in range(num_layers) for e in (*PER_PAIR.values(), "l1")]
    layer_entries += [
        f"criterion.layer{l}.{e}" for l in range(num_layers) for e in ("oversampled_coords", "random_coords")
    ]
    require_entries(golden, (*_CASE_ENTRIES, *layer_entries), where)

    def size(name: str) -> tuple[int, int]:
        v = golden[name]
        if tuple(v.shape) != (2,) or v.is_floating_point() or bool((v < 1).any()):
            raise GoldenFormatError(f"golden.pt entry '{name}' must be (2,) positive integers (H, W), got {v.tolist()}")
        return int(v[0]), int(v[1])

    image_size, padded_size = size("meta.image_size_hw"), size("meta.padded_size_hw")
    masks = golden["input.gt_masks"]
    fits = masks.dim() == 3 and masks.shape[1] <= padded_size[0] and masks.shape[2] <= padded_size[1]
    if masks.dtype != torch.bool or not fits:
        raise GoldenFormatError(
            f"golden.pt entry 'input.gt_masks' must be (G, h, w) bool within the padded size {padded_size}, "
            f"got {masks.dtype} of shape {tuple(masks.shape)}"
        )
    if tuple(golden["input.gt_boxes_xyxy"].shape) != (masks.shape[0], 4):
        raise GoldenFormatError(f"golden.pt entry 'input.gt_boxes_xyxy' must be ({masks.shape[0]}, 4)")
    order = golden["criterion.layer_order"].tolist()
    if sorted(order) != list(range(num_layers)):
        raise GoldenFormatError(
            f"golden.pt entry 'criterion.layer_order' must order the {num_layers} decoder layers "
            f"(MODEL.DECODER.DEC_LAYERS), got {order}"
        )
    return CriterionCase(
        directory=directory,
        cfg=cfg,
        golden=golden,
        image_size=image_size,
        padded_size=padded_size,
        num_clicks=int(dec.MAX_NUM_INSTANCE),
        num_tokens=int(dec.NUM_INTERACTIVE_TOKENS),
        num_layers=num_layers,
        layer_order=order,
    )


class CriterionChecker:
    """Collects named checks (golden entry names where there is one) and prints them as a table."""

    def __init__(self) -> None:
        self.results: dict[str, Result] = {}

    def _record(self, result: Result) -> None:
        if result.name in self.results:
            raise RuntimeError(f"{result.name} checked twice")
        self.results[result.name] = result

    def close(self, name: str, ours: torch.Tensor, ref: torch.Tensor, atol: float, rtol: float = 0.0) -> None:
        """Float check: pass when ``|ours - ref| <= atol + rtol * |ref|`` everywhere (same shape and dtype)."""
        ours = torch.as_tensor(ours).detach().cpu()
        note = f"tol {atol:.1e}" + (f" + {rtol:.0e}|ref|" if rtol else "")
        if tuple(ours.shape) != tuple(ref.shape) or ours.dtype != ref.dtype:
            note = f"{ours.dtype} {tuple(ours.shape)} != golden {ref.dtype} {tuple(ref.shape)}"
            self._record(Result(name, "FAIL", note=note))
            return
        a, b = ours.double(), ref.double()
        diff = (a - b).abs()
        max_abs = float(diff.max()) if diff.numel() else 0.0
        max_rel = float((diff / b.abs().clamp(min=1e-12)).max()) if diff.numel() else 0.0
        ok = bool((diff <= atol + rtol * b.abs()).all()) and bool(torch.isfinite(a).all())
        self._record(Result(name, "ok" if ok else "FAIL", max_abs, max_rel, note))

    def equal(self, name: str, ours: Any, ref: Any, note: str = "") -> None:
        """Exact check of tensors (number of differing elements) or plain values."""
        if torch.is_tensor(ref):
            ours = torch.as_tensor(ours).detach().cpu()
            if tuple(ours.shape) != tuple(ref.shape):
                self._record(Result(name, "FAIL", note=f"shape {tuple(ours.shape)} != golden {tuple(ref.shape)}"))
                return
            wrong = int((ours.to(ref.dtype) != ref).sum())
            self._record(Result(name, "FAIL" if wrong else "ok", float(wrong), float("nan"), note))
            return
        ok = ours == ref
        self._record(Result(name, "ok" if ok else "FAIL", note=note if ok else f"{ours!r} != golden {ref!r}"))

    def mark(self, name: str, status: str, note: str) -> None:
        self._record(Result(name, status, note=note))

    def report(self, quiet: bool = False) -> int:
        """Print the table and a summary; 0 if every check passed, else 1."""
        rows = list(self.results.values())
        failed = [r for r in rows if r.status == "FAIL"]
        warned = [r for r in rows if r.status == "WARN"]
        width = max(len(r.name) for r in rows)
        for r in rows:
            if not (quiet and r.status == "ok"):
                print(format_result(r, width))
        print(
            f"\n{len(rows)} checks: {len(rows) - len(failed)} passed, {len(failed)} failed"
            + (f", {len(warned)} with a warning" if warned else "")
            + largest_float_error(rows)
        )
        return 1 if failed else 0


def _weighted_total(losses: dict, weight_dict: dict) -> torch.Tensor:
    return sum(v * weight_dict[k] for k, v in losses.items())


def _check_config_against_meta(chk: CriterionChecker, case: CriterionCase, criterion) -> None:
    g, dec = case.golden, case.cfg.MODEL.DECODER
    chk.equal("meta.num_clicks", int(g["meta.num_clicks"]), case.num_clicks, "= MODEL.DECODER.MAX_NUM_INSTANCE")
    chk.equal("meta.num_mask_tokens", int(g["meta.num_mask_tokens"]), case.num_tokens, "= NUM_INTERACTIVE_TOKENS")
    chk.equal("meta.num_decoder_layers", int(g["meta.num_decoder_layers"]), case.num_layers, "= DEC_LAYERS")
    chk.equal("meta.num_points", int(g["meta.num_points"]), criterion.num_points, "= TRAIN_NUM_POINTS")
    chk.equal(
        "meta.oversample_ratio", float(g["meta.oversample_ratio"]), float(dec.OVERSAMPLE_RATIO), "= OVERSAMPLE_RATIO"
    )
    chk.equal(
        "meta.importance_sample_ratio",
        float(g["meta.importance_sample_ratio"]),
        float(dec.IMPORTANCE_SAMPLE_RATIO),
        "= IMPORTANCE_SAMPLE_RATIO",
    )
    ours = [case.num_layers - 1, *range(case.num_layers - 1)] if criterion.deep_supervision else [case.num_layers - 1]
    chk.equal("criterion.layer_order", torch.tensor(ours), g["criterion.layer_order"], "final layer first")


def _check_targets(chk: CriterionChecker, case: CriterionCase, target) -> None:
    g = case.golden
    exact = {
        "targets.click_gt_index": target["prompt_gt_inds"],
        "targets.clicks_xy": target["clicks_xy"],
        "targets.level_target_inds_flat": target["target_gt_inds"],
        "targets.level_target_click": target["target_prompt_inds"],
        "targets.level_target_count": torch.tensor([len(v) for v in target["prompt_target_gt_inds"]]),
        "targets.max_num_tgt_per_click": torch.tensor(target["max_num_tgt_per_click"]),
    }
    for name, ours in exact.items():
        chk.equal(name, ours, g[name])
    for name in ("points", "boxes_dn", "ori_boxes", "pb"):
        chk.close(f"targets.{name}", target[name], g[f"targets.{name}"], TARGET_ATOL)


def _replay(chk: CriterionChecker, case: CriterionCase) -> None:
    from semantic_sam.modeling.criterion import build_criterion
    from semantic_sam.utils.random_draws import ReplayRandom

    g = case.golden
    criterion = build_criterion(case.cfg)
    _check_config_against_meta(chk, case, criterion)
    rng = ReplayRandom(case.target_draws() + case.loss_draws())
    outputs, layers = case.outputs(requires_grad=True)
    details: dict = {}
    try:
        target = case.targets(rng)
        _check_targets(chk, case, target)
        losses = criterion(outputs, [target], rng=rng, details=details)
    except ValueError as e:
        if not str(e).startswith("ReplayRandom"):
            raise
        chk.mark("replay.draws", "FAIL", f"the recorded draws do not fit the calls made: {e}")
        return
    chk.equal("replay.draws", rng.remaining, 0, "every recorded draw consumed")
    chk.equal("meta.num_masks", float(details["num_masks"]), float(g["meta.num_masks"]))
    [(src, tgt)] = details["indices"]
    chk.equal("matcher.src_idx", src, g["matcher.src_idx"])
    chk.equal("matcher.tgt_idx", tgt, g["matcher.tgt_idx"])

    # Every loss term before and after weighting, in the reference's order, and the total.
    expected_keys = [k[len("loss.unweighted.") :] for k in g if k.startswith("loss.unweighted.")]
    chk.equal("loss.keys", list(losses), expected_keys, "names and order")
    for key, value in losses.items():
        weight = criterion.weight_dict.get(key)
        for entry in (f"loss.weight.{key}", f"loss.unweighted.{key}", f"loss.weighted.{key}"):
            if entry not in g:
                chk.mark(entry, "FAIL", "missing from golden.pt")
        if f"loss.weight.{key}" in g:
            chk.equal(f"loss.weight.{key}", weight, float(g[f"loss.weight.{key}"]))
        if f"loss.unweighted.{key}" in g:
            chk.close(f"loss.unweighted.{key}", value, g[f"loss.unweighted.{key}"], LOSS_ATOL, LOSS_RTOL)
        if f"loss.weighted.{key}" in g and weight is not None:
            chk.close(f"loss.weighted.{key}", value * weight, g[f"loss.weighted.{key}"], LOSS_ATOL, LOSS_RTOL)
    total = _weighted_total({k: v for k, v in losses.items() if k in criterion.weight_dict}, criterion.weight_dict)
    chk.close("loss.total", total, g["loss.total"], TOTAL_ATOL)

    # Per-pair values of every layer.
    for l in range(case.num_layers):
        d = details["layers"][l]
        for ours, theirs in PER_PAIR.items():
            chk.close(f"criterion.layer{l}.{theirs}", d[ours], g[f"criterion.layer{l}.{theirs}"], PAIR_ATOL)
        chk.close(f"criterion.layer{l}.l1", d["l1"], g[f"criterion.layer{l}.l1"].sum(1), L1_ATOL)

    # Gradients with respect to every layer's outputs (IoU target not detached, as the reference).
    total.backward()
    for l in range(case.num_layers):
        for key in OUTPUT_KEYS:
            expected = g[f"grad.layer{l}.{key}"]
            grad = layers[l][key].grad
            grad = torch.zeros_like(layers[l][key]) if grad is None else grad
            chk.close(f"grad.layer{l}.{key}", grad, expected, GRAD_RELATIVE * expected.abs().max().item())


def _from_seed(chk: CriterionChecker, case: CriterionCase) -> None:
    """The step from ``meta.run_seed`` through the reference's sources: total loss and loss points (as sets)."""
    from semantic_sam.modeling.criterion import build_criterion

    g = case.golden
    if "meta.run_seed" not in g:
        chk.mark("meta.run_seed", "WARN", "not in golden.pt: the step is not rerun from the seed")
        return
    seed = int(g["meta.run_seed"])
    criterion = build_criterion(case.cfg)
    py_state, torch_state = random.getstate(), torch.get_rng_state()
    try:
        random.seed(seed)
        torch.manual_seed(seed)
        details: dict = {}
        losses = criterion(case.outputs()[0], [case.targets()], details=details)
    finally:
        random.setstate(py_state)
        torch.set_rng_state(torch_state)
    chk.mark("meta.run_seed", "ok", f"input: seed {seed}, rows seed.*")
    chk.close("seed.loss.total", _weighted_total(losses, criterion.weight_dict), g["loss.total"], TOTAL_ATOL)
    for l in range(case.num_layers):
        got, expected = details["layers"][l]["point_coords"], g[f"criterion.layer{l}.point_coords"]
        # the top-k order may differ with thread counts: compare each pair's points as a set
        same = got.shape == expected.shape and all(
            torch.equal(a.unique(dim=0), b.unique(dim=0)) for a, b in zip(got, expected)
        )
        chk.mark(f"seed.criterion.layer{l}.point_coords", "ok" if same else "FAIL", "per pair, as sets")


def check_criterion(directory: str) -> CriterionChecker:
    """Replay the recorded step of ``directory`` (and rerun it from its seed); every check is in the result.

    Raises:
        FileNotFoundError, GoldenFormatError, ConfigError: user errors (see :func:`load_case`).
    """
    case = load_case(directory)
    chk = CriterionChecker()
    _replay(chk, case)
    _from_seed(chk, case)
    return chk


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="folder with one *.yaml and golden.pt (criterion golden format)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    parser.add_argument("--quiet", action="store_true", help="print only the checks that did not pass")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        chk = check_criterion(args.directory)
    except Exception as e:
        return report_user_error(e)
    return chk.report(quiet=args.quiet)


if __name__ == "__main__":
    sys.exit(main())
