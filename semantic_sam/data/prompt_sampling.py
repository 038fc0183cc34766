"""Training prompts and their targets: clicks (and optionally boxes) sampled from GT masks.

Shape shorthand: G = GT masks of the image, N = prompts per image (``MAX_NUM_INSTANCE``),
K = output tokens per prompt (``NUM_INTERACTIVE_TOKENS``), T = targets of the image (all prompts),
(H, W) = image size, (Hp, Wp) = padded size (a multiple of 32).

Boxes are cxcywh normalized by the image size (W, H), as the reference trains; with
``padded_frame=True`` they are normalized by the padded size instead.

One image's procedure, as the reference's ``prepare_targets_interactive`` (training branch):

1. Draw ``box_start`` ~ U{(N-1)//2 .. N-1}. The reference overwrites it with N (clicks only); with
   ``box_prompts=True`` it is the number of clicks and the other N - box_start prompts are boxes.
2. ``index = randperm(G)``, repeated ``N // G + 1`` times when N > G, cut to N: prompt i comes from
   GT mask ``index[i]`` (a mask can be prompted several times).
3. Click i: a uniformly random foreground pixel (x, y) of its mask (the ``randint``-th of
   ``mask.nonzero()``, row-major). Its targets are *all* GT masks containing that pixel, in
   ascending order; when there are more than K, a random K (``shuffle``, then the first K).
   The click becomes the 6-pixel box of the prompt module
   (:func:`semantic_sam.modeling.decoder.prompt_encoder.click_boxes`), i.e. ``(x/W, y/H, 6/W, 6/H)``.
4. Box prompt i: the GT box of mask ``index[i]``; its only target is that mask.
5. pb = 1 for clicks, 0 for boxes (pb = 0 for every prompt when ``training=False``, as at inference).
6. Anchor jitter: N x 4 uniform draws (``anchor_noise``) that the decoder's
   ``noise_anchor_boxes`` turns into ``box + (2u - 1) * diff * noise_scale`` (``diff`` scaled by
   0.01 for clicks). Drawn only when training with ``noise_scale > 0``, like the reference.

The random draws are made in this order: step 1, step 2, step 3 and its shuffle for click 0, click 1,
..., then step 6; recorded draws replay in that order (:class:`~semantic_sam.utils.random_draws.ReplayRandom`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from detectron2.structures import BitMasks
from torch import Tensor

from semantic_sam.modeling.decoder.prompt_encoder import box_to_prompt, click_boxes
from semantic_sam.utils.random_draws import RandomSource, resolve_random_source

__all__ = ["ClickTargets", "PromptDraws", "prepare_click_targets"]


@dataclass(frozen=True)
class PromptDraws:
    """The random draws behind one image's prompts (for tests and replay)."""

    box_start_draw: int  # draw 1 (used only with box prompts)
    randperm: Tensor  # draw 2: (G,) int64 order of the GT masks
    click_choice: list[int]  # draw 3 per click: index into its mask's foreground pixels


@dataclass(frozen=True, eq=False)
class ClickTargets:
    """One image's N training prompts and their targets (tensors on the masks' device).

    B = ``box_start`` clicks; prompts ``>= box_start`` are boxes. Boxes are cxcywh normalized.
    Fields are also readable by key (``targets["ori_masks"]``), as the criterion and matcher read
    them (they accept plain mappings with the same keys too).
    """

    points: Tensor  # (B, 4) click boxes
    boxes_dn: Tensor  # (N, 4) the prompt boxes given to the decoder (clicks, then box prompts)
    pb: Tensor  # (N,) float: 1 = click, 0 = box (all 0 when not training)
    box_start: int  # B, the number of clicks
    anchor_noise: Tensor | None  # (N, 4) uniform [0, 1) draws for the decoder's anchor jitter, or None
    prompt_target_gt_inds: list[list[int]]  # N lists: GT indices of each prompt's targets
    target_gt_inds: Tensor  # (T,) int64: target t is GT mask target_gt_inds[t] ...
    target_prompt_inds: Tensor  # (T,) int64: ... of prompt target_prompt_inds[t]
    max_num_tgt_per_click: int  # the most targets of one prompt (0 without targets)
    prompt_gt_inds: Tensor  # (N,) int64: the GT mask each prompt was drawn from (-1: none, empty image)
    clicks_xy: Tensor  # (B, 2) int64 click pixels (x, y)
    masks: Tensor  # (N, Hp, Wp) bool: each prompt's GT, padded
    ori_masks: Tensor  # (G, Hp, Wp) bool: all GT, padded
    boxes: Tensor  # (N, 4): each prompt's GT box
    ori_boxes: Tensor  # (G, 4): all GT boxes
    image_size: tuple[int, int]  # (H, W)
    padded_size: tuple[int, int]  # (Hp, Wp)
    draws: PromptDraws

    def __getitem__(self, key: str) -> Any:
        if key not in _CLICK_TARGET_KEYS:
            raise KeyError(key)
        return getattr(self, key)


_CLICK_TARGET_KEYS = frozenset(f.name for f in fields(ClickTargets))


def prepare_click_targets(
    gt_masks: Tensor | BitMasks,
    image_size: tuple[int, int],
    padded_size: tuple[int, int],
    num_clicks: int,
    num_tokens: int,
    generator: torch.Generator | None = None,
    box_prompts: bool = False,
    noise_scale: float = 0.4,
    training: bool = True,
    *,
    gt_boxes: Tensor | None = None,
    rng: RandomSource | None = None,
    padded_frame: bool = False,
) -> ClickTargets:
    """Sample the N training prompts of one image and their targets.

    Args:
        gt_masks: (G, h, w) bool GT masks (or ``BitMasks``), h <= Hp and w <= Wp; they are
            zero-padded bottom/right to the padded size.
        image_size: (H, W) of the image (``Instances.image_size``): boxes are normalized by it.
        padded_size: (Hp, Wp) of the padded batch (``ImageList.tensor.shape[-2:]``).
        num_clicks: N, prompts per image (``MODEL.DECODER.MAX_NUM_INSTANCE``).
        num_tokens: K, outputs per prompt (``MODEL.DECODER.NUM_INTERACTIVE_TOKENS``): at most K
            targets are kept per click.
        generator: draw everything from this generator. Default (and ``rng`` None): the
            reference's sources (torch's global generator, Python's ``random``), which reproduce
            the reference draw for draw under the same seeds.
        box_prompts: train a random share of the prompts as GT boxes (``MODEL.DECODER.TRAIN_BOX_PROMPTS``).
        noise_scale: ``MODEL.DECODER.DN_NOISE_SCALE``; the anchor jitter is drawn only when
            ``training`` and ``noise_scale > 0``.
        training: False gives pb = 0 for every prompt and no anchor jitter (the sampling of
            the prompts stays random; the evaluation's clicks live in ``semantic_sam.evaluation``).
        gt_boxes: (G, 4) xyxy pixel boxes; default: the masks' tight boxes
            ``(x_min, y_min, x_max + 1, y_max + 1)`` as the SA-1B mapper computes them.
        rng: a :class:`~semantic_sam.utils.random_draws.RandomSource` (e.g. ``ReplayRandom`` of
            recorded draws); takes precedence over ``generator``.
        padded_frame: normalize boxes by (Wp, Hp) instead of (W, H) (``TRAIN_BOXES_PADDED_FRAME``).

    Returns:
        :class:`ClickTargets`.

    Raises:
        ValueError: bad shapes or sizes, or a GT mask that is clicked but empty.
    """
    masks = _as_bool_masks(gt_masks)
    image_size = (int(image_size[0]), int(image_size[1]))
    padded_size = (int(padded_size[0]), int(padded_size[1]))
    _check_sizes(masks, padded_size, num_clicks, num_tokens, gt_boxes)
    rng = resolve_random_source(rng, generator)

    # Step 1; the reference overwrites the draw with N (clicks only).
    box_start_draw = rng.randint(int((num_clicks - 1) / 2), num_clicks - 1)
    num_points = box_start_draw if box_prompts else num_clicks
    if masks.shape[0] == 0:
        return _empty_image_targets(
            num_clicks, image_size, padded_size, training, noise_scale, rng, masks.device, box_start_draw
        )
    # Steps 2-4: the prompts' GT masks, the click pixels and the targets kept.
    sample = _draw_prompts(masks, num_clicks, num_points, num_tokens, rng, box_start_draw)
    # Step 6: the anchor jitter, the last draw.
    anchor_noise = _anchor_noise(rng, num_clicks, training, noise_scale, masks.device)
    return _build_targets(masks, gt_boxes, sample, anchor_noise, training, image_size, padded_size, padded_frame)


# ------------------------------------------------------------------------------------------------
# Steps
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _PromptSample:
    """The random part of one image's prompts."""

    sources: Tensor  # (N,) int64: the GT mask of each prompt
    num_points: int  # the first num_points prompts are clicks, the others boxes
    clicks_xy: list[tuple[int, int]]
    prompt_target_gt_inds: list[list[int]]
    draws: PromptDraws


def _draw_prompts(
    masks: Tensor, num_clicks: int, num_points: int, num_tokens: int, rng: RandomSource, box_start_draw: int
) -> _PromptSample:
    """Steps 2-4: ``randperm`` of the GT masks, then each click's pixel and (shuffled) targets."""
    perm = rng.randperm(masks.shape[0])
    sources = _prompt_sources(perm, num_clicks)
    source_list = [int(i) for i in sources.tolist()]
    clicks_xy, choices, prompt_target_gt_inds = _sample_clicks(masks, source_list[:num_points], num_tokens, rng)
    prompt_target_gt_inds += [[g] for g in source_list[num_points:]]  # a box prompt's only target: its mask
    draws = PromptDraws(box_start_draw, perm, choices)
    return _PromptSample(sources, num_points, clicks_xy, prompt_target_gt_inds, draws)


def _build_targets(
    masks: Tensor,
    gt_boxes: Tensor | None,
    sample: _PromptSample,
    anchor_noise: Tensor | None,
    training: bool,
    image_size: tuple[int, int],
    padded_size: tuple[int, int],
    padded_frame: bool,
) -> ClickTargets:
    """The prompts' boxes and flags and the targets' masks, boxes and indices (no random draws)."""
    device, n, num_points = masks.device, sample.sources.numel(), sample.num_points
    if gt_boxes is None:
        gt_boxes = BitMasks(masks).get_bounding_boxes().tensor
    ori_boxes = box_to_prompt(gt_boxes.to(device), image_size)
    clicks = torch.as_tensor(sample.clicks_xy, dtype=torch.float32, device=device).reshape(-1, 2)
    points = click_boxes(clicks, image_size)
    index = sample.sources.to(device)
    boxes = ori_boxes[index]
    boxes_dn = torch.cat([points, boxes[num_points:]], dim=0)
    if padded_frame:
        frame = _image_to_padded_frame((points, boxes_dn, boxes, ori_boxes), image_size, padded_size)
        points, boxes_dn, boxes, ori_boxes = frame
    ori_masks = _pad_masks(masks, padded_size)
    target_gt_inds, target_prompt_inds, max_targets = _flat_targets(sample.prompt_target_gt_inds, device)
    return ClickTargets(
        points=points,
        boxes_dn=boxes_dn,
        pb=_prompt_types(num_points, n, training, device),
        box_start=num_points,
        anchor_noise=anchor_noise,
        prompt_target_gt_inds=sample.prompt_target_gt_inds,
        target_gt_inds=target_gt_inds,
        target_prompt_inds=target_prompt_inds,
        max_num_tgt_per_click=max_targets,
        prompt_gt_inds=index,
        clicks_xy=torch.as_tensor(sample.clicks_xy, dtype=torch.long, device=device).reshape(-1, 2),
        masks=ori_masks[index],
        ori_masks=ori_masks,
        boxes=boxes,
        ori_boxes=ori_boxes,
        image_size=image_size,
        padded_size=padded_size,
        draws=sample.draws,
    )


def _image_to_padded_frame(
    boxes: tuple[Tensor, ...], image_size: tuple[int, int], padded_size: tuple[int, int]
) -> tuple[Tensor, ...]:
    """Boxes normalized by the image (W, H) -> normalized by the padded (Wp, Hp)."""
    (h, w), (hp, wp) = image_size, padded_size
    device = boxes[0].device
    rescale = torch.as_tensor([w, h, w, h], dtype=torch.float32, device=device) / torch.as_tensor(
        [wp, hp, wp, hp], dtype=torch.float32, device=device
    )
    return tuple(t * rescale for t in boxes)


def _as_bool_masks(gt_masks: Tensor | BitMasks) -> Tensor:
    masks = gt_masks.tensor if isinstance(gt_masks, BitMasks) else gt_masks
    if not isinstance(masks, Tensor) or masks.dim() != 3:
        shape = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise ValueError(f"gt_masks must be a (G, H, W) bool tensor or BitMasks, got {shape}")
    return masks.bool()


def _check_sizes(
    masks: Tensor, padded_size: tuple[int, int], num_clicks: int, num_tokens: int, gt_boxes: Tensor | None
) -> None:
    num_gt, mh, mw = masks.shape
    if mh > padded_size[0] or mw > padded_size[1]:
        raise ValueError(f"gt_masks of size {(mh, mw)} do not fit the padded size {tuple(padded_size)}")
    if num_clicks < 1 or num_tokens < 1:
        raise ValueError(f"num_clicks and num_tokens must be >= 1, got {num_clicks} and {num_tokens}")
    if gt_boxes is not None and tuple(gt_boxes.shape) != (num_gt, 4):
        raise ValueError(f"gt_boxes must be ({num_gt}, 4) xyxy pixels, got {tuple(gt_boxes.shape)}")


def _pad_masks(masks: Tensor, padded_size: tuple[int, int]) -> Tensor:
    """(G, h, w) -> (G, Hp, Wp), zero-padded bottom/right."""
    num_gt, mh, mw = masks.shape
    padded = torch.zeros((num_gt, *padded_size), dtype=torch.bool, device=masks.device)
    padded[:, :mh, :mw] = masks
    return padded


def _prompt_sources(perm: Tensor, num_clicks: int) -> Tensor:
    """The GT mask of each of the N prompts: ``perm``, repeated when N > G, cut to N."""
    if num_clicks > perm.numel():
        perm = perm.repeat(num_clicks // perm.numel() + 1)
    return perm[:num_clicks]


def _sample_clicks(
    masks: Tensor, sources: list[int], num_tokens: int, rng: RandomSource
) -> tuple[list[tuple[int, int]], list[int], list[list[int]]]:
    """One click per source mask and its targets; the draws interleave click by click.

    Returns:
        (clicks (x, y), the foreground index drawn for each, the GT indices of each click's targets).
    """
    width = masks.shape[-1]
    clicks_xy: list[tuple[int, int]] = []
    choices: list[int] = []
    prompt_target_gt_inds: list[list[int]] = []
    for g in sources:
        foreground = masks[g].flatten().nonzero().squeeze(1)
        if foreground.numel() == 0:
            raise ValueError(f"gt_masks[{g}] is empty; every clicked GT mask needs a foreground pixel")
        choice = rng.randint(0, foreground.numel() - 1)
        y, x = divmod(int(foreground[choice]), width)
        targets = masks[:, y, x].nonzero().squeeze(1).tolist()
        if len(targets) > num_tokens:
            rng.shuffle(targets)
            targets = targets[:num_tokens]
        choices.append(choice)
        clicks_xy.append((x, y))
        prompt_target_gt_inds.append(targets)
    return clicks_xy, choices, prompt_target_gt_inds


def _prompt_types(num_points: int, num_clicks: int, training: bool, device: torch.device) -> Tensor:
    """pb: 1 for the clicks and 0 for the boxes in training; 0 for every prompt otherwise."""
    if training:
        return torch.cat([torch.ones(num_points), torch.zeros(num_clicks - num_points)]).to(device)
    return torch.zeros(num_clicks, device=device)


def _anchor_noise(
    rng: RandomSource, num_clicks: int, training: bool, noise_scale: float, device: torch.device
) -> Tensor | None:
    return rng.rand(num_clicks, 4, device=device) if training and noise_scale > 0 else None


def _flat_targets(prompt_target_gt_inds: list[list[int]], device: torch.device) -> tuple[Tensor, Tensor, int]:
    """(target_gt_inds (T,), target_prompt_inds (T,), the most targets of one prompt)."""
    counts = [len(targets) for targets in prompt_target_gt_inds]
    flat = [g for targets in prompt_target_gt_inds for g in targets]
    target_gt_inds = torch.as_tensor(flat, dtype=torch.long, device=device)
    target_prompt_inds = torch.arange(len(counts), device=device).repeat_interleave(
        torch.as_tensor(counts, device=device)
    )
    return target_gt_inds, target_prompt_inds, max(counts, default=0)


def _empty_image_targets(
    num_clicks: int,
    image_size: tuple[int, int],
    padded_size: tuple[int, int],
    training: bool,
    noise_scale: float,
    rng: RandomSource,
    device: torch.device,
    box_start_draw: int,
) -> ClickTargets:
    """N placeholder prompts (whole-image boxes) without targets, so that the image still batches."""
    hp, wp = padded_size
    empty_long = torch.zeros(0, dtype=torch.long, device=device)
    return ClickTargets(
        points=torch.zeros(0, 4, device=device),
        boxes_dn=torch.tensor([[0.5, 0.5, 1.0, 1.0]], device=device).repeat(num_clicks, 1),
        pb=(torch.ones if training else torch.zeros)(num_clicks, device=device),
        box_start=num_clicks,
        anchor_noise=_anchor_noise(rng, num_clicks, training, noise_scale, device),
        prompt_target_gt_inds=[[] for _ in range(num_clicks)],
        target_gt_inds=empty_long,
        target_prompt_inds=empty_long,
        max_num_tgt_per_click=0,
        prompt_gt_inds=torch.full((num_clicks,), -1, dtype=torch.long, device=device),
        clicks_xy=torch.zeros(0, 2, dtype=torch.long, device=device),
        masks=torch.zeros((num_clicks, hp, wp), dtype=torch.bool, device=device),
        ori_masks=torch.zeros((0, hp, wp), dtype=torch.bool, device=device),
        boxes=torch.zeros(num_clicks, 4, device=device),
        ori_boxes=torch.zeros(0, 4, device=device),
        image_size=image_size,
        padded_size=padded_size,
        draws=PromptDraws(box_start_draw, empty_long.cpu(), []),
    )
