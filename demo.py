"""Semantic-SAM demo: a local gradio app, or a headless run that writes overlays and a JSON file.

Web app (http://127.0.0.1:6082; click a point to get the masks of every level, or draw a box with two
clicks; a second tab generates masks for the whole image at the chosen levels)::

    python demo.py --config configs/semantic_sam_only_sa-1b_swinL.yaml --ckpt swinl_only_sam_many2many.pth

Headless (no browser)::

    python demo.py --config CFG --ckpt CKPT --image examples/synthetic_1.jpg --point 240 180 \\
        --levels 1 2 3 --output out/
    python demo.py --config CFG --ckpt CKPT --image examples/synthetic_1.jpg --auto --levels 3 --output out/

``--levels`` (user granularities 1 = coarsest ... 6 = finest) applies to prompts and to ``--auto``;
``--level`` is its deprecated alias.

With a model that has a text encoder (``MODEL.TEXT.ARCH`` unicl or open_clip) every mask is also
labelled, ``object`` or ``object: part``, in masks.json and on the overlays; ``--objects`` and
``--parts`` (comma-separated names) replace the default vocabulary (COCO panoptic's 133 classes,
Pascal-Part's 30 parts)::

    python demo.py --config CFG --ckpt CKPT --image examples/synthetic_1.jpg --point 240 180 \
        --objects "cat,dog,sofa" --parts "head,leg,tail" --output out/

Naming what is in the image (headless; the web app's "Segment everything" tab does the same)::

    python demo.py --config CFG --ckpt CKPT --image IMG --panoptic --output out/          # panoptic.png, .json
    python demo.py --config CFG --ckpt CKPT --image IMG --find "car,tree" --output out/   # find.png, find.json

``--panoptic`` segments the whole image into labelled things and stuff with the model's generic queries
(a model with ``MODEL.DECODER.NUM_OBJECT_QUERIES`` > 0 and a text encoder). ``--find NAMES`` highlights
the masks labelled with one of the names: the panoptic segments for such a model; for a model with a
text encoder but no generic queries, the automatic generator's labelled masks (``--levels``,
``--points-per-side`` and the thresholds apply). The names are object names of the vocabulary
(``--objects``). Which object names are *stuff* (one segment per class) rather than things: those that
are stuff in COCO panoptic (in the built-in scenes for the built-in model). The built-in model's
vocabulary: when the config trains on the built-in labelled data (``DATASETS.TRAIN`` names a
``builtin_panoptic_*`` or ``builtin_parts_*`` dataset, as ``configs/semantic_sam_builtin_recognize.yaml``),
the default vocabulary is the built-in scenes' names (``datasets/builtin_labels.py``: 9 objects, 5 stuff,
their parts) instead of COCO panoptic's and Pascal-Part's.

Trailing ``KEY=VALUE`` arguments override config keys. Exit status 2 means bad arguments, config,
checkpoint or image (the message says which). Images are resized to the config's
``MODEL.DECODER.TEST.SHORT_SIDE`` with the long side capped at ``MAX_SIZE`` (640 and 2560 as the reference;
224 and 224 for the built-in model; ``--short-side``, ``--max-size`` override them); images more elongated than 20:1, with
more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels, or with NaN / out-of-range float pixels are refused
(see :mod:`semantic_sam.utils.image_io`). The web app accepts uploads up to 50 MB.
"""
import argparse
import inspect
import logging
import math
import os
import sys
from typing import Any, Sequence

import torch

from semantic_sam.build import build_model
from semantic_sam.checkpoint import CheckpointError, load_checkpoint
from semantic_sam.config import ConfigError, load_config
from semantic_sam.errors import UserError
from semantic_sam.predictor import (
    ALL_LEVELS,
    SemanticSamAutomaticMaskGenerator,
    SemanticSamPredictor,
    default_vocabulary,
    load_image,
)
from semantic_sam.utils.cli import user_error_message
from utils.demo_app import build_app, launch_app
from utils.demo_outputs import (
    FIND_JSON,
    PANOPTIC_JSON,
    UnknownNameError,
    automatic_items,
    coco_stuff_names,
    find_items,
    interactive_results,
    label_colors,
    match_names,
    panoptic_segments,
    require_parts,
    thing_flags,
    write_auto_outputs,
    write_find_outputs,
    write_interactive_outputs,
    write_masks_json,
    write_panoptic_outputs,
)

logger = logging.getLogger("demo")

DEFAULT_PORT = 6082
_ROOT = os.path.dirname(os.path.abspath(__file__))
# The built-in model: stage 2 (it names what it segments), trained on top of stage 1
# (configs/semantic_sam_builtin.yaml + models/builtin/semantic_sam_builtin.pth, interactive only).
BUILTIN_CONFIG = os.path.join(_ROOT, "configs", "semantic_sam_builtin_recognize.yaml")
BUILTIN_CKPT = os.path.join(_ROOT, "models", "builtin", "semantic_sam_builtin_recognize.pth")
BUILTIN_DATASET_PREFIXES = ("builtin_panoptic", "builtin_parts")
"""A config training on a dataset named so is the built-in model's: its default vocabulary is the scenes' names."""


class UsageError(UserError):
    """A problem with the user's input; reported without a traceback, exit status 2."""


def _defaults(cls) -> dict[str, Any]:
    """The default of every argument of ``cls``: the predictor's and the generator's values live there only."""
    return {name: p.default for name, p in inspect.signature(cls).parameters.items()}


# --------------------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Semantic-SAM interactive demo (gradio web app) and headless segmentation.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2],
    )
    model = p.add_argument_group("model")
    model.add_argument(
        "--config", help=f"model config YAML (e.g. configs/semantic_sam_only_sa-1b_swinT.yaml); default: {BUILTIN_CONFIG}"
    )
    model.add_argument(
        "--ckpt", help=f"checkpoint: a released .pth or one of this project's; default: {BUILTIN_CKPT}"
    )
    model.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (auto: cuda if available)")
    predictor = _defaults(SemanticSamPredictor)
    model.add_argument(
        "--short-side",
        type=int,
        default=None,
        help="resize the image's short side to this before encoding (default: the config's "
        f"MODEL.DECODER.TEST.SHORT_SIDE: {predictor['short_side']} as the reference, 224 for the built-in model)",
    )
    model.add_argument(
        "--max-size",
        type=int,
        default=None,
        help="cap on the resized long side (default: the config's MODEL.DECODER.TEST.MAX_SIZE: "
        f"{predictor['max_size']}, so images up to 4:1 keep the {predictor['short_side']} short side; 224 for the "
        "built-in model)",
    )
    model.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16"],
        help="fp32 (default, the reference's numerics) or bf16: bfloat16 autocast, ~2x faster image encoding "
        "on CPUs with AMX (see docs/PERFORMANCE.md)",
    )
    model.add_argument(
        "--click-box",
        default=None,
        choices=["demo", "eval"],
        help="the box a click becomes: demo (the reference's 0.005 of the image, about the 6-pixel training box "
        "at 1024 px) or eval (the 6-pixel training box, for models trained on small images such as the built-in "
        "one); default: the config's MODEL.DECODER.TEST.POINT_CONVENTION",
    )
    model.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY=VALUE", help="config overrides")

    labels = p.add_argument_group("labels (models with a text encoder)")
    default = default_vocabulary()
    builtin_objects, builtin_parts = _builtin_vocabulary()
    labels.add_argument(
        "--objects", metavar="NAMES",
        help="comma-separated object names to label masks with (default: the built-in scenes' "
        f"{len(builtin_objects)} names for the built-in model, else COCO panoptic's {len(default.objects)} classes)",
    )
    labels.add_argument(
        "--parts", metavar="NAMES",
        help=f"comma-separated part names to label masks with (default: the built-in scenes' {len(builtin_parts)} "
        f"parts for the built-in model, else Pascal-Part's {len(default.parts)} parts)",
    )

    web = p.add_argument_group("web app")
    web.add_argument("--host", default="127.0.0.1", help="address to serve on (default: localhost only)")
    web.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}, as the reference)")
    web.add_argument("--share", action="store_true", help="also create a public gradio share link")

    hl = p.add_argument_group("headless mode (when --image is given)")
    hl.add_argument("--image", help="image file to segment")
    hl.add_argument("--point", nargs=2, type=float, action="append", metavar=("X", "Y"), help="a click in pixels (repeatable)")
    hl.add_argument("--box", nargs=4, type=float, action="append", metavar=("X0", "Y0", "X1", "Y1"), help="a box prompt in pixels (repeatable)")
    hl.add_argument(
        "--levels", nargs="+", type=int,
        help="levels 1-6 (1 = coarsest) to predict for each prompt, or to generate with --auto (default: all)",
    )
    hl.add_argument("--level", nargs="+", type=int, dest="deprecated_level", help="deprecated alias of --levels")
    hl.add_argument("--no-postprocess", action="store_true", help="keep every level's mask (no score/duplicate filter, no hole/island clean-up)")
    hl.add_argument("--output", help="folder for the overlay PNGs and masks.json")
    hl.add_argument(
        "--panoptic", action="store_true",
        help=f"segment the whole image into labelled things and stuff: panoptic.png (with a legend) and "
        f"{PANOPTIC_JSON} (a model with generic queries and a text encoder)",
    )
    hl.add_argument(
        "--find", metavar="NAMES",
        help=f"comma-separated object names: highlight the masks labelled with one of them: find.png and "
        f"{FIND_JSON} (a model with a text encoder)",
    )
    _add_generator_arguments(p)
    return p


def _add_generator_arguments(p: argparse.ArgumentParser) -> None:
    """The --auto options; None (not given) = the generator's default, which the help shows."""
    auto = p.add_argument_group(
        "automatic generation (headless, with --auto; also --find with a model without generic queries)"
    )
    generator = _defaults(SemanticSamAutomaticMaskGenerator)
    auto.add_argument("--auto", action="store_true", help="automatic mask generation for the whole image")
    auto.add_argument("--points-per-side", type=int, help=f"grid size for --auto (default: {generator['points_per_side']})")
    auto.add_argument(
        "--pred-iou-thresh", type=float,
        help=f"--auto: keep masks with predicted IoU above this (default: {generator['pred_iou_thresh']})",
    )
    auto.add_argument(
        "--stability-score-thresh", type=float,
        help=f"--auto: keep masks at least this stable (default: {generator['stability_score_thresh']})",
    )


def _resolve_levels(args: argparse.Namespace) -> None:
    """Fold the deprecated ``--level`` into ``args.levels`` (a warning on stderr; both given is an error)."""
    if args.deprecated_level is None:
        return
    if args.levels is not None:
        raise UsageError("give --levels only (--level is its deprecated alias)")
    print("warning: --level is deprecated, use --levels (the same levels 1-6, for prompts and --auto)", file=sys.stderr)
    args.levels = args.deprecated_level


def _check_args(args: argparse.Namespace) -> None:
    _resolve_levels(args)
    for name in ("short_side", "max_size", "points_per_side"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    for name in ("pred_iou_thresh", "stability_score_thresh"):
        value = getattr(args, name)
        if value is not None and not math.isfinite(value):
            raise UsageError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
    if args.image is None:
        for name in ("point", "box", "auto", "output", "panoptic", "find"):
            if getattr(args, name):
                raise UsageError(f"--{name} needs --image (headless mode)")
        return
    if not args.output:
        raise UsageError("headless mode (--image) needs --output DIR")
    whole = [f"--{name}" for name in ("auto", "panoptic", "find") if getattr(args, name) not in (None, False)]
    if whole and (args.point or args.box):
        raise UsageError(f"{whole[0]} works on the whole image: give either {whole[0]} or --point/--box")
    if args.auto and len(whole) > 1:
        raise UsageError(f"give --auto or {whole[1]}, not both ({whole[1]} runs on its own)")
    if not whole and not (args.point or args.box):
        raise UsageError("give at least one --point X Y or --box X0 Y0 X1 Y1, or --auto, --panoptic or --find")


def _generator_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The --auto options that were given; the generator's own defaults apply to the others."""
    given = {
        "levels": args.levels,
        "points_per_side": args.points_per_side,
        "pred_iou_thresh": args.pred_iou_thresh,
        "stability_score_thresh": args.stability_score_thresh,
    }
    return {k: v for k, v in given.items() if v is not None}


def _builtin_vocabulary() -> tuple[list[str], list[str]]:
    """The built-in scenes' names: 9 objects then 5 stuff (the built-in panoptic classes), and the parts."""
    from datasets.builtin_labels import builtin_panoptic_label_space, builtin_part_label_space

    return list(builtin_panoptic_label_space().object_classes), list(builtin_part_label_space().part_classes)


def _vocabulary(args: argparse.Namespace, model) -> tuple[list[str], list[str]] | None:
    """``(objects, parts)`` from ``--objects`` / ``--parts`` (the default vocabulary's for the one not
    given), or None (the predictor's default) when neither is given. The default is the built-in
    scenes' names for the built-in model with a text encoder (``args.builtin``, see :func:`load_model`).
    The names are checked by ``set_vocabulary``."""
    builtin = getattr(args, "builtin", False) and getattr(model, "text_encoder", None) is not None
    if args.objects is None and args.parts is None and not builtin:
        return None
    if builtin:
        objects, parts = _builtin_vocabulary()
    else:
        default = default_vocabulary()
        objects, parts = list(default.objects), list(default.parts)
    if args.objects is not None:
        objects = [n.strip() for n in args.objects.split(",")]
    if args.parts is not None:
        parts = [n.strip() for n in args.parts.split(",")]
    return objects, parts


def _stuff_names(args: argparse.Namespace) -> tuple[str, ...]:
    """The object names that are stuff: the built-in scenes' for the built-in model, else COCO panoptic's."""
    if getattr(args, "builtin", False):
        from datasets.builtin_labels import STUFF_CLASSES

        return STUFF_CLASSES
    return coco_stuff_names()


def is_builtin_config(cfg) -> bool:
    """Whether ``cfg`` trains on the built-in labelled data (a ``DATASETS.TRAIN`` name starting with one
    of :data:`BUILTIN_DATASET_PREFIXES`): the built-in model, whose vocabulary is the scenes' names."""
    return any(str(name).startswith(BUILTIN_DATASET_PREFIXES) for name in cfg.DATASETS.TRAIN)


def _predictor_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "short_side": args.short_side,
        "max_size": args.max_size,
        "precision": args.precision,
        "point_convention": args.click_box,
    }


# --------------------------------------------------------------------------------------- model


def load_model(args: argparse.Namespace):
    """Config + build + checkpoint; errors become :class:`UsageError`. Fills in ``args.short_side`` and
    ``args.max_size`` when not given, and sets ``args.builtin`` (:func:`is_builtin_config`)."""
    overrides = [o for o in (args.opts or []) if o != "--"]
    if (args.config is None) != (args.ckpt is None):
        raise UsageError("give both --config and --ckpt, or neither (the built-in model)")
    if args.config is None:
        args.config, args.ckpt = BUILTIN_CONFIG, BUILTIN_CKPT
        print(f"using the built-in model ({os.path.relpath(BUILTIN_CKPT, _ROOT)}); pass --config and --ckpt for released weights")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        raise UsageError(f"config: {e}") from None
    args.builtin = is_builtin_config(cfg)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    try:
        model = build_model(cfg, device=device)
    except ConfigError as e:
        raise UsageError(f"config: {e}") from None
    try:
        load_checkpoint(model, args.ckpt)
    except (FileNotFoundError, CheckpointError) as e:
        raise UsageError(f"checkpoint: {e}") from None
    if args.short_side is None:
        args.short_side = cfg.MODEL.DECODER.TEST.SHORT_SIDE
    if args.max_size is None:
        args.max_size = cfg.MODEL.DECODER.TEST.MAX_SIZE
    if args.click_box is None:
        args.click_box = cfg.MODEL.DECODER.TEST.POINT_CONVENTION
    return model.eval()


# --------------------------------------------------------------------------------------- headless


def run_headless(args: argparse.Namespace, model) -> dict:
    """Segment ``args.image`` with the predictor (prompts) or the generator (``--auto``); write the
    overlays and ``masks.json`` into ``args.output`` (see :mod:`utils.demo_outputs`); return the JSON.
    With ``--panoptic`` / ``--find``: :func:`run_naming` instead."""
    if args.panoptic or args.find is not None:
        return run_naming(args, model)
    image = _load_image(args)
    h, w = image.shape[:2]
    out: dict[str, Any] = {"image": os.path.abspath(args.image), "height": h, "width": w}
    vocabulary = _vocabulary(args, model)
    try:
        predictor = SemanticSamPredictor(model, **_predictor_kwargs(args))
        if vocabulary is not None:
            predictor.set_vocabulary(*vocabulary)
        if predictor.has_text_encoder:
            vocab = predictor.vocabulary
            out["vocabulary"] = {"objects": list(vocab.objects), "parts": list(vocab.parts)}
        if args.auto:
            gen = SemanticSamAutomaticMaskGenerator(predictor, output_mode="coco_rle", **_generator_kwargs(args))
            records = gen.generate(image)
            write_auto_outputs(image, records, args.output)
            out.update(mode="auto", levels=list(gen.levels), masks=records)
        else:
            predictor.set_image(image)
            clicks = [tuple(p) for p in (args.point or [])]
            boxes = [tuple(b) for b in (args.box or [])]
            levels = list(ALL_LEVELS if args.levels is None else args.levels)
            results = interactive_results(predictor, clicks, boxes, levels, not args.no_postprocess)
            prompts = write_interactive_outputs(image, results, args.output)
            out.update(mode="interactive", levels=levels, prompts=prompts)
    except ValueError as e:  # bad prompts, levels or vocabulary, a refused image shape
        raise UsageError(str(e)) from None
    write_masks_json(out, args.output)
    return out


def _load_image(args: argparse.Namespace):
    try:
        image = load_image(args.image)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    os.makedirs(args.output, exist_ok=True)
    return image


def run_naming(args: argparse.Namespace, model) -> dict:
    """``--panoptic`` and / or ``--find``: write ``panoptic.png`` / ``panoptic.json`` and ``find.png`` /
    ``find.json`` into ``args.output`` (formats: :func:`utils.demo_outputs.write_panoptic_outputs`,
    :func:`~utils.demo_outputs.write_find_outputs`); return ``{"mode": "naming", "panoptic": JSON or
    None, "find": JSON or None}``.

    A model with generic queries gives both from one panoptic segmentation; a model with only a text
    encoder finds among the automatic generator's labelled masks. A model without what is asked
    for is a :class:`UsageError` naming what is missing (before the image is read)."""
    feature = "--panoptic" if args.panoptic else "--find"
    try:
        require_parts(model, feature, generic=bool(args.panoptic))
    except ValueError as e:
        raise UsageError(str(e)) from None
    generic = bool(getattr(model, "has_generic_queries", False))
    image = _load_image(args)
    h, w = image.shape[:2]
    vocabulary = _vocabulary(args, model)
    result: dict[str, Any] = {"mode": "naming", "panoptic": None, "find": None}
    try:
        predictor = SemanticSamPredictor(model, **_predictor_kwargs(args))
        if vocabulary is not None:
            predictor.set_vocabulary(*vocabulary)
        objects = list(predictor.vocabulary.objects)
        names = None
        if args.find is not None:
            try:
                names = match_names(args.find, objects)
            except UnknownNameError as e:
                hint = "; add it with --objects" if e.name is not None else ""
                raise UsageError(f"--find: {e}{hint}") from None
        colors = label_colors(objects)
        header: dict[str, Any] = {"image": os.path.abspath(args.image), "height": h, "width": w}
        if generic:
            things = thing_flags(objects, _stuff_names(args))
            header["vocabulary"] = {"objects": objects, "stuff": [n for n, t in zip(objects, things) if not t]}
            items = panoptic_segments(predictor, image, things)
            if args.panoptic:
                result["panoptic"] = write_panoptic_outputs(image, items, colors, header, args.output)
            source = "panoptic"
        else:
            header["vocabulary"] = {"objects": objects, "parts": list(predictor.vocabulary.parts)}
            gen = SemanticSamAutomaticMaskGenerator(predictor, output_mode="binary_mask", **_generator_kwargs(args))
            items = automatic_items(gen.generate(image))
            source = "automatic"
        if names is not None:
            header = dict(header, find=names, source=source)
            result["find"] = write_find_outputs(image, find_items(items, names), colors, header, args.output)
    except ValueError as e:  # a refused image shape, a bad vocabulary or generator option
        raise UsageError(str(e)) from None
    return result


# --------------------------------------------------------------------------------------- main


def _report(out: dict, output_dir: str) -> None:
    """One line per JSON file written."""
    if out["mode"] != "naming":
        n = len(out["masks"]) if out["mode"] == "auto" else sum(len(p["masks"]) for p in out["prompts"])
        print(f"wrote {n} mask(s) to {os.path.join(output_dir, 'masks.json')}")
        return
    if out["panoptic"] is not None:
        pano = out["panoptic"]
        print(f"wrote {len(pano['segments'])} segment(s) of {len(pano['legend'])} label(s) to "
              f"{os.path.join(output_dir, PANOPTIC_JSON)}")
    if out["find"] is not None:
        found = out["find"]
        print(f"wrote {len(found['masks'])} mask(s) labelled {', '.join(found['find'])} to "
              f"{os.path.join(output_dir, FIND_JSON)}")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        _check_args(args)
        model = load_model(args)
        if args.image is not None:
            _report(run_headless(args, model), args.output)
            return 0
        app = build_app(model, vocabulary=_vocabulary(args, model), stuff=_stuff_names(args),
                        **_predictor_kwargs(args))
    except Exception as e:
        message = user_error_message(e)  # UsageError and the package's user errors, files
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    launch_app(app, args.host, args.port, args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
