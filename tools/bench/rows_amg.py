"""Benchmark row ``amg``: automatic mask generation, ours against the reference's order of operations."""
from __future__ import annotations

import math

import torch

from tools.bench.harness import (
    AFTER,
    BEFORE,
    Job,
    Laps,
    Timing,
    build_random_model,
    heavy_repeat,
    meminfo_gb,
    measure,
    row,
    size_label,
    synthetic_image,
)


# ---------------------------------------------------------------------------------------------------
# Automatic mask generation
# ---------------------------------------------------------------------------------------------------
def masks_to_uncompressed_rle(masks: torch.Tensor) -> list[dict]:
    """(N, H, W) bool -> uncompressed column-major RLEs ``{"size": [H, W], "counts": [...]}`` computed
    with tensor ops on the whole batch, as the reference (SAM's ``mask_to_rle_pytorch``) does."""
    n, h, w = masks.shape
    flat = masks.transpose(1, 2).reshape(n, h * w)
    changes = (flat[:, 1:] != flat[:, :-1]).nonzero()
    rles = []
    for i in range(n):
        idx = changes[changes[:, 0] == i, 1] + 1
        bounds = torch.cat([idx.new_zeros(1), idx, idx.new_full((1,), h * w)])
        counts = (bounds[1:] - bounds[:-1]).tolist()
        if bool(flat[i, 0]):
            counts = [0] + counts
        rles.append({"size": [h, w], "counts": counts})
    return rles


def _reference_order_generator_class():
    from semantic_sam.predictor import SemanticSamAutomaticMaskGenerator
    from semantic_sam.predictor.amg_utils import (
        MaskData,
        batched_mask_to_box,
        calculate_stability_score,
        is_box_near_crop_edge,
        uncrop_masks,
    )

    class ReferenceOrderGenerator(SemanticSamAutomaticMaskGenerator):
        """Our generator with the reference's per-batch order of operations ("before" rows).

        Per batch of clicks: decode with every layer's outputs and no attention mask, upsample every
        candidate (clicks x levels) to full resolution (bilinear to the padded size, crop, bicubic), then
        filter by predicted IoU, compute the stability score at full resolution and filter, binarize,
        take boxes from the full-resolution masks, drop boxes near crop edges and run-length encode with
        tensor ops. The crop-level NMS and the small-region clean-up are shared with ours.
        Build it with ``attn_mask="none"`` and a predictor without decoder memory cache.
        """

        def _process_batch(self, points, crop_size, crop_box, orig_size) -> MaskData:
            pred = self.predictor
            model = pred.model
            in_points = torch.as_tensor(pred.transform.apply_coords(points, crop_size), dtype=torch.float)
            boxes = model.point_to_box(in_points, pred.input_size, pred.padded_size, convention="demo")[None]
            out = model.decode_prompts(
                pred.features, boxes, boxes.new_zeros(boxes.shape[:2]), attn_mask=self.attn_mask, return_aux=True
            )
            p, k, n_lev = len(points), pred.num_tokens, len(self.tokens)
            tokens = torch.as_tensor(self.tokens, dtype=torch.long)
            low_res = out["pred_masks"][0].view(p, k, *out["pred_masks"].shape[-2:])[:, tokens].flatten(0, 1)
            ious = out["pred_ious"][0].reshape(p, k)[:, tokens].flatten()
            del out
            logits = model.postprocess_masks(low_res, pred.padded_size, pred.input_size, crop_size)
            data = MaskData(
                masks=logits,
                iou_preds=ious,
                points=torch.as_tensor(points, dtype=torch.float).repeat_interleave(n_lev, dim=0),
                levels=torch.tensor(self.levels, dtype=torch.long).repeat(p),
            )
            del logits
            data.filter(data["iou_preds"] > self.pred_iou_thresh)
            data["stability_score"] = calculate_stability_score(data["masks"], 0.0, self.stability_score_offset)
            data.filter(data["stability_score"] >= self.stability_score_thresh)
            data["masks"] = data["masks"] > 0
            data["boxes"] = batched_mask_to_box(data["masks"])
            orig_h, orig_w = orig_size
            keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
            if not bool(keep.all()):
                data.filter(keep)
            data["rles"] = masks_to_uncompressed_rle(uncrop_masks(data["masks"], crop_box, orig_h, orig_w))
            del data["masks"]
            return data

    return ReferenceOrderGenerator


def _amg_jobs(args) -> list[Job]:
    jobs = []
    for i, size in enumerate(args.amg_sizes):
        modes = ["default"] + (["off"] if i == 0 and args.amg_off_points_per_side else [])
        for mode in modes:
            pps = args.amg_points_per_side if mode == "default" else args.amg_off_points_per_side
            label = "default thresholds" if mode == "default" else "filters off"
            case = f"{pps}x{pps} grid, {size_label(size)}, {label}"
            for v in (BEFORE, AFTER):
                jobs.append(Job("amg", case, v, {"size": list(size), "thresholds": mode, "points_per_side": pps,
                                                 "config": args.swint_config}))
    return jobs


@row("amg", "automatic mask generation, one image (random weights)", jobs=_amg_jobs)
def bench_amg(args, job: Job) -> list[Timing]:
    from semantic_sam.predictor import SemanticSamAutomaticMaskGenerator

    size = tuple(job.params["size"])
    pps = job.params["points_per_side"]
    kwargs: dict = {"points_per_side": pps, "short_side": args.amg_short_side}
    if job.params["thresholds"] == "off":
        kwargs.update(pred_iou_thresh=-math.inf, stability_score_thresh=0.0)
    before = job.variant == BEFORE
    if before:
        short = args.amg_short_side or min(size)
        scale = short / min(size)
        hp, wp = (math.ceil(s * scale / 32) * 32 for s in size)
        per_batch = min(200, pps * pps) * 6  # candidates upsampled at once (6 levels)
        need_gb = per_batch * (hp * wp + 2 * size[0] * size[1]) * 4 / 2**30
        avail = meminfo_gb("MemAvailable")
        if avail is not None and need_gb > 0.8 * avail:
            return [Timing(job.row, job.case, job.variant,
                           skipped=f"needs ~{need_gb:.1f} GB (full-res logits of a batch), {avail:.1f} GB available")]
    _, model = build_random_model(job.params["config"])
    model.eval()
    image, _ = synthetic_image(size)
    if before:
        cls = _reference_order_generator_class()
        generator = cls(model, attn_mask="none", **kwargs)
        generator.predictor.cache_decoder_memory = False  # the reference recomputes the decoder memory per batch
        warm = cls(model, attn_mask="none", **dict(kwargs, points_per_side=2))
        warm.predictor.cache_decoder_memory = False
    else:
        generator = SemanticSamAutomaticMaskGenerator(model, **kwargs)
        warm = SemanticSamAutomaticMaskGenerator(model, **dict(kwargs, points_per_side=2))
    small, _ = synthetic_image((96, 128), seed=1)
    counts = []

    def once(laps: Laps) -> None:
        counts.append(len(generator.generate(image)))

    timings = measure(job.row, job.case, job.variant, once, heavy_repeat(args), args.warmup,
                      warmup_fn=lambda laps: warm.generate(small))
    desc = ("reference order: all candidates at full res, force_pytorch, attn none, no memory cache"
            if before else "SemanticSamAutomaticMaskGenerator defaults")
    for t in timings:
        t.note = f"{counts[-1] if counts else '?'} masks; {desc}"
    return timings
