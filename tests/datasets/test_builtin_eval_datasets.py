"""The built-in val split's evaluation sets (builtin_panoptic_val_interactive, builtin_parts_val_interactive,
builtin_panoptic_val_generic): registration, routing, the interactive mapper's labels, the derived files of
generic evaluation against the panoptic GT, and the missing-file errors."""
import json
import os
import shutil

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from panopticapi.utils import rgb2id
from PIL import Image
from pycocotools import mask as mask_utils

from datasets.builtin import register_datasets
from datasets.builtin_labels import OBJECT_CLASSES, STUFF_CLASSES, builtin_part_class_names
from datasets.coco_interactive_dataset_mapper import CocoInteractiveDatasetMapper
from datasets.generic_eval import GenericEvalMapper
from datasets.interactive_eval import build_test_mapper
from datasets.register_builtin_labelled import (
    BUILTIN_EVAL_DATASETS,
    builtin_panoptic_generic_paths,
    register_builtin_eval_datasets,
)
from semantic_sam.config import load_config
from semantic_sam.data.label_spaces import NO_PART
from semantic_sam.evaluation import GenericEvaluator, InteractiveEvaluator, build_evaluator
from semantic_sam.evaluation.generic import is_generic_dataset
from tools.make_builtin_data import LABELLED_LAYOUTS, make_builtin_data
from tools.prepare_coco_semantic_from_panoptic import main as prepare_main
from tests.utils.catalog import unregister

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "semantic_sam_tiny_generic.yaml")
NAMES = list(OBJECT_CLASSES) + list(STUFF_CLASSES)
MIN_AREA = 20


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("builtin_eval"))
    make_builtin_data(root, num_train=1, num_val=2, seed=3, size=96, min_area=MIN_AREA, num_shards=1,
                      labelled=LABELLED_LAYOUTS)
    names = register_builtin_eval_datasets(root)
    yield root
    unregister(names)


def _cfg(*overrides):
    return load_config(CONFIG, ["COCO.INPUT.MIN_SIZE_TEST=64", "COCO.INPUT.MAX_SIZE_TEST=96", *overrides])


def _panoptic_gt(root, file_name):
    """(ids (H, W), JSON segments with the JSON's category ids) of a val image."""
    paths = builtin_panoptic_generic_paths("val", root)
    with open(paths["panoptic_json"]) as f:
        data = json.load(f)
    (ann,) = [a for a in data["annotations"] if a["file_name"][:-4] == os.path.basename(file_name)[:-4]]
    ids = rgb2id(np.asarray(Image.open(os.path.join(paths["panoptic_root"], ann["file_name"])).convert("RGB")))
    return ids, ann["segments_info"]


# ------------------------------------------------------------------------------------------ registration
def test_names_metadata_and_routing(root):
    assert BUILTIN_EVAL_DATASETS == (
        "builtin_panoptic_val_interactive", "builtin_parts_val_interactive", "builtin_panoptic_val_generic"
    )
    cfg = _cfg()
    pan = MetadataCatalog.get("builtin_panoptic_val_interactive")
    assert pan.object_classes == NAMES and pan.part_classes == [] and pan.get("config_section", None) is None
    parts = MetadataCatalog.get("builtin_parts_val_interactive")
    assert parts.thing_classes == list(builtin_part_class_names()) and "wheel" in parts.part_classes
    assert parts.json_file == os.path.join(root, "builtin_parts", "val.json")
    for name in BUILTIN_EVAL_DATASETS[:2]:
        assert not is_generic_dataset(name)
        assert isinstance(build_test_mapper(cfg, name), CocoInteractiveDatasetMapper)
        assert isinstance(build_evaluator(cfg, name, None), InteractiveEvaluator)

    generic = MetadataCatalog.get("builtin_panoptic_val_generic")
    assert is_generic_dataset("builtin_panoptic_val_generic")
    assert generic.evaluator_type == "coco_panoptic_seg" and generic.ignore_label == 255
    assert generic.stuff_classes == NAMES and generic.thing_classes == list(OBJECT_CLASSES)
    assert generic.thing_dataset_id_to_contiguous_id == {k + 1: k for k in range(9)}
    assert generic.stuff_dataset_id_to_contiguous_id == {k + 1: k for k in range(14)}
    assert generic.panoptic_json == os.path.join(root, "builtin_panoptic", "panoptic_val.json")
    assert generic.json_file == os.path.join(root, "builtin_panoptic", "instances_val.json")
    assert generic.sem_seg_root == os.path.join(root, "builtin_panoptic", "panoptic_semseg_val")
    assert isinstance(build_evaluator(cfg, "builtin_panoptic_val_generic", None), GenericEvaluator)
    d = DatasetCatalog.get("builtin_panoptic_val_generic")[0]
    out = GenericEvalMapper(cfg, "builtin_panoptic_val_generic")(d)
    assert (out["height"], out["width"]) == (d["height"], d["width"]) and min(out["image"].shape[1:]) == 64


def test_register_datasets_registers_them_and_reads_nothing(root, tmp_path, monkeypatch):
    """train_net's registration: the names resolve without any file under the root."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    cfg = _cfg(f"DATASETS.TEST=[{','.join(BUILTIN_EVAL_DATASETS)}]")
    unregister(BUILTIN_EVAL_DATASETS)
    try:
        register_datasets(cfg)
        assert set(BUILTIN_EVAL_DATASETS) <= set(DatasetCatalog.list())
        assert MetadataCatalog.get("builtin_panoptic_val_generic").panoptic_root.startswith(str(tmp_path))
    finally:
        register_builtin_eval_datasets(root)


# ------------------------------------------------------------------------------------------ interactive mapper
def test_panoptic_interactive_inputs_carry_the_vocabulary_and_classes(root):
    mapper = build_test_mapper(_cfg(), "builtin_panoptic_val_interactive")
    n = 0
    for d in DatasetCatalog.get("builtin_panoptic_val_interactive"):
        ids, segments = _panoptic_gt(root, d["file_name"])
        out = mapper(d)
        inst = out["instances"]
        assert out["vocabulary"] == {"object": tuple(NAMES), "part": ()}
        assert out["segment_ids"].tolist() == [s["id"] for s in segments]  # no segment lost at 64 px
        assert inst.gt_object_classes.tolist() == [s["category_id"] - 1 for s in segments]  # JSON id = class + 1
        assert inst.gt_classes.tolist() == inst.gt_object_classes.tolist()
        assert inst.gt_part_classes.tolist() == [NO_PART] * len(segments)
        assert out["points"].shape == (len(segments), 2) and out["image"].shape[1:] == inst.image_size
        n += len(segments)
    assert n > 0


def test_parts_interactive_inputs_are_one_click_per_part_annotation(root):
    mapper = build_test_mapper(_cfg(), "builtin_parts_val_interactive")
    meta = MetadataCatalog.get("builtin_parts_val_interactive")
    with open(meta.json_file) as f:
        data = json.load(f)
    n = 0
    for d in DatasetCatalog.get("builtin_parts_val_interactive"):
        out = mapper(d)
        inst = out["instances"]
        assert out["vocabulary"] == {"object": tuple(meta.object_classes), "part": tuple(meta.part_classes)}
        anns = {a["id"]: a for a in data["annotations"] if a["image_id"] == d["image_id"]}
        kept = out["segment_ids"].tolist()
        assert len(kept) + out["num_dropped_segments"] == len(anns)
        for i, ann_id in enumerate(kept):
            obj, part = meta.thing_classes[anns[ann_id]["category_id"] - 1].split(":")
            assert meta.object_classes[inst.gt_object_classes[i]] == obj
            assert meta.part_classes[inst.gt_part_classes[i]] == part
            assert inst.gt_classes[i] == anns[ann_id]["category_id"] - 1
            # The mask is the annotation's RLE, resized with the image.
            full = mask_utils.decode(anns[ann_id]["segmentation"]).astype(bool)
            assert inst.gt_masks.tensor[i].float().mean() == pytest.approx(full.mean(), abs=0.08)
        n += len(kept)
    assert n > 0


# ------------------------------------------------------------------------------------------ derived files
def test_derived_files_match_the_panoptic_gt(root):
    """Semantic PNG = each segment's contiguous class (JSON id - 1), 255 void; instances = the thing segments."""
    things = {k + 1 for k in range(len(OBJECT_CLASSES))}
    expected_anns = []
    dicts = DatasetCatalog.get("builtin_panoptic_val_generic")
    for d in dicts:
        ids, segments = _panoptic_gt(root, d["file_name"])
        expected = np.full(ids.shape, 255, np.uint8)
        for seg in segments:
            expected[ids == seg["id"]] = seg["category_id"] - 1
        assert np.array_equal(np.asarray(Image.open(d["sem_seg_file_name"])), expected)
        assert [(s["category_id"], s["isthing"]) for s in d["segments_info"]] == [
            (s["category_id"] - 1, s["category_id"] in things) for s in segments
        ]
        expected_anns += [(d["image_id"], s["category_id"], int((ids == s["id"]).sum()))
                          for s in segments if s["category_id"] in things]
    with open(MetadataCatalog.get("builtin_panoptic_val_generic").json_file) as f:
        instances = json.load(f)
    assert [c["name"] for c in instances["categories"]] == list(OBJECT_CLASSES)
    assert [(a["image_id"], a["category_id"], a["area"]) for a in instances["annotations"]] == expected_anns
    assert len(expected_anns) > 0 and [a["id"] for a in instances["annotations"]] == list(
        range(1, len(expected_anns) + 1))
    assert sorted(i["id"] for i in instances["images"]) == sorted(d["image_id"] for d in dicts)


def test_prepare_tool_writes_the_derived_files_of_an_existing_root(root, tmp_path, capsys):
    copy = str(tmp_path / "copy")
    shutil.copytree(root, copy)
    paths = builtin_panoptic_generic_paths("val", copy)
    shutil.rmtree(paths["sem_seg_root"])
    os.remove(paths["instances_json"])
    assert prepare_main([copy, "--builtin"]) == 0
    assert "wrote 2 semantic PNGs" in capsys.readouterr().out
    original = builtin_panoptic_generic_paths("val", root)
    for name in os.listdir(original["sem_seg_root"]):
        a = np.asarray(Image.open(os.path.join(paths["sem_seg_root"], name)))
        assert np.array_equal(a, np.asarray(Image.open(os.path.join(original["sem_seg_root"], name))))
    with open(paths["instances_json"]) as f, open(original["instances_json"]) as g:
        assert json.load(f) == json.load(g)


# ------------------------------------------------------------------------------------------ errors
def test_missing_files_name_the_path_and_the_command(root, tmp_path):
    names = register_builtin_eval_datasets(str(tmp_path))
    try:
        for name in names:
            with pytest.raises(FileNotFoundError, match=r"make_builtin_data --output ROOT --labelled panoptic parts"):
                DatasetCatalog.get(name)
        # Only the derived files missing: the message names them and both commands.
        copy = str(tmp_path / "copy")
        shutil.copytree(root, copy)
        paths = builtin_panoptic_generic_paths("val", copy)
        shutil.rmtree(paths["sem_seg_root"])
        register_builtin_eval_datasets(copy)
        with pytest.raises(FileNotFoundError) as e:
            DatasetCatalog.get("builtin_panoptic_val_generic")
        message = str(e.value)
        assert "panoptic_semseg_val" in message and "make_builtin_data" in message and "--builtin" in message
        assert len(message.splitlines()) == 1
    finally:
        register_builtin_eval_datasets(root)
