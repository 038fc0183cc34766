"""Benchmark row ``train``: one training iteration (forward, backward, optimizer step)."""
from __future__ import annotations

import numpy as np
import torch

from tools.bench.harness import (
    AFTER,
    BEFORE,
    Job,
    Laps,
    Timing,
    build_random_model,
    heavy_repeat,
    measure,
    row,
    synthetic_image,
)


# ---------------------------------------------------------------------------------------------------
# Training iteration
# ---------------------------------------------------------------------------------------------------
def _train_jobs(args) -> list[Job]:
    jobs = []
    cases = [
        ("tiny", args.tiny_config, args.tiny_train_size, False),
        ("SwinT", args.swint_config, args.train_size, True),
    ]
    for name, config, size, heavy in cases:
        label = f"{name} {size}x{size}" if size else f"{name} (config image size)"
        for v in (BEFORE, AFTER):
            jobs.append(Job("train", label, v, {"config": config, "size": size, "heavy": heavy}))
    return jobs


def training_batch(size: int, seed: int = 0) -> list[dict]:
    """One image in the SA-1B mapper's output format: ``image`` (3, S, S) uint8 and ``instances`` with
    ``gt_masks`` (BitMasks), ``gt_boxes`` (XYXY, exclusive max) and ``gt_classes`` (zeros)."""
    from detectron2.structures import BitMasks, Boxes, Instances

    image, masks = synthetic_image((size, size), seed)
    boxes = []
    for m in masks:
        rows, cols = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
        boxes.append((cols[0], rows[0], cols[-1] + 1, rows[-1] + 1))
    instances = Instances((size, size))
    instances.gt_masks = BitMasks(torch.from_numpy(np.stack(masks)))
    instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    instances.gt_classes = torch.zeros(len(masks), dtype=torch.int64)
    return [{"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), "instances": instances,
             "height": size, "width": size}]


@row("train", "one training iteration: forward, backward, optimizer step (1 image)", jobs=_train_jobs)
def bench_train(args, job: Job) -> list[Timing]:
    from semantic_sam.solver import build_optimizer

    cfg, model = build_random_model(job.params["config"], train=True)
    size = job.params["size"] or int(cfg.SAM.INPUT.IMAGE_SIZE)
    optimizer = build_optimizer(cfg, model)
    batch = training_batch(size)
    n_masks = len(batch[0]["instances"])

    def step(inputs, laps: Laps) -> None:
        losses = model(inputs)
        total = sum(losses.values())
        laps.lap("forward")
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        laps.lap("backward")
        optimizer.step()
        laps.lap("optimizer step")

    heavy = job.params.get("heavy")
    warm_batch = training_batch(min(size, 256), seed=1) if heavy and not args.full_size_warmup else batch
    dec = cfg.MODEL.DECODER
    note = (f"{n_masks} GT masks, {dec.MAX_NUM_INSTANCE} clicks x {dec.NUM_INTERACTIVE_TOKENS} tokens, "
            f"{dec.DEC_LAYERS} decoder layers")
    if warm_batch[0]["image"].shape != batch[0]["image"].shape:
        note += f"; warm-up at {warm_batch[0]['image'].shape[-1]} px"
    if job.variant == BEFORE:
        note += "; MSDA grid_sample path with autograd"
    return measure(job.row, job.case, job.variant, lambda laps: step(batch, laps),
                   heavy_repeat(args) if heavy else args.repeat, args.warmup, grad=True, note=note,
                   warmup_fn=lambda laps: step(warm_batch, laps))
