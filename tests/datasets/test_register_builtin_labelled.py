"""The built-in labelled datasets (tools/make_builtin_data.py --labelled) through detectron2's catalogs and the
labelled mapper: labels and masks against the SA-1B JSON the layouts were made from."""
import json
import os
import shutil

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from pycocotools import mask as mask_utils

from datasets.builtin_labels import OBJECT_CLASSES, OBJECT_PARTS, STUFF_CLASSES
from datasets.labelled_dataset_mapper import LabelledDatasetMapper
from datasets.register_builtin_labelled import BUILTIN_LABELLED_DATASETS, register_builtin_labelled
from datasets.register_coco_panoptic_interactive import PanopticJSONError
from datasets.register_part_datasets import PartJSONError
from semantic_sam.config import load_config
from semantic_sam.data.label_spaces import NO_PART, label_space_from_metadata
from semantic_sam.errors import UserError
from tools.make_builtin_data import LABELLED_LAYOUTS, make_builtin_data
from tests.utils.catalog import unregister

MIN_AREA = 20
PART_CLASSES = [f"{o}:{p}" for o, (parts, subparts) in OBJECT_PARTS.items() for p in parts + subparts]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("builtin"))
    make_builtin_data(root, num_train=3, num_val=2, seed=3, size=96, min_area=MIN_AREA, num_shards=1,
                      labelled=LABELLED_LAYOUTS)
    names = register_builtin_labelled(root)
    yield root
    unregister(names)


def _scene(root, split, file_name):
    """The SA-1B annotations of an image: (synthetic entry, (H, W) bool mask, id -> annotation)."""
    with open(os.path.join(root, "sa1b_json", split, os.path.basename(file_name)[:-4] + ".json")) as f:
        anns = json.load(f)["annotations"]
    return [(a, mask_utils.decode(a["segmentation"]).astype(bool)) for a in anns], {a["id"]: a for a in anns}


def _object_name(ann, by_id):
    while ann["synthetic"]["level"] not in ("object", "group"):
        ann = by_id[ann["synthetic"]["parent"]]
    return ann["synthetic"]["name"]


def _mapped(name, d):
    meta = MetadataCatalog.get(name)
    mapper = LabelledDatasetMapper(
        is_train=True, augmentations=[], dataset_name=name,
        vocabulary={"object": meta.object_classes, "part": meta.part_classes},
    )
    out = mapper(d)
    inst = out["instances"]
    objects = [meta.object_classes[i] for i in inst.gt_object_classes.tolist()]
    parts = [None if p == NO_PART else meta.part_classes[p] for p in inst.gt_part_classes.tolist()]
    return out, objects, parts, inst.gt_masks.tensor.numpy()


# ------------------------------------------------------------------------------------------ metadata
def test_registered_names_and_metadata(root):
    assert set(BUILTIN_LABELLED_DATASETS) == {
        "builtin_panoptic_train", "builtin_panoptic_val", "builtin_parts_train", "builtin_parts_val"
    }
    assert set(BUILTIN_LABELLED_DATASETS) <= set(DatasetCatalog.list())
    names = list(OBJECT_CLASSES) + list(STUFF_CLASSES)
    for split in ("train", "val"):
        pan = MetadataCatalog.get(f"builtin_panoptic_{split}")
        assert pan.config_section == "COCO" and pan.ignore_label == 255 and pan.label_family == "builtin_panoptic"
        assert pan.thing_classes == names and pan.stuff_classes == names and pan.object_classes == names
        assert pan.part_classes == [] and pan.class_to_part == [NO_PART] * len(names)
        assert pan.class_to_object == list(range(len(names)))
        assert pan.thing_dataset_id_to_contiguous_id == {k + 1: k for k in range(len(OBJECT_CLASSES))}
        assert pan.stuff_dataset_id_to_contiguous_id == {
            k + 1: k for k in range(len(OBJECT_CLASSES), len(names))
        }
        assert os.path.isfile(pan.panoptic_json) and os.path.isdir(pan.panoptic_root)
        assert pan.image_root == os.path.join(root, "sa1b_json", split)

        parts = MetadataCatalog.get(f"builtin_parts_{split}")
        assert parts.config_section == "PASCAL_PART" and parts.label_family == "builtin_parts"
        assert parts.thing_classes == PART_CLASSES and os.path.isfile(parts.json_file)
        assert parts.object_classes == sorted(o for o, (p, s) in OBJECT_PARTS.items() if p + s)
        assert parts.part_classes == sorted({p for ps, ss in OBJECT_PARTS.values() for p in ps + ss})
        space = label_space_from_metadata(parts)
        assert space.labels(PART_CLASSES.index("house:door")) == ("house", "door")
        assert space.labels(PART_CLASSES.index("car:door")) == ("car", "door")
        assert [space.labels(k) for k in range(space.num_classes)] == [tuple(n.split(":")) for n in PART_CLASSES]


# ------------------------------------------------------------------------------------------ round trips
def test_panoptic_round_trip_through_the_labelled_mapper(root):
    n = 0
    for split in ("train", "val"):
        name = f"builtin_panoptic_{split}"
        for d in DatasetCatalog.get(name):
            out, objects, parts, masks = _mapped(name, d)
            assert out["image"].shape[1:] == (d["height"], d["width"])
            assert parts == [None] * len(objects)
            scene, _ = _scene(root, split, d["file_name"])
            expected = []
            for a, m in scene:
                tier = a["synthetic"]["level"]
                if tier in ("stuff", "object"):
                    expected.append((a["synthetic"]["name"], m))
                elif tier == "group":  # pixels outside the group's member objects, if any are left
                    for b, mb in scene:
                        if b["synthetic"]["parent"] == a["id"] and b["synthetic"]["level"] == "object":
                            m = m & ~mb
                    if m.sum() >= MIN_AREA:
                        expected.append((a["synthetic"]["name"], m))
            assert sorted((o, m.tobytes()) for o, m in zip(objects, masks)) == sorted(
                (o, m.tobytes()) for o, m in expected
            )
            n += len(objects)
    assert n > 0


def test_parts_round_trip_through_the_labelled_mapper(root):
    n = 0
    for split in ("train", "val"):
        name = f"builtin_parts_{split}"
        for d in DatasetCatalog.get(name):
            _, objects, parts, masks = _mapped(name, d)
            scene, by_id = _scene(root, split, d["file_name"])
            expected = [
                (_object_name(a, by_id), a["synthetic"]["name"], m)
                for a, m in scene
                if a["synthetic"]["level"] in ("part", "subpart")
            ]
            assert sorted((o, p, m.tobytes()) for o, p, m in zip(objects, parts, masks)) == sorted(
                (o, p, m.tobytes()) for o, p, m in expected
            )
            n += len(objects)
    assert n > 0


def test_mapper_from_config_reads_the_family_sections(root):
    overrides = []
    for section in ("COCO", "PASCAL_PART"):
        overrides += [f"{section}.INPUT.IMAGE_SIZE=64", f"{section}.INPUT.MIN_SCALE=1.0",
                      f"{section}.INPUT.MAX_SCALE=1.0", f"{section}.INPUT.RANDOM_FLIP=none"]
    cfg = load_config(None, overrides)
    for name in ("builtin_panoptic_train", "builtin_parts_train"):
        meta = MetadataCatalog.get(name)
        out = LabelledDatasetMapper(cfg, is_train=True, dataset_name=name)(DatasetCatalog.get(name)[0])
        assert out["image"].shape == (3, 64, 64) and out["dataset_name"] == name
        assert out["vocabulary"] == {"object": tuple(meta.object_classes), "part": tuple(meta.part_classes)}
        assert len(out["instances"]) > 0 and out["instances"].gt_masks.tensor.dtype == torch.bool


# ------------------------------------------------------------------------------------------ errors
def test_missing_files_name_the_path_and_the_command(tmp_path):
    names = register_builtin_labelled(str(tmp_path))
    try:
        for name in names:
            with pytest.raises(FileNotFoundError, match=r"make_builtin_data .*--labelled"):
                DatasetCatalog.get(name)
    finally:
        unregister(names)


def test_foreign_categories_and_ids_are_errors(root, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(root, copy)
    names = register_builtin_labelled(copy)
    try:
        path = os.path.join(copy, "builtin_parts", "train.json")
        with open(path) as f:
            data = json.load(f)
        data["categories"][0]["name"] = "house:attic"
        with open(path, "w") as f:
            json.dump(data, f)
        with pytest.raises(PartJSONError, match=r"train.json: 'categories' must be the \d+ built-in part classes"):
            DatasetCatalog.get("builtin_parts_train")

        path = os.path.join(copy, "builtin_panoptic", "panoptic_val.json")
        with open(path) as f:
            data = json.load(f)
        data["annotations"][0]["segments_info"][0]["category_id"] = 99
        with open(path, "w") as f:
            json.dump(data, f)
        with pytest.raises(PanopticJSONError, match=r"segments_info\[0\] has category_id 99") as e:
            DatasetCatalog.get("builtin_panoptic_val")
        assert isinstance(e.value, UserError)
    finally:
        unregister(names)


def test_training_splits_drop_images_without_segments(root, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(root, copy)
    names = register_builtin_labelled(copy)
    try:
        for split in ("train", "val"):
            path = os.path.join(copy, "builtin_panoptic", f"panoptic_{split}.json")
            with open(path) as f:
                data = json.load(f)
            data["annotations"][0]["segments_info"] = []
            with open(path, "w") as f:
                json.dump(data, f)
            path = os.path.join(copy, "builtin_parts", f"{split}.json")
            with open(path) as f:
                data = json.load(f)
            first = data["images"][0]["id"]
            data["annotations"] = [a for a in data["annotations"] if a["image_id"] != first]
            with open(path, "w") as f:
                json.dump(data, f)
        for kind in ("panoptic", "parts"):
            assert len(DatasetCatalog.get(f"builtin_{kind}_train")) == 2
            val = DatasetCatalog.get(f"builtin_{kind}_val")
            assert len(val) == 2 and not val[0].get("segments_info", val[0].get("annotations"))
    finally:
        unregister(names)
