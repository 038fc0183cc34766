"""The demo's gradio web app: an interactive tab (a click or a box -> one mask per level), an
automatic-generation tab and a "Segment everything" tab. gradio is imported when the app is built, so
this module imports without it.

With a model that has a text encoder, each mask's labels (``"object"`` or ``"object: part"``) are
written on its overlay and lead its gallery caption; the automatic overlay names every mask.

The "Segment everything" tab shows the panoptic segmentation of a model with generic queries, each
label's segments in its colour with a legend of the labels present (a ``gr.AnnotatedImage``: hovering a
legend entry highlights its segments), and its *Find* box shows only the masks labelled with the names
typed (comma-separated object names of the vocabulary). With a text encoder but no generic queries,
*Find* labels the automatic generator's masks and the panoptic button is disabled; without a text
encoder the tab only says what the model lacks.

Uploads reach the handlers as PIL images in their own mode, so 16-bit and float files are converted
(or refused) by :func:`~semantic_sam.utils.image_io.to_rgb_uint8`, as files read by the headless mode.
"""
# No ``from __future__ import annotations``: gradio reads the handlers' ``gr.SelectData`` annotation.
import glob
import hashlib
import inspect
import os
from typing import Any, Collection, Sequence

import numpy as np

from utils.demo_outputs import (
    automatic_items,
    coco_stuff_names,
    find_items,
    interactive_results,
    label_colors,
    legend_labels,
    mask_text,
    match_names,
    missing_parts,
    panoptic_segments,
    render_auto_results,
    render_prompt_results,
    thing_flags,
)

__all__ = ["EXAMPLES_DIR", "MAX_UPLOAD_SIZE", "build_app", "launch_app"]

EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
MAX_UPLOAD_SIZE = "50mb"  # larger uploads are refused by gradio before they are decoded


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


def _mask_caption(rec: dict) -> str:
    caption = f"level {rec['level']} | score {rec['score']:.2f} | area {rec['area']}"
    label = mask_text(rec)
    return caption if label is None else f"{label} | {caption}"


def _empty_state() -> dict:
    return {"corner": None}


def _interactive_handlers(gr, encoded: _EncodedImage) -> dict[str, Any]:
    """The interactive tab's event handlers; each returns (state, gallery by score, gallery by area,
    prompt view, status)."""
    from semantic_sam.predictor import to_rgb_uint8
    from utils.visualizer import draw_box, draw_click

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
            return _empty_state(), [], [], None, "Upload an image or pick a sample."
        rgb_image(image)
        return _empty_state(), [], [], None, "Image encoded. Click on it to segment (or switch to box mode)."

    def on_click(image, mode, levels, score_thresh, state, evt: gr.SelectData):
        if image is None:
            raise gr.Error("Upload an image first.")
        if not levels:
            raise gr.Error("Choose at least one level.")
        image = rgb_image(image)
        x, y = float(evt.index[0]), float(evt.index[1])
        state = dict(state or _empty_state())
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
        by_score = [(img, _mask_caption(rec)) for img, rec in rendered]
        by_area = [(img, _mask_caption(rec)) for img, rec in sorted(rendered, key=lambda t: t[1]["area"])]
        where = f"click ({x:.0f}, {y:.0f})" if clicks else "box (%.0f, %.0f, %.0f, %.0f)" % boxes[0]
        return state, by_score, by_area, preview, f"{len(rendered)} mask(s) for the {where}."

    def on_clear():
        return _empty_state(), [], [], None, "Prompts cleared."

    return {"on_image_change": on_image_change, "on_click": on_click, "on_clear": on_clear}


def _generate_handler(gr, model, predictor_kwargs: dict[str, Any], vocabulary):
    """The automatic tab's handler: (image, levels choice, points per side) -> (overlay, status)."""
    from semantic_sam.predictor import SemanticSamAutomaticMaskGenerator, to_rgb_uint8

    def on_generate(image, levels_choice, points_per_side):
        if image is None:
            raise gr.Error("Upload an image first.")
        levels = {} if levels_choice == "All levels" else {"levels": [int(levels_choice.split()[-1])]}
        gen = SemanticSamAutomaticMaskGenerator(
            model, points_per_side=int(points_per_side), **levels, **predictor_kwargs
        )
        if vocabulary is not None:
            gen.set_vocabulary(*vocabulary)
        try:
            image = to_rgb_uint8(image)
            records = gen.generate(image)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        overlay = render_auto_results(image, records, [r["segmentation"] for r in records])
        return overlay, f"{len(records)} mask(s) at {levels_choice.lower()} ({int(points_per_side)}^2 points)."

    return on_generate


def _annotated(image: np.ndarray, items: Sequence[dict], colors: dict[str, Sequence[int]]):
    """The ``gr.AnnotatedImage`` value of labelled items: the image with every item's outline in its
    label's colour, and one half-opaque annotation per label present (the union of its masks), in
    vocabulary order, so that the legend lists each label once."""
    from utils.visualizer import draw_masks

    base = draw_masks(image, [it["mask"] for it in items], [colors[it["label"]] for it in items], alpha=0.0)
    annotations = []
    for label in legend_labels(items, colors):
        union = np.logical_or.reduce([it["mask"] for it in items if it["label"] == label])
        annotations.append((union.astype(np.float32) * 0.5, label))
    return base, annotations


def _segment_handlers(gr, model, predictor_kwargs: dict[str, Any], vocabulary, stuff) -> dict[str, Any]:
    """The "Segment everything" tab's handlers, each (image, ...) -> (annotated image, status)."""
    from semantic_sam.predictor import SemanticSamAutomaticMaskGenerator, SemanticSamPredictor, to_rgb_uint8

    predictor = SemanticSamPredictor(model, **predictor_kwargs)
    if vocabulary is not None:
        predictor.set_vocabulary(*vocabulary)
    objects = list(predictor.vocabulary.objects)
    colors = label_colors(objects)
    things = thing_flags(objects, coco_stuff_names() if stuff is None else stuff)
    generic = not missing_parts(model, generic=True)
    last = {"key": None, "items": None}  # the panoptic segments of the last image

    def rgb_image(image) -> np.ndarray:
        if image is None:
            raise gr.Error("Upload an image first.")
        try:
            return to_rgb_uint8(image)
        except ValueError as e:
            raise gr.Error(str(e)) from None

    def segments(rgb: np.ndarray) -> list[dict]:
        key = hashlib.sha1(np.ascontiguousarray(rgb).tobytes()).hexdigest() + str(rgb.shape)
        if key != last["key"]:
            last["key"] = None
            try:
                last["items"] = panoptic_segments(predictor, rgb, things)
            except ValueError as e:
                raise gr.Error(str(e)) from None
            last["key"] = key
        return last["items"]

    def on_segment(image):
        rgb = rgb_image(image)
        items = segments(rgb)
        labels = legend_labels(items, colors)
        status = f"{len(items)} segment(s) of {len(labels)} label(s)" + (f": {', '.join(labels)}." if labels else ".")
        return _annotated(rgb, items, colors), status

    def on_find(image, names, points_per_side):
        rgb = rgb_image(image)
        try:
            wanted = match_names(names or "", objects)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        if generic:
            items = segments(rgb)
        else:
            gen = SemanticSamAutomaticMaskGenerator(predictor, points_per_side=int(points_per_side),
                                                    output_mode="binary_mask")
            try:
                items = automatic_items(gen.generate(rgb))
            except ValueError as e:
                raise gr.Error(str(e)) from None
        found = find_items(items, wanted)
        if found:
            status = f"{len(found)} mask(s) labelled {', '.join(legend_labels(found, colors))}."
        else:
            present = legend_labels(items, colors)
            status = f"No mask labelled {', '.join(wanted)}" + (
                f" (labels present: {', '.join(present)})." if present else " (no labelled mask).")
        return _annotated(rgb, found, colors), status

    return {"on_segment": on_segment, "on_find": on_find, "objects": objects, "colors": colors, "generic": generic}


def _hex(color: Sequence[int]) -> str:
    r, g, b = (int(c) for c in color)
    return f"#{r:02x}{g:02x}{b:02x}"


def _segment_tab(gr, model, handlers: dict[str, Any] | None, examples: Sequence[str], points_per_side: int) -> None:
    """The "Segment everything" tab; ``handlers`` None: the model has no text encoder (a message only)."""
    if handlers is None:
        missing = missing_parts(model, generic=True)
        gr.Markdown(f"**Not available with this model.** Naming what is in the image needs a model with "
                    f"{' and '.join(missing)}.", elem_id="segment-disabled")
        return
    objects, generic = handlers["objects"], handlers["generic"]
    shown = ", ".join(objects[:20]) + (", ..." if len(objects) > 20 else "")
    note = f"Vocabulary: {len(objects)} object names ({shown})."
    if not generic:
        note = (f"**Segment everything is disabled:** it needs a model with {missing_parts(model, True)[0]}. "
                "*Find* names the automatic generator's masks instead. " + note)
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Image", type="pil", image_mode=None, sources=["upload", "clipboard"],
                             elem_id="segment-image")
            gr.Markdown(note, elem_id="segment-note")
            run = gr.Button("Segment everything", variant="primary", interactive=generic, elem_id="segment-run")
            names = gr.Textbox(label="Find: object names, comma-separated", placeholder=", ".join(objects[:2]),
                               elem_id="find-names")
            find = gr.Button("Find", elem_id="find-run")
            pps = gr.Slider(4, 64, value=points_per_side, step=1, label="Points per side (Find)",
                            visible=not generic, elem_id="find-pps")
            if examples:
                gr.Examples(examples=[[e] for e in examples], inputs=[image], label="Samples")
        with gr.Column():
            output = gr.AnnotatedImage(label="Segments", format="png", elem_id="segment-output",
                                       color_map={name: _hex(c) for name, c in handlers["colors"].items()})
            status = gr.Markdown("", elem_id="segment-status")
    run.click(handlers["on_segment"], [image], [output, status])
    find.click(handlers["on_find"], [image, names, pps], [output, status])
    names.submit(handlers["on_find"], [image, names, pps], [output, status])


def _interactive_tab(gr, handlers: dict[str, Any], examples: Sequence[str], levels: Sequence[int], score: float) -> None:
    state = gr.State(_empty_state())
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Image (click to segment)", type="pil", image_mode=None,
                             sources=["upload", "clipboard"], elem_id="input-image", format="png")
            mode = gr.Radio(["point", "box (click two corners)"], value="point", label="Prompt", elem_id="prompt-mode")
            level_boxes = gr.CheckboxGroup(list(levels), value=list(levels), label="Levels", elem_id="levels")
            score_slider = gr.Slider(0.0, 1.0, value=score, step=0.01,
                                     label="Minimum predicted IoU (the best mask is always shown)")
            clear = gr.Button("Clear prompts")
            status = gr.Markdown("Upload an image or pick a sample.", elem_id="status")
            if examples:
                gr.Examples(examples=[[e] for e in examples], inputs=[image], label="Samples")
        with gr.Column():
            prompt_view = gr.Image(label="Prompt", interactive=False, elem_id="prompt-view", format="png")
            gallery_score = gr.Gallery(label="Masks sorted by score", columns=3, height=420, preview=False,
                                       elem_id="gallery-score", format="png")
            gallery_area = gr.Gallery(label="Masks sorted by area (smallest first)", columns=3, height=420,
                                      preview=False, elem_id="gallery-area", format="png")
    outputs = [state, gallery_score, gallery_area, prompt_view, status]
    image.change(handlers["on_image_change"], [image], outputs)
    image.select(handlers["on_click"], [image, mode, level_boxes, score_slider, state], outputs)
    clear.click(handlers["on_clear"], None, outputs)


def _automatic_tab(gr, on_generate, examples: Sequence[str], levels: Sequence[int], points_per_side: int) -> None:
    with gr.Row():
        with gr.Column():
            auto_image = gr.Image(label="Image", type="pil", image_mode=None,
                                  sources=["upload", "clipboard"], elem_id="auto-image")
            levels_choice = gr.Radio(["All levels"] + [f"Level {i}" for i in levels], value="All levels",
                                     label="Levels", elem_id="auto-levels")
            pps = gr.Slider(4, 64, value=points_per_side, step=1, label="Points per side", elem_id="auto-pps")
            run = gr.Button("Generate", variant="primary", elem_id="auto-run")
            if examples:
                gr.Examples(examples=[[e] for e in examples], inputs=[auto_image], label="Samples")
        with gr.Column():
            auto_out = gr.Image(label="Masks", interactive=False, elem_id="auto-output", format="png")
            auto_status = gr.Markdown("", elem_id="auto-status")
    run.click(on_generate, [auto_image, levels_choice, pps], [auto_out, auto_status])


def build_app(
    model,
    examples: Sequence[str] | None = None,
    vocabulary: tuple[Sequence[str], Sequence[str] | None] | None = None,
    stuff: Collection[str] | None = None,
    **predictor_kwargs,
):
    """The gradio Blocks app: an interactive tab, an automatic-generation tab and a "Segment everything"
    tab (panoptic segmentation with a legend, and *Find* by name).

    Args:
        model: a Semantic-SAM model (``semantic_sam.build_model`` + a checkpoint).
        examples: sample image files (default: the ``examples/`` folder's JPEG and PNG files).
        vocabulary: ``(objects, parts)`` names to label masks with (parts may be None: no part
            labels); default: the predictor's default vocabulary. Needs a model with a text encoder.
        stuff: which object names are stuff in the panoptic segmentation (one segment per class);
            default: COCO panoptic's stuff classes (:func:`~utils.demo_outputs.coco_stuff_names`).
        predictor_kwargs: ``short_side``, ``max_size``, ``precision`` of every tab's predictor
            (:class:`~semantic_sam.predictor.SemanticSamPredictor`; its defaults where not given).

    Raises:
        NoTextEncoderError: ``vocabulary`` with a model without a text encoder. VocabularyError: an
            invalid vocabulary.
    """
    import gradio as gr

    from semantic_sam.predictor import ALL_LEVELS, SemanticSamAutomaticMaskGenerator, SemanticSamPredictor

    encoded = _EncodedImage(SemanticSamPredictor(model, **predictor_kwargs))
    if vocabulary is not None:
        encoded.predictor.set_vocabulary(*vocabulary)
    if examples is None:
        examples = sorted(glob.glob(os.path.join(EXAMPLES_DIR, "*.jpg")) + glob.glob(os.path.join(EXAMPLES_DIR, "*.png")))
    points_per_side = inspect.signature(SemanticSamAutomaticMaskGenerator).parameters["points_per_side"].default
    intro = (
        "## Semantic-SAM: segment anything at any granularity\n"
        "Click a point to get one mask per level (1 = coarsest ... 6 = finest), or choose *box* and "
        "click two opposite corners. The automatic tab segments the whole image; *Segment everything* "
        "names every segment of it and finds masks by name."
    )
    if encoded.predictor.has_text_encoder:
        vocab = encoded.predictor.vocabulary
        intro += (
            f" Each mask is named *object* or *object: part* from {len(vocab.objects)} object and "
            f"{len(vocab.parts)} part classes (a part only when its score is at least "
            f"{encoded.predictor.part_score_thresh:g})."
        )
    with gr.Blocks(title="Semantic-SAM") as app:
        gr.Markdown(intro)
        with gr.Tabs():
            with gr.Tab("Interactive", id="interactive"):
                _interactive_tab(gr, _interactive_handlers(gr, encoded), examples, ALL_LEVELS,
                                 encoded.predictor.score_thresh)
            with gr.Tab("Automatic", id="automatic"):
                on_generate = _generate_handler(gr, model, predictor_kwargs, vocabulary)
                _automatic_tab(gr, on_generate, examples, ALL_LEVELS, points_per_side)
            with gr.Tab("Segment everything", id="segment"):
                handlers = None
                if encoded.predictor.has_text_encoder:
                    handlers = _segment_handlers(gr, model, predictor_kwargs, vocabulary, stuff)
                _segment_tab(gr, model, handlers, examples, points_per_side)
    return app


def launch_app(app, host: str, port: int, share: bool = False) -> None:
    """Serve the app (one request at a time: the predictor holds one encoded image)."""
    app.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, share=share, max_file_size=MAX_UPLOAD_SIZE
    )
