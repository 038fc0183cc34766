"""COCO panoptic interactive registration and mapper on a tiny dataset written by the test."""
import json
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from datasets.coco_interactive_dataset_mapper import NO_OBJECT, CocoInteractiveDatasetMapper
from datasets.register_coco_panoptic_interactive import (
    COCO_INTERACTIVE_VAL,
    coco_panoptic_val_paths,
    dataset_root,
    load_coco_panoptic_interactive,
    register_coco_panoptic_interactive,
)
from datasets.tiny_coco_panoptic import write_tiny_coco_panoptic
from semantic_sam.config import load_config
from semantic_sam.evaluation.click_simulation import clicks_from_masks

NAME = "test_coco_interactive_val"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("coco_root"))
    write_tiny_coco_panoptic(root)
    register_coco_panoptic_interactive(root, name=NAME)
    yield root
    DatasetCatalog.remove(NAME)
    MetadataCatalog.remove(NAME)


def _cfg(*overrides):
    return load_config(None, ["COCO.INPUT.MIN_SIZE_TEST=96", "COCO.INPUT.MAX_SIZE_TEST=120", *overrides])


def test_registration_reads_the_panoptic_json(root):
    dicts = DatasetCatalog.get(NAME)
    assert [d["image_id"] for d in dicts] == [1, 2]
    d = dicts[0]
    assert d["file_name"] == os.path.join(root, "coco", "val2017", "000000000001.jpg")
    assert d["pan_seg_file_name"] == os.path.join(root, "coco", "panoptic_val2017", "000000000001.png")
    assert (d["height"], d["width"]) == (48, 64)
    assert [(s["id"], s["isthing"], s["iscrowd"]) for s in d["segments_info"]] == [
        (1001, True, 0), (1002, True, 0), (3000, False, 0), (2001, True, 1)
    ]
    meta = MetadataCatalog.get(NAME)
    assert meta.evaluator_type == "coco_panoptic_seg_interactive_jointboxpoint"
    assert meta.panoptic_json == os.path.join(root, "coco", "annotations", "panoptic_val2017.json")


def test_mapper_gt_is_every_non_crowd_segment_resized(root):
    mapper = CocoInteractiveDatasetMapper(
        _cfg("MODEL.DECODER.TEST.BOX_INTERACTIVE=True", "MODEL.DECODER.TEST.CLICK_METHOD=exact")
    )
    d0, d1 = [mapper(d) for d in DatasetCatalog.get(NAME)]

    # 48x64 -> shortest edge 96 (longest 128 > 120, so scaled to 120): 90x120.
    assert d0["image"].shape == (3, 90, 120) and d0["image"].dtype == torch.uint8
    assert (d0["height"], d0["width"], d0["orig_height"], d0["orig_width"]) == (90, 120, 48, 64)
    masks = d0["instances"].gt_masks.tensor
    assert masks.shape == (3, 90, 120) and d0["segment_ids"].tolist() == [1001, 1002, 3000]
    # Labels: the contiguous COCO panoptic class of category ids 1, 18, 199, whose names the vocabulary gives.
    assert d0["instances"].gt_classes.tolist() == d0["instances"].gt_object_classes.tolist() == [0, 16, 131]
    names = d0["vocabulary"]["object"]
    assert len(names) == 133 and d0["vocabulary"]["part"] == ()
    assert [names[c] for c in d0["instances"].gt_object_classes] == ["person", "dog", "wall-other-merged"]

    # Independent expectation: nearest-resize of the id map (PIL), then one mask per segment.
    ids_rgb = np.asarray(Image.open(os.path.join(root, "coco", "panoptic_val2017", "000000000001.png")))
    rgb = ids_rgb.astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    resized = np.stack(
        [np.asarray(Image.fromarray(ids_rgb[..., c]).resize((120, 90), Image.NEAREST)) for c in range(3)], -1
    ).astype(np.int64)
    resized = resized[..., 0] + 256 * resized[..., 1] + 65536 * resized[..., 2]
    for m, sid in zip(masks, [1001, 1002, 3000]):
        assert torch.equal(m, torch.from_numpy(resized == sid))
    assert set(np.unique(ids)) == {1001, 1002, 2001, 3000}

    # Clicks: one per mask, inside it, equal to the click function; boxes: the masks' boxes.
    assert d0["points"].dtype == torch.float32 and d0["points"].shape == (3, 2)
    assert torch.equal(d0["points"].long(), clicks_from_masks(masks, "exact"))
    for m, (x, y) in zip(masks, d0["points"].long().tolist()):
        assert m[y, x]
    box = d0["boxes"][0].tolist()
    ys, xs = torch.nonzero(masks[0], as_tuple=True)
    assert box == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    assert d0["num_dropped_segments"] == 0

    # Image 2 has only a crowd segment: kept, with no GT and no prompts.
    assert d1["instances"].gt_masks.tensor.shape == (0, 96, 96)
    assert d1["points"].shape == (0, 2) and d1["boxes"].shape == (0, 4)


def test_mapper_kornia_clicks_and_no_boxes_by_default(root):
    d0 = CocoInteractiveDatasetMapper(_cfg())(DatasetCatalog.get(NAME)[0])
    assert "boxes" not in d0
    assert torch.equal(d0["points"].long(), clicks_from_masks(d0["instances"].gt_masks.tensor, "kornia"))


def test_mapper_labels_a_category_outside_coco_panoptic_as_no_object(root):
    d = DatasetCatalog.get(NAME)[0]
    d["segments_info"][1] = dict(d["segments_info"][1], category_id=999)  # the dog disc: no COCO category
    out = CocoInteractiveDatasetMapper(_cfg())(d)
    assert out["instances"].gt_object_classes.tolist() == [0, NO_OBJECT, 131] and NO_OBJECT == -1
    assert out["segment_ids"].tolist() == [1001, 1002, 3000]  # still evaluated for its mask


def test_default_resize_is_800_1333(root):
    mapper = CocoInteractiveDatasetMapper(load_config(None))
    (aug,) = mapper.augmentations.augs
    assert (aug.short_edge_length, aug.max_size) == ((800, 800), 1333)


def test_missing_paths_name_the_path_and_env_var(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"val2017.*\$DETECTRON2_DATASETS \(or \$DATASET\)"):
        load_coco_panoptic_interactive(str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c.json"))
    write_tiny_coco_panoptic(str(tmp_path))
    json_path = tmp_path / "coco" / "annotations" / "panoptic_val2017.json"
    json_path.unlink()
    register_coco_panoptic_interactive(str(tmp_path), name="test_coco_missing_json")
    try:
        with pytest.raises(FileNotFoundError, match="panoptic JSON not found: expected .*panoptic_val2017.json"):
            DatasetCatalog.get("test_coco_missing_json")
    finally:
        DatasetCatalog.remove("test_coco_missing_json")
        MetadataCatalog.remove("test_coco_missing_json")


def test_dataset_root_environment(monkeypatch):
    monkeypatch.delenv("DETECTRON2_DATASETS", raising=False)
    monkeypatch.delenv("DATASET", raising=False)
    assert dataset_root() == "datasets"
    monkeypatch.setenv("DATASET", "/data/b")
    assert dataset_root() == "/data/b"
    monkeypatch.setenv("DETECTRON2_DATASETS", "/data/a")
    assert dataset_root() == "/data/a"
    register_coco_panoptic_interactive()
    try:
        assert MetadataCatalog.get(COCO_INTERACTIVE_VAL).image_root == os.path.join("/data/a", "coco", "val2017")
    finally:
        DatasetCatalog.remove(COCO_INTERACTIVE_VAL)
        MetadataCatalog.remove(COCO_INTERACTIVE_VAL)


def _drop(key):
    return lambda d: d.pop(key)


def _set(path, value):
    def f(d):
        *parents, last = path
        for p in parents:
            d = d[p]
        d[last] = value
    return f


def _del(path):
    def f(d):
        *parents, last = path
        for p in parents:
            d = d[p]
        del d[last]
    return f


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "the panoptic JSON is empty"),
        (b"  \n", "the panoptic JSON is empty"),
        (b'{"images": [{"id": 1, "file_na', r"not valid JSON \(Unterminated string .* line 1 column \d+; truncated"),
        (b"[1, 2]", r"not a COCO panoptic JSON \(expected an object .*, got list\)"),
        (b'"text"', "got str"),
        (b'{"images": []}\xff', r"not UTF-8 text"),
    ],
)
def test_unreadable_panoptic_json_names_the_file(tmp_path, raw, message):
    paths = _tiny_paths(tmp_path)
    with open(paths["panoptic_json"], "wb") as f:
        f.write(raw)
    _check_json_error(paths, message)


@pytest.mark.parametrize(
    "edit, message",
    [
        (_drop("images"), r"not a COCO panoptic JSON \(no 'images' list\)"),
        (_drop("annotations"), r"no 'annotations' list"),
        (_set(["annotations"], {"0": {}}), r"'annotations' must be a list, got dict"),
        (_set(["annotations"], []), r"'annotations' is empty"),
        (_set(["annotations", 1], "000000000002.png"), r"annotations\[1\] must be an object, got str"),
        (_set(["categories"], {"1": "person"}), r"'categories' must be a list, got dict"),
        (_del(["categories", 2, "id"]), r"categories\[2\] has no 'id'"),
        (_set(["images"], None), r"'images' must be a list, got NoneType"),
        (_del(["images", 0, "file_name"]), r"images\[0\] has no 'file_name'"),
        (_set(["images", 1, "height"], "40"), r"images\[1\]\.height must be int, got '40'"),
        (_del(["annotations", 0, "segments_info"]), r"annotations\[0\] has no 'segments_info'"),
        (_set(["annotations", 0, "segments_info"], {"id": 1}), r"annotations\[0\]\.segments_info must be list"),
        (_set(["annotations", 0, "segments_info", 1], 7), r"annotations\[0\]\.segments_info\[1\] must be an object"),
        (_del(["annotations", 0, "segments_info", 0, "category_id"]),
         r"annotations\[0\]\.segments_info\[0\] has no 'category_id'"),
        (_del(["annotations", 1, "image_id"]), r"annotations\[1\] has no 'image_id'"),
        (_set(["annotations", 1, "image_id"], 99),
         r"annotations\[1\] \('000000000002\.png'\) names unknown image_id 99"),
    ],
)
def test_malformed_panoptic_json_names_the_file_and_key(tmp_path, edit, message):
    paths = _tiny_paths(tmp_path)
    with open(paths["panoptic_json"]) as f:
        data = json.load(f)
    edit(data)
    with open(paths["panoptic_json"], "w") as f:
        json.dump(data, f)
    _check_json_error(paths, message)


def _tiny_paths(tmp_path):
    write_tiny_coco_panoptic(str(tmp_path))
    return coco_panoptic_val_paths(str(tmp_path))


def _check_json_error(paths, message):
    from datasets.register_coco_panoptic_interactive import PanopticJSONError

    with pytest.raises(PanopticJSONError, match=message) as e:
        load_coco_panoptic_interactive(**paths)
    text = str(e.value)
    assert text.startswith(paths["panoptic_json"] + ": ") and "\n" not in text
    assert isinstance(e.value, ValueError)


def test_malformed_panoptic_json_is_a_command_line_user_error(tmp_path, capsys):
    from semantic_sam.utils.cli import exit_on_user_error

    paths = _tiny_paths(tmp_path)
    with open(paths["panoptic_json"], "r+") as f:
        f.truncate(50)
    register_coco_panoptic_interactive(str(tmp_path), name="test_coco_truncated_json")
    try:
        with pytest.raises(SystemExit) as e:
            exit_on_user_error(lambda: DatasetCatalog.get("test_coco_truncated_json"))()
    finally:
        DatasetCatalog.remove("test_coco_truncated_json")
        MetadataCatalog.remove("test_coco_truncated_json")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {paths['panoptic_json']}: not valid JSON") and "Traceback" not in err


def test_tiny_coco_panoptic_command_line(tmp_path, capsys):
    from datasets.tiny_coco_panoptic import main

    assert main([str(tmp_path / "root")]) == 0
    assert len(load_coco_panoptic_interactive(**coco_panoptic_val_paths(str(tmp_path / "root")))) == 2
    (tmp_path / "file").write_text("x")
    assert main([str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write the tiny COCO panoptic dataset under {tmp_path / 'file'}")
