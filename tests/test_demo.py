"""demo.py headless mode end to end with the tiny model, and its error handling."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

import demo

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
    rc = _run(["--image", image_path, "--auto", "--points-per-side", "4", "--level", "2", "4",
               "--pred-iou-thresh", "-10", "--stability-score-thresh", "0", "--output", str(out)])
    assert rc == 0
    data = json.loads((out / "masks.json").read_text())
    assert data["mode"] == "auto" and data["levels"] == [2, 4] and data["masks"]
    for r in data["masks"]:
        assert {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box", "level"} <= set(r)
        assert r["level"] in (2, 4)
        assert mask_utils.decode(r["segmentation"]).sum() == r["area"]
    assert np.asarray(Image.open(out / "auto.png")).shape == (120, 180, 3)


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
        (["--auto", "--level", "0"], "out of range"),
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
