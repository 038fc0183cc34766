"""Load-time checks of config values: what the model, data pipeline and solver need of them.

:func:`semantic_sam.config.load_config` runs :func:`check_config` on the merged config, before any
model is built and before ``train_net.py`` starts its processes. The checks cover the keys that this
project's code (or detectron2's trainer and LR schedulers) reads; the reference's keys that nothing
reads (``MODEL.TEXT``, ``VLP``, ``ADE20K``, ...) are only type-checked by the schema. Module-specific
checks apply when the module is the one named (``MODEL.BACKBONE.NAME: swin``, ``MODEL.ENCODER.NAME:
encoder_deform``, ``MODEL.DECODER.NAME: interactive_mask_dino``); a user-registered replacement
defines its own.

Every failure is a one-line :class:`~semantic_sam.config.ConfigError` naming the file or override that
set the key, the key, its value and the allowed values::

    command-line override SOLVER.BASE_LR: invalid value for config key 'SOLVER.BASE_LR': 0.0;
    allowed: a number > 0
"""
from __future__ import annotations

import math
import os
import re
from typing import Any, Mapping, Sequence

from .config import ConfigError
from .data.labelled_config import check_labelled_data_config

__all__ = ["check_config"]

# GroupNorm(32, d) in the input projections of the pixel decoder and the query decoder.
GN_GROUPS = 32
# detectron2.layers.get_norm (MODEL.ENCODER.NORM of the pixel decoder's FPN convs); "" = no norm.
NORMS = ("", "BN", "SyncBN", "FrozenBN", "GN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N", "LN")
# detectron2.solver.build_lr_scheduler and detectron2.solver.WarmupParamScheduler.
LR_SCHEDULERS = ("WarmupMultiStepLR", "WarmupCosineLR", "WarmupStepWithFixedGammaLR")
WARMUP_METHODS = ("constant", "linear")
# semantic_sam.solver.build_optimizer (compared upper-cased).
OPTIMIZERS = ("ADAMW", "SGD")
CLIP_TYPES = ("full_model", "value", "norm")
# semantic_sam.modeling.language.build (noencoder: no text encoder, the released configs).
TEXT_ARCHS = ("noencoder", "unicl", "open_clip")
# semantic_sam.modeling.criterion.IOU_TARGETS, semantic_sam.evaluation.click_simulation.CLICK_METHODS,
# semantic_sam.modeling.decoder.prompt_encoder.POINT_CONVENTIONS and
# semantic_sam.evaluation.prompted_inference.EVAL_PRECISIONS (not imported: loading a config must not
# import the model; tests/test_config.py and tests/evaluation keep them equal).
IOU_TARGETS = ("matched", "prompt")
CLICK_METHODS = ("kornia", "exact")
POINT_CONVENTIONS = ("eval", "demo")
EVAL_PRECISIONS = ("auto", "fp32", "fp16")
# datasets/sa1b_dataset_mapper.py
SAM_IMAGE_FORMATS = ("RGB", "BGR")
RANDOM_FLIPS = ("none", "horizontal", "vertical")
# MSDeformAttnPixelDecoder
FEATURE_ORDERS = ("low2high",)
# InteractiveDecoder.from_config: the values the decoder implements, without generic queries
# (NUM_OBJECT_QUERIES 0, every released config) and with them (Mask DINO / OpenSeeD's panoptic setting).
DECODER_OPTIONS = {
    False: {"TWO_STAGE": False, "INITIAL_PRED": False, "LEARN_TGT": False, "PRE_NORM": False},
    True: {"TWO_STAGE": True, "INITIAL_PRED": True, "LEARN_TGT": False, "PRE_NORM": False},
}
DN_MODES = ("seg", "no")


def check_config(cfg: Mapping, sources: Mapping[str, str] | None = None) -> None:
    """Raise a one-line :class:`ConfigError` for the first value the code cannot use.

    Args:
        cfg: a merged config (``CfgNode`` or nested dicts with every key of the schema).
        sources: full key -> the file or override that set it, ordered by when each key was last
            set (as :func:`~semantic_sam.config.load_config` records them); keys not in it hold
            their default.

    Raises:
        ConfigError: ``<source>: invalid value for config key '<KEY>': <value>; allowed: <values>``.
    """
    c = _Checker(cfg, sources or {})
    _check_output_dir(c)
    model = cfg["MODEL"]
    if model["BACKBONE"]["NAME"] == "swin":
        _check_swin(c)
    _check_decoder_sizes(c)
    c.one_of("MODEL.TEXT.ARCH", TEXT_ARCHS, " (the reference's vlpencoder is unicl here)")
    c.number("MODEL.TEXT.LOGIT_SCALE_INIT", low=-10.0, high=10.0)
    templates = c.get("MODEL.TEXT.PROMPT_TEMPLATES")
    if not all(isinstance(t, str) and t.count("{}") == 1 for t in templates) or len(set(templates)) != len(templates):
        c.fail("MODEL.TEXT.PROMPT_TEMPLATES", "distinct format strings with exactly one '{}' ([] = the reference's 81)")
    if model["ENCODER"]["NAME"] == "encoder_deform":
        _check_pixel_decoder(c, swin=model["BACKBONE"]["NAME"] == "swin")
    if model["DECODER"]["NAME"] == "interactive_mask_dino":
        _check_query_decoder(c, encoder_deform=model["ENCODER"]["NAME"] == "encoder_deform")
    _check_losses(c)
    _check_input_and_data(c)
    check_labelled_data_config(c)
    _check_test(c)
    _check_solver(c)


# ------------------------------------------------------------------------------------------ helpers
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class _Checker:
    """Reads keys by their full name and raises the one-line error."""

    def __init__(self, cfg: Mapping, sources: Mapping[str, str]):
        self.cfg = cfg
        self.sources = sources

    def get(self, key: str) -> Any:
        node: Any = self.cfg
        for part in key.split("."):
            node = node[part]
        return node

    def fail(self, key: str, allowed: str, *related: str) -> None:
        """Raise for ``key``; the message names the source of whichever of ``key`` and the ``related``
        keys (whose values the check also used) was set last."""
        order = {k: i for i, k in enumerate(self.sources)}
        set_keys = [k for k in (key, *related) if k in order]
        source = self.sources[max(set_keys, key=order.__getitem__)] if set_keys else "defaults"
        value = self.get(key)
        raise ConfigError(f"{source}: invalid value for config key '{key}': {value!r}; allowed: {allowed}")

    def integer(self, key: str, low: int, why: str = "") -> int:
        v = self.get(key)
        if not _is_int(v) or v < low:
            self.fail(key, f"an integer >= {low}{why}")
        return v

    def number(
        self, key: str, low: float, high: float | None = None, low_open: bool = False, why: str = ""
    ) -> float:
        v = self.get(key)
        ok = _is_number(v) and (v > low if low_open else v >= low) and (high is None or v <= high)
        if not ok:
            if high is not None:
                allowed = f"a number in {'(' if low_open else '['}{low:g}, {high:g}]"
            else:
                allowed = f"a number {'>' if low_open else '>='} {low:g}"
            self.fail(key, allowed + why)
        return v

    def one_of(self, key: str, options: Sequence[Any], why: str = "") -> None:
        if self.get(key) not in options:
            self.fail(key, f"one of {', '.join(repr(o) for o in options)}{why}")

    def int_list(self, key: str, low: int, why: str = "") -> list[int]:
        v = self.get(key)
        if not v or not all(_is_int(x) and x >= low for x in v):
            self.fail(key, f"a non-empty list of integers >= {low}{why}")
        return list(v)

    def str_list(self, key: str, subset_of: Sequence[str] | None = None, why: str = "", *related: str) -> list[str]:
        v = self.get(key)
        ok = bool(v) and all(isinstance(x, str) for x in v)
        if ok and subset_of is not None:
            ok = all(x in subset_of for x in v)
        if not ok:
            allowed = "a non-empty list of names"
            if subset_of is not None:
                allowed += f" among {list(subset_of)}"
            self.fail(key, allowed + why, *related)
        return list(v)


# ------------------------------------------------------------------------------------------ checks
def _check_output_dir(c: _Checker) -> None:
    """OUTPUT_DIR must be a directory or creatable as one: neither it nor an ancestor a file."""
    path = c.get("OUTPUT_DIR")
    if not path:
        return
    full = probe = os.path.abspath(os.path.expanduser(path))
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return
        probe = parent
    if not os.path.isdir(probe):
        what = "is an existing file" if probe == full else f"is under the file {probe}"
        c.fail("OUTPUT_DIR", f"a directory, existing or to be created ({path} {what})")


def _check_swin(c: _Checker) -> None:
    s = "MODEL.BACKBONE.SWIN."
    patch = c.integer(s + "PATCH_SIZE", 1)
    embed = c.integer(s + "EMBED_DIM", 1)
    c.integer(s + "WINDOW_SIZE", 1)
    c.integer(s + "PRETRAIN_IMG_SIZE", 1)
    if c.get(s + "APE"):
        c.integer(
            s + "PRETRAIN_IMG_SIZE",
            patch,
            " (= PATCH_SIZE or more when APE is true: the absolute position embedding has "
            "PRETRAIN_IMG_SIZE // PATCH_SIZE cells per side)",
        )
    c.number(s + "MLP_RATIO", 0, low_open=True)
    for key in ("DROP_RATE", "ATTN_DROP_RATE", "DROP_PATH_RATE"):
        c.number(s + key, 0, 1, why=" (a probability)")
    qk_scale = c.get(s + "QK_SCALE")
    if qk_scale is not None and not _is_number(qk_scale):
        c.fail(s + "QK_SCALE", "null (head_dim ** -0.5) or a number")

    depths = c.int_list(s + "DEPTHS", 0, " (blocks per stage)")
    heads = c.int_list(s + "NUM_HEADS", 1, " (attention heads per stage)")
    if len(heads) != len(depths):
        c.fail(s + "NUM_HEADS", f"{len(depths)} head counts, one per stage of {s}DEPTHS={depths}", s + "DEPTHS")
    widths = [embed * 2**i for i in range(len(depths))]
    for width, h in zip(widths, heads):
        if width % h:
            c.fail(
                s + "NUM_HEADS",
                f"divisors of the stage widths {widths} (EMBED_DIM * 2**stage); {h} does not divide {width}",
                s + "EMBED_DIM",
            )
    out_indices = c.int_list(s + "OUT_INDICES", 0)
    if max(out_indices) >= len(depths):
        c.fail(s + "OUT_INDICES", f"stage indices in [0, {len(depths)}) (the stages of {s}DEPTHS)", s + "DEPTHS")
    produced = [f"res{i + 2}" for i in out_indices]
    c.str_list(s + "OUT_FEATURES", produced, f" (the stages of {s}OUT_INDICES)", s + "OUT_INDICES")


def _check_decoder_sizes(c: _Checker) -> None:
    """MODEL.DECODER keys that both the pixel decoder and the query decoder read."""
    d = "MODEL.DECODER."
    c.integer(d + "NHEADS", 1, " (attention heads of the pixel decoder, and of the query decoder "
                               "when QUERY_DECODER_NHEADS <= 0)")
    c.integer(d + "DIM_FEEDFORWARD", 1)
    c.number(d + "DROPOUT", 0, 1, why=" (a probability)")


def _check_pixel_decoder(c: _Checker, swin: bool) -> None:
    e = "MODEL.ENCODER."
    conv_dim = c.get(e + "CONVS_DIM")
    if not _is_int(conv_dim) or conv_dim < GN_GROUPS or conv_dim % GN_GROUPS:
        c.fail(e + "CONVS_DIM", f"a positive multiple of {GN_GROUPS} (GroupNorm({GN_GROUPS}, CONVS_DIM) in the "
                                "pixel decoder's input projections)")
    nheads = c.get("MODEL.DECODER.NHEADS")
    if conv_dim % nheads:
        c.fail("MODEL.DECODER.NHEADS", f"a divisor of {e}CONVS_DIM={conv_dim} (the pixel decoder's attention "
                                       "heads split its width)", e + "CONVS_DIM")
    c.integer(e + "MASK_DIM", 1)
    if c.get(e + "NORM") is not None:
        c.one_of(e + "NORM", NORMS, " or null (detectron2 get_norm)")
    stride = c.get(e + "COMMON_STRIDE")
    if not _is_int(stride) or stride < 1 or stride & (stride - 1):
        c.fail(e + "COMMON_STRIDE", "a power of 2 (the stride of mask_features, reached by 2x FPN steps)")
    c.integer(e + "TRANSFORMER_ENC_LAYERS", 0)
    c.one_of(e + "FEATURE_ORDER", FEATURE_ORDERS)
    if swin:
        in_features = c.str_list(e + "IN_FEATURES", c.get("MODEL.BACKBONE.SWIN.OUT_FEATURES"),
                                 " (MODEL.BACKBONE.SWIN.OUT_FEATURES)", "MODEL.BACKBONE.SWIN.OUT_FEATURES")
    else:
        in_features = c.str_list(e + "IN_FEATURES")
    enc_features = c.str_list(e + "DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES", in_features,
                              f" ({e}IN_FEATURES)", e + "IN_FEATURES")
    c.integer(e + "TOTAL_NUM_FEATURE_LEVELS", len(enc_features),
              f" (the {len(enc_features)} DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES, plus extra downsampled "
              "feature levels)")


def _check_query_decoder(c: _Checker, encoder_deform: bool) -> None:
    d = "MODEL.DECODER."
    hidden = c.get(d + "HIDDEN_DIM")
    in_channels = c.get("MODEL.ENCODER.CONVS_DIM")
    if in_channels != hidden or c.get(d + "ENFORCE_INPUT_PROJ"):
        multiple = GN_GROUPS
        why = (f"the query decoder's input projections from MODEL.ENCODER.CONVS_DIM={in_channels} use "
               f"GroupNorm({GN_GROUPS}, HIDDEN_DIM)")
    else:  # no input projections
        multiple, why = 4, "the sine embedding of the anchor boxes"
    if not _is_int(hidden) or hidden < multiple or hidden % multiple:
        c.fail(d + "HIDDEN_DIM", f"a positive multiple of {multiple} ({why})", "MODEL.ENCODER.CONVS_DIM")
    query_heads = c.get(d + "QUERY_DECODER_NHEADS")
    if not _is_int(query_heads):
        c.fail(d + "QUERY_DECODER_NHEADS", "an integer (<= 0: MODEL.DECODER.NHEADS)")
    heads_key = d + ("QUERY_DECODER_NHEADS" if query_heads > 0 else "NHEADS")
    if hidden % c.get(heads_key):
        c.fail(heads_key, f"a divisor of {d}HIDDEN_DIM={hidden} (the query decoder's attention heads split its "
                          "width)", d + "HIDDEN_DIM")
    c.integer(d + "DEC_LAYERS", 1)
    c.integer(d + "DEC_N_POINTS", 1)
    c.integer(d + "NUM_INTERACTIVE_TOKENS", 1, " (K, the tokens per prompt)")
    c.integer(d + "MAX_NUM_INSTANCE", 1, " (prompts per training image)")
    c.integer(d + "LABELLED_MAX_NUM_INSTANCE", 0, " (prompts per labelled training image; 0 = MAX_NUM_INSTANCE)")
    if c.number(d + "PIXEL_CLASS_WEIGHT", 0, why=" (0 = no per-pixel class loss)") > 0 and c.get("MODEL.TEXT.ARCH") == "noencoder":
        c.fail(d + "PIXEL_CLASS_WEIGHT", "0 with MODEL.TEXT.ARCH noencoder (the per-pixel class loss compares pixels "
                                         "with class embeddings of the text encoder)", "MODEL.TEXT.ARCH")
    c.number(d + "DN_NOISE_SCALE", 0, why=" (0 = no anchor noise)")
    c.number(d + "POINT_NOISE_FACTOR", 0)
    c.integer("MODEL.DIM_PROJ", 1)
    if encoder_deform:
        num_feature_levels = c.get("MODEL.ENCODER.TOTAL_NUM_FEATURE_LEVELS")
        if c.get(d + "TOTAL_NUM_FEATURE_LEVELS") != num_feature_levels:
            c.fail(d + "TOTAL_NUM_FEATURE_LEVELS", f"{num_feature_levels} (MODEL.ENCODER.TOTAL_NUM_FEATURE_LEVELS: "
                                                   "the pixel decoder's feature levels)",
                   "MODEL.ENCODER.TOTAL_NUM_FEATURE_LEVELS")
    else:
        c.integer(d + "TOTAL_NUM_FEATURE_LEVELS", 1)
    num_queries = c.integer(d + "NUM_OBJECT_QUERIES", 0, " (generic queries; 0 = none)")
    generic = num_queries > 0
    if generic and c.get("MODEL.TEXT.ARCH") == "noencoder":
        c.fail(d + "NUM_OBJECT_QUERIES", "0 only with MODEL.TEXT.ARCH noencoder (generic queries are classified "
                                          "with the text encoder)")
    for key, supported in DECODER_OPTIONS[generic].items():
        if c.get(d + key) != supported:
            mode = "with generic queries (NUM_OBJECT_QUERIES > 0)" if generic else "without generic queries"
            c.fail(d + key, f"{supported!r} only {mode} (the decoder implements Mask DINO's panoptic setting)")
    c.one_of(d + "DN", DN_MODES)
    if generic:
        c.integer(d + "DN_NUM", 0, " (denoising queries per batch)")


def _check_losses(c: _Checker) -> None:
    d = "MODEL.DECODER."
    c.integer(d + "TRAIN_NUM_POINTS", 1, " (loss points per mask)")
    c.number(d + "OVERSAMPLE_RATIO", 1)
    c.number(d + "IMPORTANCE_SAMPLE_RATIO", 0, 1)
    for key in ("MASK_WEIGHT", "DICE_WEIGHT", "BOX_WEIGHT", "GIOU_WEIGHT", "IOU_WEIGHT"):
        c.number(d + key, 0, why=" (a loss weight)")
    costs = ("COST_MASK_WEIGHT", "COST_DICE_WEIGHT", "COST_BOX_WEIGHT", "COST_GIOU_WEIGHT")
    for key in costs:
        c.number(d + key, 0, why=" (a matching-cost weight)")
    if all(c.get(d + key) == 0 for key in costs):
        c.fail(d + costs[0], f"a positive weight for at least one of {', '.join(d + k for k in costs)}",
               *(d + k for k in costs[1:]))
    c.one_of(d + "IOU_TARGET", IOU_TARGETS)


def _check_input_and_data(c: _Checker) -> None:
    for key, positive in (("INPUT.PIXEL_MEAN", False), ("INPUT.PIXEL_STD", True)):
        v = c.get(key)
        if len(v) != 3 or not all(_is_number(x) and (x > 0 or not positive) for x in v):
            c.fail(key, "3 numbers (R, G, B on the 0-255 scale)" + (", each > 0" if positive else ""))

    s = "SAM.INPUT."
    c.integer(s + "IMAGE_SIZE", 1, " (side of the square training crop)")
    c.integer(s + "MIN_SIZE_TEST", 1)
    c.integer(s + "MAX_SIZE_TEST", 1)
    low = c.number(s + "MIN_SCALE", 0, low_open=True)
    c.number(s + "MAX_SCALE", low, why=f" (>= {s}MIN_SCALE)")
    c.one_of(s + "FORMAT", SAM_IMAGE_FORMATS)
    c.one_of(s + "RANDOM_FLIP", RANDOM_FLIPS)
    c.integer("SAM.TRAIN.BATCH_SIZE_TOTAL", 1, " (images per iteration over all processes)")
    c.integer("SAM.DATALOADER.NUM_WORKERS", 0)
    c.integer("SAM.DATASET.CORRUPT_ROW_RETRIES", 0)
    c.integer("COCO.INPUT.MIN_SIZE_TEST", 1)
    c.integer("COCO.INPUT.MAX_SIZE_TEST", 1)
    c.integer("COCO.TEST.BATCH_SIZE_TOTAL", 1, " (images per evaluation batch over all processes)")
    c.integer("COCO.DATALOADER.NUM_WORKERS", 0)


def _check_test(c: _Checker) -> None:
    c.one_of("MODEL.DECODER.TEST.CLICK_METHOD", CLICK_METHODS)
    c.one_of("MODEL.DECODER.TEST.POINT_CONVENTION", POINT_CONVENTIONS)
    c.integer("MODEL.DECODER.TEST.SHORT_SIDE", 1, " (pixels)")
    c.integer("MODEL.DECODER.TEST.MAX_SIZE", 1, " (pixels)")
    c.one_of("TEST.PRECISION", EVAL_PRECISIONS)
    c.integer("TEST.EVAL_PERIOD", 0, " (0 = evaluate only after training)")
    if c.get("TEST.PRECISE_BN.ENABLED"):
        c.integer("TEST.PRECISE_BN.NUM_ITER", 1)
    c.integer("TEST.INTERACTIVE.MAX_CLICKS", 1)
    thresholds = c.get("TEST.INTERACTIVE.NOC_THRESHOLDS")
    if not all(_is_number(t) and 0 < t <= 1 for t in thresholds):
        c.fail("TEST.INTERACTIVE.NOC_THRESHOLDS", "a list of IoU thresholds in (0, 1]")
    c.integer("TEST.MULTI_GRANULARITY.MAX_CLICKS_PER_IMAGE", 0, " (0 = every mask)")
    for entry in c.get("TEST.EXPECTED_RESULTS"):
        ok = isinstance(entry, (list, tuple)) and len(entry) == 4
        if ok:
            task, metric, expected, tolerance = entry
            ok = isinstance(task, str) and isinstance(metric, str) and _is_number(expected)
            ok = ok and _is_number(tolerance) and tolerance >= 0
        if not ok:
            c.fail("TEST.EXPECTED_RESULTS", "a list of [task, metric, expected value, tolerance >= 0]")


def _check_solver(c: _Checker) -> None:
    s = "SOLVER."
    base_lr = c.number(s + "BASE_LR", 0, low_open=True)
    max_iter = c.integer(s + "MAX_ITER", 1)
    c.integer(s + "CHECKPOINT_PERIOD", 1, " (iterations between checkpoints)")
    ims = c.integer(s + "IMS_PER_BATCH", 1)
    reference_world = c.integer(s + "REFERENCE_WORLD_SIZE", 0, " (0 = no automatic rescaling)")
    if reference_world and ims % reference_world:
        c.fail(s + "REFERENCE_WORLD_SIZE", f"0 or a divisor of {s}IMS_PER_BATCH={ims}", s + "IMS_PER_BATCH")
    c.integer(s + "WARMUP_ITERS", 0)
    c.number(s + "WARMUP_FACTOR", 0)
    c.one_of(s + "WARMUP_METHOD", WARMUP_METHODS)
    c.one_of(s + "LR_SCHEDULER_NAME", LR_SCHEDULERS)
    scheduler = c.get(s + "LR_SCHEDULER_NAME")
    if scheduler == "WarmupMultiStepLR":
        c.number(s + "GAMMA", 0)
        steps = c.get(s + "STEPS")
        if not all(_is_int(x) for x in steps):
            c.fail(s + "STEPS", "a list of iteration numbers")
        used = [x for x in steps if x <= max_iter]  # detectron2 drops the later ones with a warning
        if any(x < 1 or x >= max_iter for x in used) or any(a >= b for a, b in zip(used, used[1:])):
            c.fail(s + "STEPS", f"strictly increasing iterations in [1, {s}MAX_ITER={max_iter}) (later ones are "
                                "ignored)", s + "MAX_ITER")
    elif scheduler == "WarmupCosineLR":
        c.number(s + "BASE_LR_END", 0, base_lr, why=f" ({s}BASE_LR={base_lr:g} at most)")
    else:
        c.number(s + "GAMMA", 0, low_open=True)
        c.integer(s + "NUM_DECAYS", 1)

    optimizer = c.get(s + "OPTIMIZER")
    if not isinstance(optimizer, str) or optimizer.upper() not in OPTIMIZERS:
        c.fail(s + "OPTIMIZER", "ADAMW or SGD (any case)")
    for key in ("WEIGHT_DECAY", "WEIGHT_DECAY_NORM", "WEIGHT_DECAY_EMBED", "MOMENTUM"):
        c.number(s + key, 0)
    if optimizer.upper() == "SGD" and c.get(s + "NESTEROV") and c.get(s + "MOMENTUM") <= 0:
        c.fail(s + "MOMENTUM", f"a number > 0 with {s}NESTEROV true (torch.optim.SGD)", s + "NESTEROV")
    for name, factor in c.get(s + "LR_MULTIPLIER").items():
        if not _is_number(factor) or factor < 0:
            c.fail(f"{s}LR_MULTIPLIER.{name}", "a number >= 0 (a factor on BASE_LR)")
    patterns = c.get(s + "TRAINABLE_PARAMS")
    if not all(isinstance(x, str) and x and _compiles(x) for x in patterns):
        c.fail(s + "TRAINABLE_PARAMS", "a list of regular expressions on parameter names (empty: train everything)")
    clip = c.get(s + "CLIP_GRADIENTS")
    if clip["ENABLED"]:
        c.one_of(s + "CLIP_GRADIENTS.CLIP_TYPE", CLIP_TYPES)
    if clip["ENABLED"] and clip["CLIP_TYPE"] in ("value", "norm"):
        c.number(s + "CLIP_GRADIENTS.CLIP_VALUE", 0, low_open=True,
                 why=" with CLIP_TYPE value or norm (full_model: <= 0 turns clipping off)")
