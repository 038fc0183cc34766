"""demo.py names what it segments (issue 17): ``--panoptic``, ``--find``, the web app's "Segment everything" tab.

The tiny generic config (generic queries + a tiny UniCL text encoder) with seeded random weights; its class
scores are low, so the panoptic post-processing keeps every query (MODEL.DECODER.TEST thresholds 0) and the
tests check the outputs' structure and consistency, not what is recognised.
"""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

import demo
from datasets.builtin_labels import OBJECT_CLASSES, STUFF_CLASSES
from utils.demo_outputs import coco_stuff_names, label_colors
from utils.visualizer import render_labelled_masks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERIC = os.path.join(ROOT, "configs", "semantic_sam_tiny_generic.yaml")
TINY = os.path.join(ROOT, "tests", "fixtures", "parity_tiny")
PLAIN_ARGS = ["--config", os.path.join(TINY, "tiny_parity.yaml"), "--ckpt", os.path.join(TINY, "tiny_parity.pth"),
              "--device", "cpu", "--short-side", "160"]
TEXT_OPTS = ["MODEL.TEXT.ARCH=unicl", "MODEL.TEXT.CONTEXT_LENGTH=18", "MODEL.TEXT.WIDTH=64", "MODEL.TEXT.HEADS=4",
             "MODEL.TEXT.LAYERS=2", "MODEL.TEXT.CACHE_DIR="]
KEEP_ALL = ["MODEL.DECODER.TEST.OBJECT_MASK_THRESHOLD=0.0", "MODEL.DECODER.TEST.OVERLAP_THRESHOLD=0.0"]
# seven COCO stuff names and one thing
OBJECTS = ["dirt", "sky", "wall", "grass", "road", "sand", "snow", "car"]
H, W = 120, 180


@pytest.fixture(scope="module")
def generic_args(tmp_path_factory):
    from semantic_sam.build import build_model
    from semantic_sam.config import load_config

    torch.manual_seed(0)
    model = build_model(load_config(GENERIC, ["MODEL.TEXT.CACHE_DIR="]), device="cpu")
    path = tmp_path_factory.mktemp("generic") / "generic.pth"
    torch.save({"model": model.state_dict()}, path)
    return ["--config", GENERIC, "--ckpt", str(path), "--device", "cpu", "--short-side", "160"]


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    img = np.full((H, W, 3), 50, np.uint8)
    img[20:70, 30:110] = (210, 70, 60)
    img += rng.integers(0, 20, img.shape, dtype=np.uint8)
    path = tmp_path_factory.mktemp("img") / "scene.png"
    Image.fromarray(img).save(path)
    return str(path)


def _main(args):
    torch.set_num_threads(1)
    return demo.main(args)


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error: ")]


def _decode(entry) -> np.ndarray:
    return mask_utils.decode(entry["segmentation"]).astype(bool)


def _check_overlay(png: np.ndarray, image: np.ndarray, entries: list[dict], colors: dict, alpha=0.55) -> None:
    """For disjoint masks: the overlay's image part differs from the image exactly on the masks, each
    pixel the blend of its mask's label colour or that colour (the outline); below it, the legend of
    exactly the labels present, in vocabulary order."""
    masks = [_decode(e) for e in entries]
    union = np.logical_or.reduce(masks) if masks else np.zeros((H, W), bool)
    np.testing.assert_array_equal((png[:H] != image).any(-1), union)
    for e, mask in zip(entries, masks):
        color = np.array(colors[e["label"]], np.float32)
        blend = (image[mask].astype(np.float32) * (1 - alpha) + color * alpha).round().astype(np.uint8)
        pixels = png[:H][mask]
        assert ((pixels == blend).all(-1) | (pixels == color.astype(np.uint8)).all(-1)).all()
    present = [name for name in colors if name in {e["label"] for e in entries}]
    legend = png[H:]
    want = render_labelled_masks(image, [], [], [(name, colors[name]) for name in present])[H:]
    np.testing.assert_array_equal(legend, want)
    for name, color in colors.items():  # a label's swatch colour is in the legend exactly when it is present
        assert (legend == np.array(color, np.uint8)).all(-1).any() == (name in present), name


# ------------------------------------------------------------------------------------------ --panoptic


def test_panoptic_files_json_and_overlay(tmp_path, image_path, generic_args, capsys):
    out = tmp_path / "out"
    rc = _main(generic_args + ["--image", image_path, "--panoptic", "--objects", ",".join(OBJECTS),
                               "--output", str(out)] + KEEP_ALL)
    assert rc == 0
    assert sorted(os.listdir(out)) == ["panoptic.json", "panoptic.png"]
    data = json.loads((out / "panoptic.json").read_text())
    assert set(data) == {"image", "height", "width", "vocabulary", "segments", "legend", "overlay"}
    assert (data["height"], data["width"], data["overlay"]) == (H, W, "panoptic.png")
    stuff = [n for n in OBJECTS if n != "car"]
    assert data["vocabulary"] == {"objects": OBJECTS, "stuff": stuff}
    segments = data["segments"]
    assert segments
    masks = [_decode(s) for s in segments]
    assert sum(m.sum() for m in masks) == np.logical_or.reduce(masks).sum()  # disjoint
    for s, mask in zip(segments, masks):
        assert set(s) == {"label", "score", "area", "bbox", "segmentation", "id", "category_id", "isthing"}
        assert s["label"] == OBJECTS[s["category_id"]] and s["isthing"] == (s["label"] not in stuff)
        assert s["score"] is None or 0 <= s["score"] <= 1
        ys, xs = np.nonzero(mask)
        assert mask.shape == (H, W) and s["area"] == mask.sum() > 0
        assert s["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
    assert len({s["id"] for s in segments}) == len(segments)
    stuff_labels = [s["label"] for s in segments if not s["isthing"]]
    assert len(stuff_labels) == len(set(stuff_labels))  # one segment per stuff class
    present = {s["label"] for s in segments}
    assert data["legend"] == [n for n in OBJECTS if n in present]
    image = np.asarray(Image.open(image_path))
    png = np.asarray(Image.open(out / "panoptic.png"))
    assert png.shape[1:] == (W, 3) and png.shape[0] > H
    _check_overlay(png, image, segments, label_colors(OBJECTS))
    assert f"wrote {len(segments)} segment(s) of {len(present)} label(s)" in capsys.readouterr().out


def test_builtin_model_vocabulary(tmp_path, image_path, generic_args):
    """A config that trains on the built-in labelled data gets the built-in scenes' names and stuff."""
    builtin = ['DATASETS.TRAIN=["sam_train","builtin_panoptic_train"]']
    for name, opts in (("builtin", builtin), ("coco", [])):
        assert _main(generic_args + ["--image", image_path, "--panoptic", "--output", str(tmp_path / name)]
                     + KEEP_ALL + opts) == 0
    vocab = json.loads((tmp_path / "builtin" / "panoptic.json").read_text())["vocabulary"]
    assert vocab == {"objects": list(OBJECT_CLASSES + STUFF_CLASSES), "stuff": list(STUFF_CLASSES)}
    data = json.loads((tmp_path / "coco" / "panoptic.json").read_text())
    assert len(data["vocabulary"]["objects"]) == 133 and data["vocabulary"]["stuff"] == list(coco_stuff_names())
    assert {s["label"] for s in data["segments"]} <= set(data["vocabulary"]["objects"])


# ------------------------------------------------------------------------------------------ --find


def test_find_generic_model_highlights_the_panoptic_segments(tmp_path, image_path, generic_args):
    both = tmp_path / "both"
    args = generic_args + ["--image", image_path, "--objects", ",".join(OBJECTS)]
    assert _main(args + ["--panoptic", "--output", str(both)] + KEEP_ALL) == 0
    segments = json.loads((both / "panoptic.json").read_text())["segments"]
    labels = [s["label"] for s in segments]
    label = max(labels, key=labels.count)  # the label with the most segments
    absent = [n for n in OBJECTS if n not in {s["label"] for s in segments}]
    # normalised, case-insensitive names; repeats once
    query = ",".join([label.upper(), f" {label} "] + absent[:1])
    assert _main(args + ["--panoptic", "--find", query, "--output", str(both)] + KEEP_ALL) == 0
    alone = tmp_path / "alone"
    assert _main(args + ["--find", query, "--output", str(alone)] + KEEP_ALL) == 0
    assert sorted(os.listdir(alone)) == ["find.json", "find.png"]
    data = json.loads((alone / "find.json").read_text())
    assert (alone / "find.json").read_text() == (both / "find.json").read_text()
    assert data["find"] == [label] + absent[:1] and data["source"] == "panoptic"
    assert data["vocabulary"]["objects"] == OBJECTS
    want = [s for s in segments if s["label"] in data["find"]]
    assert want and [m["segmentation"] for m in data["masks"]] == [s["segmentation"] for s in want]
    for m in data["masks"]:
        assert m["label"] == label and set(m) == {"label", "score", "area", "bbox", "segmentation", "id",
                                                  "category_id", "isthing"}
    assert data["legend"] == [label]
    image = np.asarray(Image.open(image_path))
    _check_overlay(np.asarray(Image.open(alone / "find.png")), image, data["masks"], label_colors(OBJECTS))


AUTO_OPTS = ["--points-per-side", "4", "--levels", "2", "--pred-iou-thresh", "-10", "--stability-score-thresh", "0"]


def test_find_text_model_uses_the_generator_labels(tmp_path, image_path):
    """A model with a text encoder but no generic queries finds among the automatic generator's records."""
    args = PLAIN_ARGS + ["--image", image_path, "--objects", "cat,dog,red square", "--parts", "head", *AUTO_OPTS]
    torch.manual_seed(0)
    assert _main(args + ["--auto", "--output", str(tmp_path / "auto")] + TEXT_OPTS) == 0
    records = json.loads((tmp_path / "auto" / "masks.json").read_text())["masks"]
    label = records[0]["object_label"]
    torch.manual_seed(0)
    assert _main(args + ["--find", label, "--output", str(tmp_path / "find")] + TEXT_OPTS) == 0
    data = json.loads((tmp_path / "find" / "find.json").read_text())
    assert data["source"] == "automatic" and data["find"] == [label]
    assert data["vocabulary"] == {"objects": ["cat", "dog", "red square"], "parts": ["head"]}
    want = [r for r in records if r["object_label"] == label]
    assert len(data["masks"]) == len(want) >= 1
    for m, r in zip(data["masks"], want):
        assert m["segmentation"] == r["segmentation"] and m["label"] == label
        assert (m["score"], m["level"], m["predicted_iou"], m["part_label"]) == (
            r["object_score"], r["level"], r["predicted_iou"], r["part_label"])
    image = np.asarray(Image.open(image_path))
    png = np.asarray(Image.open(tmp_path / "find" / "find.png"))
    masks = [_decode(m) for m in data["masks"]]
    np.testing.assert_array_equal((png[:H] != image).any(-1), np.logical_or.reduce(masks))
    assert data["legend"] == [label]
    # a name no mask has: nothing found, the overlay is the image (no legend)
    other = next(n for n in ("cat", "dog", "red square") if n != label)
    torch.manual_seed(0)
    assert _main(args + ["--find", other, "--output", str(tmp_path / "none")] + TEXT_OPTS) == 0
    data = json.loads((tmp_path / "none" / "find.json").read_text())
    if other not in {r["object_label"] for r in records}:
        assert data["masks"] == [] and data["legend"] == []
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "none" / "find.png")), image)


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "model, extra, message",
    [
        ("plain", ["--panoptic"], "--panoptic needs a model with generic queries (MODEL.DECODER.NUM_OBJECT_QUERIES"),
        ("plain", ["--panoptic"], "and a text encoder (MODEL.TEXT.ARCH unicl or open_clip): this model has neither"),
        ("text", ["--panoptic", "--find", "cat"], "--panoptic needs a model with generic queries"),
        ("plain", ["--find", "cat"],
         "--find needs a model with a text encoder (MODEL.TEXT.ARCH unicl or open_clip): this model has none"),
        ("generic", ["--find", "car,unicorn"], "--find: 'unicorn' is not an object name of the vocabulary (8 names"),
        ("generic", ["--find", " , "], "--find: give at least one name to find"),
        ("generic", ["--panoptic", "--point", "1", "1"], "--panoptic works on the whole image"),
        ("generic", ["--auto", "--find", "car"], "give --auto or --find, not both"),
    ],
)
def test_errors_exit_2_with_one_line(tmp_path, image_path, generic_args, capsys, model, extra, message):
    base = {"plain": PLAIN_ARGS, "text": PLAIN_ARGS, "generic": generic_args + ["--objects", ",".join(OBJECTS)]}
    out = tmp_path / "out"
    args = base[model] + ["--image", image_path, "--output", str(out)] + extra + (TEXT_OPTS if model == "text" else [])
    assert _main(args) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert message in line
    assert not out.exists() or not os.listdir(out)


def test_panoptic_needs_image(capsys):
    assert _main(PLAIN_ARGS + ["--panoptic"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line == "error: --panoptic needs --image (headless mode)"


# ------------------------------------------------------------------------------------------ web app


def _launched_fns(monkeypatch, args):
    gr = pytest.importorskip("gradio")
    launched = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: launched.update(kwargs, app=self))
    torch.manual_seed(0)
    assert _main(args) == 0
    app = launched["app"]
    return gr, app, {f.name: f.fn for f in app.fns.values()}


def _component(app, elem_id):
    (block,) = [b for b in app.blocks.values() if getattr(b, "elem_id", None) == elem_id]
    return block


def test_web_app_segment_everything_and_find(tmp_path, image_path, generic_args, monkeypatch):
    out = tmp_path / "out"
    objects = ["--objects", ",".join(OBJECTS)]
    assert _main(generic_args + ["--image", image_path, "--panoptic", "--output", str(out)] + objects + KEEP_ALL) == 0
    headless = json.loads((out / "panoptic.json").read_text())
    gr, app, fns = _launched_fns(monkeypatch, generic_args + objects + KEEP_ALL)
    assert _component(app, "segment-run").interactive is not False
    colors = label_colors(OBJECTS)
    want = {name: "#{:02x}{:02x}{:02x}".format(*c) for name, c in colors.items()}
    assert _component(app, "segment-output").color_map == want
    image = Image.open(image_path)
    rgb = np.asarray(image)
    (base, annotations), status = fns["on_segment"](image)
    # one annotation per label present (the legend), the union of the headless run's segments of that label
    assert [label for _, label in annotations] == headless["legend"]
    for mask, label in annotations:
        union = np.logical_or.reduce([_decode(s) for s in headless["segments"] if s["label"] == label])
        np.testing.assert_array_equal(mask > 0, union)
    segments = np.logical_or.reduce([_decode(s) for s in headless["segments"]])
    assert not (base != rgb).any(-1)[~segments].any()  # outlines on the segments only
    assert status.startswith(f"{len(headless['segments'])} segment(s) of {len(headless['legend'])} label(s): ")
    label = headless["legend"][0]
    (_, found), status = fns["on_find"](image, label.upper(), 16)
    assert [lab for _, lab in found] == [label] and status.endswith(f"mask(s) labelled {label}.")
    absent = [n for n in OBJECTS if n not in headless["legend"]]
    if absent:
        (_, found), status = fns["on_find"](image, absent[0], 16)
        assert found == [] and status.startswith(f"No mask labelled {absent[0]} (labels present: ")
    with pytest.raises(gr.Error, match="'unicorn' is not an object name"):
        fns["on_find"](image, "unicorn", 16)
    with pytest.raises(gr.Error, match="Upload an image first"):
        fns["on_segment"](None)


def test_web_app_without_generic_queries_or_text_encoder(image_path, monkeypatch):
    # a text encoder only: the panoptic button is disabled, Find labels the generator's masks
    _, app, fns = _launched_fns(monkeypatch, PLAIN_ARGS + ["--objects", "cat,dog"] + TEXT_OPTS)
    assert _component(app, "segment-run").interactive is False
    assert "needs a model with generic queries" in _component(app, "segment-note").value
    assert _component(app, "find-pps").visible
    image = Image.open(image_path)
    (_, found), status = fns["on_find"](image, "cat, dog", 4)
    assert {label for _, label in found} <= {"cat", "dog"}
    assert status.endswith(".") and ("labelled" in status)
    # no text encoder: the tab says what is missing and has no handlers
    _, app, fns = _launched_fns(monkeypatch, PLAIN_ARGS)
    assert "on_segment" not in fns and "on_find" not in fns
    text = _component(app, "segment-disabled").value
    assert "generic queries" in text and "a text encoder (MODEL.TEXT.ARCH unicl or open_clip)" in text
