"""demo.py headless mode end to end with the tiny model, and its error handling."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

import demo
from tests.utils.image_files import write_float_tiff, write_gray16_png, write_png_header
from utils import demo_app

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "tests", "fixtures", "parity_tiny")
MODEL_ARGS = ["--config", os.path.join(TINY, "tiny_parity.yaml"), "--ckpt", os.path.join(TINY, "tiny_parity.pth"),
              "--device", "cpu", "--short-side", "160"]


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    img = np.full((120, 180, 3), 50, np.uint8)
    img[20:70, 30:110] = (210, 70, 60)
    img += rng.integers(0, 20, img.shape, dtype=np.uint8)
    path = tmp_path_factory.mktemp("img") / "scene.png"
    Image.fromarray(img).save(path)
    return str(path)


def _run(args):
    import torch

    torch.set_num_threads(1)
    return demo.main(MODEL_ARGS + args)


def test_headless_clicks_and_box(tmp_path, image_path):
    out = tmp_path / "out"
    rc = _run(["--image", image_path, "--point", "60", "40", "--box", "20", "10", "120", "80",
               "--levels", "1", "3", "--no-postprocess", "--output", str(out)])
    assert rc == 0
    data = json.loads((out / "masks.json").read_text())
    assert data["mode"] == "interactive" and (data["height"], data["width"]) == (120, 180)
    assert [p["type"] for p in data["prompts"]] == ["point", "box"]
    assert data["prompts"][0]["coords"] == [60.0, 40.0]
    for prompt in data["prompts"]:
        assert sorted(m["level"] for m in prompt["masks"]) == [1, 3]
        scores = [m["score"] for m in prompt["masks"]]
        assert scores == sorted(scores, reverse=True)
        for m in prompt["masks"]:
            mask = mask_utils.decode(m["segmentation"])
            assert mask.shape == (120, 180) and mask.sum() == m["area"]
            overlay = np.asarray(Image.open(out / m["overlay"]))
            assert overlay.shape == (120, 180, 3)


def test_headless_bf16_close_to_fp32(tmp_path, image_path):
    scores = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        assert _run(["--image", image_path, "--point", "60", "40", "--no-postprocess", "--precision", precision,
                     "--output", str(out)]) == 0
        masks = json.loads((out / "masks.json").read_text())["prompts"][0]["masks"]
        scores[precision] = {m["level"]: m["score"] for m in masks}
    assert scores["fp32"].keys() == scores["bf16"].keys()
    assert max(abs(scores["fp32"][k] - scores["bf16"][k]) for k in scores["fp32"]) < 0.01


def test_headless_reference_postprocessing(tmp_path, image_path):
    out = tmp_path / "out"
    assert _run(["--image", image_path, "--point", "60", "40", "--output", str(out)]) == 0
    masks = json.loads((out / "masks.json").read_text())["prompts"][0]["masks"]
    assert 1 <= len(masks) <= 6 and len({m["level"] for m in masks}) == len(masks)


def test_headless_auto(tmp_path, image_path):
    out = tmp_path / "auto"
    rc = _run(["--image", image_path, "--auto", "--points-per-side", "4", "--levels", "2", "4",
               "--pred-iou-thresh", "-10", "--stability-score-thresh", "0", "--output", str(out)])
    assert rc == 0
    data = json.loads((out / "masks.json").read_text())
    assert data["mode"] == "auto" and data["levels"] == [2, 4] and data["masks"]
    for r in data["masks"]:
        assert {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box", "level"} <= set(r)
        assert r["level"] in (2, 4)
        assert mask_utils.decode(r["segmentation"]).sum() == r["area"]
    assert np.asarray(Image.open(out / "auto.png")).shape == (120, 180, 3)


AUTO_ARGS = ["--auto", "--points-per-side", "4", "--pred-iou-thresh", "-10", "--stability-score-thresh", "0"]


def test_deprecated_level_flag_is_levels(tmp_path, image_path, capsys):
    """``--level`` (deprecated) is ``--levels``: the same masks.json in --auto mode, and a warning on stderr."""
    assert _run(["--image", image_path, *AUTO_ARGS, "--levels", "3", "--output", str(tmp_path / "new")]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert _run(["--image", image_path, *AUTO_ARGS, "--level", "3", "--output", str(tmp_path / "old")]) == 0
    assert "warning: --level is deprecated, use --levels" in capsys.readouterr().err
    new = (tmp_path / "new" / "masks.json").read_bytes()
    assert new == (tmp_path / "old" / "masks.json").read_bytes()
    data = json.loads(new)
    assert data["mode"] == "auto" and data["levels"] == [3] and data["masks"]
    assert {m["level"] for m in data["masks"]} == {3}


def test_levels_flag_applies_to_prompts_and_auto(tmp_path, image_path, capsys):
    """One flag for both modes: prompts keep only the given levels too, also under the deprecated name."""
    for flag in ("--levels", "--level"):
        out = tmp_path / flag.strip("-")
        assert _run(["--image", image_path, "--point", "60", "40", flag, "2", "5", "--no-postprocess",
                     "--output", str(out)]) == 0
        data = json.loads((out / "masks.json").read_text())
        assert data["levels"] == [2, 5] and sorted(m["level"] for m in data["prompts"][0]["masks"]) == [2, 5]


def test_gray_and_rgba_inputs(tmp_path, image_path):
    rgb = np.asarray(Image.open(image_path))
    for name, im in (("gray.png", Image.fromarray(rgb[:, :, 0])), ("rgba.png", Image.fromarray(np.dstack([rgb, rgb[:, :, :1]]), "RGBA"))):
        im.save(tmp_path / name)
        assert _run(["--image", str(tmp_path / name), "--point", "10", "10", "--output", str(tmp_path / name[:-4])]) == 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--point", "500", "10"], "outside the image"),
        (["--point", "10", "10", "--levels", "7"], "out of range"),
        (["--box", "50", "50", "10", "10"], "x0 < x1"),
        (["--auto", "--levels", "0"], "out of range"),
        (["--auto", "--level", "3", "--levels", "3"], "give --levels only"),
    ],
)
def test_headless_bad_prompts(tmp_path, image_path, capsys, extra, message):
    assert _run(["--image", image_path, "--output", str(tmp_path)] + extra) == 2
    assert message in capsys.readouterr().err


def test_bad_files_and_arguments(tmp_path, image_path, capsys):
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    assert _run(["--image", str(text), "--point", "1", "1", "--output", str(tmp_path)]) == 2
    assert "not a readable image" in capsys.readouterr().err
    assert _run(["--image", image_path, "--point", "1", "1"]) == 2
    assert "--output" in capsys.readouterr().err
    assert _run(["--image", image_path, "--output", str(tmp_path)]) == 2
    assert demo.main(MODEL_ARGS[:2] + ["--ckpt", str(tmp_path / "missing.pth"), "--image", image_path,
                                       "--point", "1", "1", "--output", str(tmp_path)]) == 2
    assert "checkpoint" in capsys.readouterr().err


def test_config_error_exit_status_without_traceback(tmp_path, image_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "demo.py")] + MODEL_ARGS
        + ["--image", image_path, "--point", "1", "1", "--output", str(tmp_path), "MODEL.NO_SUCH_KEY=1"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 2
    assert "NO_SUCH_KEY" in proc.stderr and "Traceback" not in proc.stderr


def test_app_builds(image_path):
    gr = pytest.importorskip("gradio")
    app = demo.build_app(_tiny_model(), short_side=160, examples=[image_path])
    assert isinstance(app, gr.Blocks)


def _tiny_model():
    args = demo.build_parser().parse_args(MODEL_ARGS)
    return demo.load_model(args)


# ------------------------------------------------------------------ refused and converted images (issue 13)


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error: ")]


def test_decompression_bomb_exits_2_with_one_line(tmp_path):
    bomb = tmp_path / "bomb.png"
    write_png_header(bomb, 100_000, 100_000)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "demo.py")] + MODEL_ARGS
        + ["--image", str(bomb), "--point", "1", "1", "--output", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 2
    (line,) = _error_lines(proc.stderr)
    assert str(bomb) in line and "10000000000 pixels" in line and "decompression bomb" in line


def _write_bad(path, kind):
    if kind == "elongated":
        Image.fromarray(np.full((4, 480, 3), 90, np.uint8)).save(path)
    elif kind == "nan":
        write_float_tiff(path, np.array([[0.2, np.nan], [0.4, 0.6]], np.float32))
    else:  # float on the 0-255 scale
        write_float_tiff(path, np.array([[0.0, 255.0], [40.0, 60.0]], np.float32))


@pytest.mark.parametrize(
    "kind, name, message",
    [
        ("elongated", "thin.png",
         "image of width 480 and height 4 is too elongated: its aspect ratio 120:1 exceeds the limit of 20:1"),
        ("nan", "nan.tif", "nan.tif: float image has NaN or infinite pixels"),
        ("range", "f255.tif", "float image values must be in [0, 1], got [0, 255]"),
    ],
)
@pytest.mark.parametrize("mode", [["--point", "1", "1"], ["--auto", "--points-per-side", "2"]])
def test_refused_images(tmp_path, capsys, kind, name, message, mode):
    _write_bad(tmp_path / name, kind)
    assert _run(["--image", str(tmp_path / name), "--output", str(tmp_path / "out")] + mode) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert message in line
    assert not (tmp_path / "out" / "masks.json").exists()


def test_16bit_and_float_files_give_the_8bit_masks(tmp_path, image_path):
    gray = np.asarray(Image.open(image_path))[:, :, 0]
    Image.fromarray(gray).save(tmp_path / "g8.png")
    write_gray16_png(tmp_path / "g16.png", gray.astype(np.uint16) * 257)
    write_float_tiff(tmp_path / "f.tif", gray.astype(np.float32) / 255)
    results = []
    for name in ("g8.png", "g16.png", "f.tif"):
        out = tmp_path / name.replace(".", "_")
        rc = _run(["--image", str(tmp_path / name), "--point", "60", "40", "--no-postprocess", "--output", str(out)])
        assert rc == 0
        results.append(json.loads((out / "masks.json").read_text())["prompts"])
    assert results[0][0]["masks"] and results[1] == results[0] and results[2] == results[0]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--auto", "--points-per-side", "0"], "--points-per-side must be >= 1, got 0"),
        (["--auto", "--points-per-side", "-4"], "--points-per-side must be >= 1, got -4"),
        (["--point", "1", "1", "--max-size", "0"], "--max-size must be >= 1, got 0"),
        (["--point", "1", "1", "--pred-iou-thresh", "nan"], "--pred-iou-thresh must be a finite number"),
    ],
)
def test_bad_numbers(tmp_path, image_path, capsys, extra, message):
    assert _run(["--image", image_path, "--output", str(tmp_path)] + extra) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert message in line


def test_non_finite_score_is_an_error(tmp_path, image_path, capsys, monkeypatch):
    from semantic_sam.predictor import SemanticSamPredictor

    decode = SemanticSamPredictor.decode_all_tokens

    def nan_scores(self, *args, **kwargs):
        masks, scores = decode(self, *args, **kwargs)
        return masks, torch.full_like(scores, float("nan"))

    monkeypatch.setattr(SemanticSamPredictor, "decode_all_tokens", nan_scores)
    out = tmp_path / "out"
    assert _run(["--image", image_path, "--point", "60", "40", "--no-postprocess", "--output", str(out)]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "non-finite score" in line
    assert not (out / "masks.json").exists()


def test_web_app_limits(image_path, monkeypatch):
    gr = pytest.importorskip("gradio")
    launched = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: launched.update(kwargs, app=self))
    assert demo.main(MODEL_ARGS) == 0
    assert launched["max_file_size"] == demo_app.MAX_UPLOAD_SIZE == "50mb"
    fns = {f.name: f.fn for f in launched["app"].fns.values()}
    on_image_change = fns["on_image_change"]
    # uploads arrive as PIL images in their own mode: a 16-bit one is encoded, bad ones are messages
    g16 = Image.fromarray(np.full((30, 40), 40000, np.uint16))
    assert on_image_change(g16)[-1].startswith("Image encoded")
    with pytest.raises(gr.Error, match="aspect ratio 120:1"):
        on_image_change(Image.new("RGB", (480, 4)))
    with pytest.raises(gr.Error, match="NaN"):
        on_image_change(Image.fromarray(np.full((8, 8), np.nan, np.float32)))


STAGE1_ARGS = ["--config", os.path.join(ROOT, "configs", "semantic_sam_builtin.yaml"),
               "--ckpt", os.path.join(ROOT, "models", "builtin", "semantic_sam_builtin.pth"), "--device", "cpu"]


@pytest.mark.parametrize(
    "argv, size",
    [
        (MODEL_ARGS[:-2], (640, 2560)),  # a released-style config: the reference demo's size
        (MODEL_ARGS[:-2] + ["MODEL.DECODER.TEST.SHORT_SIDE=320", "MODEL.DECODER.TEST.MAX_SIZE=500"], (320, 500)),
        (["--device", "cpu"], (224, 224)),  # the built-in model (stage 2), trained at 224 px
        (STAGE1_ARGS, (224, 224)),  # stage 1 passed explicitly: its config says so too
        (STAGE1_ARGS + ["--short-side", "300", "--max-size", "400"], (300, 400)),  # the flags win
    ],
)
def test_image_size_follows_the_config_and_the_flags(argv, size):
    args = demo.build_parser().parse_args(argv)
    demo.load_model(args)
    assert (args.short_side, args.max_size) == size


@pytest.mark.parametrize(
    "argv, click_box",
    [
        (MODEL_ARGS, "demo"),  # a released-style config: the reference predictor's click box
        (MODEL_ARGS + ["--click-box", "eval"], "eval"),
        (MODEL_ARGS + ["MODEL.DECODER.TEST.POINT_CONVENTION=eval"], "eval"),  # the config's choice
        (["--device", "cpu"], "eval"),  # the built-in model, trained at 224 px with 6-pixel click boxes
        (["--device", "cpu", "--click-box", "demo"], "demo"),
    ],
)
def test_click_box_follows_the_config_and_the_flag(argv, click_box):
    args = demo.build_parser().parse_args(argv)
    model = demo.load_model(args)
    assert args.click_box == click_box
    assert demo.SemanticSamPredictor(model, **demo._predictor_kwargs(args)).point_convention == click_box


# ------------------------------------------------------------------ labels (a model with a text encoder, issue 15)

# the tiny parity checkpoint has no text encoder weights: they stay random (an optional key prefix)
TEXT_OPTS = ["MODEL.TEXT.ARCH=unicl", "MODEL.TEXT.CONTEXT_LENGTH=18", "MODEL.TEXT.WIDTH=64", "MODEL.TEXT.HEADS=4",
             "MODEL.TEXT.LAYERS=2", "MODEL.TEXT.CACHE_DIR="]
LABEL_KEYS = {"object_label", "object_score", "part_label", "part_score"}


def _run_text(args):
    torch.manual_seed(0)
    return _run(args + TEXT_OPTS)  # overrides last: they are the trailing positional arguments


def test_headless_labels_in_masks_json_and_overlays(tmp_path, image_path):
    from utils.visualizer import render_prompt_mask

    out = tmp_path / "out"
    rc = _run_text(["--image", image_path, "--point", "60", "40", "--box", "20", "10", "120", "80",
                    "--levels", "1", "3", "--no-postprocess", "--objects", "cat, dog,red square",
                    "--parts", "head,leg", "--output", str(out)])
    assert rc == 0
    data = json.loads((out / "masks.json").read_text())
    assert data["vocabulary"] == {"objects": ["cat", "dog", "red square"], "parts": ["head", "leg"]}
    image = np.asarray(Image.open(image_path))
    for prompt in data["prompts"]:
        assert len(prompt["masks"]) == 2
        for m in prompt["masks"]:
            assert LABEL_KEYS <= set(m)
            assert m["object_label"] in ("cat", "dog", "red square") and 0 < m["object_score"] < 1
            assert m["part_label"] in ("head", "leg", None) and 0 < m["part_score"] < 1
            assert (m["part_label"] is None) == (m["part_score"] < 0.25)
    # the overlay names the mask: "object[: part] (predicted IoU)" drawn as the interactive overlay's text
    m = data["prompts"][0]["masks"][0]
    label = m["object_label"] if m["part_label"] is None else f"{m['object_label']}: {m['part_label']}"
    mask = mask_utils.decode(m["segmentation"]).astype(bool)
    want = render_prompt_mask(image, mask, f"{label} ({m['score']:.2f})", clicks=[[60.0, 40.0]])
    np.testing.assert_array_equal(np.asarray(Image.open(out / m["overlay"])), want)


def test_headless_auto_labels(tmp_path, image_path):
    from utils.visualizer import render_auto_masks

    out = tmp_path / "auto"
    assert _run_text(["--image", image_path, *AUTO_ARGS, "--levels", "2", "--parts", "wheel",
                      "--output", str(out)]) == 0
    data = json.loads((out / "masks.json").read_text())
    assert len(data["vocabulary"]["objects"]) == 133 and data["vocabulary"]["parts"] == ["wheel"]
    assert data["masks"]
    for r in data["masks"]:
        assert r["object_label"] in data["vocabulary"]["objects"] and r["part_label"] in ("wheel", None)
    # the labels are written over the masks: the overlay differs from the masks alone
    image = np.asarray(Image.open(image_path))
    plain = render_auto_masks(image, [mask_utils.decode(r["segmentation"]).astype(bool) for r in data["masks"]])
    assert (np.asarray(Image.open(out / "auto.png")) != plain).any()


def test_no_text_encoder_outputs_have_no_labels(tmp_path, image_path):
    from utils.visualizer import render_auto_masks, render_prompt_mask

    out = tmp_path / "plain"
    assert _run(["--image", image_path, "--point", "60", "40", "--levels", "2", "--no-postprocess",
                 "--output", str(out)]) == 0
    data = json.loads((out / "masks.json").read_text())
    assert "vocabulary" not in data
    (m,) = data["prompts"][0]["masks"]
    assert set(m) == {"level", "score", "area", "bbox", "segmentation", "overlay"}
    image = np.asarray(Image.open(image_path))
    mask = mask_utils.decode(m["segmentation"]).astype(bool)
    want = render_prompt_mask(image, mask, f"{m['score']:.2f}", clicks=[[60.0, 40.0]])
    np.testing.assert_array_equal(np.asarray(Image.open(out / m["overlay"])), want)
    auto = tmp_path / "plain_auto"
    assert _run(["--image", image_path, *AUTO_ARGS, "--levels", "2", "--output", str(auto)]) == 0
    records = json.loads((auto / "masks.json").read_text())["masks"]
    assert records and not LABEL_KEYS & set(records[0])
    plain = render_auto_masks(image, [mask_utils.decode(r["segmentation"]).astype(bool) for r in records])
    np.testing.assert_array_equal(np.asarray(Image.open(auto / "auto.png")), plain)


@pytest.mark.parametrize(
    "extra, text_model, message",
    [
        (["--objects", "cat,,dog"], True, "object vocabulary[1] ('') is empty after normalisation"),
        (["--parts=-stuff"], True, "part vocabulary[0] ('-stuff') is empty after normalisation"),
        (["--objects", "cat"], False, "this model has no text encoder"),
    ],
)
def test_bad_vocabulary_flags(tmp_path, image_path, capsys, extra, text_model, message):
    run = _run_text if text_model else _run
    assert run(["--image", image_path, "--point", "60", "40", "--output", str(tmp_path / "out")] + extra) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert message in line
    assert not (tmp_path / "out" / "masks.json").exists()


def test_vocabulary_help_names_both_defaults(monkeypatch):
    from datasets.builtin_labels import OBJECT_CLASSES, OBJECT_PARTS, STUFF_CLASSES

    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps at the terminal width, hyphenated words included
    help_text = " ".join(demo.build_parser().format_help().split())
    num_builtin_parts = len({p for parts, subparts in OBJECT_PARTS.values() for p in parts + subparts})
    assert len(OBJECT_CLASSES) + len(STUFF_CLASSES) == 14 and num_builtin_parts == 39
    assert "(default: the built-in scenes' 14 names for the built-in model, else COCO panoptic's 133 classes)" in help_text
    assert "(default: the built-in scenes' 39 parts for the built-in model, else Pascal-Part's 30 parts)" in help_text


def test_web_app_shows_labels(image_path, monkeypatch):
    gr = pytest.importorskip("gradio")
    launched = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: launched.update(kwargs, app=self))
    torch.manual_seed(0)
    assert demo.main(MODEL_ARGS + ["--objects", "cat,dog", "--parts", "head"] + TEXT_OPTS) == 0
    fns = {f.name: f.fn for f in launched["app"].fns.values()}
    image = Image.open(image_path)
    assert fns["on_image_change"](image)[-1].startswith("Image encoded")
    evt = gr.SelectData(None, {"index": [60, 40], "value": None})
    _, by_score, by_area, _, status = fns["on_click"](image, "point", [1, 3], 0.0, {"corner": None}, evt)
    assert "mask(s) for the click (60, 40)" in status and 1 <= len(by_score) == len(by_area) <= 2
    for _, caption in by_score:
        label, rest = caption.split(" | ", 1)
        assert label.split(": ")[0] in ("cat", "dog") and label.split(": ")[1:] in ([], ["head"])
        assert rest.startswith("level ")
    overlay, status = fns["on_generate"](image, "Level 3", 4)
    assert overlay.shape == (120, 180, 3) and "mask(s) at level 3" in status
    # a model without a text encoder: captions as before
    assert demo.main(MODEL_ARGS) == 0
    fns = {f.name: f.fn for f in launched["app"].fns.values()}
    fns["on_image_change"](image)
    _, by_score, _, _, _ = fns["on_click"](image, "point", [2], 0.0, {"corner": None}, evt)
    assert [c for _, c in by_score][0].startswith("level 2 | score ")
