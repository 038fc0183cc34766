"""Benchmark row ``vocabulary``: evaluation class embeddings of a vocabulary through ``model.class_embeddings``."""
from __future__ import annotations

import time

from tools.bench.harness import (
    AFTER,
    UNICL_OVERRIDES,
    Job,
    Laps,
    Timing,
    build_random_model,
    heavy_repeat,
    measure,
    row,
)


def evaluation_vocabulary() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(object names, part names): COCO panoptic's 133 classes and Pascal-Part's 30 parts (163 names)."""
    from semantic_sam.data.label_spaces import coco_panoptic_label_space, pascal_part_label_space

    return coco_panoptic_label_space().object_classes, pascal_part_label_space().part_classes


def vocabulary_subset(num_names: int) -> tuple[list[str], list[str]]:
    """The first ``num_names`` names of :func:`evaluation_vocabulary` (objects first; 0 = all 163), as
    (objects, parts)."""
    objects, parts = evaluation_vocabulary()
    total = len(objects) + len(parts)
    n = total if num_names <= 0 else min(num_names, total)
    return list(objects[:n]), list(parts[: max(0, n - len(objects))])


def _vocabulary_jobs(args) -> list[Job]:
    from semantic_sam.modeling.language.templates import prompt_templates

    objects, parts = vocabulary_subset(args.vocabulary_names)
    names = f"{len(objects)} + {len(parts)} names x {len(prompt_templates())} templates"
    return [
        Job("vocabulary", f"{names}, tiny text encoder", AFTER, {"config": args.tiny_text_config, "overrides": []}),
        Job("vocabulary", f"{names}, UniCL 512x12, context {args.unicl_context}", AFTER,
            {"config": args.tiny_text_config,
             "overrides": [*UNICL_OVERRIDES, f"MODEL.TEXT.CONTEXT_LENGTH={args.unicl_context}"], "heavy": True}),
    ]


@row("vocabulary", "class embeddings of a vocabulary (every template averaged), fresh cache, random text weights",
     jobs=_vocabulary_jobs)
def bench_vocabulary(args, job: Job) -> list[Timing]:
    from semantic_sam.modeling.language.templates import prompt_templates
    from semantic_sam.modeling.language.vocabulary import text_weights_hash

    _, model = build_random_model(job.params["config"], overrides=job.params["overrides"])
    model.eval()
    encoder = model.text_encoder
    if encoder is None:
        raise ValueError(f"{job.params['config']} has no text encoder (MODEL.TEXT.ARCH noencoder)")
    model.text_cache_dir = None  # memory only: nothing read from or written to disk
    objects, parts = vocabulary_subset(args.vocabulary_names)
    templates = len(prompt_templates())

    def once(laps: Laps, objects=objects, parts=parts) -> None:
        # model.class_embeddings builds a new TextEmbeddingCache when it has none: a fresh cache,
        # so every name is encoded (and the text weights hashed) again
        model.__dict__["_text_cache"] = None
        out = model.class_embeddings(objects, parts or None)
        assert out["object"].shape[0] == len(objects)

    heavy = job.params.get("heavy")
    timings = measure(job.row, job.case, job.variant, once, heavy_repeat(args) if heavy else args.repeat,
                      args.warmup, warmup_fn=lambda laps: once(laps, objects[:2], []))
    # a fresh cache also hashes the text weights once (its key); timed apart to scale the rest per name
    start = time.perf_counter()
    text_weights_hash(encoder)
    hash_s = time.perf_counter() - start
    num_names = len(objects) + len(parts)
    total = timings[-1]
    if total.seconds:
        per_name = max(total.median - hash_s, 0.0) / num_names
        full = sum(len(v) for v in evaluation_vocabulary())
        scaled = hash_s + per_name * full
        total.note = (f"{num_names} names x {templates} templates = {num_names * templates} texts; weights hash "
                      f"{hash_s:.2f} s + {1000 * per_name:.1f} ms per name: {full} names ~{scaled:.1f} s; "
                      f"text encoder {encoder.cache_signature()}")
    return timings
