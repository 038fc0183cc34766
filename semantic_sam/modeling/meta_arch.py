"""The Semantic-SAM meta-architecture: normalization, padding, encoding, prompt decoding, post-processing.

Shape shorthand: B = images, N = prompts per image, K = tokens per prompt (granularity content
queries, ``NUM_INTERACTIVE_TOKENS``), H, W = image size, Hp, Wp = padded size (multiple of 32),
h, w = output size. Normalized boxes are cxcywh in [0, 1]; pixel boxes are xyxy; points are (x, y) pixels.

Every user of the model (interactive predictor, automatic mask generator, evaluator, training loop)
goes through the methods below: ``preprocess_image`` -> ``encode_image`` (once per image) ->
``decode_prompts`` (per prompt batch) -> ``postprocess_masks``; ``inference`` chains them for lists of
images with pixel prompts, and ``forward`` returns the training losses.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import BitMasks, ImageList
from torch import Tensor, nn

from ..utils.box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh
from ..utils.deprecation import DeprecatedAlias, renamed_kwargs
from .decoder import prompt_encoder
from .decoder.prompt_encoder import (
    POINT_CONVENTIONS,
    check_attn_mask_mode,
    check_pixel_prompts,
    check_point_convention,
    check_token_indices,
)
from .criterion import build_criterion
from .pixel_class_loss import pixel_class_loss, pixel_class_targets
from .registry import BACKBONE, HEAD, META_ARCH, get_registered, register

if TYPE_CHECKING:
    from ..data.prompt_sampling import ClickTargets

__all__ = ["SemanticSAM", "POINT_CONVENTIONS"]


@META_ARCH_REGISTRY.register()
@register(META_ARCH, "interactive_mask_dino")
class SemanticSAM(nn.Module):
    """Swin backbone -> deformable pixel decoder -> interactive multi-granularity decoder.

    Every prompt (a click or a box) yields K masks of different granularity, each with a box and a
    predicted IoU. Attributes: ``backbone``, ``sem_seg_head`` (``.pixel_decoder``, ``.predictor``),
    non-persistent buffers ``pixel_mean`` / ``pixel_std`` (3, 1, 1), ``size_divisibility``,
    ``num_tokens`` (K; ``num_mask_tokens`` is a deprecated alias), ``device``.
    """

    num_mask_tokens = DeprecatedAlias("num_tokens")

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        sem_seg_head: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        size_divisibility: int = 32,
        num_clicks_per_image: int = 60,
        num_clicks_per_labelled_image: Optional[int] = None,
        criterion: Optional[Callable] = None,
        train_box_prompts: bool = False,
        train_boxes_padded_frame: bool = False,
        noise_scale: float = 0.4,
        labelled_criterion: Optional[Callable] = None,
        text_cache_dir: Optional[str] = None,
        prompt_templates: Optional[Sequence[str]] = None,
        generic_criterion: Optional[Callable] = None,
        generic_test: Optional[Mapping[str, object]] = None,
        pixel_class_weight: float = 0.0,
    ) -> None:
        """
        Args:
            backbone: detectron2 ``Backbone`` returning ``res2..res5``.
            sem_seg_head: holds ``pixel_decoder`` (with ``forward_features``) and ``predictor``.
            pixel_mean, pixel_std: RGB normalization on the 0-255 scale.
            size_divisibility: images are zero-padded (after normalization) to a multiple of this.
            num_clicks_per_image: prompts sampled per training image (``MAX_NUM_INSTANCE``).
            num_clicks_per_labelled_image: prompts per labelled training image (``LABELLED_MAX_NUM_INSTANCE``);
                None or 0: ``num_clicks_per_image``.
            criterion: callable ``criterion(outputs, targets) -> dict[str, Tensor]`` with a
                ``weight_dict``; it must hold no parameters or buffers (it is kept outside the module
                tree, so it adds no state-dict keys).
            train_box_prompts: also sample box prompts in training (the reference never does).
            train_boxes_padded_frame: normalize training prompt and GT boxes by the padded size
                (the reference normalizes by the image size; equal for 1024 x 1024 SA-1B crops).
            noise_scale: training anchor jitter (``DN_NOISE_SCALE``); its uniform draws are made with
                the other target draws and applied by the decoder.
            labelled_criterion: the criterion of labelled clicks (many-to-one with class losses), used
                for the training inputs that carry a ``"vocabulary"``; same rules as ``criterion``.
            text_cache_dir: on-disk cache of evaluation class embeddings (``MODEL.TEXT.CACHE_DIR``;
                None: memory only).
            prompt_templates: the text prompts' format strings (``MODEL.TEXT.PROMPT_TEMPLATES``): training
                draws one per class, evaluation averages them; None or empty: the reference's 81.
            generic_criterion: the generic queries' criterion (Hungarian matching, denoising), used with
                labelled inputs when the decoder has generic queries; same rules as ``criterion``.
            generic_test: options of :meth:`segment` (``MODEL.DECODER.TEST``: ``object_mask_threshold``,
                ``overlap_threshold``, ``transform_eval``, ``temperature``, ``detections_per_image``).
            pixel_class_weight: weight of the per-pixel object-class loss on labelled images
                (``PIXEL_CLASS_WEIGHT``, :mod:`.pixel_class_loss`; 0: none). Needs a text encoder.
        """
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        if self.pixel_mean.shape != (3, 1, 1) or self.pixel_std.shape != (3, 1, 1):
            raise ValueError(f"pixel_mean and pixel_std must have 3 values, got {pixel_mean} and {pixel_std}")
        self.size_divisibility = size_divisibility
        self.num_tokens: int = int(sem_seg_head.predictor.num_tokens)
        self.num_clicks_per_image = num_clicks_per_image
        self.num_clicks_per_labelled_image = num_clicks_per_labelled_image or num_clicks_per_image
        self.train_box_prompts = train_box_prompts
        self.train_boxes_padded_frame = train_boxes_padded_frame
        self.noise_scale = noise_scale
        # Plain attributes (not submodules): the criterion must not appear in the state dict.
        self.__dict__["_criterion"] = criterion
        self.__dict__["_labelled_criterion"] = labelled_criterion
        self.__dict__["_generic_criterion"] = generic_criterion
        self.generic_test = dict(generic_test or {})
        self.text_cache_dir = text_cache_dir or None
        self.prompt_templates: Optional[tuple[str, ...]] = tuple(prompt_templates) if prompt_templates else None
        self.__dict__["_text_cache"] = None
        if pixel_class_weight < 0:
            raise ValueError(f"pixel_class_weight must be >= 0, got {pixel_class_weight}")
        if pixel_class_weight > 0 and sem_seg_head.predictor.lang_encoder is None:
            raise ValueError("the per-pixel class loss (pixel_class_weight > 0) needs a text encoder")
        self.pixel_class_weight = float(pixel_class_weight)

    @classmethod
    def from_config(cls, cfg) -> dict:
        criterion = build_criterion(cfg)  # first: a bad criterion option fails before the parts are built
        labelled_criterion = build_criterion(cfg, labelled=True)
        generic_criterion = None
        if cfg.MODEL.DECODER.NUM_OBJECT_QUERIES > 0:
            from .generic_criterion import build_generic_criterion

            generic_criterion = build_generic_criterion(cfg)
        test = cfg.MODEL.DECODER.TEST
        backbone = get_registered(BACKBONE, cfg.MODEL.BACKBONE.NAME, "MODEL.BACKBONE.NAME")(cfg)
        head = get_registered(HEAD, cfg.MODEL.HEAD, "MODEL.HEAD")(cfg, backbone.output_shape())
        return {
            "backbone": backbone,
            "sem_seg_head": head,
            "pixel_mean": list(cfg.INPUT.PIXEL_MEAN),
            "pixel_std": list(cfg.INPUT.PIXEL_STD),
            "size_divisibility": cfg.MODEL.DECODER.SIZE_DIVISIBILITY,
            "num_clicks_per_image": cfg.MODEL.DECODER.MAX_NUM_INSTANCE,
            "num_clicks_per_labelled_image": cfg.MODEL.DECODER.LABELLED_MAX_NUM_INSTANCE,
            "criterion": criterion,
            "train_box_prompts": cfg.MODEL.DECODER.get("TRAIN_BOX_PROMPTS", False),
            "train_boxes_padded_frame": cfg.MODEL.DECODER.get("TRAIN_BOXES_PADDED_FRAME", False),
            "noise_scale": cfg.MODEL.DECODER.DN_NOISE_SCALE,
            "labelled_criterion": labelled_criterion,
            "text_cache_dir": cfg.MODEL.TEXT.CACHE_DIR,
            "prompt_templates": list(cfg.MODEL.TEXT.PROMPT_TEMPLATES),
            "generic_criterion": generic_criterion,
            "pixel_class_weight": cfg.MODEL.DECODER.PIXEL_CLASS_WEIGHT,
            "generic_test": {
                "object_mask_threshold": test.OBJECT_MASK_THRESHOLD,
                "overlap_threshold": test.OVERLAP_THRESHOLD,
                "transform_eval": test.PANO_TRANSFORM_EVAL,
                "temperature": test.PANO_TEMPERATURE,
                "detections_per_image": cfg.COCO.TEST.DETECTIONS_PER_IMAGE,
            },
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def criterion(self) -> Callable:
        """The training criterion (``criterion=``, or built from the config with the model)."""
        if self._criterion is None:
            raise RuntimeError("SemanticSAM has no criterion: pass `criterion=` or build it from a config")
        return self._criterion

    @property
    def text_encoder(self) -> Optional[nn.Module]:
        """The text encoder (``sem_seg_head.predictor.lang_encoder``), or None (``MODEL.TEXT.ARCH: noencoder``)."""
        return getattr(self.sem_seg_head.predictor, "lang_encoder", None)

    @property
    def optional_key_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes a checkpoint may lack entirely (see :func:`semantic_sam.checkpoint.load_checkpoint`):
        the text encoder's, so that an SA-1B-only checkpoint (the released ones) loads into a model whose
        text encoder came from ``MODEL.TEXT.WEIGHTS``; and the generic queries' selection layers
        (``enc_output``, ``enc_output_norm``), which no released checkpoint has (they stay initialised)."""
        prefixes = ("sem_seg_head.predictor.lang_encoder.",) if self.text_encoder is not None else ()
        if self.has_generic_queries:
            prefixes += ("sem_seg_head.predictor.enc_output.", "sem_seg_head.predictor.enc_output_norm.")
        return prefixes

    @property
    def has_generic_queries(self) -> bool:
        """Whether the decoder has generic queries (``MODEL.DECODER.NUM_OBJECT_QUERIES`` > 0)."""
        return int(getattr(self.sem_seg_head.predictor, "num_queries", 0)) > 0

    def class_embeddings(self, objects: Sequence[str], parts: Optional[Sequence[str]] = None) -> dict[str, Tensor]:
        """Evaluation class embeddings of a vocabulary (every prompt template of
        :attr:`prompt_templates` averaged, cached per name).

        Args:
            objects: C_o object class names.
            parts: C_p part class names, or None / empty (no part logits).

        Returns:
            ``{"object": (C_o, D), "part": (C_p, D)}`` (``"part"`` only with parts), unit norm, no gradient.

        Raises:
            ValueError: the model has no text encoder. VocabularyError: an empty vocabulary or a bad name.
        """
        encoder = self.text_encoder
        if encoder is None:
            raise ValueError("this model has no text encoder (MODEL.TEXT.ARCH noencoder): it cannot name masks")
        from .language import TextEmbeddingCache, prompt_templates

        templates = self.prompt_templates or prompt_templates()
        cache = self._text_cache
        if cache is None or cache.encoder is not encoder or cache.templates != templates:
            self.__dict__["_text_cache"] = TextEmbeddingCache(encoder, self.text_cache_dir, templates=templates)
        out = {"object": self._text_cache(objects)}
        if parts is not None and len(parts) > 0:
            out["part"] = self._text_cache(parts)
        return out

    def training_class_embeddings(self, vocabulary: Mapping[str, Sequence[str]]) -> dict[str, Tensor]:
        """Class embeddings for one training step: one random prompt template per class (SEMANTIC_SPEC §2.4),
        with gradients into the text encoder. ``vocabulary``: ``{"object": names, "part": names}``
        (an empty part list: no part logits)."""
        from .language import training_text_embeddings

        encoder = self.text_encoder
        if encoder is None:
            raise ValueError(
                "labelled training data needs a text encoder: set MODEL.TEXT.ARCH (unicl or open_clip)"
            )
        names = list(vocabulary["object"]) + list(vocabulary.get("part") or [])
        embeddings = training_text_embeddings(encoder, names, templates=self.prompt_templates)
        num_objects = len(vocabulary["object"])
        out = {"object": embeddings[:num_objects]}
        if len(names) > num_objects:
            out["part"] = embeddings[num_objects:]
        return out

    # ------------------------------------------------------------------------------------------
    # Building blocks
    # ------------------------------------------------------------------------------------------
    def preprocess_image(self, images: Sequence[Tensor]) -> ImageList:
        """Normalize RGB images and zero-pad them (after normalization) bottom/right to a multiple of 32.

        Args:
            images: list of (3, H_i, W_i) uint8 or float tensors, RGB, 0-255.

        Returns:
            detectron2 ``ImageList``: ``tensor`` (B, 3, Hp, Wp) on the model's device, ``image_sizes``
            [(H_i, W_i)]; Hp, Wp = the largest H_i, W_i rounded up to ``size_divisibility``.
        """
        if isinstance(images, Tensor) or not isinstance(images, Sequence) or len(images) == 0:
            raise ValueError("preprocess_image expects a non-empty list of (3, H, W) image tensors")
        for i, img in enumerate(images):
            _check_image(img, f"image {i}")
        normalized = [(img.to(self.device).float() - self.pixel_mean) / self.pixel_std for img in images]
        return ImageList.from_tensors(normalized, self.size_divisibility)

    def encode_image(self, images: Union[ImageList, Tensor], cache_decoder_memory: bool = False) -> dict:
        """Backbone + pixel decoder: the expensive part, done once per image.

        Args:
            images: an ``ImageList`` from :meth:`preprocess_image`, or its (B, 3, Hp, Wp) tensor.
            cache_decoder_memory: also precompute the decoder's prompt-independent work (flattened
                memory and every layer's value projection, ``"decoder_memory"``), which
                :meth:`decode_prompts` then reuses: worth it when one image is decoded with several
                prompt batches (interactive predictor, automatic mask generation). Costs about
                ``DEC_LAYERS * S * C`` floats (106 MB for SwinT at 640 x 853).

        Returns:
            ``{"mask_features": (B, C, Hp/4, Wp/4), "multi_scale_features": [4 x (B, C, h_l, w_l)]}``,
            strides 8, 16, 32, 64 (plus ``"decoder_memory"`` if asked).
        """
        tensor = images.tensor if isinstance(images, ImageList) else images
        if not torch.is_tensor(tensor) or tensor.dim() != 4 or tensor.shape[1] != 3:
            raise ValueError(
                "encode_image expects an ImageList or a (B, 3, Hp, Wp) tensor, "
                f"got {getattr(tensor, 'shape', type(tensor))}"
            )
        features = self.sem_seg_head.encode(self.backbone(tensor))
        if cache_decoder_memory:
            features["decoder_memory"] = self.sem_seg_head.predictor.precompute_memory(features["multi_scale_features"])
        return features

    def decode_prompts(
        self,
        features: Mapping[str, object],
        boxes: Tensor,
        pb: Tensor,
        attn_mask: str = "block",
        return_aux: bool = True,
        num_point_prompts: Optional[Sequence[int]] = None,
        anchor_noise: Optional[Tensor] = None,
        class_embeddings: Optional[Mapping[str, Tensor]] = None,
    ) -> dict:
        """Decode prompts over encoded images.

        Args:
            features: the dict of :meth:`encode_image` (B images).
            boxes: (B, N, 4) prompt boxes, cxcywh normalized to the padded frame (see :meth:`point_to_box`).
            pb: (B, N) prompt-type flags (0 for every inference path of the reference).
            attn_mask: ``"block"``: each prompt's K queries attend only to each other, so a prompt's
                outputs do not depend on the other prompts; ``"none"``: every query sees every query
                (the reference's demo / automatic mask generation mode).
            return_aux: also compute the outputs of layers 0..L-2 (False: ``aux_outputs`` is empty; faster).
            num_point_prompts: training only: per image, how many leading prompts are clicks (their
                anchor jitter is 100x smaller); None = all.
            anchor_noise: training only: (B, N, 4) uniform draws for the anchor jitter (default: drawn).
            class_embeddings: ``{"object": (C_o, D), "part": (C_p, D)}`` (see :meth:`class_embeddings`);
                adds ``pred_logits`` (B, N*K, C_o) and ``pred_logits_part`` (B, N*K, C_p) to every layer.

        Returns:
            ``pred_masks`` (B, N*K, Hp/4, Wp/4) logits, ``pred_boxes`` (B, N*K, 4) cxcywh normalized to the
            padded frame, ``pred_ious`` (B, N, K) raw, ``aux_outputs`` (list of L-1 dicts, layers 0..L-2).
            Query q = i*K + k is prompt i, token k.
        """
        check_attn_mask_mode(attn_mask)
        return self.sem_seg_head.predictor(
            features["multi_scale_features"],
            features["mask_features"],
            boxes,
            pb,
            attn_mask=attn_mask,
            num_point_prompts=num_point_prompts,
            anchor_noise=anchor_noise,
            return_aux=return_aux,
            memory_cache=features.get("decoder_memory"),
            class_embeddings=class_embeddings,
        )

    @staticmethod
    def postprocess_masks(
        mask_logits: Tensor,
        padded_size: Sequence[int],
        image_size: Sequence[int],
        output_size: Sequence[int],
    ) -> Tensor:
        """Low-resolution mask logits -> logits at the output size, exactly as the reference.

        Bilinear (align_corners=False) up to (Hp, Wp), crop to (H, W), then bicubic antialiased resize to
        ``output_size``.

        Args:
            mask_logits: (..., Hp/4, Wp/4).
            padded_size: (Hp, Wp).
            image_size: (H, W) of the valid region.
            output_size: (h, w).

        Returns:
            (..., h, w) float logits.
        """
        lead = mask_logits.shape[:-2]
        x = mask_logits.reshape(1, -1, *mask_logits.shape[-2:])
        x = F.interpolate(x, size=tuple(int(s) for s in padded_size), mode="bilinear", align_corners=False)
        x = x[:, :, : int(image_size[0]), : int(image_size[1])]
        x = F.interpolate(
            x, size=tuple(int(s) for s in output_size), mode="bicubic", align_corners=False, antialias=True
        )
        return x.reshape(*lead, *x.shape[-2:])

    # The prompt geometry lives in the prompt module; these aliases keep ``model.point_to_box(...)``.
    point_to_box = staticmethod(prompt_encoder.point_to_box)
    box_to_prompt = staticmethod(prompt_encoder.box_to_prompt)

    # ------------------------------------------------------------------------------------------
    # Forward
    # ------------------------------------------------------------------------------------------
    def forward(self, batched_inputs: list[dict]):
        """Training: a dict of weighted losses; evaluation: :meth:`inference` with default options.

        Args:
            batched_inputs: list of dicts. Training (a mapper's output): ``"image"`` (3, H, W) uint8 RGB and
                ``"instances"`` (detectron2 ``Instances`` with ``gt_masks``: ``BitMasks`` or bool (M, H, W));
                labelled data also has ``"dataset_name"``, ``"vocabulary"`` (``{"object": names, "part":
                names}``) and ``instances.gt_object_classes`` / ``gt_part_classes``. Joint training passes a
                dict ``{dataset name: list of dicts}`` (one batch per dataset). Evaluation: see :meth:`inference`.

        Returns:
            Training: ``dict[str, Tensor]`` of weighted losses (``loss_mask_bce_0``, ..., 5 terms per
            decoder layer; suffix 0 = last layer; labelled data adds ``loss_mask_cls_*`` and, for part data,
            ``loss_mask_part_cls_*``); a list of inputs of several datasets, or a dict, is trained per
            dataset: with a dict each loss is prefixed with its dataset name (``sa1b_train.loss_mask_bce_0``),
            with a list the datasets' losses of the same name are added.
            Evaluation: the list of :meth:`inference`.
        """
        if not self.training:
            return self.inference(batched_inputs)
        return self._forward_train(batched_inputs)

    def _forward_train(self, batched_inputs: Union[list[dict], Mapping[str, list[dict]]]) -> dict[str, Tensor]:
        groups = _training_groups(batched_inputs)
        prefixed = isinstance(batched_inputs, Mapping)
        losses: dict[str, Tensor] = {}
        for key, inputs in groups:
            for name, value in self._group_losses(inputs).items():
                name = f"{key}.{name}" if prefixed else name
                # a list mixing datasets: the groups' losses of the same name add up
                losses[name] = losses[name] + value if name in losses else value
        # Every parameter joins the graph on every step, whatever the step's datasets (DDP without
        # find_unused_parameters): one element of each parameter, times 0, goes into the first loss.
        first = next(iter(losses))
        anchor = sum(p.reshape(-1)[0] for p in self.parameters() if p.requires_grad)
        losses[first] = losses[first] + 0.0 * anchor
        return losses

    def _group_losses(self, inputs: list[dict]) -> dict[str, Tensor]:
        """Weighted losses of a batch of one dataset: SA-1B inputs (no ``"vocabulary"``) with the configured
        criterion, labelled inputs with the many-to-one criterion and the class losses."""
        for i, x in enumerate(inputs):
            if "image" not in x or "instances" not in x:
                raise KeyError(f"training input {i} must have 'image' and 'instances', got keys {sorted(x)}")
        vocabulary = inputs[0].get("vocabulary")
        images = self.preprocess_image([x["image"] for x in inputs])
        features = self.encode_image(images)
        targets = self._sample_prompts(inputs, images)

        boxes = torch.stack([t.boxes_dn for t in targets]).to(self.device)
        pb = torch.stack([t.pb for t in targets]).to(self.device)
        num_point_prompts = [t.box_start for t in targets]
        noise = [t.anchor_noise for t in targets]
        anchor_noise = torch.stack(noise).to(self.device) if all(u is not None for u in noise) else None
        class_embeddings = labels = None
        if vocabulary is not None:
            class_embeddings = self.training_class_embeddings(vocabulary)
            labels = [self._prompt_labels(x["instances"], t, "part" in class_embeddings) for x, t in zip(inputs, targets)]
        outputs = self.decode_prompts(
            features, boxes, pb, attn_mask="block", num_point_prompts=num_point_prompts, anchor_noise=anchor_noise,
            class_embeddings=class_embeddings,
        )
        if vocabulary is None:
            criterion = self.criterion
            losses = criterion(outputs, targets)
        else:
            criterion = self._labelled_criterion
            if criterion is None:
                raise RuntimeError("SemanticSAM has no labelled criterion: pass `labelled_criterion=` or build it from a config")
            losses = criterion(outputs, targets, labels=labels)
        weight_dict = criterion.weight_dict
        weighted = {k: v * weight_dict[k] for k, v in losses.items() if k in weight_dict}
        if vocabulary is not None and self.has_generic_queries:
            weighted.update(self._generic_losses(inputs, targets, features, class_embeddings))
        if vocabulary is not None and self.pixel_class_weight > 0:
            weighted["loss_pixel_cls"] = self.pixel_class_weight * self._pixel_class_loss(
                inputs, targets, features["mask_features"], class_embeddings["object"]
            )
        return weighted

    def _pixel_class_loss(
        self, inputs: list[dict], click_targets: list[ClickTargets], mask_features: Tensor, object_embeddings: Tensor
    ) -> Tensor:
        """The unweighted per-pixel object-class loss of labelled images (:mod:`.pixel_class_loss`)."""
        predictor = self.sem_seg_head.predictor
        size = mask_features.shape[-2:]
        maps = [
            pixel_class_targets(t.ori_masks.to(self.device), x["instances"].gt_object_classes.to(self.device), size)
            for x, t in zip(inputs, click_targets)
        ]
        return pixel_class_loss(
            mask_features, predictor.class_embed, object_embeddings, predictor.lang_encoder.logit_scale, maps
        )

    def _generic_losses(
        self,
        inputs: list[dict],
        click_targets: list[ClickTargets],
        features: dict,
        class_embeddings: Mapping[str, Tensor],
    ) -> dict[str, Tensor]:
        """Weighted losses of the generic queries (and their denoising queries) on labelled images; the GT
        masks are the click targets' padded ones."""
        criterion = self._generic_criterion
        if criterion is None:
            raise RuntimeError("SemanticSAM has generic queries but no generic criterion: build it from a config")
        targets = [
            self._generic_targets(x["instances"], t.ori_masks, "part" in class_embeddings)
            for x, t in zip(inputs, click_targets)
        ]
        outputs = self.sem_seg_head.predictor.forward_generic(
            features["multi_scale_features"], features["mask_features"], class_embeddings, targets
        )
        losses = criterion(outputs, targets)
        return {k: v * criterion.weight_dict[k] for k, v in losses.items() if k in criterion.weight_dict}

    def _generic_targets(self, instances, masks: Tensor, with_parts: bool) -> dict[str, Tensor]:
        """One labelled image's targets of the generic queries: ``labels`` (G,), ``part_labels`` (G,) (part
        data), ``masks`` (G, Hp, Wp) bool padded (given), ``boxes`` (G, 4) cxcywh normalized to the padded frame."""
        hp, wp = masks.shape[-2:]
        boxes = BitMasks(masks).get_bounding_boxes().tensor.to(self.device)
        boxes = box_xyxy_to_cxcywh(boxes) / boxes.new_tensor([wp, hp, wp, hp])
        targets = {"labels": instances.gt_object_classes.to(self.device, torch.long), "masks": masks, "boxes": boxes}
        if with_parts:
            targets["part_labels"] = instances.gt_part_classes.to(self.device, torch.long)
        return targets

    def _prompt_labels(self, instances, targets: "ClickTargets", with_parts: bool) -> dict[str, Tensor]:
        """Each prompt's object and part class (N,) (-1: none) from the GT mask it was drawn from."""
        gt = targets.prompt_gt_inds.to(self.device)
        out = {}
        for key, field in (("object", "gt_object_classes"), ("part", "gt_part_classes")):
            if key == "part" and not with_parts:
                continue
            if not instances.has(field):
                raise KeyError(f"labelled training input has no instances.{field}")
            classes = instances.get(field).to(self.device, torch.long)
            labels = torch.full_like(gt, -1)
            drawn = gt >= 0  # an image without masks has no prompt with a GT
            labels[drawn] = classes[gt[drawn]]
            out[key] = labels
        return out

    def _sample_prompts(self, batched_inputs: list[dict], images: ImageList) -> list[ClickTargets]:
        """Sample each training image's prompts and their targets (labelled images: their own prompt count)."""
        from ..data.prompt_sampling import prepare_click_targets

        padded_size = tuple(images.tensor.shape[-2:])
        targets = []
        for i, (x, image_size) in enumerate(zip(batched_inputs, images.image_sizes)):
            instances = x["instances"]
            gt_masks = instances.gt_masks
            if isinstance(gt_masks, BitMasks):
                gt_masks = gt_masks.tensor
            if not torch.is_tensor(gt_masks) or gt_masks.dim() != 3:
                raise ValueError(f"training input {i}: instances.gt_masks must be BitMasks or a (M, H, W) tensor")
            gt_boxes = instances.gt_boxes.tensor.to(self.device) if instances.has("gt_boxes") else None
            targets.append(
                prepare_click_targets(
                    gt_masks.to(self.device).bool(),
                    tuple(image_size),
                    padded_size,
                    num_clicks=self.num_clicks_per_labelled_image if "vocabulary" in x else self.num_clicks_per_image,
                    num_tokens=self.num_tokens,
                    box_prompts=self.train_box_prompts,
                    noise_scale=self.noise_scale,
                    training=True,
                    gt_boxes=gt_boxes,
                    padded_frame=self.train_boxes_padded_frame,
                )
            )
        return targets

    @torch.no_grad()
    @renamed_kwargs(
        {"levels": "tokens"}, note="it always took token indices 0..K-1, not the user levels 1..K of the predictor"
    )
    def inference(
        self,
        batched_inputs: list[dict],
        tokens: Optional[Sequence[int]] = None,
        attn_mask: str = "block",
        point_convention: str = "eval",
        class_embeddings: Optional[Mapping[str, Tensor]] = None,
    ) -> list[dict]:
        """Segment the prompts of several images (of any sizes) at once.

        Images with the same padded size are encoded together; every image is decoded on its own, so
        its results do not depend on the other images of the call.

        Args:
            batched_inputs: list of dicts, one per image, with ``"image"`` (3, H, W) uint8 (or float 0-255)
                RGB; optional ``"height"``, ``"width"`` (output size, default H, W); prompts in the image frame:
                ``"points"`` (P, 2) float pixel (x, y) and/or ``"boxes"`` (M, 4) float xyxy pixels, P + M > 0.
            tokens: indices into the K tokens to return (default all K, in token order); user levels
                map to tokens with :func:`semantic_sam.predictor.levels_to_tokens`. ``levels`` is a
                deprecated alias (of token indices).
            attn_mask: ``"block"`` (prompts independent) or ``"none"`` (all queries of an image attend to
                each other, as the reference's demo).
            point_convention: how clicks become boxes, see :meth:`point_to_box`.
            class_embeddings: a vocabulary's embeddings (:meth:`class_embeddings`): each result also has
                ``"pred_logits"`` (P+M, |tokens|, C_o) and, with parts, ``"pred_logits_part"`` (P+M, |tokens|, C_p).

        Returns:
            per image, ``{"pred_masks": (P+M, |tokens|, h, w) logits, "pred_ious": (P+M, |tokens|),
            "pred_boxes": (P+M, |tokens|, 4) xyxy pixels in the output frame}``; points first, then boxes.
        """
        if not isinstance(batched_inputs, (list, tuple)) or len(batched_inputs) == 0:
            raise ValueError("inference expects a non-empty list of input dicts")
        check_attn_mask_mode(attn_mask)
        check_point_convention(point_convention, "point_convention")
        tokens = check_token_indices(tokens, self.num_tokens)
        prompts = [self._check_input(x, i) for i, x in enumerate(batched_inputs)]

        # Group images by padded size: same-size images are encoded in one batch.
        groups: dict[tuple[int, int], list[int]] = {}
        for i, x in enumerate(batched_inputs):
            h, w = x["image"].shape[-2:]
            groups.setdefault(self._padded_size(h, w), []).append(i)

        results: list[Optional[dict]] = [None] * len(batched_inputs)
        for padded_size, indices in groups.items():
            images = self.preprocess_image([batched_inputs[i]["image"] for i in indices])
            features = self.encode_image(images)
            for j, i in enumerate(indices):
                feats = {
                    "mask_features": features["mask_features"][j : j + 1],
                    "multi_scale_features": [f[j : j + 1] for f in features["multi_scale_features"]],
                }
                results[i] = self._decode_one(
                    feats, batched_inputs[i], prompts[i], images.image_sizes[j], padded_size, tokens,
                    attn_mask, point_convention, class_embeddings,
                )
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def segment(
        self,
        batched_inputs: list[dict],
        class_embeddings: Mapping[str, Tensor],
        *,
        is_thing: Optional[Sequence[bool]] = None,
        panoptic: bool = True,
        instance: bool = True,
        semantic: bool = True,
        part_classes: Optional[tuple[Sequence[int], Sequence[int]]] = None,
    ) -> list[dict]:
        """Segment whole images with the generic queries into labelled things, stuff (and parts).

        Args:
            batched_inputs: per image ``"image"`` (3, H, W) uint8 RGB, optional ``"height"``, ``"width"``
                (output size, default H, W).
            class_embeddings: the vocabulary (:meth:`class_embeddings`): ``"object"`` (C, D), ``"part"``
                (C_p, D) for part segmentation.
            is_thing: (C,) whether each object class is a thing (panoptic: stuff segments of a class merge;
                with panoptic on, instances keep things only); required for panoptic.
            panoptic, instance, semantic: which outputs to make (Mask DINO's post-processing,
                :mod:`semantic_sam.modeling.postprocess`, options from ``MODEL.DECODER.TEST``).
            part_classes: ``(class_to_object (K,), class_to_part (K,))`` of a part dataset's K
                ``object:part`` classes: return part instances instead, scored ``sigmoid(object) *
                sigmoid(part)`` (:func:`~semantic_sam.modeling.postprocess.part_instance_inference`).

        Returns:
            per image, detectron2's standard outputs: ``"panoptic_seg"`` ``(ids (h, w) int32, segments_info)``,
            ``"instances"`` (``Instances`` with ``pred_masks``, ``pred_boxes``, ``scores``, ``pred_classes``),
            ``"sem_seg"`` (C, h, w) scores.
        """
        if not self.has_generic_queries:
            raise ValueError(
                "this model has no generic queries (MODEL.DECODER.NUM_OBJECT_QUERIES is 0): it segments prompts only"
            )
        if part_classes is None and panoptic and is_thing is None:
            raise ValueError("panoptic segmentation needs is_thing (which classes are things)")
        if part_classes is not None and "part" not in class_embeddings:
            raise ValueError("part segmentation needs part class embeddings (class_embeddings['part'])")
        for i, x in enumerate(batched_inputs):
            self._check_segment_input(x, i)
        images = self.preprocess_image([x["image"] for x in batched_inputs])
        features = self.encode_image(images)
        out = self.sem_seg_head.predictor.forward_generic(
            features["multi_scale_features"], features["mask_features"], class_embeddings, return_aux=False
        )
        with torch.autocast(self.device.type, enabled=False):  # post-processing in float32 under any autocast
            return self._postprocess_generic(batched_inputs, images, out, is_thing, panoptic, instance, semantic,
                                             part_classes)

    def _postprocess_generic(
        self, batched_inputs, images, out, is_thing, panoptic, instance, semantic, part_classes
    ) -> list[dict]:
        from detectron2.modeling.postprocessing import sem_seg_postprocess

        from . import postprocess

        opts = self.generic_test
        topk = int(opts.get("detections_per_image", 100))
        hp, wp = images.tensor.shape[-2:]
        mask_logits = F.interpolate(out["pred_masks"].float(), size=(hp, wp), mode="bilinear", align_corners=False)
        results = []
        for i, x in enumerate(batched_inputs):
            h, w = images.image_sizes[i]
            out_h, out_w = int(x.get("height", h)), int(x.get("width", w))
            masks = sem_seg_postprocess(mask_logits[i], (h, w), out_h, out_w)
            boxes = postprocess.to_output_boxes(out["pred_boxes"][i].float(), (hp, wp), (h, w), (out_h, out_w))
            logits = out["pred_logits"][i].float()
            result: dict = {}
            if part_classes is not None:
                result["instances"] = postprocess.part_instance_inference(
                    logits, out["pred_logits_part"][i].float(), masks, boxes, part_classes[0], part_classes[1], topk
                )
                results.append(result)
                continue
            if semantic:
                result["sem_seg"] = postprocess.semantic_inference(
                    logits, masks, opts.get("transform_eval", True), opts.get("temperature", 0.06)
                )
            if panoptic:
                result["panoptic_seg"] = postprocess.panoptic_inference(
                    logits, masks, is_thing,
                    object_mask_threshold=opts.get("object_mask_threshold", 0.25),
                    overlap_threshold=opts.get("overlap_threshold", 0.8),
                    transform_eval=opts.get("transform_eval", True),
                    temperature=opts.get("temperature", 0.06),
                )
            if instance:
                result["instances"] = postprocess.instance_inference(
                    logits, masks, boxes, topk, keep_classes=is_thing if panoptic else None
                )
            results.append(result)
        return results

    @staticmethod
    def _check_segment_input(x: dict, i: int) -> None:
        if not isinstance(x, Mapping) or "image" not in x:
            raise KeyError(f"input {i} must be a dict with an 'image' entry")
        _check_image(x["image"], f"input {i}: image")

    def _decode_one(
        self,
        features: dict,
        x: dict,
        prompts: tuple[Tensor, Tensor],
        image_size: Sequence[int],
        padded_size: tuple[int, int],
        tokens: list[int],
        attn_mask: str,
        point_convention: str,
        class_embeddings: Optional[Mapping[str, Tensor]] = None,
    ) -> dict:
        points, boxes_xyxy = prompts
        h_img, w_img = int(image_size[0]), int(image_size[1])
        out_h, out_w = int(x.get("height", h_img)), int(x.get("width", w_img))
        prompt_boxes = torch.cat(
            [
                prompt_encoder.point_to_box(points.to(self.device), (h_img, w_img), padded_size, point_convention),
                prompt_encoder.box_to_prompt(boxes_xyxy.to(self.device), padded_size),
            ]
        )
        n = prompt_boxes.shape[0]
        pb = prompt_boxes.new_zeros(1, n)
        out = self.decode_prompts(
            features, prompt_boxes[None], pb, attn_mask=attn_mask, return_aux=False, class_embeddings=class_embeddings
        )

        k = self.num_tokens
        token_idx = torch.as_tensor(tokens, device=self.device)
        masks = out["pred_masks"][0].view(n, k, *out["pred_masks"].shape[-2:])[:, token_idx]
        masks = self.postprocess_masks(masks, padded_size, (h_img, w_img), (out_h, out_w))
        ious = out["pred_ious"][0][:, token_idx]
        boxes = out["pred_boxes"][0].view(n, k, 4)[:, token_idx]
        hp, wp = padded_size
        boxes = box_cxcywh_to_xyxy(boxes) * boxes.new_tensor([wp, hp, wp, hp])
        boxes = boxes * boxes.new_tensor([out_w / w_img, out_h / h_img, out_w / w_img, out_h / h_img])
        result = {"pred_masks": masks, "pred_ious": ious, "pred_boxes": boxes}
        for key in ("pred_logits", "pred_logits_part"):
            if key in out:
                result[key] = out[key][0].view(n, k, -1)[:, token_idx]
        return result

    # ------------------------------------------------------------------------------------------
    # Input checks
    # ------------------------------------------------------------------------------------------
    def _padded_size(self, h: int, w: int) -> tuple[int, int]:
        d = max(int(self.size_divisibility), 1)
        return (int(h) + d - 1) // d * d, (int(w) + d - 1) // d * d

    def _check_input(self, x: dict, i: int) -> tuple[Tensor, Tensor]:
        """Validate input i; return its (points (P, 2), boxes (M, 4)) float32 pixel prompts."""
        if not isinstance(x, Mapping) or "image" not in x:
            raise KeyError(f"input {i} must be a dict with an 'image' entry")
        _check_image(x["image"], f"input {i}: image")
        prompts = check_pixel_prompts(x.get("points"), x.get("boxes"), x["image"].shape[-2:], f"input {i}: ")
        for key in ("height", "width"):
            if key in x:
                v = x[key]
                ok = (isinstance(v, int) and not isinstance(v, bool)) or (torch.is_tensor(v) and v.numel() == 1)
                if not ok or int(v) <= 0:
                    raise ValueError(f"input {i}: '{key}' must be a positive int, got {v!r}")
        return prompts


def _training_groups(batched_inputs: Union[list[dict], Mapping[str, list[dict]]]) -> list[tuple[str, list[dict]]]:
    """``[(dataset key, inputs)]``: a dict's items, or a list's inputs grouped by ``"dataset_name"`` (in order
    of first appearance; inputs without one form the group ``""``)."""
    if isinstance(batched_inputs, Mapping):
        items = list(batched_inputs.items())
    elif isinstance(batched_inputs, (list, tuple)):
        grouped: dict[str, list[dict]] = {}
        for x in batched_inputs:
            grouped.setdefault(x.get("dataset_name", "") if isinstance(x, Mapping) else "", []).append(x)
        items = list(grouped.items())
    else:
        items = []
    if not items or any(not isinstance(v, (list, tuple)) or len(v) == 0 for _, v in items):
        raise ValueError("forward expects a non-empty list of input dicts (or a dict of non-empty lists)")
    for key, inputs in items:
        for i, x in enumerate(inputs):
            if not isinstance(x, Mapping):
                raise TypeError(f"training input {i} of {key or 'the batch'} must be a dict, got {type(x).__name__}")
        vocabularies = {repr(x.get("vocabulary")) for x in inputs}
        if len(vocabularies) > 1:
            raise ValueError(f"training inputs of {key or 'the batch'} mix vocabularies; give one dataset per batch")
    return [(k, list(v)) for k, v in items]


def _check_image(img: object, name: str) -> None:
    if not torch.is_tensor(img):
        raise TypeError(f"{name} must be a torch.Tensor (3, H, W), got {type(img).__name__}")
    if img.dim() != 3 or img.shape[0] != 3:
        raise ValueError(f"{name} must be a 3-channel RGB tensor (3, H, W), got shape {tuple(img.shape)}")
    if img.shape[1] == 0 or img.shape[2] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(img.shape)}")
    if img.dtype != torch.uint8 and not img.is_floating_point():
        raise TypeError(f"{name} must be uint8 or float (0-255), got {img.dtype}")
