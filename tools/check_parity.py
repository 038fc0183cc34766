"""Check this implementation against golden outputs of the reference implementation.

Usage (from the repository root)::

    python -m tools.check_parity DIR [--threads N] [--quiet]

The golden directory DIR (the format of ``tests/fixtures/parity_tiny``, whose README.md documents every
``golden.pt`` entry) holds:

* exactly one ``*.yaml`` config and one ``*.pth`` checkpoint (released format); the model is built from the
  config and loaded strictly;
* ``image.png``: the input image; its size is the case's image size (H, W);
* ``golden.pt``: a flat ``dict[str, Tensor]`` (read with ``torch.load(weights_only=True)``);
* optionally ``README.md``, which may give the seed (below).

Every input of the case is read from these files; nothing is fitted to one case:

* ``eval_full.gt_masks`` (G, H, W) bool: the GT masks, in GT order;
* ``eval_direct.clicks_xy`` (G, 2) int: the clicks (x, y) of ``eval_direct``, in GT order (also compared
  with ``eval_full``'s recomputed clicks put back in GT order);
* ``demo.points`` (N, 4) float: the demo prompts, rows (x/W, y/H, w, h); the demo clicks are the pixels
  (x, y) = (x/W * W, y/H * H), and ``demo.points`` is compared with our demo convention applied to them;
* ``demo.level`` (M,) int: the tokens the demo keeps, in this order (token indices, despite the entry's
  name, which is the reference's);
* ``eval_full.click_gt_index`` (G,) int: the click order of ``eval_full``. The reference draws it as
  ``torch.manual_seed(seed); torch.randperm(G)``; when the seed is known the order is recomputed and
  compared, otherwise the recorded order is used as given and its row says WARN (not recomputed).
  The seed is the optional entry ``eval_full.seed`` (0-d int64) if present, else the integer of every
  ``torch.manual_seed(<int>)`` written in DIR/README.md (all must agree; the shipped README gives
  ``torch.manual_seed(0)``).

The paths compared (CPU, float32, the same paths as the golden data):

* ``input.*`` / ``features.*``: preprocessing, backbone, pixel decoder;
* ``demo.*``: the demo clicks as (x/W, y/H, 0.005, 0.005) boxes, no attention mask between prompts, the
  tokens of ``demo.level``;
* ``eval_direct.*``: the clicks as 6-pixel boxes, block-diagonal attention mask;
* ``eval_full.*``: the COCO interactive evaluation: masks in the click order above, clicks from kornia's
  distance transform, Max and Oracle IoU.

Every golden tensor is compared: floats pass when ``|ours - golden| <= 1e-4 + 1e-4 * |golden|``
everywhere, booleans must match where the golden logit is farther than 1e-4 from the threshold,
integers must match exactly. Inputs are listed as ``ok`` with the note ``input``. The exit status is 0
only if every tensor was compared (or used as an input) and passed, 1 otherwise, 2 for a user error
(a missing file, a missing or malformed input entry).

``tests/tools/test_check_parity.py`` runs this check on ``tests/fixtures/parity_tiny`` and, when the
environment variable ``SEMANTIC_SAM_PARITY_GOLDEN`` names another directory in this format, on that one too.
"""
from __future__ import annotations

import argparse
import glob
import os
import pickle
import re
import sys
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from semantic_sam.errors import UserError
from semantic_sam.utils.cli import report_user_error

ATOL = 1e-4
RTOL = 1e-4
LOGIT_MARGIN = 1e-4
SEED_KEY = "eval_full.seed"
_README_SEED = re.compile(r"torch\.manual_seed\((-?\d+)\)")
# Entries the checker reads as inputs or uses to decide what to compare; a directory without them is unusable.
REQUIRED_ENTRIES = (
    "input.image",
    "eval_full.gt_masks",
    "eval_full.click_gt_index",
    "eval_full.clicks_xy",
    "eval_direct.clicks_xy",
    "demo.points",
    "demo.level",
    "eval_full.pred_masks_fullres_logits",
    "eval_full.max_index",
    "eval_direct.pred_masks_fullres_logits",
    "eval_direct.max_index",
)


class GoldenFormatError(ValueError, UserError):
    """A golden directory that does not follow its documented format (a missing or malformed entry)."""


@dataclass
class Result:
    name: str
    status: str  # "ok", "FAIL", "WARN"
    max_abs: float = float("nan")
    max_rel: float = float("nan")
    note: str = ""


def format_result(r: Result, width: int) -> str:
    """One table row: status, name, error (float: abs and rel; int / bool: number of differing elements), note."""
    if np.isnan(r.max_abs):
        err = ""
    elif np.isnan(r.max_rel):  # bool / integer: number of differing elements
        err = f"differ {int(r.max_abs):d}"
    else:
        err = f"abs {r.max_abs:.3e}  rel {r.max_rel:.3e}"
    return f"{r.status:4s}  {r.name:{width}s}  {err:30s}  {r.note}"


def largest_float_error(results) -> str:
    """``"; largest float error 1.2e-06 (name)"``, or "" when no float was compared."""
    floats = [r for r in results if not np.isnan(r.max_rel)]
    worst = max(floats, key=lambda r: r.max_abs) if floats else None
    return f"; largest float error {worst.max_abs:.3e} ({worst.name})" if worst else ""


class ParityChecker:
    """Collects the comparison of every golden tensor."""

    def __init__(self, golden: dict[str, torch.Tensor]) -> None:
        self.golden = golden
        self.results: dict[str, Result] = {}

    def _record(self, result: Result) -> None:
        if result.name in self.results:
            raise RuntimeError(f"{result.name} compared twice")
        self.results[result.name] = result

    def compare(self, name: str, ours: torch.Tensor, valid: Optional[torch.Tensor] = None, note: str = "") -> None:
        """Compare ``ours`` with ``golden[name]`` (float: tolerance; bool: where ``valid``; int: exact)."""
        if name not in self.golden:
            self._record(Result(name, "FAIL", note="missing from golden.pt"))
            return
        ref = self.golden[name]
        ours = torch.as_tensor(ours).detach().cpu()
        if tuple(ours.shape) != tuple(ref.shape):
            self._record(Result(name, "FAIL", note=f"shape {tuple(ours.shape)} != golden {tuple(ref.shape)}"))
            return
        if ref.dtype == torch.bool:
            ours = ours.bool()
            mask = torch.ones_like(ref) if valid is None else valid.cpu().bool()
            wrong = int(((ours != ref) & mask).sum())
            skipped = int((~mask).sum())
            extra = f"{skipped} near-threshold pixels skipped" if valid is not None else ""
            msg = "; ".join(s for s in (note, extra, f"{wrong} differ" if wrong else "") if s)
            self._record(Result(name, "FAIL" if wrong else "ok", float(wrong), float("nan"), msg))
            return
        if not ref.is_floating_point():
            wrong = int((ours.to(ref.dtype) != ref).sum())
            self._record(Result(name, "FAIL" if wrong else "ok", float(wrong), float("nan"), note))
            return
        ours = ours.to(torch.float64)
        ref64 = ref.to(torch.float64)
        diff = (ours - ref64).abs()
        if ref.numel() == 0:
            self._record(Result(name, "ok", 0.0, 0.0, note))
            return
        max_abs = float(diff.max())
        max_rel = float((diff / ref64.abs().clamp(min=1e-12)).max())
        ok = bool((diff <= ATOL + RTOL * ref64.abs()).all()) and bool(torch.isfinite(ours).all())
        self._record(Result(name, "ok" if ok else "FAIL", max_abs, max_rel, note))

    def mark(self, name: str, status: str, note: str) -> None:
        """Record a tensor that is consumed as an input or checked another way."""
        self._record(Result(name, status, note=note))

    def report(self, quiet: bool = False) -> int:
        """Print the table (golden order, then expected entries missing from golden.pt) and a summary.

        Returns:
            0 if every golden tensor was compared and passed, else 1.
        """
        not_compared = [k for k in self.golden if k not in self.results]
        for k in not_compared:
            self.results[k] = Result(k, "FAIL", note="NOT COMPARED")
        missing = [k for k in self.results if k not in self.golden]
        rows = [self.results[k] for k in self.golden] + [self.results[k] for k in missing]
        failed = [r for r in rows if r.status == "FAIL" and r.name in self.golden]
        warned = [r for r in rows if r.status == "WARN"]
        width = max(len(r.name) for r in rows)
        for r in rows:
            if not (quiet and r.status == "ok"):
                print(format_result(r, width))
        print(
            f"\n{len(self.golden)} golden tensors: {len(self.golden) - len(failed)} passed, {len(failed)} failed"
            + (f", {len(not_compared)} not compared" if not_compared else "")
            + (f", {len(warned)} with a warning" if warned else "")
            + (f"; {len(missing)} expected entries missing from golden.pt" if missing else "")
            + largest_float_error(rows)
        )
        return 1 if failed or missing else 0


# ------------------------------------------------------------------------------------------------
def _find_one(directory: str, pattern: str) -> str:
    found = sorted(glob.glob(os.path.join(directory, pattern)))
    if len(found) != 1:
        raise FileNotFoundError(f"{directory}: expected exactly one {pattern}, found {len(found)}: {found}")
    return found[0]


def _capture_decoder(predictor: torch.nn.Module, run: Callable[[], dict]) -> tuple[dict, dict]:
    """Run ``run()`` and capture the query decoder's inputs and outputs (a forward hook)."""
    captured: dict = {}

    def hook(module, args, kwargs, output):
        captured["tgt"] = kwargs["tgt"]
        captured["refpoints_unsigmoid"] = kwargs["refpoints_unsigmoid"]
        captured["tgt_mask"] = kwargs["tgt_mask"]
        captured["hs"], captured["references"] = output

    handle = predictor.decoder.register_forward_hook(hook, with_kwargs=True)
    try:
        out = run()
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError("the query decoder was not called with keyword arguments; cannot capture its tensors")
    return out, captured


def _compare_decoder(chk: ParityChecker, prefix: str, out: dict, cap: dict) -> None:
    layers = list(out["aux_outputs"]) + [out]
    for l, layer_out in enumerate(layers):
        for key in ("pred_masks", "pred_boxes", "pred_ious"):
            chk.compare(f"{prefix}.decoder.layer{l}.{key}", layer_out[key])
    chk.compare(f"{prefix}.decoder.query_content", cap["tgt"])
    chk.compare(f"{prefix}.decoder.refpoints_unsigmoid", cap["refpoints_unsigmoid"])
    for l, h in enumerate(cap["hs"]):
        chk.compare(f"{prefix}.decoder.hs{l}", h)
    for l, r in enumerate(cap["references"]):
        chk.compare(f"{prefix}.decoder.reference{l}", r)
    mask = cap["tgt_mask"]
    chk.compare(f"{prefix}.decoder.self_attn_mask_used", torch.tensor(mask is not None))
    if mask is not None and f"{prefix}.decoder.self_attn_mask" in chk.golden:
        chk.compare(f"{prefix}.decoder.self_attn_mask", mask)


def _mask_iou(gt: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool x (N, H, W) bool -> (N,) intersection over union."""
    inter = (gt & pred).flatten(1).sum(-1).float()
    union = (gt | pred).flatten(1).sum(-1).float()
    return inter / union


def _kornia_clicks(masks: torch.Tensor) -> tuple[Optional[torch.Tensor], str]:
    try:
        from semantic_sam.evaluation.click_simulation import click_from_mask
    except ImportError as e:
        return None, f"semantic_sam.evaluation.click_simulation unavailable ({e})"
    clicks = [torch.as_tensor(click_from_mask(m, method="kornia")) for m in masks]
    return torch.stack(clicks).long(), ""


def load_golden(directory: str) -> dict[str, torch.Tensor]:
    """``DIR/golden.pt`` as a flat ``dict[str, Tensor]`` (weights-only load).

    Raises:
        FileNotFoundError: no golden.pt.
        GoldenFormatError: the file is not a readable flat dict of tensors.
    """
    path = os.path.join(directory, "golden.pt")
    try:
        golden = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise GoldenFormatError(f"{path}: not a readable torch.save file ({str(e).splitlines()[0]})") from e
    if not isinstance(golden, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in golden.items()):
        raise GoldenFormatError(f"{path}: expected a flat dict[str, Tensor], got {type(golden).__name__}")
    return golden


def require_entries(golden: dict, names, where: str) -> None:
    """Raise :class:`GoldenFormatError` naming every entry of ``names`` that ``golden`` lacks."""
    missing = [n for n in names if n not in golden]
    if missing:
        raise GoldenFormatError(f"{where} lacks the required entries {', '.join(missing)}")


def find_eval_seed(directory: str, golden: dict) -> tuple[Optional[int], str]:
    """The seed of ``eval_full``'s click order and where it was found (see the module docstring).

    Returns:
        ``(seed, source)``, or ``(None, reason)`` when neither golden.pt nor README.md gives one.

    Raises:
        GoldenFormatError: ``eval_full.seed`` is not a 0-d integer, or README.md names different seeds.
    """
    if SEED_KEY in golden:
        value = golden[SEED_KEY]
        if value.dim() != 0 or value.is_floating_point() or value.dtype == torch.bool:
            raise GoldenFormatError(f"golden.pt entry '{SEED_KEY}' must be a 0-d integer tensor, got {value!r}")
        return int(value), f"golden.pt '{SEED_KEY}'"
    readme = os.path.join(directory, "README.md")
    if os.path.isfile(readme):
        with open(readme, encoding="utf-8") as f:
            seeds = sorted({int(m) for m in _README_SEED.findall(f.read())})
        if len(seeds) > 1:
            raise GoldenFormatError(
                f"{readme} calls torch.manual_seed with different seeds {seeds}; record the seed of the "
                f"evaluation's click order as the golden.pt entry '{SEED_KEY}'"
            )
        if seeds:
            return seeds[0], f"README.md: torch.manual_seed({seeds[0]})"
    return None, f"no seed: golden.pt has no '{SEED_KEY}' and README.md no torch.manual_seed(<int>)"


def _check_inputs(golden: dict, image_size: tuple[int, int], k: int) -> None:
    """Shapes and values of the entries read as inputs (:class:`GoldenFormatError` naming the entry)."""

    def bad(name: str, expected: str) -> GoldenFormatError:
        v = golden[name]
        return GoldenFormatError(
            f"golden.pt entry '{name}' must be {expected}, got {v.dtype} of shape {tuple(v.shape)}"
        )

    def integer(v: torch.Tensor) -> bool:
        return not v.is_floating_point() and v.dtype != torch.bool

    masks = golden["eval_full.gt_masks"]
    if masks.dtype != torch.bool or masks.dim() != 3 or tuple(masks.shape[-2:]) != image_size or len(masks) == 0:
        raise bad("eval_full.gt_masks", f"(G, {image_size[0]}, {image_size[1]}) bool with G >= 1 (image.png's size)")
    g = masks.shape[0]
    clicks = golden["eval_direct.clicks_xy"]
    if not integer(clicks) or tuple(clicks.shape) != (g, 2):
        raise bad("eval_direct.clicks_xy", f"({g}, 2) integer (x, y), one click per GT mask")
    order = golden["eval_full.click_gt_index"]
    if not integer(order) or tuple(order.shape) != (g,) or not torch.equal(order.sort().values, torch.arange(g)):
        raise GoldenFormatError(f"golden.pt entry 'eval_full.click_gt_index' must be a permutation of 0..{g - 1}")
    points = golden["demo.points"]
    if not points.is_floating_point() or points.dim() != 2 or points.shape[1] != 4 or len(points) == 0:
        raise bad("demo.points", "(N, 4) float rows (x/W, y/H, w, h) with N >= 1")
    tokens = golden["demo.level"]
    if not integer(tokens) or tokens.dim() != 1 or len(tokens) == 0 or not bool(((tokens >= 0) & (tokens < k)).all()):
        raise GoldenFormatError(
            f"golden.pt entry 'demo.level' must be a non-empty 1-d integer tensor of token indices in [0, {k}) "
            f"(the config's NUM_INTERACTIVE_TOKENS), got {golden['demo.level'].tolist()}"
        )


def run_parity(directory: str) -> ParityChecker:
    """Run every path of the case in ``directory`` and compare each golden tensor (see the module docstring).

    Raises:
        FileNotFoundError, GoldenFormatError, ConfigError, CheckpointError: user errors (a missing file, a
            missing or malformed input entry, a bad config or checkpoint).
    """
    from semantic_sam.build import build_model
    from semantic_sam.checkpoint import load_checkpoint
    from semantic_sam.config import load_config

    golden = load_golden(directory)
    require_entries(golden, REQUIRED_ENTRIES, os.path.join(directory, "golden.pt"))
    seed, seed_source = find_eval_seed(directory, golden)
    chk = ParityChecker(golden)
    cfg = load_config(_find_one(directory, "*.yaml"))
    model = build_model(cfg, device="cpu").eval()
    load_checkpoint(model, _find_one(directory, "*.pth"), strict=True)
    image = torch.from_numpy(np.asarray(Image.open(os.path.join(directory, "image.png")).convert("RGB")).copy())
    image = image.permute(2, 0, 1).contiguous()
    _check_inputs(golden, tuple(image.shape[-2:]), model.num_tokens)
    case = _Case(model, image, *_check_features(chk, model, image))
    _check_eval_direct(chk, case)
    _check_eval_full(chk, case, seed, seed_source)
    _check_demo(chk, case)
    return chk


@dataclass
class _Case:
    """What every path of a parity case shares: the model, the image (3, H, W) uint8, its encoded
    features and the image and padded sizes (H, W)."""

    model: torch.nn.Module
    image: torch.Tensor
    features: dict
    image_size: tuple[int, int]
    padded_size: tuple[int, int]

    def decode(self, chk: ParityChecker, prefix: str, boxes: torch.Tensor, attn_mask: str) -> None:
        """Decode ``boxes`` (N, 4) as one image's prompts and compare the decoder's tensors."""
        pb = torch.zeros(1, boxes.shape[0])
        predictor = self.model.sem_seg_head.predictor
        with torch.no_grad():
            out, cap = _capture_decoder(
                predictor, lambda: self.model.decode_prompts(self.features, boxes[None], pb, attn_mask)
            )
        _compare_decoder(chk, prefix, out, cap)


def _check_features(chk: ParityChecker, model, image: torch.Tensor) -> tuple[dict, tuple, tuple]:
    """Inputs, backbone and pixel-decoder features; returns (features, image size, padded size)."""
    h, w = image.shape[-2:]
    chk.compare("input.image", image, note="image.png")
    with torch.no_grad():
        images = model.preprocess_image([image])
        hp, wp = images.tensor.shape[-2:]
        chk.compare("input.image_size_hw", torch.tensor(images.image_sizes[0]))
        chk.compare("input.padded_size_hw", torch.tensor([hp, wp]))
        chk.compare("input.pixel_mean", model.pixel_mean.view(-1))
        chk.compare("input.pixel_std", model.pixel_std.view(-1))
        chk.compare("input.image_normalized_padded", images.tensor)
        backbone_features = model.backbone(images.tensor)
        for name, f in backbone_features.items():
            chk.compare(f"features.backbone.{name}", f)
        mask_features, encoder_features, multi_scale = model.sem_seg_head.pixel_decoder.forward_features(
            backbone_features
        )
        chk.compare("features.pixel_decoder.mask_features", mask_features)
        chk.compare("features.pixel_decoder.transformer_encoder_features", encoder_features)
        for i, f in enumerate(multi_scale):
            chk.compare(f"features.pixel_decoder.multi_scale_features.{i}", f)
        features = model.encode_image(images)
    return features, (h, w), (hp, wp)


def _check_eval_direct(chk: ParityChecker, case: _Case) -> None:
    """The recorded evaluation clicks, in GT order."""
    model, image_size = case.model, case.image_size
    clicks = chk.golden["eval_direct.clicks_xy"]
    chk.mark("eval_full.gt_masks", "ok", "input (GT masks)")
    boxes = model.point_to_box(clicks.float(), image_size, case.padded_size, "eval")
    chk.compare("eval_direct.points_image_frame", model.point_to_box(clicks.float(), image_size, image_size, "eval"))
    chk.compare("eval_direct.points_padded_frame", boxes)
    chk.compare("eval_direct.pb", torch.zeros(clicks.shape[0]))
    case.decode(chk, "eval_direct", boxes, "block")
    _compare_eval_outputs(chk, model, "eval_direct", case.image, clicks, model.num_tokens, gt_masks=None)


def _check_eval_full(chk: ParityChecker, case: _Case, seed: Optional[int], seed_source: str) -> None:
    """The COCO interactive evaluation: click order from the seed, clicks from the kornia transform."""
    from semantic_sam.utils.box_ops import masks_to_boxes

    golden, model = chk.golden, case.model
    gt_masks = golden["eval_full.gt_masks"]
    if seed is None:
        order = golden["eval_full.click_gt_index"].long()
        chk.mark("eval_full.click_gt_index", "WARN", f"input: recorded order used, not recomputed ({seed_source})")
    else:
        torch.manual_seed(seed)
        order = torch.randperm(gt_masks.shape[0])
        chk.compare("eval_full.click_gt_index", order, note=f"seed from {seed_source}")
        if SEED_KEY in golden:
            chk.mark(SEED_KEY, "ok", "input (seed of the click order)")
    chk.compare("eval_full.gt_boxes_xyxy", masks_to_boxes(gt_masks), note="BitMasks.get_bounding_boxes rule")
    full_clicks, why = _kornia_clicks(gt_masks[order])
    if full_clicks is None:
        full_clicks = golden["eval_full.clicks_xy"]
        chk.mark("eval_full.clicks_xy", "WARN", f"STORED clicks used, not recomputed: {why}")
    else:
        chk.compare("eval_full.clicks_xy", full_clicks, note="kornia distance transform")
    chk.compare("eval_direct.clicks_xy", full_clicks[torch.argsort(order)], note="= eval_full clicks in GT order")
    full_boxes = model.point_to_box(full_clicks.float(), case.image_size, case.padded_size, "eval")
    chk.compare("eval_full.points_padded_frame", full_boxes)
    chk.compare("eval_full.boxes_dn", full_boxes)
    chk.compare("eval_full.pb", torch.zeros(full_clicks.shape[0]))
    case.decode(chk, "eval_full", full_boxes, "block")
    _compare_eval_outputs(chk, model, "eval_full", case.image, full_clicks, model.num_tokens, gt_masks=gt_masks[order])


def _check_demo(chk: ParityChecker, case: _Case) -> None:
    """The demo: the recorded points as (x/W, y/H, 0.005, 0.005), no attention mask, tokens demo.level.
    Pixels are recovered in float64, so that integer clicks come back exactly."""
    golden, model, image_size = chk.golden, case.model, case.image_size
    h, w = image_size
    demo_points = golden["demo.points"]
    demo_clicks = (demo_points[:, :2].double() * torch.tensor([w, h], dtype=torch.float64)).float()
    tokens = [int(v) for v in golden["demo.level"]]
    chk.mark("demo.level", "ok", f"input: tokens {tokens}")
    chk.compare("demo.points", model.point_to_box(demo_clicks, image_size, image_size, "demo"),
                note="input, through the demo convention")
    chk.compare("demo.pb", torch.zeros(demo_points.shape[0]))
    demo_boxes = model.point_to_box(demo_clicks, image_size, case.padded_size, "demo")
    chk.compare("demo.points_padded_frame", demo_boxes)
    case.decode(chk, "demo", demo_boxes, "none")
    with torch.no_grad():
        res = model.inference(
            [{"image": case.image, "points": demo_clicks}], tokens=tokens, attn_mask="none", point_convention="demo"
        )[0]
    chk.compare("demo.pred_masks", res["pred_masks"].flatten(0, 1))
    chk.compare("demo.pred_ious", res["pred_ious"][None])


def _compare_eval_outputs(
    chk: ParityChecker,
    model,
    prefix: str,
    image: torch.Tensor,
    clicks: torch.Tensor,
    k: int,
    gt_masks: Optional[torch.Tensor],
) -> None:
    """Full-resolution logits, Max choice and binarized masks through ``model.inference`` (eval convention)."""
    with torch.no_grad():
        inputs = [{"image": image, "points": clicks.float()}]
        res = model.inference(inputs, attn_mask="block", point_convention="eval")[0]
    logits = res["pred_masks"]  # (N, K, H, W)
    chk.compare(f"{prefix}.pred_masks_fullres_logits", logits.flatten(0, 1))
    max_index = res["pred_ious"].argmax(dim=1)
    chk.compare(f"{prefix}.max_index", max_index)
    golden_logits = chk.golden[f"{prefix}.pred_masks_fullres_logits"]
    binary = logits.flatten(0, 1) > 0
    chk.compare(f"{prefix}.pred_masks_binary", binary, valid=golden_logits.abs() > LOGIT_MARGIN)
    rows = torch.arange(clicks.shape[0]) * k + chk.golden[f"{prefix}.max_index"]
    chosen = binary.view(clicks.shape[0], k, *binary.shape[-2:])[torch.arange(clicks.shape[0]), max_index]
    chk.compare(f"{prefix}.pred_masks_max", chosen, valid=golden_logits[rows].abs() > LOGIT_MARGIN)
    if gt_masks is not None:
        chk.compare(f"{prefix}.iou_max", _mask_iou(gt_masks, chosen))
        per_token = _mask_iou(
            gt_masks[:, None].expand(-1, k, -1, -1).flatten(0, 1), binary
        ).view(clicks.shape[0], k)
        chk.compare(f"{prefix}.iou_oracle", per_token.max(dim=1).values)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="folder with *.yaml, *.pth, image.png and golden.pt")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    parser.add_argument("--quiet", action="store_true", help="print only the tensors that did not pass")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if not os.path.isdir(args.directory):
        print(f"error: parity folder not found: {args.directory}", file=sys.stderr)
        return 2
    try:
        chk = run_parity(args.directory)
    except Exception as e:
        return report_user_error(e)
    return chk.report(quiet=args.quiet)


if __name__ == "__main__":
    sys.exit(main())
