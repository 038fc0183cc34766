"""Benchmark rows of the model itself: one deformable-attention op, image encoding, prompt decoding (with and
without labels)."""
from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F

from tools.bench.harness import (
    AFTER,
    AFTER_BF16,
    AFTER_LABELS,
    BEFORE,
    UNICL_OVERRIDES,
    Job,
    Laps,
    Timing,
    build_random_model,
    click_points,
    heavy_repeat,
    measure,
    row,
    size_label,
    synthetic_image,
)


# ---------------------------------------------------------------------------------------------------
# Multi-scale deformable attention
# ---------------------------------------------------------------------------------------------------
def reference_style_msda(value, spatial_shapes, sampling_locations, attention_weights):
    """The reference's CPU fallback algorithm: one grid_sample per feature level, then one big stacked product."""
    b, _, n_heads, head_dim = value.shape
    _, q, _, num_feature_levels, num_points, _ = sampling_locations.shape
    shapes = spatial_shapes.tolist()
    values = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1
    samples = []
    for feature_level, (h, w) in enumerate(shapes):
        value_l = values[feature_level].flatten(2).transpose(1, 2).reshape(b * n_heads, head_dim, h, w)
        grid_l = grids[:, :, :, feature_level].transpose(1, 2).flatten(0, 1)
        samples.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False))
    weights = attention_weights.transpose(1, 2).reshape(b * n_heads, 1, q, num_feature_levels * num_points)
    out = (torch.stack(samples, dim=-2).flatten(-2) * weights).sum(-1).view(b, n_heads * head_dim, q)
    return out.transpose(1, 2).contiguous()


def pixel_decoder_problem(
    image_size: int = 1024, n_heads: int = 8, head_dim: int = 32, n_points: int = 4, seed: int = 0
):
    """Inputs of one pixel-decoder self-attention layer: feature levels at strides 8..64, realistic locations
    (each position's own pixel centre plus offsets of a few pixels), softmax-normalized weights."""
    g = torch.Generator().manual_seed(seed)
    sizes = [max(1, image_size // s) for s in (8, 16, 32, 64)]
    shapes = torch.tensor([[n, n] for n in sizes])
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    s = int((shapes[:, 0] * shapes[:, 1]).sum())
    centres = []
    for n in sizes:
        ys, xs = torch.meshgrid((torch.arange(n) + 0.5) / n, (torch.arange(n) + 0.5) / n, indexing="ij")
        centres.append(torch.stack([xs, ys], -1).view(-1, 2))
    ref = torch.cat(centres).view(1, s, 1, 1, 1, 2)
    feature_level_size = torch.tensor(sizes, dtype=torch.float32).view(1, 1, 1, len(sizes), 1, 1)
    offsets = torch.randn(1, s, n_heads, len(sizes), n_points, 2, generator=g) * 2.0 / feature_level_size
    locations = ref + offsets
    weights = torch.randn(1, s, n_heads, len(sizes) * n_points, generator=g).softmax(-1)
    weights = weights.view(1, s, n_heads, len(sizes), n_points)
    value = torch.randn(1, s, n_heads, head_dim, generator=g)
    return value, shapes, starts, locations, weights


def _msda_jobs(args) -> list[Job]:
    s = args.image_size
    n = sum((s // k) ** 2 for k in (8, 16, 32, 64))
    # the case name is a key of the recorded benchmark files (docs/benchmark_*.json): kept as recorded
    return [Job("ms_deform_attn", f"{s} px, {n} tokens, 8 heads x 4 levels x 4 points", "all")]


@row("ms_deform_attn", "one pixel-decoder MSDeformAttn op: reference algorithm vs our paths", jobs=_msda_jobs)
def bench_ms_deform_attn(args, job: Job) -> list[Timing]:
    from semantic_sam.ops import ms_deform_attn, ms_deform_attn_pytorch

    sparse = importlib.import_module("semantic_sam.ops.ms_deform_attn_sparse")
    cpu = importlib.import_module("semantic_sam.ops.ms_deform_attn_cpu")
    value, shapes, starts, locations, weights = pixel_decoder_problem(args.image_size)
    name, case = job.row, job.case
    expected = reference_style_msda(value, shapes, locations, weights)

    def variant(label, fn):
        err = (fn() - expected).abs().max().item()
        return measure(name, case, label, lambda laps: fn(), args.repeat, args.warmup,
                       note=f"max |diff| vs reference {err:.1e}")

    timings = measure(name, case, BEFORE, lambda laps: reference_style_msda(value, shapes, locations, weights),
                      args.repeat, args.warmup, note="reference: grid_sample per level + stacked sum")
    timings += variant("grid_sample path", lambda: ms_deform_attn_pytorch(value, shapes, starts, locations, weights))
    timings += variant("sparse CSR path",
                       lambda: sparse.ms_deform_attn_sparse(value, shapes, starts, locations, weights))
    kernel = cpu.cpu_kernel()
    if kernel is not None:
        timings += variant(
            "C++ CPU kernel",
            lambda: kernel.ms_deform_attn_cpu_forward(value, shapes, starts, locations, weights, 64),
        )
    else:
        timings.append(Timing(name, case, "C++ CPU kernel", skipped="not built (pass --build-cpu-kernel)"))
    timings += variant(AFTER, lambda: ms_deform_attn(value, shapes, starts, locations, weights))
    return timings


# ---------------------------------------------------------------------------------------------------
# Image encoding
# ---------------------------------------------------------------------------------------------------
def _encode_jobs(args) -> list[Job]:
    jobs = []
    for name, config in (("SwinT", args.swint_config), ("SwinL", args.swinl_config)):
        for size in args.encode_sizes:
            variants = [BEFORE, AFTER] + ([AFTER_BF16] if args.bf16 else [])
            for v in variants:
                jobs.append(Job("encode", f"{name} {size_label(size)}", v, {"config": config, "size": list(size),
                                                                          "heavy": name == "SwinL"}))
    return jobs


@row("encode", "image encoding (backbone, pixel decoder), random weights", jobs=_encode_jobs)
def bench_encode(args, job: Job) -> list[Timing]:
    _, model = build_random_model(job.params["config"])
    model.eval()
    h, w = job.params["size"]
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        x = model.preprocess_image([torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)]).tensor
        x_small = model.preprocess_image([torch.randint(0, 256, (3, 256, 256), dtype=torch.uint8, generator=g)]).tensor
    head = model.sem_seg_head
    cache = job.variant != BEFORE  # the predictor's set_image also precomputes the decoder's memory

    def run(x: torch.Tensor, laps: Laps) -> None:
        # = model.encode_image(x, cache_decoder_memory=cache), split into its stages
        backbone_features = model.backbone(x)
        laps.lap("backbone")
        features = head.encode(backbone_features)
        laps.lap("pixel decoder")
        if cache:
            features["decoder_memory"] = head.predictor.precompute_memory(features["multi_scale_features"])
            laps.lap("decoder memory cache")

    note = "padded " + size_label(tuple(x.shape[-2:]))
    if cache:
        note += "; total includes the decoder memory cache the predictor computes at set_image"
    heavy = job.params.get("heavy")
    warm = x_small if heavy and not args.full_size_warmup else x
    if warm is x_small:
        note += "; warm-up at 256x256"
    return measure(job.row, job.case, job.variant, lambda laps: run(x, laps),
                   heavy_repeat(args) if heavy else args.repeat, args.warmup, note=note,
                   warmup_fn=lambda laps: run(warm, laps))


# ---------------------------------------------------------------------------------------------------
# Prompt decoding
# ---------------------------------------------------------------------------------------------------
def _decode_jobs(args) -> list[Job]:
    size = args.decode_size
    jobs = []
    for n in args.decode_prompts:
        case = f"{n} click{'s' if n > 1 else ''} x all levels, {size_label(size)}"
        for v in (BEFORE, AFTER, AFTER_LABELS):
            jobs.append(Job("decode", case, v, {"prompts": n, "size": list(size), "config": args.swint_config}))
    return jobs


def random_class_embeddings(num_objects: int, num_parts: int, dim: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``{"object": (num_objects, dim), "part": (num_parts, dim)}`` random unit vectors: the decoding cost of
    labels depends on the vocabulary's size, not on its embeddings (those are the ``vocabulary`` row)."""
    g = torch.Generator().manual_seed(seed)
    return {k: F.normalize(torch.randn(n, dim, generator=g), dim=-1)
            for k, n in (("object", num_objects), ("part", num_parts))}


@row("decode", "decoding clicks on an encoded image, masks at image size (after+labels: with object and part "
     "labels)", jobs=_decode_jobs)
def bench_decode(args, job: Job) -> list[Timing]:
    from semantic_sam.predictor import ALL_LEVELS, SemanticSamPredictor, levels_to_tokens

    labels = job.variant == AFTER_LABELS
    _, model = build_random_model(job.params["config"], overrides=UNICL_OVERRIDES if labels else ())
    model.eval()
    size = tuple(job.params["size"])
    image, _ = synthetic_image(size)
    points = click_points(job.params["prompts"], size)

    if job.variant == BEFORE:
        # the reference's evaluate_demo on cached features: no decoder memory cache, no attention mask
        # between clicks, every layer's heads, every mask upsampled (bilinear, crop, bicubic) to image size
        with torch.inference_mode():
            images = model.preprocess_image([torch.from_numpy(image).permute(2, 0, 1)])
            features = model.encode_image(images)
            padded = tuple(images.tensor.shape[-2:])
            boxes = model.point_to_box(torch.as_tensor(points, dtype=torch.float), size, padded, "demo")[None]
            pb = boxes.new_zeros(boxes.shape[:2])

        def once(laps: Laps) -> None:
            out = model.decode_prompts(features, boxes, pb, attn_mask="none", return_aux=True)
            laps.lap("decoder")
            masks = model.postprocess_masks(out["pred_masks"][0], padded, size, size) > 0
            laps.lap("upsampling")
            assert masks.shape[-2:] == size

        note = "force_pytorch, attn none, aux outputs, full-res logits then > 0"
    elif labels:
        # = predictor.predict_low_res(in_points, None, tokens) on the model API, with class embeddings, plus
        # each mask's object and part label (argmax of its logits)
        from semantic_sam.data.label_spaces import coco_panoptic_label_space, pascal_part_label_space

        predictor = SemanticSamPredictor(model, short_side=None)
        predictor.set_image(image)
        tokens = torch.as_tensor(levels_to_tokens(ALL_LEVELS, predictor.num_tokens))
        in_points = predictor.transform.apply_coords(points, predictor.original_size)
        num_objects = len(coco_panoptic_label_space().object_classes)
        num_parts = len(pascal_part_label_space().part_classes)
        embeddings = random_class_embeddings(num_objects, num_parts, model.text_encoder.dim_proj)
        anchors = model.point_to_box(torch.as_tensor(in_points, dtype=torch.float), predictor.input_size,
                                     predictor.padded_size, "demo")[None]
        pb = anchors.new_zeros(anchors.shape[:2])
        p, k = anchors.shape[1], predictor.num_tokens

        def once(laps: Laps) -> None:
            out = model.decode_prompts(predictor.features, anchors, pb, attn_mask=predictor.attn_mask,
                                       return_aux=False, class_embeddings=embeddings)
            low_res = out["pred_masks"][0].view(p, k, *out["pred_masks"].shape[-2:])[:, tokens]
            object_labels = out["pred_logits"][0].view(p, k, -1)[:, tokens].argmax(-1)
            part_labels = out["pred_logits_part"][0].view(p, k, -1)[:, tokens].argmax(-1)
            laps.lap("decoder")
            masks = predictor.upscale_binary(low_res)
            laps.lap("upsampling")
            assert masks.shape[-2:] == size and object_labels.shape == part_labels.shape == (p, len(tokens))

        note = (f"as after, with {num_objects} object + {num_parts} part labels per mask (random unit class "
                "embeddings, UniCL-size text encoder)")
    else:
        predictor = SemanticSamPredictor(model, short_side=None)  # the image is encoded at its own size
        predictor.set_image(image)
        tokens = levels_to_tokens(ALL_LEVELS, predictor.num_tokens)
        in_points = predictor.transform.apply_coords(points, predictor.original_size)

        def once(laps: Laps) -> None:  # = predictor.predict_torch(in_points), split into its stages
            low_res, _ = predictor.predict_low_res(in_points, None, tokens)
            laps.lap("decoder")
            masks = predictor.upscale_binary(low_res)
            laps.lap("upsampling")
            assert masks.shape[-2:] == size

        note = "SemanticSamPredictor defaults (cached memory, block mask, binary upsampling)"
    return measure(job.row, job.case, job.variant, once, args.repeat, args.warmup, note=note)
