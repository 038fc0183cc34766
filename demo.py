"""Semantic-SAM demo: a local gradio app, or a headless run that writes overlays and a JSON file.

Web app (http://127.0.0.1:6082; click a point to get the masks of every level, or draw a box with two
clicks; a second tab generates masks for the whole image at a chosen level)::

    python demo.py --config configs/semantic_sam_only_sa-1b_swinL.yaml --ckpt swinl_only_sam_many2many.pth

Headless (no browser)::

    python demo.py --config CFG --ckpt CKPT --image examples/synthetic_1.jpg --point 240 180 \\
        --levels 1 2 3 --output out/
    python demo.py --config CFG --ckpt CKPT --image examples/synthetic_1.jpg --auto --level 3 --output out/

Trailing ``KEY=VALUE`` arguments override config keys. Exit status 2 means bad arguments, config,
checkpoint or image (the message says which). Images are resized to a 640-pixel short side with the
long side capped at 2560 (``--short-side``, ``--max-size``); images more elongated than 20:1, with
more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels, or with NaN / out-of-range float pixels are refused
(see :mod:`semantic_sam.utils.image_io`). The web app accepts uploads up to 50 MB.
"""

import argparse
import glob
import hashlib
import json
import logging
import math
import os
import sys
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger("demo")

DEFAULT_PORT = 6082
EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples")
LEVEL_CHOICES = [1, 2, 3, 4, 5, 6]
MAX_UPLOAD_SIZE = "50mb"  # web app: larger uploads are refused by gradio before they are decoded


class UsageError(Exception):
    """A problem with the user's input; reported without a traceback, exit status 2."""


_ROOT = os.path.dirname(os.path.abspath(__file__))
BUILTIN_CONFIG = os.path.join(_ROOT, "configs", "semantic_sam_builtin.yaml")
BUILTIN_CKPT = os.path.join(_ROOT, "models", "builtin", "semantic_sam_builtin.pth")

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
    model.add_argument(
        "--short-side",
        type=int,
        default=None,
        help="resize the image's short side to this before encoding (default: 640 as the reference; "
        "the built-in model's own test size for the built-in model)",
    )
    model.add_argument(
        "--max-size",
        type=int,
        default=None,
        help="cap on the resized long side (default: 2560, so images up to 4:1 keep the 640 short side; "
        "the built-in model's own test size for the built-in model)",
    )
    model.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16"],
        help="fp32 (default, the reference's numerics) or bf16: bfloat16 autocast, ~2x faster image encoding "
        "on CPUs with AMX (see docs/PERFORMANCE.md)",
    )
    model.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY=VALUE", help="config overrides")

    web = p.add_argument_group("web app")
    web.add_argument("--host", default="127.0.0.1", help="address to serve on (default: localhost only)")
    web.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}, as the reference)")
    web.add_argument("--share", action="store_true", help="also create a public gradio share link")

    hl = p.add_argument_group("headless mode (when --image is given)")
    hl.add_argument("--image", help="image file to segment")
    hl.add_argument("--point", nargs=2, type=float, action="append", metavar=("X", "Y"), help="a click in pixels (repeatable)")
    hl.add_argument("--box", nargs=4, type=float, action="append", metavar=("X0", "Y0", "X1", "Y1"), help="a box prompt in pixels (repeatable)")
    hl.add_argument("--levels", nargs="+", type=int, default=LEVEL_CHOICES, help="levels 1-6 to predict for each prompt (default: all)")
    hl.add_argument("--no-postprocess", action="store_true", help="keep every level's mask (no score/duplicate filter, no hole/island clean-up)")
    hl.add_argument("--auto", action="store_true", help="automatic mask generation for the whole image")
    hl.add_argument("--level", nargs="+", type=int, default=LEVEL_CHOICES, help="levels for --auto (default: all)")
    hl.add_argument("--points-per-side", type=int, default=32, help="grid size for --auto")
    hl.add_argument("--pred-iou-thresh", type=float, default=0.88, help="--auto: keep masks with predicted IoU above this")
    hl.add_argument("--stability-score-thresh", type=float, default=0.92, help="--auto: keep masks at least this stable")
    hl.add_argument("--output", help="folder for the overlay PNGs and masks.json")
    return p


def _check_args(args: argparse.Namespace) -> None:
    for name in ("short_side", "max_size", "points_per_side"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    for name in ("pred_iou_thresh", "stability_score_thresh"):
        if not math.isfinite(getattr(args, name)):
            raise UsageError(f"--{name.replace('_', '-')} must be a finite number, got {getattr(args, name)}")
    if args.image is None:
        for name in ("point", "box", "auto", "output"):
            if getattr(args, name):
                raise UsageError(f"--{name} needs --image (headless mode)")
        return
    if not args.output:
        raise UsageError("headless mode (--image) needs --output DIR")
    if args.auto and (args.point or args.box):
        raise UsageError("--auto generates masks for the whole image: give either --auto or --point/--box")
    if not args.auto and not (args.point or args.box):
        raise UsageError("give at least one --point X Y or --box X0 Y0 X1 Y1, or --auto")


# --------------------------------------------------------------------------------------- model


def load_model(args: argparse.Namespace):
    """Config + build + checkpoint; errors become :class:`UsageError`."""
    import torch

    from semantic_sam.build import build_model
    from semantic_sam.checkpoint import CheckpointError, load_checkpoint
    from semantic_sam.config import ConfigError, load_config
    from semantic_sam.predictor import DEFAULT_MAX_SIZE

    overrides = [o for o in (args.opts or []) if o != "--"]
    if (args.config is None) != (args.ckpt is None):
        raise UsageError("give both --config and --ckpt, or neither (the built-in model)")
    builtin = args.config is None
    if builtin:
        args.config, args.ckpt = BUILTIN_CONFIG, BUILTIN_CKPT
        print(f"using the built-in model ({BUILTIN_CKPT}); pass --config and --ckpt for released weights")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        raise UsageError(f"config: {e}") from None
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
    # the built-in model: the scale it was trained at, long side at most MAX_SIZE_TEST
    if args.short_side is None:
        args.short_side = cfg.SAM.INPUT.MIN_SIZE_TEST if builtin else 640
    if args.max_size is None:
        args.max_size = cfg.SAM.INPUT.MAX_SIZE_TEST if builtin else DEFAULT_MAX_SIZE
    return model.eval()


# --------------------------------------------------------------------------------------- shared logic


def interactive_results(predictor, clicks, boxes, levels, postprocess=True) -> list[dict]:
    """Masks for every prompt (clicks, then boxes): one dict per prompt with its masks sorted by score."""
    masks, scores, _ = predictor.predict(
        point_coords=clicks or None, box=boxes or None, levels=levels
    )
    prompts = [("point", list(map(float, c))) for c in clicks] + [("box", list(map(float, b))) for b in boxes]
    results = []
    for (kind, coords), m, s in zip(prompts, masks, scores):
        if postprocess:
            records = predictor.select_masks(m, s, levels)
        else:
            order = np.argsort(-s, kind="stable")
            records = [{"mask": m[i], "score": float(s[i]), "level": int(levels[i]), "area": int(m[i].sum())} for i in order]
        results.append({"type": kind, "coords": coords, "masks": records})
    return results


def mask_caption(rec: dict) -> str:
    return f"level {rec['level']} | score {rec['score']:.2f} | area {rec['area']}"


def render_prompt_results(image: np.ndarray, prompt: dict) -> list[tuple[np.ndarray, dict]]:
    from utils.visualizer import render_prompt_mask

    clicks = [prompt["coords"]] if prompt["type"] == "point" else []
    boxes = [prompt["coords"]] if prompt["type"] == "box" else []
    return [
        (render_prompt_mask(image, r["mask"], f"{r['score']:.2f}", clicks=clicks, boxes=boxes), r)
        for r in prompt["masks"]
    ]


def _rle(mask: np.ndarray) -> dict:
    from semantic_sam.predictor.amg_utils import masks_to_coco_rle

    return masks_to_coco_rle(mask[None])[0]


def _bbox_xywh(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())]


# --------------------------------------------------------------------------------------- headless


def run_headless(args: argparse.Namespace, model) -> dict:
    """Segment ``args.image``; write overlays and ``masks.json`` into ``args.output``; return the JSON."""
    from PIL import Image

    from semantic_sam.predictor import SemanticSamAutomaticMaskGenerator, SemanticSamPredictor, load_image
    from utils.visualizer import render_auto_masks

    try:
        image = load_image(args.image)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    os.makedirs(args.output, exist_ok=True)
    h, w = image.shape[:2]
    out: dict[str, Any] = {"image": os.path.abspath(args.image), "height": h, "width": w}
    try:
        if args.auto:
            gen = SemanticSamAutomaticMaskGenerator(
                model, points_per_side=args.points_per_side, level=args.level, output_mode="coco_rle",
                pred_iou_thresh=args.pred_iou_thresh, stability_score_thresh=args.stability_score_thresh,
                short_side=args.short_side, max_size=args.max_size, precision=args.precision,
            )
            records = gen.generate(image)
            masks = [_decode(r["segmentation"]) for r in records]
            Image.fromarray(render_auto_masks(image, masks)).save(os.path.join(args.output, "auto.png"))
            out.update(mode="auto", levels=list(args.level), masks=records)
        else:
            predictor = SemanticSamPredictor(
                model, short_side=args.short_side, max_size=args.max_size, precision=args.precision
            )
            predictor.set_image(image)
            clicks = [tuple(p) for p in (args.point or [])]
            boxes = [tuple(b) for b in (args.box or [])]
            results = interactive_results(predictor, clicks, boxes, list(args.levels), not args.no_postprocess)
            prompts_json = []
            for i, prompt in enumerate(results):
                entries = []
                for overlay, rec in render_prompt_results(image, prompt):
                    name = f"prompt{i}_level{rec['level']}.png"
                    Image.fromarray(overlay).save(os.path.join(args.output, name))
                    entries.append(
                        {"level": rec["level"], "score": rec["score"], "area": rec["area"],
                         "bbox": _bbox_xywh(rec["mask"]), "segmentation": _rle(rec["mask"]), "overlay": name}
                    )
                prompts_json.append({"type": prompt["type"], "coords": prompt["coords"], "masks": entries})
            out.update(mode="interactive", levels=list(args.levels), prompts=prompts_json)
    except ValueError as e:  # bad prompts or levels, a refused image shape
        raise UsageError(str(e)) from None
    try:
        text = json.dumps(out, allow_nan=False)
    except ValueError:
        raise UsageError(
            "the model returned a non-finite score (NaN or infinity); masks.json not written "
            "(check the checkpoint)"
        ) from None
    with open(os.path.join(args.output, "masks.json"), "w") as f:
        f.write(text)
    return out


def _decode(rle: dict) -> np.ndarray:
    from semantic_sam.predictor.amg_utils import coco_rle_to_mask

    return coco_rle_to_mask(rle)


# --------------------------------------------------------------------------------------- web app


class _EncodedImage:
    """The predictor with the last image it encoded (one per process; the queue serializes calls)."""

    def __init__(self, predictor) -> None:
        self.predictor = predictor
        self.key: str | None = None

    def ensure(self, image: np.ndarray) -> None:
        key = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() + str(image.shape)
        if key != self.key:
            self.key = None  # stays None if set_image refuses the image
            self.predictor.set_image(image)
            self.key = key


def build_app(
    model,
    short_side: int | None = 640,
    max_size: int | None = None,
    examples: Sequence[str] | None = None,
    precision: str = "fp32",
):
    """The gradio Blocks app: an interactive tab and an automatic-generation tab.

    ``max_size`` caps the resized long side (None: ``semantic_sam.predictor.DEFAULT_MAX_SIZE``, 2560).
    Uploads reach the handlers as PIL images in their own mode, so 16-bit and float files are
    converted (or refused) by :func:`~semantic_sam.utils.image_io.to_rgb_uint8`, as files read by
    the headless mode.
    """
    import gradio as gr

    from semantic_sam.predictor import (
        DEFAULT_MAX_SIZE,
        SemanticSamAutomaticMaskGenerator,
        SemanticSamPredictor,
        to_rgb_uint8,
    )
    from utils.visualizer import draw_box, draw_click, render_auto_masks

    if max_size is None:
        max_size = DEFAULT_MAX_SIZE
    encoded = _EncodedImage(SemanticSamPredictor(model, short_side=short_side, max_size=max_size, precision=precision))
    if examples is None:
        examples = sorted(glob.glob(os.path.join(EXAMPLES_DIR, "*.jpg")) + glob.glob(os.path.join(EXAMPLES_DIR, "*.png")))

    def empty_state() -> dict:
        return {"corner": None}

    def rgb_image(image) -> np.ndarray:
        """The upload as (H, W, 3) uint8, encoded; a refused image becomes a message in the UI."""
        try:
            rgb = to_rgb_uint8(image)
            encoded.ensure(rgb)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        return rgb

    def on_image_change(image):
        if image is None:
            return empty_state(), [], [], None, "Upload an image or pick a sample."
        rgb_image(image)
        return empty_state(), [], [], None, "Image encoded. Click on it to segment (or switch to box mode)."

    def on_click(image, mode, levels, score_thresh, state, evt: gr.SelectData):
        if image is None:
            raise gr.Error("Upload an image first.")
        if not levels:
            raise gr.Error("Choose at least one level.")
        image = rgb_image(image)
        x, y = float(evt.index[0]), float(evt.index[1])
        state = dict(state or empty_state())
        if mode.startswith("box"):
            if state["corner"] is None:
                state["corner"] = (x, y)
                preview = draw_click(image, (x, y), color=(0, 200, 0))
                return state, gr.skip(), gr.skip(), preview, f"Box: first corner at ({x:.0f}, {y:.0f}); click the opposite corner."
            (x0, y0), state["corner"] = state["corner"], None
            box = (min(x0, x), min(y0, y), max(x0, x), max(y0, y))
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                return state, gr.skip(), gr.skip(), None, "Box too small: click two opposite corners."
            clicks, boxes = [], [box]
            preview = draw_box(image, box)
        else:
            clicks, boxes = [(x, y)], []
            preview = draw_click(image, (x, y))
        encoded.predictor.score_thresh = float(score_thresh)
        try:
            prompt = interactive_results(encoded.predictor, clicks, boxes, sorted(int(v) for v in levels))[0]
        except ValueError as e:
            raise gr.Error(str(e))
        rendered = render_prompt_results(image, prompt)
        by_score = [(img, mask_caption(rec)) for img, rec in rendered]
        by_area = [(img, mask_caption(rec)) for img, rec in sorted(rendered, key=lambda t: t[1]["area"])]
        where = f"click ({x:.0f}, {y:.0f})" if clicks else "box (%.0f, %.0f, %.0f, %.0f)" % boxes[0]
        return state, by_score, by_area, preview, f"{len(rendered)} mask(s) for the {where}."

    def on_clear():
        return empty_state(), [], [], None, "Prompts cleared."

    def on_generate(image, level_choice, points_per_side):
        if image is None:
            raise gr.Error("Upload an image first.")
        level = LEVEL_CHOICES if level_choice == "All levels" else [int(level_choice.split()[-1])]
        gen = SemanticSamAutomaticMaskGenerator(
            model, points_per_side=int(points_per_side), level=level, short_side=short_side, max_size=max_size,
            precision=precision,
        )
        try:
            image = to_rgb_uint8(image)
            records = gen.generate(image)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        overlay = render_auto_masks(image, [r["segmentation"] for r in records])
        return overlay, f"{len(records)} mask(s) at {level_choice.lower()} ({int(points_per_side)}^2 points)."

    with gr.Blocks(title="Semantic-SAM") as app:
        gr.Markdown(
            "## Semantic-SAM: segment anything at any granularity\n"
            "Click a point to get one mask per level (1 = coarsest ... 6 = finest), or choose *box* and "
            "click two opposite corners. The automatic tab segments the whole image."
        )
        with gr.Tabs():
            with gr.Tab("Interactive", id="interactive"):
                state = gr.State(empty_state())
                with gr.Row():
                    with gr.Column():
                        image = gr.Image(label="Image (click to segment)", type="pil", image_mode=None,
                                         sources=["upload", "clipboard"], elem_id="input-image", format="png")
                        mode = gr.Radio(["point", "box (click two corners)"], value="point", label="Prompt", elem_id="prompt-mode")
                        levels = gr.CheckboxGroup(LEVEL_CHOICES, value=LEVEL_CHOICES, label="Levels", elem_id="levels")
                        score = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="Minimum predicted IoU (the best mask is always shown)")
                        clear = gr.Button("Clear prompts")
                        status = gr.Markdown("Upload an image or pick a sample.", elem_id="status")
                        if examples:
                            gr.Examples(examples=[[e] for e in examples], inputs=[image], label="Samples")
                    with gr.Column():
                        prompt_view = gr.Image(label="Prompt", interactive=False, elem_id="prompt-view", format="png")
                        gallery_score = gr.Gallery(label="Masks sorted by score", columns=3, height=420, preview=False, elem_id="gallery-score", format="png")
                        gallery_area = gr.Gallery(label="Masks sorted by area (smallest first)", columns=3, height=420, preview=False, elem_id="gallery-area", format="png")
                outputs = [state, gallery_score, gallery_area, prompt_view, status]
                image.change(on_image_change, [image], outputs)
                image.select(on_click, [image, mode, levels, score, state], outputs)
                clear.click(on_clear, None, outputs)
            with gr.Tab("Automatic", id="automatic"):
                with gr.Row():
                    with gr.Column():
                        auto_image = gr.Image(label="Image", type="pil", image_mode=None,
                                              sources=["upload", "clipboard"], elem_id="auto-image")
                        level_choice = gr.Radio(["All levels"] + [f"Level {i}" for i in LEVEL_CHOICES], value="All levels",
                                                label="Granularity", elem_id="auto-level")
                        pps = gr.Slider(4, 64, value=32, step=1, label="Points per side", elem_id="auto-pps")
                        run = gr.Button("Generate", variant="primary", elem_id="auto-run")
                        if examples:
                            gr.Examples(examples=[[e] for e in examples], inputs=[auto_image], label="Samples")
                    with gr.Column():
                        auto_out = gr.Image(label="Masks", interactive=False, elem_id="auto-output", format="png")
                        auto_status = gr.Markdown("", elem_id="auto-status")
                run.click(on_generate, [auto_image, level_choice, pps], [auto_out, auto_status])
    return app


# --------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        _check_args(args)
        model = load_model(args)
        if args.image is not None:
            out = run_headless(args, model)
            n = len(out["masks"]) if out["mode"] == "auto" else sum(len(p["masks"]) for p in out["prompts"])
            print(f"wrote {n} mask(s) to {os.path.join(args.output, 'masks.json')}")
            return 0
        app = build_app(model, short_side=args.short_side, max_size=args.max_size, precision=args.precision)
    except Exception as e:
        from semantic_sam.utils.cli import user_error_message  # the package's user errors, files

        message = str(e) if isinstance(e, UsageError) else user_error_message(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    app.queue(default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_UPLOAD_SIZE
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
