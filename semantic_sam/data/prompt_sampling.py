"""Training prompts and their targets: clicks (and optionally boxes) sampled from GT masks.

Shape shorthand: G = GT masks of the image, N = prompts per image (``MAX_NUM_INSTANCE``),
K = output tokens per prompt (``NUM_INTERACTIVE_TOKENS``), T = level targets of the image,
(H, W) = image size, (Hp, Wp) = padded size (a multiple of 32).

Boxes are cxcywh normalized by the image size (W, H), as the reference trains; with
``padded_frame=True`` they are normalized by the padded size instead.

One image's procedure, as the reference's ``prepare_targets_interactive`` (training branch):

1. Draw ``box_start`` ~ U{(N-1)//2 .. N-1}. The reference overwrites it with N (clicks only); with
   ``box_prompts=True`` it is the number of clicks and the other N - box_start prompts are boxes.
2. ``index = randperm(G)``, repeated ``N // G + 1`` times when N > G, cut to N: prompt i comes from
   GT mask ``index[i]`` (a mask can be prompted several times).
3. Click i: a uniformly random foreground pixel (x, y) of its mask (the ``randint``-th of
   ``mask.nonzero()``, row-major). Its level targets are *all* GT masks containing that pixel, in
   ascending order; when there are more than K, a random K (``shuffle``, then the first K).
   The click becomes the 6-pixel box ``(x-3, y-3, x+3, y+3)``, i.e. ``(x/W, y/H, 6/W, 6/H)``.
4. Box prompt i: the GT box of mask ``index[i]``; its only target is that mask.
5. pb = 1 for clicks, 0 for boxes (pb = 0 for every prompt when ``training=False``, as at inference).
6. Anchor jitter: N x 4 uniform draws (``anchor_noise``) that the decoder's
   ``noise_anchor_boxes`` turns into ``box + (2u - 1) * diff * noise_scale`` (``diff`` scaled by
   0.01 for clicks). Drawn only when training with ``noise_scale > 0``, like the reference.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from detectron2.structures import BitMasks
from torch import Tensor

from semantic_sam.utils.box_ops import box_xyxy_to_cxcywh
from semantic_sam.utils.random_draws import RandomSource, resolve_random_source

__all__ = ["CLICK_BOX_HALF_SIZE", "prepare_click_targets"]

# A click (x, y) becomes the box (x - 3, y - 3, x + 3, y + 3).
CLICK_BOX_HALF_SIZE = 3


def _as_bool_masks(gt_masks: Union[Tensor, BitMasks]) -> Tensor:
    masks = gt_masks.tensor if isinstance(gt_masks, BitMasks) else gt_masks
    if not isinstance(masks, Tensor) or masks.dim() != 3:
        shape = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise ValueError(f"gt_masks must be a (G, H, W) bool tensor or BitMasks, got {shape}")
    return masks.bool()


def prepare_click_targets(
    gt_masks: Union[Tensor, BitMasks],
    image_size: Tuple[int, int],
    padded_size: Tuple[int, int],
    num_clicks: int,
    num_tokens: int,
    generator: Optional[torch.Generator] = None,
    box_prompts: bool = False,
    noise_scale: float = 0.4,
    training: bool = True,
    *,
    gt_boxes: Optional[Tensor] = None,
    rng: Optional[RandomSource] = None,
    padded_frame: bool = False,
) -> Dict[str, Any]:
    """Sample the N training prompts of one image and their level targets.

    Args:
        gt_masks: (G, h, w) bool GT masks (or ``BitMasks``), h <= Hp and w <= Wp; they are
            zero-padded bottom/right to the padded size.
        image_size: (H, W) of the image (``Instances.image_size``): boxes are normalized by it.
        padded_size: (Hp, Wp) of the padded batch (``ImageList.tensor.shape[-2:]``).
        num_clicks: N, prompts per image (``MODEL.DECODER.MAX_NUM_INSTANCE``).
        num_tokens: K, outputs per prompt (``MODEL.DECODER.NUM_INTERACTIVE_TOKENS``): at most K
            level targets are kept per click.
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
        A dict (tensors on the masks' device; B = ``box_start`` clicks):

        - ``points`` (B, 4): click boxes, cxcywh normalized.
        - ``boxes_dn`` (N, 4): the prompt boxes given to the decoder (clicks, then box prompts).
        - ``pb`` (N,) float: 1 = click, 0 = box (all 0 when not training).
        - ``box_start`` int: B, the number of clicks (prompts ``>= box_start`` are boxes).
        - ``anchor_noise`` (N, 4) uniform draws in [0, 1) for the decoder's anchor jitter, or None.
        - ``level_target_inds`` list of N lists: GT indices of each prompt's targets.
        - ``target_gt_inds`` (T,) int64 and ``target_prompt_inds`` (T,) int64: the same, flat
          (target t is GT mask ``target_gt_inds[t]`` of prompt ``target_prompt_inds[t]``).
        - ``max_num_tgt_per_click`` int: the most targets of one prompt (0 without prompts).
        - ``prompt_gt_inds`` (N,) int64: the GT mask each prompt was drawn from (-1: none, empty image).
        - ``clicks_xy`` (B, 2) int64: click pixels (x, y).
        - ``masks`` (N, Hp, Wp) bool: each prompt's GT, padded; ``ori_masks`` (G, Hp, Wp) bool: all GT, padded.
        - ``boxes`` (N, 4): each prompt's GT box; ``ori_boxes`` (G, 4): all GT boxes (cxcywh normalized).
        - ``image_size``, ``padded_size``: the given sizes.
        - ``draws``: the random draws made (``box_start_draw``, ``randperm``, ``click_choice``).

    Raises:
        ValueError: bad shapes or sizes, or a GT mask that is clicked but empty.
    """
    masks = _as_bool_masks(gt_masks)
    num_gt, mh, mw = masks.shape
    h, w = (int(s) for s in image_size)
    hp, wp = (int(s) for s in padded_size)
    if mh > hp or mw > wp:
        raise ValueError(f"gt_masks of size {(mh, mw)} do not fit the padded size {(hp, wp)}")
    if num_clicks < 1 or num_tokens < 1:
        raise ValueError(f"num_clicks and num_tokens must be >= 1, got {num_clicks} and {num_tokens}")
    if gt_boxes is not None and tuple(gt_boxes.shape) != (num_gt, 4):
        raise ValueError(f"gt_boxes must be ({num_gt}, 4) xyxy pixels, got {tuple(gt_boxes.shape)}")
    rng = resolve_random_source(rng, generator)
    device = masks.device

    # Draw 1; the reference overwrites it with N (clicks only).
    box_start_draw = rng.randint(int((num_clicks - 1) / 2), num_clicks - 1)
    num_points = box_start_draw if box_prompts else num_clicks

    ori_masks = torch.zeros((num_gt, hp, wp), dtype=torch.bool, device=device)
    ori_masks[:, :mh, :mw] = masks
    size_xyxy = torch.as_tensor([w, h, w, h], dtype=torch.float32, device=device)
    frame = torch.as_tensor([wp, hp, wp, hp] if padded_frame else [w, h, w, h], dtype=torch.float32, device=device)

    if num_gt == 0:
        return _empty_image_targets(num_clicks, (h, w), (hp, wp), training, noise_scale, rng, device, box_start_draw)

    if gt_boxes is None:
        gt_boxes = BitMasks(masks).get_bounding_boxes().tensor
    ori_boxes = box_xyxy_to_cxcywh(gt_boxes.to(device=device, dtype=torch.float32)) / size_xyxy

    # Draw 2: which GT mask each prompt comes from.
    perm = rng.randperm(num_gt)
    index = perm
    if num_clicks > num_gt:
        index = index.repeat(num_clicks // num_gt + 1)
    index = index[:num_clicks]
    index_list = [int(i) for i in index.tolist()]

    # Draws 3 (and 4): click pixels and level targets, click by click (the draws interleave).
    clicks_xy: List[Tuple[int, int]] = []
    choices: List[int] = []
    level_target_inds: List[List[int]] = []
    for i in range(num_points):
        g = index_list[i]
        foreground = masks[g].flatten().nonzero().squeeze(1)
        if foreground.numel() == 0:
            raise ValueError(f"gt_masks[{g}] is empty; every clicked GT mask needs a foreground pixel")
        choice = rng.randint(0, foreground.numel() - 1)
        flat = int(foreground[choice])
        y, x = divmod(flat, mw)
        levels = masks[:, y, x].nonzero().squeeze(1).tolist()
        if len(levels) > num_tokens:
            rng.shuffle(levels)
            levels = levels[:num_tokens]
        choices.append(choice)
        clicks_xy.append((x, y))
        level_target_inds.append(levels)
    for i in range(num_points, num_clicks):
        level_target_inds.append([index_list[i]])

    clicks = torch.as_tensor(clicks_xy, dtype=torch.float32, device=device).reshape(-1, 2)
    r = CLICK_BOX_HALF_SIZE
    points = box_xyxy_to_cxcywh(torch.cat([clicks - r, clicks + r], dim=1)) / size_xyxy
    index = index.to(device)
    boxes = ori_boxes[index]
    boxes_dn = torch.cat([points, boxes[num_points:]], dim=0)
    if training:
        pb = torch.cat([torch.ones(num_points), torch.zeros(num_clicks - num_points)]).to(device)
    else:
        pb = torch.zeros(num_clicks, device=device)
    anchor_noise = rng.rand(num_clicks, 4, device=device) if training and noise_scale > 0 else None

    if padded_frame:
        rescale = size_xyxy / frame
        points, boxes_dn, boxes, ori_boxes = (t * rescale for t in (points, boxes_dn, boxes, ori_boxes))

    counts = [len(levels) for levels in level_target_inds]
    return {
        "points": points,
        "boxes_dn": boxes_dn,
        "pb": pb,
        "box_start": num_points,
        "anchor_noise": anchor_noise,
        "level_target_inds": level_target_inds,
        "target_gt_inds": torch.as_tensor(sum(level_target_inds, []), dtype=torch.long, device=device),
        "target_prompt_inds": torch.arange(num_clicks, device=device).repeat_interleave(
            torch.as_tensor(counts, device=device)
        ),
        "max_num_tgt_per_click": max(counts),
        "prompt_gt_inds": index,
        "clicks_xy": torch.as_tensor(clicks_xy, dtype=torch.long, device=device).reshape(-1, 2),
        "masks": ori_masks[index],
        "ori_masks": ori_masks,
        "boxes": boxes,
        "ori_boxes": ori_boxes,
        "image_size": (h, w),
        "padded_size": (hp, wp),
        "draws": {"box_start_draw": box_start_draw, "randperm": perm, "click_choice": choices},
    }


def _empty_image_targets(
    num_clicks: int,
    image_size: Tuple[int, int],
    padded_size: Tuple[int, int],
    training: bool,
    noise_scale: float,
    rng: RandomSource,
    device: torch.device,
    box_start_draw: int,
) -> Dict[str, Any]:
    """N placeholder prompts (whole-image boxes) without targets, so that the image still batches."""
    hp, wp = padded_size
    empty_long = torch.zeros(0, dtype=torch.long, device=device)
    return {
        "points": torch.zeros(0, 4, device=device),
        "boxes_dn": torch.tensor([[0.5, 0.5, 1.0, 1.0]], device=device).repeat(num_clicks, 1),
        "pb": (torch.ones if training else torch.zeros)(num_clicks, device=device),
        "box_start": num_clicks,
        "anchor_noise": rng.rand(num_clicks, 4, device=device) if training and noise_scale > 0 else None,
        "level_target_inds": [[] for _ in range(num_clicks)],
        "target_gt_inds": empty_long,
        "target_prompt_inds": empty_long,
        "max_num_tgt_per_click": 0,
        "prompt_gt_inds": torch.full((num_clicks,), -1, dtype=torch.long, device=device),
        "clicks_xy": torch.zeros(0, 2, dtype=torch.long, device=device),
        "masks": torch.zeros((num_clicks, hp, wp), dtype=torch.bool, device=device),
        "ori_masks": torch.zeros((0, hp, wp), dtype=torch.bool, device=device),
        "boxes": torch.zeros(num_clicks, 4, device=device),
        "ori_boxes": torch.zeros(0, 4, device=device),
        "image_size": image_size,
        "padded_size": padded_size,
        "draws": {"box_start_draw": box_start_draw, "randperm": empty_long.cpu(), "click_choice": []},
    }
