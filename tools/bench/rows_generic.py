"""Benchmark row ``panoptic``: generic segmentation of one image through ``model.segment`` (panoptic, instance
and semantic outputs) with the model's generic queries, its stages timed by wrapping the calls ``segment`` makes."""
from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator, Optional

import torch

from tools.bench.harness import (
    AFTER,
    AFTER_BF16,
    GENERIC_CONFIG,
    Job,
    Laps,
    Timing,
    build_random_model,
    heavy_repeat,
    measure,
    row,
    size_label,
    synthetic_image,
)
from tools.bench.rows_model import random_class_embeddings

# the text encoder's weights stay random (nothing downloaded) and its cache in memory
GENERIC_OVERRIDES = ("MODEL.TEXT.WEIGHTS=", "MODEL.TEXT.CACHE_DIR=")
# the post-processing functions model.segment calls, in its order, each timed as its own part
POSTPROCESS_PARTS = (("semantic_inference", "semantic"), ("panoptic_inference", "panoptic"),
                     ("instance_inference", "instance"))


def coco_is_thing() -> list[bool]:
    """(133,) whether each COCO panoptic class (label-space order: things 0-79, then stuff) is a thing."""
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    from semantic_sam.data.label_spaces import coco_panoptic_label_space

    cats = sorted(COCO_CATEGORIES, key=lambda c: c["id"])
    names = coco_panoptic_label_space().object_classes
    if [c["name"] for c in cats] != list(names):
        raise RuntimeError("COCO_CATEGORIES and the COCO panoptic label space disagree on the class order")
    return [bool(c["isthing"]) for c in cats]


@contextlib.contextmanager
def segment_stage_laps(model) -> Iterator[dict]:
    """Time the stages of ``model.segment`` without changing what it computes.

    Yields a holder: set ``holder["laps"]`` to the run's :class:`Laps` before calling ``model.segment``.
    Parts: "encode" (preprocessing, backbone, pixel decoder: ``model.encode_image``), "decoder" (the generic
    queries' decoder pass: ``forward_generic``), "mask upsampling" (masks to the padded size, then cropped and
    resized to the output size; boxes), then "semantic", "panoptic", "instance" (the post-processing functions
    of :mod:`semantic_sam.modeling.postprocess`). ``holder["panoptic_queries"]`` is set to the number of queries
    the last panoptic call kept (class score above its ``object_mask_threshold``): its cost grows with it.
    The wrappers are removed on exit.
    """
    from semantic_sam.modeling import postprocess

    holder: dict = {"laps": None, "panoptic_queries": None}

    def lap(name: Optional[str]) -> None:
        if name is not None and holder["laps"] is not None:
            holder["laps"].lap(name)

    def count_panoptic_queries(class_logits, *args, object_mask_threshold: float = 0.25, **kwargs) -> None:
        scores = class_logits.float().sigmoid().max(-1).values
        holder["panoptic_queries"] = int((scores > object_mask_threshold).sum())

    def timed(fn: Callable, before: Optional[str], after: str, observe: Optional[Callable] = None) -> Callable:
        def wrapper(*args, **kwargs):
            if observe is not None:
                observe(*args, **kwargs)
            lap(before)
            out = fn(*args, **kwargs)
            lap(after)
            return out

        return wrapper

    head = model.sem_seg_head.predictor
    originals = {name: getattr(postprocess, name) for name, _ in POSTPROCESS_PARTS}
    # instance attributes shadow the bound methods; deleting them restores the methods
    model.encode_image = timed(model.encode_image, None, "encode")
    head.forward_generic = timed(head.forward_generic, None, "decoder")
    try:
        for name, part in POSTPROCESS_PARTS:
            # the first post-processing call closes the upsampling lap; later ones add ~0 to it
            observe = count_panoptic_queries if name == "panoptic_inference" else None
            setattr(postprocess, name, timed(originals[name], "mask upsampling", part, observe))
        yield holder
    finally:
        for name, fn in originals.items():
            setattr(postprocess, name, fn)
        del model.encode_image
        del head.forward_generic


def _panoptic_jobs(args) -> list[Job]:
    config = args.generic_config
    name = "SwinT" if config == GENERIC_CONFIG else os.path.splitext(os.path.basename(config))[0]
    jobs = []
    for size in args.panoptic_sizes:
        for v in [AFTER] + ([AFTER_BF16] if args.bf16 else []):
            jobs.append(Job("panoptic", f"{name} {size_label(size)}, 133 classes", v,
                            {"config": config, "size": list(size)}))
    return jobs


@row("panoptic", "generic segmentation of one image, model.segment with panoptic + instance + semantic outputs, "
     "133 COCO classes (class embeddings computed beforehand), random weights", jobs=_panoptic_jobs)
def bench_panoptic(args, job: Job) -> list[Timing]:
    _, model = build_random_model(job.params["config"], overrides=GENERIC_OVERRIDES)
    model.eval()
    if not model.has_generic_queries:
        raise ValueError(f"{job.params['config']} has no generic queries (MODEL.DECODER.NUM_OBJECT_QUERIES 0)")
    size = tuple(job.params["size"])
    is_thing = coco_is_thing()
    # the cost depends on the vocabulary's size, not on its embeddings (model.class_embeddings: vocabulary row)
    embeddings = {"object": random_class_embeddings(len(is_thing), 0, model.text_encoder.dim_proj)["object"]}
    image, _ = synthetic_image(size)
    small, _ = synthetic_image((256, 256), seed=1)
    inputs = [{"image": torch.from_numpy(image).permute(2, 0, 1).contiguous()}]
    warm_inputs = [{"image": torch.from_numpy(small).permute(2, 0, 1).contiguous()}]
    if args.full_size_warmup:
        warm_inputs = inputs
    counts: list[tuple[Optional[int], int, int]] = []  # (panoptic queries kept, segments, instances) per run

    with segment_stage_laps(model) as holder:

        def run(batch: list[dict], laps: Laps) -> None:
            holder["laps"] = laps
            out = model.segment(batch, embeddings, is_thing=is_thing)[0]
            holder["laps"] = None
            assert out["sem_seg"].shape == (len(is_thing), *batch[0]["image"].shape[-2:])
            counts.append((holder["panoptic_queries"], len(out["panoptic_seg"][1]), len(out["instances"])))

        timings = measure(job.row, job.case, job.variant, lambda laps: run(inputs, laps), heavy_repeat(args),
                          args.warmup, warmup_fn=lambda laps: run(warm_inputs, laps))
    d = max(int(model.size_divisibility), 1)
    hp, wp = ((s + d - 1) // d * d for s in size)
    kept, segments, instances = counts[-1] if counts else (None, 0, 0)
    note = (f"{model.sem_seg_head.predictor.num_queries} queries x {len(is_thing)} classes, padded {hp}x{wp}; "
            f"panoptic: {kept} queries kept, {segments} segments; {instances} instances (random weights)")
    if warm_inputs is not inputs:
        note += "; warm-up at 256x256"
    for t in timings:
        t.note = note
    return timings
