"""A geometric stand-in for the model: a :class:`~semantic_sam.predictor.PromptableModel`, like ``SemanticSAM``.

``DiskModel`` answers a prompt with K disks centred on the prompt's anchor: token k has radius
``RADII[k]`` low-resolution pixels, logit slope ``SLOPES[k]`` per low-resolution pixel (so the
stability score is controlled by the slope) and predicted IoU ``IOUS[k]``. Its outputs are exact
functions of the prompt position, so tests can check coordinates, filters and batching against
hand-computed expectations. With ``attn_mask="none"`` every IoU is shifted by a term that depends
on the other prompts of the call, like the reference's unmasked self-attention. Prompt boxes come
from the predictor (the prompt module's geometry); the stand-in only reads their centres.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from detectron2.structures import ImageList
from torch import Tensor, nn

RADII = (4.0, 6.0, 8.0, 10.0, 12.0, 14.0)
SLOPES = (20.0, 0.5, 20.0, 20.0, 20.0, 20.0)
IOUS = (0.95, 0.99, 0.80, 0.97, 0.90, 0.93)

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "parity_tiny")


class DiskModel(nn.Module):
    num_tokens = 6
    size_divisibility = 32

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1), False)
        self.encode_calls = 0
        self.cache_requests: list[bool] = []
        self.decode_calls: list[int] = []

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, images: Sequence[Tensor]) -> ImageList:
        images = [(x.to(self.device).float() - self.pixel_mean) / self.pixel_std for x in images]
        return ImageList.from_tensors(images, self.size_divisibility)

    def encode_image(self, images: ImageList, cache_decoder_memory: bool = False) -> dict:
        self.encode_calls += 1
        self.cache_requests.append(cache_decoder_memory)
        t = images.tensor
        return {"mask_features": F.avg_pool2d(t, 4), "multi_scale_features": []}

    def decode_prompts(
        self,
        features: Mapping[str, Any],
        boxes: Tensor,
        pb: Tensor,
        attn_mask: str = "block",
        return_aux: bool = True,
    ) -> dict:
        mf = features["mask_features"]
        _, _, h4, w4 = mf.shape
        n = boxes.shape[1]
        self.decode_calls.append(n)
        ys = torch.arange(h4, dtype=torch.float, device=mf.device)[:, None] + 0.5
        xs = torch.arange(w4, dtype=torch.float, device=mf.device)[None, :] + 0.5
        cx = boxes[0, :, 0] * w4
        cy = boxes[0, :, 1] * h4
        dist = torch.sqrt((xs[None] - cx[:, None, None]) ** 2 + (ys[None] - cy[:, None, None]) ** 2)  # (N,h4,w4)
        radii = torch.tensor(RADII, device=mf.device)
        slopes = torch.tensor(SLOPES, device=mf.device)
        logits = slopes[None, :, None, None] * (radii[None, :, None, None] - dist[:, None])  # (N,K,h4,w4)
        ious = torch.tensor(IOUS, device=mf.device)[None].repeat(n, 1)
        if attn_mask == "none":
            ious = ious + 0.01 * torch.sin(boxes[0, :, :2].sum() * 100.0)
        return {
            "pred_masks": logits.reshape(1, n * 6, h4, w4),
            "pred_ious": ious[None],
            "pred_boxes": boxes.repeat_interleave(6, dim=1),
            "aux_outputs": [],
        }

    def postprocess_masks(
        self,
        mask_logits: Tensor,
        padded_size: Sequence[int],
        image_size: Sequence[int],
        output_size: Sequence[int],
    ) -> Tensor:
        lead = mask_logits.shape[:-2]
        x = mask_logits.reshape(-1, 1, *mask_logits.shape[-2:])
        x = F.interpolate(x, size=tuple(padded_size), mode="bilinear", align_corners=False)
        x = x[..., : image_size[0], : image_size[1]]
        if tuple(output_size) != tuple(image_size):
            x = F.interpolate(x, size=tuple(output_size), mode="bicubic", align_corners=False, antialias=True)
        return x.reshape(*lead, *x.shape[-2:])
