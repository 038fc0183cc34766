"""Check this implementation against golden outputs of the reference implementation.

Usage::

    python tools/check_parity.py tests/fixtures/parity_tiny [--threads N] [--quiet]

DIR holds one ``*.yaml`` config, one ``*.pth`` checkpoint (released format), ``image.png`` and
``golden.pt`` (a flat ``dict[str, Tensor]``, documented in DIR/README.md). The model is built from the
config, loaded strictly, and run on CPU in float32 through the same paths as the golden data:

* ``input.*`` / ``features.*``: preprocessing, backbone, pixel decoder;
* ``demo.*``: clicks as (x/W, y/H, 0.005, 0.005) boxes, no attention mask between prompts, all K levels;
* ``eval_direct.*``: clicks as 6-pixel boxes, block-diagonal attention mask;
* ``eval_full.*``: the COCO interactive evaluation: masks ordered by ``torch.manual_seed(0);
  torch.randperm(G)``, clicks from kornia's distance transform, Max and Oracle IoU.

Every golden tensor is compared: floats pass when ``|ours - golden| <= 1e-4 + 1e-4 * |golden|``
everywhere, booleans must match where the golden logit is farther than 1e-4 from the threshold,
integers must match exactly. The exit status is 0 only if every tensor was compared and passed.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from semantic_sam.utils.cli import report_user_error

ATOL = 1e-4
RTOL = 1e-4
LOGIT_MARGIN = 1e-4


@dataclass
class Result:
    name: str
    status: str  # "ok", "FAIL", "WARN"
    max_abs: float = float("nan")
    max_rel: float = float("nan")
    note: str = ""


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
        not_compared = [k for k in self.golden if k not in self.results]
        for k in not_compared:
            self.results[k] = Result(k, "FAIL", note="NOT COMPARED")
        unknown = [k for k in self.results if k not in self.golden]
        failed = [r for r in self.results.values() if r.status == "FAIL"]
        width = max(len(k) for k in self.results)
        for name in self.golden:
            r = self.results[name]
            if quiet and r.status == "ok":
                continue
            if np.isnan(r.max_abs):
                err = ""
            elif np.isnan(r.max_rel):  # bool / integer: number of differing elements
                err = f"differ {int(r.max_abs):d}"
            else:
                err = f"abs {r.max_abs:.3e}  rel {r.max_rel:.3e}"
            print(f"{r.status:4s}  {name:{width}s}  {err:30s}  {r.note}")
        floats = [r for r in self.results.values() if not np.isnan(r.max_rel)]
        worst = max(floats, key=lambda r: r.max_abs) if floats else None
        print(
            f"\n{len(self.golden)} golden tensors: {len(self.golden) - len(failed)} passed, {len(failed)} failed"
            + (f", {len(not_compared)} not compared" if not_compared else "")
            + (f"; largest float error {worst.max_abs:.3e} ({worst.name})" if worst else "")
        )
        if unknown:
            print(f"internal error: compared names not in golden.pt: {unknown}")
            return 2
        return 1 if failed else 0


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


def run_parity(directory: str) -> ParityChecker:
    from semantic_sam.build import build_model
    from semantic_sam.checkpoint import load_checkpoint
    from semantic_sam.config import load_config
    from semantic_sam.utils.box_ops import masks_to_boxes

    golden = torch.load(os.path.join(directory, "golden.pt"), map_location="cpu", weights_only=True)
    chk = ParityChecker(golden)
    cfg = load_config(_find_one(directory, "*.yaml"))
    model = build_model(cfg, device="cpu").eval()
    load_checkpoint(model, _find_one(directory, "*.pth"), strict=True)
    predictor = model.sem_seg_head.predictor
    k = model.num_mask_tokens

    # ---- inputs and features -------------------------------------------------------------------
    image = torch.from_numpy(np.asarray(Image.open(os.path.join(directory, "image.png")).convert("RGB")).copy())
    image = image.permute(2, 0, 1).contiguous()
    chk.compare("input.image", image, note="image.png")
    h, w = image.shape[-2:]
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
    image_size, padded_size = (h, w), (hp, wp)

    # ---- eval_direct: clicks in GT order ---------------------------------------------------------
    clicks = golden["eval_direct.clicks_xy"]
    gt_masks = golden["eval_full.gt_masks"]
    chk.mark("eval_full.gt_masks", "ok", "input (GT masks)")
    n = clicks.shape[0]
    boxes = model.point_to_box(clicks.float(), image_size, padded_size, "eval")
    chk.compare("eval_direct.points_image_frame", model.point_to_box(clicks.float(), image_size, image_size, "eval"))
    chk.compare("eval_direct.points_padded_frame", boxes)
    pb = torch.zeros(1, n)
    chk.compare("eval_direct.pb", pb[0])
    with torch.no_grad():
        out, cap = _capture_decoder(predictor, lambda: model.decode_prompts(features, boxes[None], pb, "block"))
    _compare_decoder(chk, "eval_direct", out, cap)
    _compare_eval_outputs(chk, model, "eval_direct", image, clicks, k, gt_masks=None)

    # ---- eval_full: the COCO interactive evaluation order and clicks --------------------------
    torch.manual_seed(0)
    order = torch.randperm(gt_masks.shape[0])
    chk.compare("eval_full.click_gt_index", order)
    chk.compare("eval_full.gt_boxes_xyxy", masks_to_boxes(gt_masks), note="BitMasks.get_bounding_boxes rule")
    full_clicks, why = _kornia_clicks(gt_masks[order])
    if full_clicks is None:
        full_clicks = golden["eval_full.clicks_xy"]
        chk.mark("eval_full.clicks_xy", "WARN", f"STORED clicks used, not recomputed: {why}")
    else:
        chk.compare("eval_full.clicks_xy", full_clicks, note="kornia distance transform")
    inverse = torch.argsort(order)
    chk.compare("eval_direct.clicks_xy", full_clicks[inverse], note="= eval_full clicks in GT order")
    full_boxes = model.point_to_box(full_clicks.float(), image_size, padded_size, "eval")
    chk.compare("eval_full.points_padded_frame", full_boxes)
    chk.compare("eval_full.boxes_dn", full_boxes)
    chk.compare("eval_full.pb", torch.zeros(n))
    with torch.no_grad():
        out, cap = _capture_decoder(predictor, lambda: model.decode_prompts(features, full_boxes[None], pb, "block"))
    _compare_decoder(chk, "eval_full", out, cap)
    _compare_eval_outputs(chk, model, "eval_full", image, full_clicks, k, gt_masks=gt_masks[order])

    # ---- demo: (x/W, y/H, 0.005, 0.005), no attention mask ---------------------------------------
    levels = list(range(k))
    chk.compare("demo.level", torch.tensor(levels), note="all K tokens")
    chk.compare("demo.points", model.point_to_box(clicks.float(), image_size, image_size, "demo"))
    chk.compare("demo.pb", torch.zeros(n))
    demo_boxes = model.point_to_box(clicks.float(), image_size, padded_size, "demo")
    chk.compare("demo.points_padded_frame", demo_boxes)
    with torch.no_grad():
        out, cap = _capture_decoder(predictor, lambda: model.decode_prompts(features, demo_boxes[None], pb, "none"))
        _compare_decoder(chk, "demo", out, cap)
        res = model.inference(
            [{"image": image, "points": clicks.float()}], levels=levels, attn_mask="none", point_convention="demo"
        )[0]
    chk.compare("demo.pred_masks", res["pred_masks"].flatten(0, 1))
    chk.compare("demo.pred_ious", res["pred_ious"][None])
    return chk


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
