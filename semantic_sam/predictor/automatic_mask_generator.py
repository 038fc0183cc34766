"""Automatic mask generation into SAM-style records: a grid of clicks over the image (and over crops), filtered
(``mode="grid"``), or the labelled instances of the model's generic queries (``mode="generic"``)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torchvision.ops import batched_nms

from ..errors import UserError
from ..modeling.decoder.prompt_encoder import check_attn_mask_mode
from ..utils.box_ops import box_area
from ..utils.deprecation import DeprecatedAlias, renamed_kwargs
from ..utils.image_io import to_rgb_uint8
from ..utils.precision import inference_autocast
from .amg_utils import (
    MaskData,
    area_from_rle,
    batch_iterator,
    boxes_from_rles,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    calculate_stability_score,
    coco_rle_to_mask,
    generate_crop_boxes,
    is_box_near_crop_edge,
    masks_to_coco_rle,
    remove_small_regions,
    rle_to_uncompressed,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)
from .interactive_predictor import SemanticSamPredictor
from .labels import LABEL_COLUMNS, MaskLabels, NoTextEncoderError, Vocabulary, top_labels
from .levels import ALL_LEVELS, levels_to_tokens
from .model_interface import PromptableModel
from .transforms import DEFAULT_MAX_SIZE

__all__ = ["NoGenericQueriesError", "SemanticSamAutomaticMaskGenerator"]

_OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
_MODES = ("grid", "generic")


class NoGenericQueriesError(ValueError, UserError):
    """``mode="generic"`` was asked of a model without generic queries (``MODEL.DECODER.NUM_OBJECT_QUERIES`` 0)."""


class SemanticSamAutomaticMaskGenerator:
    """Segment a whole image at one or several levels (user granularities) from a grid of clicks.

    The parameters are SAM's ``SamAutomaticMaskGenerator`` ones with the reference's defaults for
    Semantic-SAM, plus ``levels``.

    Arguments:
        model: a ``SemanticSAM`` model (any :class:`~semantic_sam.predictor.model_interface.PromptableModel`),
            or a :class:`SemanticSamPredictor` to share.
        points_per_side: clicks per image side (points_per_side**2 clicks); None if ``point_grids``.
        points_per_batch: clicks decoded together. With ``attn_mask="block"`` (default) it only
            trades speed for memory: the output does not depend on it.
        pred_iou_thresh: keep masks whose predicted IoU (raw head output) is > this.
        stability_score_thresh: keep masks whose stability score is >= this.
        stability_score_offset: the logit offset (+-) of the stability score's two cutoffs.
        box_nms_thresh: box IoU above which a lower-scored mask of the same crop is dropped.
        crop_n_layers: also run on crop layers 1..n, layer i having (2^i)^2 overlapping crops.
        crop_nms_thresh: box IoU above which a mask from a larger crop is dropped.
        crop_overlap_ratio: overlap of layer-1 crops as a fraction of the short image side.
        crop_n_points_downscale_factor: layer i uses points_per_side / factor**i clicks per side.
        point_grids: explicit normalized (x, y) grids, one per crop layer.
        min_mask_region_area: if > 0, fill holes and remove islands smaller than this (pixels),
            then rerun box NMS preferring unchanged masks.
        output_mode: "binary_mask" ((H, W) bool), "uncompressed_rle" or "coco_rle" (pycocotools).
        levels: user levels 1..K to generate (the reference's "All Prompt" = 1..6). ``level`` is a
            deprecated alias (a ``DeprecationWarning``; giving both is a ``TypeError``).
        attn_mask: "block" (default, batch-independent) or "none" (the reference: all clicks of a
            batch attend to each other, so results depend on ``points_per_batch``).
        stability_at_full_res: compute the stability score on full-resolution logits, as the
            reference, instead of on the decoder's 1/4-resolution logits (default, much faster:
            only the masks that pass both filters are upsampled).
        short_side, max_size: the resize applied to every crop before encoding (see the predictor:
            the long side is capped at 2560 by default).
        precision: ``"fp32"`` (default) or ``"bf16"``, see :class:`SemanticSamPredictor` (when ``model``
            is a predictor, its own setting applies).
        point_convention: the box each grid click becomes, see :class:`SemanticSamPredictor` (when
            ``model`` is a predictor, its own setting applies).
        mode: ``"grid"`` (default): the click grid above. ``"generic"``: one pass of the model's generic
            queries over the whole image (``model.segment(..., instance=True, panoptic=False,
            semantic=False)``, Mask DINO's instance rules) in the predictor's vocabulary; needs a model
            with generic queries (``MODEL.DECODER.NUM_OBJECT_QUERIES`` > 0, hence a text encoder).
            Of the options above it uses ``short_side``, ``max_size`` and ``precision`` (the image is
            resized as for the grid, masks come back at image size), ``min_mask_region_area`` (with
            ``box_nms_thresh`` for the NMS after the clean-up) and ``output_mode``; the click, level,
            IoU, stability and crop options do not apply (``crop_n_layers`` must be 0).
        score_thresh: ``mode="generic"`` only: keep instances whose score is > this.

    When the model has a text encoder, every record also names its mask (object and part labels,
    from the same decoder pass) in the predictor's vocabulary: :meth:`set_vocabulary` sets it.

    Example::

        generator = SemanticSamAutomaticMaskGenerator(model)                  # clicks on a 32 x 32 grid
        generator = SemanticSamAutomaticMaskGenerator(model, mode="generic")  # labelled instances
        generator.set_vocabulary(["cat", "dog", "sofa"])
        records = generator.generate(image)                                   # (H, W, 3) uint8 RGB
    """

    level = DeprecatedAlias("levels")  # the former name of the levels attribute

    @renamed_kwargs({"level": "levels"})
    def __init__(
        self,
        model: PromptableModel | SemanticSamPredictor,
        points_per_side: int | None = 32,
        points_per_batch: int = 200,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.92,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Sequence[np.ndarray] | None = None,
        min_mask_region_area: int = 10,
        output_mode: str = "binary_mask",
        levels: Sequence[int] = ALL_LEVELS,
        *,
        attn_mask: str = "block",
        stability_at_full_res: bool = False,
        short_side: int | None = 640,
        max_size: int | None = DEFAULT_MAX_SIZE,
        precision: str | None = None,
        mode: str = "grid",
        score_thresh: float = 0.5,
        point_convention: str = "demo",
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if mode == "generic" and crop_n_layers != 0:
            raise ValueError(
                f"mode='generic' segments the whole image once: crop_n_layers must be 0, got {crop_n_layers}"
            )
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if points_per_side is not None and points_per_side < 1:
            raise ValueError(f"points_per_side must be >= 1, got {points_per_side}")
        if crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be >= 0, got {crop_n_layers}")
        if points_per_side is not None:
            self.point_grids = build_all_layer_point_grids(
                points_per_side, crop_n_layers, crop_n_points_downscale_factor
            )
        else:
            self.point_grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
            if len(self.point_grids) < crop_n_layers + 1:
                raise ValueError(
                    f"point_grids has {len(self.point_grids)} grids but crop_n_layers={crop_n_layers} "
                    f"needs {crop_n_layers + 1}"
                )
            for i, g in enumerate(self.point_grids):
                if g.ndim != 2 or g.shape[1] != 2 or g.min(initial=0) < 0 or g.max(initial=0) > 1:
                    raise ValueError(f"point_grids[{i}] must be (N, 2) normalized (x, y) in [0, 1]")
        if output_mode not in _OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {_OUTPUT_MODES}, got {output_mode!r}")
        if points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {points_per_batch}")
        check_attn_mask_mode(attn_mask)

        if isinstance(model, SemanticSamPredictor):
            self.predictor = model
        else:
            self.predictor = SemanticSamPredictor(
                model, short_side=short_side, max_size=max_size, precision=precision, point_convention=point_convention
            )
        if mode == "generic":
            self._check_generic_model()
        self.mode = mode
        self.score_thresh = score_thresh
        self.levels = list(levels)
        self.tokens = levels_to_tokens(self.levels, self.predictor.num_tokens)
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.attn_mask = attn_mask
        self.stability_at_full_res = stability_at_full_res

    # ------------------------------------------------------------------ public

    @property
    def has_text_encoder(self) -> bool:
        """Whether the model has a text encoder, i.e. whether records carry labels."""
        return self.predictor.has_text_encoder

    @property
    def vocabulary(self) -> Vocabulary:
        """The predictor's vocabulary (:attr:`SemanticSamPredictor.vocabulary`)."""
        return self.predictor.vocabulary

    def set_vocabulary(self, objects: Sequence[str], parts: Sequence[str] | None = None) -> None:
        """Label masks with these names: :meth:`SemanticSamPredictor.set_vocabulary` of the predictor
        (shared with any other user of that predictor).

        Raises:
            NoTextEncoderError: the model has no text encoder. VocabularyError: an invalid vocabulary.
        """
        self.predictor.set_vocabulary(objects, parts)

    def generate(self, image: np.ndarray, image_format: str = "RGB") -> list[dict[str, Any]]:
        """Generate masks for a whole image.

        Arguments:
            image: (H, W, 3) uint8 in ``image_format``; grayscale, RGBA, uint16 and float images in
                [0, 1] are converted as by :meth:`SemanticSamPredictor.set_image`, which also lists
                what is refused.

        Returns:
            ``mode="generic"``: one record per instance of ``model.segment`` scoring above
            ``score_thresh``, in descending score order, with the same keys as below:
              segmentation, area, bbox: as below (bbox: the mask's own box, not the box head's);
              predicted_iou (float): the instance score (class probability x mean mask probability
              inside the mask); stability_score, point_coords, level: None (no click, no level, no
              mask logits); crop_box: the whole image;
              object_label (str): the instance's class in the :attr:`vocabulary`; object_score
              (float): the instance score; part_label, part_score: None.

            ``mode="grid"``: one record per mask, SAM's keys plus ``level``:
              segmentation: (H, W) bool array, or an RLE dict (``output_mode``);
              area (int): mask pixels; bbox (list[float]): xywh (w = x1 - x0, SAM's convention);
              predicted_iou (float); stability_score (float);
              point_coords (list[list[float]]): the click, pixel (x, y) of the image;
              crop_box (list[float]): xywh of the crop it came from;
              level (int): the user level of the mask;
            and, only when the model has a text encoder (:attr:`has_text_encoder`), the mask's labels
            in the :attr:`vocabulary` (:mod:`semantic_sam.predictor.labels`):
              object_label (str): the top object; object_score (float): sigmoid of its logit;
              part_label (str or None): the top part, None when its score is below the predictor's
              ``part_score_thresh`` (0.25); part_score (float, or None without a part vocabulary):
              sigmoid of the top part's logit.
        """
        image = to_rgb_uint8(image, image_format)
        if self.mode == "generic":
            return self._generate_generic(image)
        with torch.inference_mode():
            data = self._generate_masks(image)
            if self.min_mask_region_area > 0 and len(data):
                data = self.postprocess_small_regions(
                    data, self.min_mask_region_area, max(self.box_nms_thresh, self.crop_nms_thresh)
                )
        data.to_numpy()
        return self._records(data)

    # ------------------------------------------------------------------ generic mode

    def _check_generic_model(self) -> None:
        model = self.predictor.model
        if not getattr(model, "has_generic_queries", False):
            raise NoGenericQueriesError(
                "mode='generic' needs a model with generic queries (MODEL.DECODER.NUM_OBJECT_QUERIES > 0, e.g. "
                "configs/semantic_sam_swinT_coco_sa1b.yaml); this model segments prompts only: use mode='grid'"
            )
        if not self.predictor.has_text_encoder:
            raise NoTextEncoderError(
                "mode='generic' needs a model with a text encoder (MODEL.TEXT.ARCH unicl or open_clip)"
            )

    def _generate_generic(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Records of the instances of ``model.segment`` on the RGB ``image`` (H, W, 3), resized by the
        predictor's transform; masks at (H, W)."""
        pred = self.predictor
        model = pred.model
        orig_h, orig_w = image.shape[:2]
        resized = pred.transform.apply_image(image)
        if not resized.flags.writeable or not resized.flags.c_contiguous:
            resized = np.array(resized, copy=True)  # torch.from_numpy needs a writable array
        inputs = [{"image": torch.from_numpy(resized).permute(2, 0, 1), "height": orig_h, "width": orig_w}]
        with torch.inference_mode():
            embeddings = model.class_embeddings(list(self.vocabulary.objects))  # no parts: no part logits
            with inference_autocast(pred.device, pred.precision, pixel_decoder=True):
                outputs = model.segment(inputs, embeddings, instance=True, panoptic=False, semantic=False)
            instances = outputs[0]["instances"]
            scores = instances.scores.float().cpu()
            keep = torch.nonzero(scores > self.score_thresh).flatten()
            keep = keep[torch.sort(scores[keep], descending=True, stable=True).indices]
            rles = masks_to_coco_rle(instances.pred_masks[keep.to(instances.pred_masks.device)])
            data = MaskData(
                rles=rles,
                boxes=boxes_from_rles(rles),
                iou_preds=scores[keep],
                object_ids=instances.pred_classes.cpu()[keep],
            )
            del outputs, instances
            if self.min_mask_region_area > 0 and len(data):
                data = self.postprocess_small_regions(data, self.min_mask_region_area, self.box_nms_thresh)
                # its NMS reorders (unchanged masks first): back to descending score
                data.filter(torch.sort(torch.as_tensor(data["iou_preds"]), descending=True, stable=True).indices)
        data.to_numpy()
        crop_box = [0.0, 0.0, float(orig_w), float(orig_h)]
        records = []
        for i in range(len(data)):
            rle = data["rles"][i]
            score = float(data["iou_preds"][i])
            records.append(
                {
                    "segmentation": self._segmentation(rle),
                    "area": area_from_rle(rle),
                    "bbox": [float(v) for v in box_xyxy_to_xywh(np.asarray(data["boxes"][i]))],
                    "predicted_iou": score,
                    "point_coords": None,
                    "stability_score": None,
                    "crop_box": list(crop_box),
                    "level": None,
                    "object_label": self.vocabulary.objects[int(data["object_ids"][i])],
                    "object_score": score,
                    "part_label": None,
                    "part_score": None,
                }
            )
        return records

    # ------------------------------------------------------------------ stages

    def _generate_masks(self, image: np.ndarray) -> MaskData:
        orig_size = image.shape[:2]
        crop_boxes, layer_idxs = generate_crop_boxes(orig_size, self.crop_n_layers, self.crop_overlap_ratio)
        data = MaskData()
        for crop_box, layer in zip(crop_boxes, layer_idxs):
            crop_data = self._process_crop(image, crop_box, layer, orig_size)
            if len(crop_data):
                data.cat(crop_data)
        if len(crop_boxes) > 1 and len(data):
            # among overlapping duplicates keep the mask from the smallest crop
            scores = 1.0 / box_area(data["crop_boxes"].float())
            keep = batched_nms(
                data["boxes"].float(), scores, torch.zeros(len(data), dtype=torch.long), self.crop_nms_thresh
            )
            data.filter(keep)
        return data

    def _process_crop(
        self, image: np.ndarray, crop_box: list[int], layer: int, orig_size: tuple[int, int]
    ) -> MaskData:
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        crop_h, crop_w = crop.shape[:2]
        self.predictor.set_image(crop)
        points = self.point_grids[layer] * np.array([[crop_w, crop_h]], dtype=np.float64)

        data = MaskData()
        for (batch_points,) in batch_iterator(self.points_per_batch, points):
            batch = self._process_batch(batch_points, (crop_h, crop_w), crop_box, orig_size)
            if len(batch):
                data.cat(batch)
            del batch
        self.predictor.reset_image()
        if not len(data):
            return data

        keep = batched_nms(
            data["boxes"].float(), data["iou_preds"].float(), torch.zeros(len(data), dtype=torch.long),
            self.box_nms_thresh,
        )
        data.filter(keep)
        data["boxes"] = uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = torch.tensor([crop_box] * len(data), dtype=torch.long)
        return data

    def _process_batch(
        self,
        points: np.ndarray,
        crop_size: tuple[int, int],
        crop_box: list[int],
        orig_size: tuple[int, int],
    ) -> MaskData:
        pred = self.predictor
        in_points = pred.transform.apply_coords(points, crop_size)
        labels: dict[str, torch.Tensor] = {}
        if pred.has_text_encoder:
            all_masks, all_ious, class_logits = pred.decode_all_tokens(
                in_points, None, attn_mask=self.attn_mask, class_logits=True
            )
        else:
            all_masks, all_ious = pred.decode_all_tokens(in_points, None, attn_mask=self.attn_mask)
        # candidates in the reference's order (point-major, levels as given); only IoU survivors are copied
        tokens = torch.as_tensor(self.tokens, dtype=torch.long, device=all_ious.device)
        ious = all_ious[:, tokens].float()  # (P, L)
        keep = ious > self.pred_iou_thresh
        p_idx, l_idx = keep.nonzero(as_tuple=True)
        low_res = all_masks[p_idx, tokens[l_idx]]
        ious = ious[p_idx, l_idx]
        if pred.has_text_encoder:
            part = class_logits.get("part")
            top = top_labels(
                class_logits["object"][p_idx, tokens[l_idx]],
                None if part is None else part[p_idx, tokens[l_idx]],
                pred.part_score_thresh,
            )
            labels = {k: v.cpu() for k, v in top.items()}
            del class_logits
        del all_masks, all_ious
        p_cpu, l_cpu = p_idx.cpu(), l_idx.cpu()
        pts = torch.as_tensor(points, dtype=torch.float)[p_cpu]
        levels = torch.tensor(self.levels, dtype=torch.long)[l_cpu]
        stability = None
        if not self.stability_at_full_res and len(low_res):
            vh, vw = pred.low_res_valid_size
            stability = calculate_stability_score(low_res[:, :vh, :vw], 0.0, self.stability_score_offset)
            keep = (stability >= self.stability_score_thresh).cpu()
            low_res, ious, pts, levels = low_res[keep.to(low_res.device)], ious[keep.to(ious.device)], pts[keep], levels[keep]
            stability = stability[keep.to(stability.device)]
            labels = {k: v[keep] for k, v in labels.items()}

        orig_h, orig_w = orig_size
        x0, y0 = crop_box[0], crop_box[1]
        out = MaskData()
        # full resolution only for the masks that survived, a few at a time
        step = max(1, (1 << 25) // max(1, crop_size[0] * crop_size[1]))
        for start in range(0, len(low_res), step):
            sl = slice(start, start + step)
            chunk = MaskData(iou_preds=ious[sl].cpu(), points=pts[sl], levels=levels[sl])
            for key, value in labels.items():
                chunk[key] = value[sl]
            if self.stability_at_full_res:
                logits = pred.upscale_masks(low_res[sl])
                chunk["stability_score"] = calculate_stability_score(logits, 0.0, self.stability_score_offset).cpu()
                masks_t = (logits > 0).transpose(-1, -2)
                del logits
                keep = chunk["stability_score"] >= self.stability_score_thresh
                chunk.filter(keep)
                masks_t = masks_t[keep.to(masks_t.device)]
            else:
                chunk["stability_score"] = stability[sl].cpu()
                masks_t = pred.upscale_binary(low_res[sl], transposed=True)  # (n, w, h): RLE layout
            # pad the crop's masks into the image (transposed: x is the middle axis) and encode
            masks_t = uncrop_masks(masks_t, [y0, x0, crop_box[3], crop_box[2]], orig_w, orig_h)
            chunk["rles"] = masks_to_coco_rle(masks_t, transposed=True)
            del masks_t
            boxes = boxes_from_rles(chunk["rles"])  # image frame
            empty = (boxes == 0).all(dim=1)
            boxes = torch.where(empty[:, None], boxes, boxes - torch.tensor([x0, y0, x0, y0]))  # crop frame
            chunk["boxes"] = boxes
            keep = ~is_box_near_crop_edge(boxes, crop_box, [0, 0, orig_w, orig_h])
            if not bool(keep.all()):
                chunk.filter(keep)
            if len(chunk):
                out.cat(chunk)
        return out

    @staticmethod
    def postprocess_small_regions(mask_data: MaskData, min_area: int, nms_thresh: float) -> MaskData:
        """Fill holes and remove islands smaller than ``min_area`` pixels in every mask, then rerun box
        NMS (unchanged masks preferred) to drop duplicates created by the clean-up. Edits in place."""
        if len(mask_data) == 0:
            return mask_data
        boxes = mask_data["boxes"].clone()
        unchanged = []
        new_rles = {}
        for i, rle in enumerate(mask_data["rles"]):
            mask = coco_rle_to_mask(rle)
            mask, changed_h = remove_small_regions(mask, min_area, "holes")
            mask, changed_i = remove_small_regions(mask, min_area, "islands")
            changed = changed_h or changed_i
            unchanged.append(not changed)
            if changed:
                new_rles[i] = masks_to_coco_rle(mask[None])[0]
                boxes[i] = boxes_from_rles([new_rles[i]])[0].to(boxes.dtype)
        scores = torch.tensor(unchanged, dtype=torch.float)
        keep = batched_nms(boxes.float(), scores, torch.zeros(len(boxes), dtype=torch.long), nms_thresh)
        for i in keep.tolist():
            if i in new_rles:
                mask_data["rles"][i] = new_rles[i]
                mask_data["boxes"][i] = boxes[i]
        mask_data.filter(keep)
        return mask_data

    def _records(self, data: MaskData) -> list[dict[str, Any]]:
        records = []
        labels = None
        if self.has_text_encoder and len(data):
            labels = MaskLabels(self.vocabulary, *(np.asarray(data[k]) for k in LABEL_COLUMNS))
        for i in range(len(data)):
            rle = data["rles"][i]
            records.append(
                {
                    "segmentation": self._segmentation(rle),
                    "area": area_from_rle(rle),
                    "bbox": [float(v) for v in box_xyxy_to_xywh(np.asarray(data["boxes"][i]))],
                    "predicted_iou": float(data["iou_preds"][i]),
                    "point_coords": [[float(v) for v in data["points"][i]]],
                    "stability_score": float(data["stability_score"][i]),
                    "crop_box": [float(v) for v in box_xyxy_to_xywh(np.asarray(data["crop_boxes"][i]))],
                    "level": int(data["levels"][i]),
                }
            )
            if labels is not None:
                records[-1].update(labels.record(i))
        return records

    def _segmentation(self, rle: dict) -> Any:
        """A record's ``segmentation`` in ``output_mode`` from a compressed RLE."""
        if self.output_mode == "coco_rle":
            return rle
        if self.output_mode == "uncompressed_rle":
            return rle_to_uncompressed(rle)
        return coco_rle_to_mask(rle)
