"""Interactive prediction: encode an image once, then decode clicks and boxes into masks at every level.

Shape shorthand: H, W = original image; h, w = the resized image fed to the model ("input frame");
Hp, Wp = h, w padded to a multiple of 32; P = prompts (clicks, then boxes); L = requested levels;
C_o, C_p = object and part vocabulary sizes.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..modeling.decoder.prompt_encoder import (
    box_to_prompt,
    check_attn_mask_mode,
    check_point_convention,
    check_boxes_in_image,
    check_points_in_image,
    point_to_box,
)
from ..utils.deprecation import DeprecatedAlias
from ..utils.image_io import to_rgb_uint8
from ..utils.precision import inference_autocast, parse_dtype
from .amg_utils import mask_iou, remove_small_regions
from .labels import PART_SCORE_THRESH, MaskLabels, NoTextEncoderError, Vocabulary, default_vocabulary
from .levels import ALL_LEVELS, levels_to_tokens
from .mask_upsampling import upsample_binary_x4
from .model_interface import PromptableModel, model_num_tokens
from .transforms import DEFAULT_MAX_SIZE, ResizeShortestSide

__all__ = ["SemanticSamPredictor"]


class SemanticSamPredictor:
    """SAM-style predictor for a Semantic-SAM model (``semantic_sam.build_model`` + a checkpoint).

    Every click or box is one prompt and yields one mask per requested level (user levels 1..K, K = 6
    for the released models; see :mod:`semantic_sam.predictor.levels`). Negative clicks, mask
    prompts and several clicks describing one object do not exist in this model.

    Arguments:
        model: a ``SemanticSAM`` model, or any :class:`~semantic_sam.predictor.model_interface.PromptableModel`
            (eval mode is set here).
        short_side: the image's short side is resized to this many pixels before encoding (the
            reference demos use 640); None encodes the image at its own size.
        max_size: cap on the resized long side (default 2560, ``DEFAULT_MAX_SIZE``: images up to 4:1
            are resized as by the reference, which has no cap); None removes the cap. Images more
            elongated than 20:1 are refused (:class:`~semantic_sam.predictor.transforms.ResizeShortestSide`).
        attn_mask: ``"block"`` (default): each prompt's queries see only each other, so a prompt's
            outputs do not depend on the other prompts of the call. ``"none"``: every query sees every
            query, as the reference's demo, predictor and generator (identical for a single prompt).
        score_thresh, dedup_iou_thresh, hole_area, island_area: :meth:`select_masks` defaults (the
            reference predictor's: drop predicted IoU < 0.5, near-duplicates with mask IoU > 0.95,
            fill holes and remove islands under 100 pixels).
        precision: ``None`` / ``"fp32"`` (default, the reference's numerics) or ``"bf16"``: encoding
            and decoding under bfloat16 autocast, pixel decoder included
            (:func:`semantic_sam.utils.precision.inference_autocast`); about 2x faster image encoding
            on CPUs with AMX, within the tolerance documented in docs/PERFORMANCE.md.
        cache_decoder_memory: precompute the decoder's prompt-independent work once per image in
            :meth:`set_image` (``encode_image(..., cache_decoder_memory=True)``), reused by every
            prediction on that image; False recomputes it per call, as the reference.
        part_score_thresh: a mask's part label is given only when the top part's score (sigmoid of
            its logit) is at least this (default 0.25, SEMANTIC_SPEC §6).
        point_convention: the box a click becomes (:func:`~semantic_sam.modeling.decoder.prompt_encoder.click_boxes`):
            ``"demo"`` (default, the reference's predictor): 0.005 of the image, about the 6-pixel training
            box at 1024 px; ``"eval"``: the 6-pixel box itself, as training and evaluation give it. A model
            trained on small images (the built-in model, 224 px: 6 pixels are 2.7 %) sees its training
            clicks only with ``"eval"``.

    **Labels.** When the model has a text encoder (:attr:`has_text_encoder`), every mask can also be
    named: its top object label and top part label with their scores (sigmoid of the logits; see
    :mod:`semantic_sam.predictor.labels`), computed from the same decoder pass as the masks.
    ``predict(..., return_labels=True)`` adds a :class:`~semantic_sam.predictor.labels.MaskLabels`
    to the returned tuple, and the records of :meth:`predict_masks` gain ``object_label``,
    ``object_score``, ``part_label`` and ``part_score``. The vocabulary is
    :func:`~semantic_sam.predictor.labels.default_vocabulary` (COCO panoptic's 133 classes, Pascal-Part's
    30 parts) until :meth:`set_vocabulary` changes it. A model without a text encoder returns what
    it always did.

    Example::

        predictor = SemanticSamPredictor(model)
        predictor.set_image(image)                       # (H, W, 3) uint8 RGB
        masks, scores, logits = predictor.predict(point_coords=[[320, 200]])
        # masks (1, 6, H, W) bool, scores (1, 6), logits (1, 6, Hp/4, Wp/4)
        predictor.set_vocabulary(objects=["cat", "dog"], parts=["head", "leg"])   # text encoder only
        masks, scores, logits, labels = predictor.predict(point_coords=[[320, 200]], return_labels=True)
        labels.text((0, 2))                              # e.g. "cat: head", level 3 of the click
    """

    num_levels = DeprecatedAlias("num_tokens")  # the former name of K

    def __init__(
        self,
        model: PromptableModel,
        short_side: int | None = 640,
        max_size: int | None = DEFAULT_MAX_SIZE,
        attn_mask: str = "block",
        score_thresh: float = 0.5,
        dedup_iou_thresh: float = 0.95,
        hole_area: int = 100,
        island_area: int = 100,
        precision: str | None = None,
        cache_decoder_memory: bool = True,
        part_score_thresh: float = PART_SCORE_THRESH,
        point_convention: str = "demo",
    ) -> None:
        check_attn_mask_mode(attn_mask)
        check_point_convention(point_convention, "point_convention")
        self.precision = parse_dtype(precision)
        self.model = model.eval()
        self._num_tokens = model_num_tokens(self.model)
        self.transform = ResizeShortestSide(short_side, max_size)
        self.attn_mask = attn_mask
        self.score_thresh = score_thresh
        self.dedup_iou_thresh = dedup_iou_thresh
        self.hole_area = hole_area
        self.island_area = island_area
        self.cache_decoder_memory = cache_decoder_memory
        self.part_score_thresh = part_score_thresh
        self.point_convention = point_convention
        self._vocabulary: Vocabulary | None = None  # None: default_vocabulary(), built on first use
        self.reset_image()

    # ------------------------------------------------------------------ image

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def num_tokens(self) -> int:
        """K: the number of tokens (outputs) per prompt, which is also the number of user levels."""
        return self._num_tokens

    @property
    def is_image_set(self) -> bool:
        return self.features is not None

    def reset_image(self) -> None:
        """Forget the encoded image."""
        self.features: dict | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None
        self.padded_size: tuple[int, int] | None = None

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Resize and encode an image once; later :meth:`predict` calls reuse the features.

        Arguments:
            image: (H, W, 3) uint8 in ``image_format`` ("RGB" or "BGR"); (H, W) or (H, W, 1)
                grayscale and (H, W, 4) RGBA are converted, and so are uint16 (by 255 / 65535) and
                float images in [0, 1] (by 255) (:func:`semantic_sam.utils.image_io.to_rgb_uint8`).

        Raises:
            UnsupportedImageError: (a ValueError) NaN, infinite or out-of-range float pixels, another
                dtype, or an image more elongated than the transform's ``max_aspect_ratio`` (20:1).
                No image is set after an error.
        """
        self.reset_image()
        rgb = to_rgb_uint8(image, image_format)
        resized = self.transform.apply_image(rgb)
        if not resized.flags.writeable or not resized.flags.c_contiguous:
            resized = np.array(resized, copy=True)  # torch.from_numpy needs a writable array
        tensor = torch.from_numpy(resized).permute(2, 0, 1)
        self.set_torch_image(tensor, rgb.shape[:2])

    def set_torch_image(self, image: Tensor, original_size: Sequence[int]) -> None:
        """Encode an already resized image.

        Arguments:
            image: (3, h, w) or (1, 3, h, w) RGB tensor, uint8 or float on the 0-255 scale.
            original_size: (H, W) of the image before resizing; output masks have this size.
        """
        if image.dim() == 4:
            if image.shape[0] != 1:
                raise ValueError(f"set_torch_image takes one image, got a batch of {image.shape[0]}")
            image = image[0]
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be (3, h, w) or (1, 3, h, w), got {tuple(image.shape)}")
        self.reset_image()
        with torch.inference_mode(), self._autocast():
            images = self.model.preprocess_image([image.to(self.device)])
            self.features = self.model.encode_image(images, cache_decoder_memory=self.cache_decoder_memory)
        self.original_size = (int(original_size[0]), int(original_size[1]))
        self.input_size = (int(image.shape[1]), int(image.shape[2]))
        self.padded_size = (int(images.tensor.shape[-2]), int(images.tensor.shape[-1]))

    # ------------------------------------------------------------------ vocabulary

    @property
    def has_text_encoder(self) -> bool:
        """Whether the model has a text encoder, i.e. whether masks can be labelled."""
        return getattr(self.model, "text_encoder", None) is not None

    @property
    def vocabulary(self) -> Vocabulary:
        """The vocabulary masks are labelled with (default: :func:`default_vocabulary`)."""
        if self._vocabulary is None:
            self._vocabulary = default_vocabulary()
        return self._vocabulary

    def set_vocabulary(self, objects: Sequence[str], parts: Sequence[str] | None = None) -> None:
        """Label masks with these class names from now on (the encoded image is kept).

        Each name's text embedding (every prompt template averaged) is computed once, by the model's
        cache (``model.class_embeddings``), the first time a labelled prediction needs it.

        Arguments:
            objects: C_o object class names, e.g. ``["cat", "dog"]``.
            parts: C_p part class names; None: no part labels.

        Raises:
            NoTextEncoderError: the model has no text encoder.
            VocabularyError: an empty vocabulary, a single string instead of a list, a non-string
                name, or a name that is empty once normalised.
        """
        self._require_text_encoder()
        self._vocabulary = Vocabulary.checked(objects, parts)

    def _require_text_encoder(self) -> None:
        if not self.has_text_encoder:
            raise NoTextEncoderError(
                "this model has no text encoder (MODEL.TEXT.ARCH noencoder, as the released SA-1B checkpoints): "
                "it cannot label masks; use a config with MODEL.TEXT.ARCH unicl or open_clip"
            )

    def class_embeddings(self) -> dict[str, Tensor]:
        """The vocabulary's class embeddings ``{"object": (C_o, D), "part": (C_p, D)}`` (``"part"``
        only with parts), from the model's cache.

        Raises:
            NoTextEncoderError: the model has no text encoder.
        """
        self._require_text_encoder()
        vocab = self.vocabulary
        return self.model.class_embeddings(list(vocab.objects), list(vocab.parts) or None)

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")

    @property
    def low_res_valid_size(self) -> tuple[int, int]:
        """(h', w'): the part of the (Hp/4, Wp/4) low-resolution logits that covers the image (not padding)."""
        self._require_image()
        return math.ceil(self.input_size[0] / 4), math.ceil(self.input_size[1] / 4)

    # ------------------------------------------------------------------ prompts

    def _check_points(self, point_coords: Any, point_labels: Any) -> np.ndarray | None:
        if point_coords is None:
            if point_labels is not None:
                raise ValueError("point_labels given without point_coords")
            return None
        pts = np.asarray(point_coords, dtype=np.float64)
        if pts.ndim == 1 and pts.shape == (2,):
            pts = pts[None]
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"point_coords must be (N, 2) pixel (x, y), got shape {pts.shape}")
        if point_labels is not None:
            labels = np.asarray(point_labels).reshape(-1)
            if len(labels) != len(pts):
                raise ValueError(f"{len(pts)} points but {len(labels)} point_labels")
            if np.any(labels == 0):
                raise ValueError(
                    "negative clicks (label 0) are not supported by this model: Semantic-SAM "
                    "has only positive clicks; each click is its own prompt"
                )
            if np.any(labels != 1):
                raise ValueError(f"point_labels must be 1 (positive click), got {sorted(set(labels.tolist()))}")
        check_points_in_image(torch.tensor(pts), self.original_size)
        return pts

    def _check_boxes(self, box: Any) -> np.ndarray | None:
        if box is None:
            return None
        b = np.asarray(box, dtype=np.float64)
        if b.ndim == 1:
            b = b[None]
        if b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"box must be (4,) or (M, 4) xyxy pixels, got shape {np.asarray(box).shape}")
        check_boxes_in_image(torch.tensor(b), self.original_size, allow_degenerate=False)
        return b

    # ------------------------------------------------------------------ prediction

    def predict(
        self,
        point_coords: np.ndarray | Sequence | None = None,
        point_labels: np.ndarray | Sequence | None = None,
        box: np.ndarray | Sequence | None = None,
        levels: Sequence[int] = ALL_LEVELS,
        return_logits: bool = False,
        attn_mask: str | None = None,
        return_labels: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray, MaskLabels]:
        """Masks for clicks and/or boxes given in pixel coordinates of the original image.

        Arguments:
            point_coords: (N, 2) clicks as pixel (x, y), 0 <= x <= W, 0 <= y <= H (a click on pixel
                column j, row i is (j, i)). Each click is one prompt.
            point_labels: (N,) all 1 (optional). 0 (negative click) is not supported by this model.
            box: (4,) or (M, 4) xyxy pixel boxes; each box is one prompt, after the clicks.
            levels: user levels 1..K to return, in this order.
            return_logits: return mask logits instead of masks thresholded at 0.
            attn_mask: override the predictor's ``attn_mask`` for this call.
            return_labels: also return the masks' object and part labels (needs a text encoder),
                from the same decoder pass.

        Returns:
            masks: (P, L, H, W) bool (float32 logits if ``return_logits``), P = N + M prompts.
            scores: (P, L) float32 predicted IoUs (raw head outputs, as the reference reports them).
            low_res_logits: (P, L, Hp/4, Wp/4) float32 logits at the decoder's resolution.
            labels (only with ``return_labels``): :class:`~semantic_sam.predictor.labels.MaskLabels`
                of the (P, L) masks in the current :attr:`vocabulary`.

        Raises:
            NoTextEncoderError: ``return_labels`` with a model that has no text encoder.
        """
        self._require_image()
        if return_labels:
            self._require_text_encoder()
        pts = self._check_points(point_coords, point_labels)
        boxes = self._check_boxes(box)
        if pts is None and boxes is None:
            raise ValueError("give at least one click (point_coords) or box")
        tokens = levels_to_tokens(levels, self.num_tokens)
        pts_t = boxes_t = None
        if pts is not None:
            pts_t = torch.as_tensor(self.transform.apply_coords(pts, self.original_size), dtype=torch.float)
        if boxes is not None:
            boxes_t = torch.as_tensor(self.transform.apply_boxes(boxes, self.original_size), dtype=torch.float)
        masks, scores, low_res, labels = self._predict_tokens(
            pts_t, boxes_t, tokens, return_logits, attn_mask, return_labels
        )
        out = (masks.cpu().numpy(), scores.float().cpu().numpy(), low_res.float().cpu().numpy())
        return out + (labels,) if return_labels else out

    def predict_torch(
        self,
        point_coords: Tensor | None = None,
        boxes: Tensor | None = None,
        levels: Sequence[int] = ALL_LEVELS,
        return_logits: bool = False,
        attn_mask: str | None = None,
        return_labels: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor] | tuple[Tensor, Tensor, Tensor, MaskLabels]:
        """Batched prompts already in the input frame (``predictor.transform.apply_coords/apply_boxes``).

        Arguments:
            point_coords: (N, 2) pixel (x, y) in the resized image.
            boxes: (M, 4) xyxy pixels in the resized image.
            return_labels: also return the (P, L) :class:`~semantic_sam.predictor.labels.MaskLabels`.

        Returns:
            masks (P, L, H, W) bool or logits, scores (P, L), low_res_logits (P, L, Hp/4, Wp/4), on the
            model's device (and the labels, numpy arrays, with ``return_labels``).
        """
        self._require_image()
        if return_labels:
            self._require_text_encoder()
        if point_coords is None and boxes is None:
            raise ValueError("give at least one click (point_coords) or box")
        tokens = levels_to_tokens(levels, self.num_tokens)
        masks, scores, low_res, labels = self._predict_tokens(
            point_coords, boxes, tokens, return_logits, attn_mask, return_labels
        )
        return (masks, scores, low_res, labels) if return_labels else (masks, scores, low_res)

    def _predict_tokens(self, pts, boxes, tokens, return_logits, attn_mask, return_labels=False):
        labels = None
        if return_labels:
            all_masks, all_scores, class_logits = self.decode_all_tokens(pts, boxes, attn_mask, class_logits=True)
            tok = torch.as_tensor(list(tokens), device=all_masks.device, dtype=torch.long)
            low_res, scores = all_masks[:, tok], all_scores[:, tok]
            part = class_logits.get("part")
            labels = MaskLabels.from_logits(
                self.vocabulary, class_logits["object"][:, tok], None if part is None else part[:, tok],
                self.part_score_thresh,
            )
        else:
            low_res, scores = self.predict_low_res(pts, boxes, tokens, attn_mask)
        masks = self.upscale_masks(low_res) if return_logits else self.upscale_binary(low_res)
        return masks, scores, low_res, labels

    def predict_low_res(
        self,
        point_coords: Tensor | np.ndarray | None,
        boxes: Tensor | np.ndarray | None,
        tokens: Sequence[int],
        attn_mask: str | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Decode prompts (input frame, pixels) into low-resolution logits for the given *tokens*.

        Arguments:
            point_coords: (N, 2) clicks, pixel (x, y) of the resized image, or None.
            boxes: (M, 4) xyxy pixel boxes of the resized image, or None.
            tokens: token indices 0..K-1 (see :func:`levels_to_tokens`).

        Returns:
            low_res_logits (P, L, Hp/4, Wp/4) and scores (P, L), P = N + M, L = len(tokens).
        """
        masks, scores = self.decode_all_tokens(point_coords, boxes, attn_mask)
        tok = torch.as_tensor(list(tokens), device=masks.device, dtype=torch.long)
        return masks[:, tok], scores[:, tok]

    def decode_all_tokens(
        self,
        point_coords: Tensor | np.ndarray | None,
        boxes: Tensor | np.ndarray | None,
        attn_mask: str | None = None,
        class_logits: bool = False,
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Like :meth:`predict_low_res` for all K tokens in token order, without copying the masks:
        low_res_logits (P, K, Hp/4, Wp/4) (a view of the model's output) and scores (P, K).

        With ``class_logits`` (needs a text encoder) also the raw class logits of the same pass in the
        current vocabulary: ``{"object": (P, K, C_o), "part": (P, K, C_p)}`` (``"part"`` only with parts).
        """
        self._require_image()
        attn_mask = self.attn_mask if attn_mask is None else check_attn_mask_mode(attn_mask)
        # outside inference mode: the model caches these embeddings for later (possibly autograd) use
        class_embeddings = self.class_embeddings() if class_logits else None
        h, w = self.input_size
        hp, wp = self.padded_size
        prompts = []
        with torch.inference_mode(), self._autocast():
            if point_coords is not None and len(point_coords):
                pts = torch.as_tensor(point_coords, dtype=torch.float, device=self.device).reshape(-1, 2)
                prompts.append(point_to_box(pts, (h, w), (hp, wp), convention=self.point_convention))
            if boxes is not None and len(boxes):
                b = torch.as_tensor(boxes, dtype=torch.float, device=self.device).reshape(-1, 4)
                prompts.append(box_to_prompt(b, (hp, wp)))
            if not prompts:
                raise ValueError("no prompts: point_coords and boxes are both empty")
            anchors = torch.cat(prompts, dim=0).to(self.device, torch.float)[None]  # (1, P, 4)
            pb = anchors.new_zeros(anchors.shape[:2])
            # only the last layer's heads are needed at inference
            # a PromptableModel without a text encoder need not take class_embeddings
            extra = {} if class_embeddings is None else {"class_embeddings": class_embeddings}
            out = self.model.decode_prompts(self.features, anchors, pb, attn_mask=attn_mask, return_aux=False, **extra)
            p, k = anchors.shape[1], self.num_tokens
            masks = out["pred_masks"][0].view(p, k, *out["pred_masks"].shape[-2:]).float()
            scores = out["pred_ious"][0].reshape(p, k).float()
            if class_embeddings is None:
                return masks, scores
            logits = {"object": out["pred_logits"][0].reshape(p, k, -1).float()}
            if "pred_logits_part" in out:
                logits["part"] = out["pred_logits_part"][0].reshape(p, k, -1).float()
        return masks, scores, logits

    def _autocast(self):
        """The autocast context of ``precision`` (a no-op for float32)."""
        return inference_autocast(self.device, self.precision, pixel_decoder=True)

    def upscale_masks(self, low_res_logits: Tensor, chunk_pixels: int = 1 << 26) -> Tensor:
        """(..., Hp/4, Wp/4) logits -> (..., H, W) logits in the original frame, as the reference:
        bilinear to the padded size, crop, bicubic (antialiased) resize to (H, W). Runs in chunks of
        about ``chunk_pixels`` output values."""
        self._require_image()
        lead = low_res_logits.shape[:-2]
        flat = low_res_logits.reshape(-1, *low_res_logits.shape[-2:])
        h, w = self.original_size
        hp, wp = self.padded_size
        step = max(1, chunk_pixels // max(1, h * w + hp * wp))
        parts = []
        with torch.inference_mode():
            for i in range(0, flat.shape[0], step):
                chunk = flat[i : i + step]
                if self.original_size == self.input_size:
                    # the reference's same-size bicubic resize is the identity: skip it
                    up = F.interpolate(chunk[None].float(), size=(hp, wp), mode="bilinear", align_corners=False)[0]
                    parts.append(up[:, :h, :w])
                else:
                    parts.append(
                        self.model.postprocess_masks(chunk, self.padded_size, self.input_size, self.original_size)
                    )
            out = torch.cat(parts, dim=0) if parts else flat.new_zeros(0, h, w)
        return out.reshape(*lead, h, w)

    def upscale_binary(self, low_res_logits: Tensor, transposed: bool = False) -> Tensor:
        """(..., Hp/4, Wp/4) logits -> (..., H, W) bool masks, ``upscale_masks(...) > 0``.

        When the image was not resized, only mask boundaries are interpolated
        (:func:`upsample_binary_x4`); pixels whose logit is within float rounding of 0 may differ.
        ``transposed=True`` returns (..., W, H), each mask transposed (what RLE encoding reads).
        """
        self._require_image()
        hp, wp = self.padded_size
        if self.original_size != self.input_size or tuple(low_res_logits.shape[-2:]) != (hp // 4, wp // 4):
            masks = self.upscale_masks(low_res_logits) > 0
            return masks.transpose(-1, -2) if transposed else masks
        lead = low_res_logits.shape[:-2]
        flat = low_res_logits.reshape(-1, *low_res_logits.shape[-2:])
        h, w = self.original_size
        with torch.inference_mode():
            if transposed:  # bilinear upsampling is separable: upsampling the transpose transposes the result
                out = upsample_binary_x4(flat.transpose(-1, -2), (w, h))
            else:
                out = upsample_binary_x4(flat, (h, w))
        return out.reshape(*lead, *out.shape[-2:])

    # ------------------------------------------------------------------ reference post-processing

    def select_masks(
        self,
        masks: np.ndarray,
        scores: np.ndarray,
        levels: Sequence[int],
        score_thresh: float | None = None,
        dedup_iou_thresh: float | None = None,
        hole_area: int | None = None,
        island_area: int | None = None,
    ) -> list[dict]:
        """The reference predictor's clean-up of one prompt's masks.

        Masks are visited by descending score; one is dropped if its score is below
        ``score_thresh`` or its mask IoU with an already kept mask exceeds ``dedup_iou_thresh``;
        the best mask is always kept (when every score is below the threshold the reference keeps
        the *lowest*-scored one instead). Then holes and islands smaller than ``hole_area`` /
        ``island_area`` pixels are removed.

        Arguments:
            masks: (L, H, W) bool; scores: (L,); levels: the L user levels.

        Returns:
            records ``{"mask": (H, W) bool, "score": float, "level": int, "area": int}`` sorted by
            descending score.
        """
        score_thresh = self.score_thresh if score_thresh is None else score_thresh
        dedup = self.dedup_iou_thresh if dedup_iou_thresh is None else dedup_iou_thresh
        hole_area = self.hole_area if hole_area is None else hole_area
        island_area = self.island_area if island_area is None else island_area
        masks = np.asarray(masks, dtype=bool)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        levels = list(levels)
        if not (len(masks) == len(scores) == len(levels)):
            raise ValueError(f"masks, scores and levels differ in length: {len(masks)}, {len(scores)}, {len(levels)}")
        order = np.argsort(-scores, kind="stable")
        kept: list[int] = []
        for rank, i in enumerate(order):
            if rank > 0 and scores[i] < score_thresh:
                continue
            if any(mask_iou(masks[i], masks[j]) > dedup for j in kept):
                continue
            kept.append(int(i))
        records = []
        for i in kept:
            m = masks[i]
            if hole_area > 0:
                m, _ = remove_small_regions(m, hole_area, "holes")
            if island_area > 0:
                m, _ = remove_small_regions(m, island_area, "islands")
            records.append({"mask": m, "score": float(scores[i]), "level": int(levels[i]), "area": int(m.sum())})
        return records

    def predict_masks(
        self,
        point_coords: np.ndarray | Sequence | None = None,
        point_labels: np.ndarray | Sequence | None = None,
        box: np.ndarray | Sequence | None = None,
        levels: Sequence[int] = ALL_LEVELS,
        attn_mask: str | None = None,
    ) -> list[list[dict]]:
        """:meth:`predict` followed by :meth:`select_masks` for every prompt (clicks, then boxes).

        Returns:
            per prompt, the records of :meth:`select_masks`; when the model has a text encoder each
            record also has the mask's labels (:meth:`MaskLabels.record
            <semantic_sam.predictor.labels.MaskLabels.record>`): ``object_label`` (str),
            ``object_score`` (float), ``part_label`` (str, or None below ``part_score_thresh``) and
            ``part_score`` (float; None without a part vocabulary).
        """
        levels = list(levels)
        if not self.has_text_encoder:
            masks, scores, _ = self.predict(point_coords, point_labels, box, levels, False, attn_mask)
            return [self.select_masks(m, s, levels) for m, s in zip(masks, scores)]
        masks, scores, _, labels = self.predict(point_coords, point_labels, box, levels, False, attn_mask, True)
        return [self.label_records(self.select_masks(m, s, levels), labels, p, levels)
                for p, (m, s) in enumerate(zip(masks, scores))]

    @staticmethod
    def label_records(records: list[dict], labels: MaskLabels, prompt: int, levels: Sequence[int]) -> list[dict]:
        """Add the label fields of prompt ``prompt`` to its records (found by their ``level`` among the
        ``levels`` the labels were predicted for); returns the same records."""
        column = {int(lv): j for j, lv in enumerate(levels)}
        for rec in records:
            rec.update(labels.record((prompt, column[int(rec["level"])])))
        return records
