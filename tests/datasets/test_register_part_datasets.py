"""Part datasets and COCO panoptic labelled clicks through detectron2's catalogs, on the fixture tool's
output (the real formats) and on hand-broken copies of it."""
import json
import os
import shutil

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from pycocotools import mask as mask_util

from datasets.register_coco_panoptic_interactive import PanopticJSONError
from datasets.register_coco_panoptic_labelled import COCO_LABELLED_TRAIN, register_coco_panoptic_labelled
from datasets.register_part_datasets import (
    PART_DATASETS,
    PartDatasetSplit,
    PartJSONError,
    register_all_part_datasets,
    register_part_dataset,
)
from semantic_sam.errors import UserError
from tools.make_part_fixtures import make_part_fixtures
from tests.utils.catalog import unregister

PASCAL_OBJECTS = [
    "aeroplane", "bicycle", "bird", "bottle", "bus", "car", "cat", "cow", "dog", "horse", "motorbike", "person",
    "potted plant", "sheep",
]
PASCAL_PARTS = [
    "arm", "beak", "body", "cap", "door", "ear", "eye", "foot", "hair", "hand", "handlebar", "head", "headlight",
    "horn", "leg", "license plate", "mirror", "mouth", "muzzle", "neck", "nose", "paw", "plant", "pot", "saddle",
    "tail", "torso", "wheel", "window", "wing",
]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("labelled_root"))
    make_part_fixtures(root)
    names = register_all_part_datasets(root) + [register_coco_panoptic_labelled(root)]
    yield root
    unregister(names)


def _json(root, rel):
    with open(os.path.join(root, rel)) as f:
        return json.load(f)


def _rect(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


# ------------------------------------------------------------------------------------------ registration
def test_registration_reads_nothing_and_names_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "nowhere"))
    name = "test_pascal_missing"
    register_part_dataset(name, PART_DATASETS["pascal_part_train"])  # root from the environment, read now
    try:
        meta = MetadataCatalog.get(name)
        assert meta.json_file == os.path.join(str(tmp_path / "nowhere"), "pascal_part", "train.json")
        assert meta.config_section == "PASCAL_PART"
        assert len(meta.object_classes) == 14  # the fixed label space is there before loading
        with pytest.raises(FileNotFoundError, match=r"pascal_part.*VOC2010.*DETECTRON2_DATASETS"):
            DatasetCatalog.get(name)
    finally:
        unregister([name])


def test_all_names_registered(root):
    for name in list(PART_DATASETS) + [COCO_LABELLED_TRAIN]:
        assert name in DatasetCatalog.list()
    assert set(PART_DATASETS) == {
        "pascal_part_train", "pascal_part_val", "pascal_part_train_base", "partimagenet_train", "partimagenet_val",
        "paco_lvis_train", "paco_lvis_val",
    }


# ------------------------------------------------------------------------------------------ Pascal-Part
def test_pascal_part_dicts(root):
    dicts = DatasetCatalog.get("pascal_part_train")
    assert [d["image_id"] for d in dicts] == [2008000001, 2008000002]
    d = dicts[0]
    assert d["file_name"] == os.path.join(root, "pascal_part", "VOCdevkit", "VOC2010", "JPEGImages", "2008_000001.jpg")
    assert (d["height"], d["width"]) == (48, 64)
    anns = d["annotations"]
    # 6 annotations of image 1 in the JSON (8 in all), one of them crowd (car:door): dropped.
    assert len(_json(root, "pascal_part/train.json")["annotations"]) == 8
    assert len(anns) == 5
    meta = MetadataCatalog.get("pascal_part_train")
    names = [meta.thing_classes[a["category_id"]] for a in anns]
    assert names == ["car:wheel", "car:wheel", "car:window", "car:license plate", "person:head"]
    assert [a["category_id"] for a in anns] == [29, 29, 28, 24, 71]  # VLPart id - 1
    assert [a["object_id"] for a in anns] == [PASCAL_OBJECTS.index(n.split(":")[0]) for n in names]
    assert [a["part_id"] for a in anns] == [PASCAL_PARTS.index(n.split(":")[1]) for n in names]
    assert not any(a["is_whole"] for a in anns)
    # The first wheel: RLE of the rectangle x 4..16, y 32..44; XYWH box.
    a = anns[0]
    assert a["bbox"] == [4.0, 32.0, 12.0, 12.0] and a["bbox_mode"] == BoxMode.XYWH_ABS
    assert np.array_equal(mask_util.decode(a["segmentation"]), _rect(48, 64, 4, 32, 16, 44))


def test_pascal_part_ids_are_the_same_in_every_split(root):
    # The base JSON numbers car:license plate 19 (77 classes), the full one 25.
    base_json = _json(root, "pascal_part/train_base.json")
    assert len(base_json["categories"]) == 77
    assert {c["name"]: c["id"] for c in base_json["categories"]}["car:license plate"] == 19
    full = DatasetCatalog.get("pascal_part_train")[0]["annotations"]
    base = DatasetCatalog.get("pascal_part_train_base")[0]["annotations"]
    assert [(a["category_id"], a["object_id"], a["part_id"]) for a in base] == [
        (a["category_id"], a["object_id"], a["part_id"]) for a in full
    ]
    plate = [a for a in base if a["category_id"] == 24]
    assert len(plate) == 1 and plate[0]["object_id"] == PASCAL_OBJECTS.index("car") == 5
    m_base, m_full = MetadataCatalog.get("pascal_part_train_base"), MetadataCatalog.get("pascal_part_train")
    assert m_base.object_classes == m_full.object_classes and m_base.part_classes == m_full.part_classes
    # Image 2 holds only novel classes (dog, bus): not in the base JSON at all.
    assert [d["image_id"] for d in DatasetCatalog.get("pascal_part_train_base")] == [2008000001]
    val = DatasetCatalog.get("pascal_part_val")[0]["annotations"]
    assert [MetadataCatalog.get("pascal_part_val").thing_classes[a["category_id"]] for a in val] == [
        "cat:ear", "potted plant:pot"
    ]


# ------------------------------------------------------------------------------------------ PartImageNet
def test_partimagenet_dicts(root):
    dicts = DatasetCatalog.get("partimagenet_train")
    assert [os.path.relpath(d["file_name"], root) for d in dicts] == [
        os.path.join("partimagenet", "train", "n02690373", "n02690373_1.JPEG"),
        os.path.join("partimagenet", "train", "n02814533", "n02814533_2.JPEG"),
    ]
    meta = MetadataCatalog.get("partimagenet_train")
    anns = dicts[1]["annotations"]
    assert [a["category_id"] for a in anns] == [24, 25, 25, 26]  # PartImageNet's own ids
    labels = [(meta.object_classes[a["object_id"]], meta.part_classes[a["part_id"]]) for a in anns]
    assert labels == [("car", "body"), ("car", "tire"), ("car", "tire"), ("car", "side mirror")]
    assert anns[3]["segmentation"] == [[42.0, 12.0, 46.0, 12.0, 46.0, 16.0, 42.0, 16.0]]
    val = DatasetCatalog.get("partimagenet_val")[0]["annotations"]
    assert [(meta.object_classes[a["object_id"]], meta.part_classes[a["part_id"]]) for a in val] == [
        ("fish", "head"), ("fish", "fin")
    ]


# ------------------------------------------------------------------------------------------ PACO
def test_paco_dicts_and_label_space(root):
    dicts = DatasetCatalog.get("paco_lvis_train")
    assert os.path.relpath(dicts[0]["file_name"], root) == os.path.join("coco", "train2017", "000000000009.jpg")
    meta = MetadataCatalog.get("paco_lvis_train")
    assert meta.object_classes == ["car", "cellular telephone", "handbag", "mug"]
    assert meta.part_classes == ["antenna", "back cover", "handle", "strap", "wheel", "whole"]
    anns = dicts[0]["annotations"]
    labels = [(meta.object_classes[a["object_id"]], meta.part_classes[a["part_id"]], a["is_whole"]) for a in anns]
    assert labels == [
        ("handbag", "whole", True), ("handbag", "strap", False), ("handbag", "handle", False),
        ("car", "whole", True), ("car", "wheel", False), ("car", "antenna", False),
    ]
    assert [meta.thing_classes[a["category_id"]] for a in anns[:2]] == ["handbag", "handbag:strap"]
    DatasetCatalog.get("paco_lvis_val")
    val = MetadataCatalog.get("paco_lvis_val")
    assert val.thing_classes == meta.thing_classes and val.part_classes == meta.part_classes


# ------------------------------------------------------------------------------------------ COCO panoptic
def test_coco_panoptic_labelled(root):
    dicts = DatasetCatalog.get(COCO_LABELLED_TRAIN)
    assert [d["image_id"] for d in dicts] == [1]  # image 2 has only a crowd segment
    segs = dicts[0]["segments_info"]
    assert [s["id"] for s in segs] == [11, 12, 20]  # the crowd segment 13 is dropped
    meta = MetadataCatalog.get(COCO_LABELLED_TRAIN)
    assert [meta.thing_classes[s["category_id"]] for s in segs] == ["person", "dog", "tree-merged"]
    assert [s["category_id"] for s in segs] == [s["object_id"] for s in segs] == [0, 16, 116]
    assert [s["part_id"] for s in segs] == [-1, -1, -1]
    assert meta.config_section == "COCO" and len(meta.object_classes) == 133 and meta.part_classes == []
    assert meta.stuff_dataset_id_to_contiguous_id[184] == 116 and meta.thing_dataset_id_to_contiguous_id[18] == 16
    assert dicts[0]["pan_seg_file_name"] == os.path.join(root, "coco", "panoptic_train2017", "000000000001.png")


def test_coco_unknown_category_names_it_and_the_file(root, tmp_path):
    shutil.copytree(os.path.join(root, "coco"), tmp_path / "coco")
    path = tmp_path / "coco" / "annotations" / "panoptic_train2017.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["segments_info"][1]["category_id"] = 999
    path.write_text(json.dumps(data))
    name = register_coco_panoptic_labelled(str(tmp_path), name="test_coco_labelled_bad")
    try:
        message = rf"{path}: annotations\[0\]\.segments_info\[1\] has category_id 999"
        with pytest.raises(PanopticJSONError, match=message):
            DatasetCatalog.get(name)
    finally:
        unregister([name])


def test_coco_missing_train_folder(tmp_path):
    name = register_coco_panoptic_labelled(str(tmp_path), name="test_coco_labelled_missing")
    try:
        with pytest.raises(FileNotFoundError, match=r"train2017.*DETECTRON2_DATASETS"):
            DatasetCatalog.get(name)
    finally:
        unregister([name])


# ------------------------------------------------------------------------------------------ JSON errors
def _broken(root, tmp_path, family, edit):
    """Copy one split's JSON to tmp_path, apply ``edit`` to it, register it as a split; return (name, path)."""
    split = {"pascal_part": "pascal_part_train", "partimagenet": "partimagenet_train", "paco_lvis": "paco_lvis_train"}
    src = PART_DATASETS[split[family]]
    path = tmp_path / "broken.json"
    with open(os.path.join(root, src.json_file)) as f:
        text = f.read()
    path.write_text(edit(text))
    name = f"test_broken_{family}"
    register_part_dataset(name, PartDatasetSplit(family, os.path.join(root, src.image_root), str(path), True), root="/")
    return name, str(path)


def _edit_json(fn):
    def edit(text):
        data = json.loads(text)
        fn(data)
        return json.dumps(data)

    return edit


BROKEN = [
    ("pascal_part", _edit_json(lambda d: d["annotations"][2].update(category_id=555)),
     r"{path}: annotations\[2\] has category_id 555, which is not in 'categories'"),
    ("paco_lvis", _edit_json(lambda d: d["annotations"][0].update(category_id=7)),
     r"{path}: annotations\[0\] has category_id 7, which is not in 'categories'"),
    ("pascal_part", _edit_json(lambda d: d["categories"][29].update(name="wheel")),
     r"{path}: category 30: 'wheel' is a part name without an object"),
    ("pascal_part", _edit_json(lambda d: d["categories"][0].update(name="car:roof")),
     r"{path}: category 1: 'car:roof' is not a pascal_part class"),
    ("partimagenet", _edit_json(lambda d: d["categories"][5].update(name="Biped Tentacle")),
     r"{path}: category 5: 'Biped Tentacle' is not a partimagenet class"),
    ("pascal_part", _edit_json(lambda d: d["annotations"][0].update(image_id=12345)),
     r"{path}: annotations\[0\] names unknown image_id 12345"),
    ("pascal_part", _edit_json(lambda d: d["annotations"][0]["segmentation"].update(size=[10, 10])),
     r"{path}: annotations\[0\]\.segmentation\.size is \[10, 10\], but the image is 48x64"),
    ("pascal_part", _edit_json(lambda d: d.pop("categories")),
     r"{path}: not a COCO-style JSON \(no 'categories' list\)"),
    ("pascal_part", lambda text: text[: len(text) // 2], r"{path}: not valid JSON"),
    ("pascal_part", lambda text: "", r"{path}: the annotation JSON is empty"),
]


@pytest.mark.parametrize("family, edit, message", BROKEN)
def test_json_errors_name_the_file_and_key(root, tmp_path, family, edit, message):
    name, path = _broken(root, tmp_path, family, edit)
    try:
        with pytest.raises(PartJSONError, match=message.format(path=path)) as e:
            DatasetCatalog.get(name)
        assert isinstance(e.value, UserError) and "\n" not in str(e.value)
    finally:
        unregister([name])


def test_invalid_polygons_and_empty_images_are_dropped(root, tmp_path):
    def edit(d):
        d["annotations"][1]["segmentation"] = [[8.0, 6.0, 26.0, 6.0]]  # 2 points: not a polygon
        for a in d["annotations"]:
            if a["image_id"] == 25:
                a["iscrowd"] = 1

    name, _ = _broken(root, tmp_path, "paco_lvis", _edit_json(edit))
    try:
        dicts = DatasetCatalog.get(name)
        assert [d["image_id"] for d in dicts] == [9]  # image 25: every annotation crowd -> dropped (training split)
        assert [a["id"] for a in dicts[0]["annotations"]] == [1, 3, 4, 5, 6]
    finally:
        unregister([name])
