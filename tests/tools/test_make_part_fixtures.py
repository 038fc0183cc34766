"""The labelled fixture tool: real formats, deterministic output, loads through the registrations."""
import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from pycocotools import mask as mask_util

from datasets.labelled_dataset_mapper import LabelledDatasetMapper
from datasets.register_coco_panoptic_labelled import register_coco_panoptic_labelled
from datasets.register_part_datasets import register_all_part_datasets
from semantic_sam.config import load_config
from tools.make_part_fixtures import PACO_CATEGORIES, main, make_part_fixtures


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("fixtures"))
    make_part_fixtures(root, seed=3)
    return root


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            path = os.path.join(dirpath, n)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def _json(root, rel):
    with open(os.path.join(root, rel)) as f:
        return json.load(f)


def test_layout(root):
    files = set(_files(root))
    for rel in (
        "pascal_part/train.json", "pascal_part/val.json", "pascal_part/train_base.json",
        "pascal_part/VOCdevkit/VOC2010/JPEGImages/2008_000001.jpg",
        "partimagenet/train_format.json", "partimagenet/val_format.json",
        "partimagenet/train/n02814533/n02814533_2.JPEG", "partimagenet/val/n01440764/n01440764_3.JPEG",
        "paco/annotations/paco_lvis_v1_train.json", "paco/annotations/paco_lvis_v1_val.json",
        "coco/train2017/000000000009.jpg", "coco/val2017/000000000139.jpg",
        "coco/annotations/panoptic_train2017.json", "coco/panoptic_train2017/000000000001.png",
    ):
        assert rel.replace("/", os.sep) in files, rel


def test_deterministic(root, tmp_path):
    again = str(tmp_path / "again")
    make_part_fixtures(again, seed=3)
    assert _files(again) == _files(root)
    other = str(tmp_path / "other")
    make_part_fixtures(other, seed=4)
    a, b = _files(root), _files(other)
    assert a.keys() == b.keys()
    assert {k for k in a if a[k] != b[k]} == {k for k in a if k.endswith((".jpg", ".JPEG"))}


def test_pascal_part_is_vlpart_layout(root):
    full = _json(root, "pascal_part/train.json")
    base = _json(root, "pascal_part/train_base.json")
    assert [c["id"] for c in full["categories"]] == list(range(1, 94))
    assert [c["id"] for c in base["categories"]] == list(range(1, 78))
    assert full["categories"][24]["name"] == base["categories"][18]["name"] == "car:license plate"
    assert not any(c["name"].startswith(("bus:", "dog:")) for c in base["categories"])
    assert full["images"][0] == {"id": 2008000001, "file_name": "2008_000001.jpg", "height": 48, "width": 64}
    for ann in full["annotations"]:
        assert isinstance(ann["segmentation"]["counts"], str) and ann["segmentation"]["size"] in ([48, 64], [40, 40])
        m = mask_util.decode(ann["segmentation"])
        ys, xs = np.nonzero(m)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert sum(a["iscrowd"] for a in full["annotations"]) == 1


def test_partimagenet_and_paco_are_coco_json(root):
    pin = _json(root, "partimagenet/train_format.json")
    assert [c["id"] for c in pin["categories"]] == list(range(40))
    assert pin["categories"][26] == {"id": 26, "name": "Car Side Mirror", "supercategory": "Car"}
    assert pin["images"][1]["file_name"] == "n02814533/n02814533_2.JPEG"
    assert all(isinstance(a["segmentation"], list) and len(a["segmentation"][0]) >= 6 for a in pin["annotations"])
    train = _json(root, "paco/annotations/paco_lvis_v1_train.json")
    val = _json(root, "paco/annotations/paco_lvis_v1_val.json")
    assert train["categories"] == val["categories"] == PACO_CATEGORIES
    assert train["images"][0]["file_name"] == "train2017/000000000009.jpg"
    parts = [a for a in train["annotations"] if "obj_ann_id" in a]
    ids = {a["id"]: a for a in train["annotations"]}
    names = {c["id"]: c["name"] for c in PACO_CATEGORIES}
    for a in parts:  # a part's object annotation is of the part's object
        assert names[a["category_id"]].split(":")[0] == names[ids[a["obj_ann_id"]]["category_id"]]


def test_shapes_are_painted_in_the_images(root):
    """Pixels under each Pascal part mask share one colour, different from the background's."""
    data = _json(root, "pascal_part/train.json")
    image = np.asarray(Image.open(os.path.join(root, "pascal_part/VOCdevkit/VOC2010/JPEGImages/2008_000001.jpg")))
    image = image.astype(float)
    background = np.ones(image.shape[:2], bool)
    for ann in data["annotations"]:
        if ann["image_id"] == 2008000001:
            m = mask_util.decode(ann["segmentation"]).astype(bool)
            background &= ~m
            inner = m & np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1)
            assert image[inner].std(axis=0).max() < 12
            assert np.abs(image[inner].mean(axis=0) - 90).max() > 40
    assert np.abs(image[background].mean(axis=0) - 90).max() < 5


def test_loads_through_the_registrations_and_the_mapper(root):
    names = register_all_part_datasets(root) + [register_coco_panoptic_labelled(root)]
    cfg = load_config(None, [f"{s}.INPUT.IMAGE_SIZE=48" for s in ("COCO", "PASCAL_PART", "PARTIMAGENET", "PACO")])
    try:
        counts = {}
        for name in names:
            dicts = DatasetCatalog.get(name)
            mapper = LabelledDatasetMapper(cfg, dataset_name=name)
            counts[name] = len(dicts)
            for d in dicts:
                out = mapper(d)
                assert out["image"].shape == (3, 48, 48)
                assert len(out["instances"]) == len(out["instances"].gt_object_classes)
        assert counts == {
            "pascal_part_train": 2, "pascal_part_val": 1, "pascal_part_train_base": 1, "partimagenet_train": 2,
            "partimagenet_val": 1, "paco_lvis_train": 2, "paco_lvis_val": 1,
            "coco_2017_train_panoptic_interactive_labelled": 1,
        }
    finally:
        for n in names:
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)


def test_command_line(tmp_path, capsys):
    assert main([str(tmp_path / "cli")]) == 0
    assert "pascal_part: train, train_base, val" in capsys.readouterr().out
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main([str(blocker)]) == 2
    assert capsys.readouterr().err.startswith("error: cannot write the labelled fixtures under")
