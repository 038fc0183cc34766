import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from datasets.register_coco_panoptic_interactive import load_coco_panoptic_interactive
from semantic_sam.data.tsv import TSVFile
from tools.make_builtin_data import PANOPTIC_CATEGORIES, VAL_START_ID, builtin_env, finest_partition, make_builtin_data


def test_finest_partition_by_hand():
    whole = np.zeros((4, 5), bool)
    whole[:, :4] = True
    part = np.zeros((4, 5), bool)
    part[1:3, 1:3] = True
    sub = np.zeros((4, 5), bool)
    sub[1, 1] = True
    owner = finest_partition(np.stack([part, whole, sub]))  # order does not matter, only nesting
    expected = np.array(
        [
            [1, 1, 1, 1, -1],
            [1, 2, 0, 1, -1],
            [1, 0, 0, 1, -1],
            [1, 1, 1, 1, -1],
        ]
    )
    np.testing.assert_array_equal(owner, expected)


def test_finest_partition_rejects_2d():
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        finest_partition(np.zeros((4, 5), bool))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("builtin"))
    make_builtin_data(out, num_train=3, num_val=2, seed=7, size=96, min_area=20, num_shards=2)
    return out


def _pan_ids(path):
    rgb = np.asarray(Image.open(path)).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def test_train_split_is_tsv_shards_of_the_json(root):
    env = builtin_env(root)
    shards = sorted(f for f in os.listdir(env["SAM_DATASET"]) if f.endswith(".tsv"))
    assert len(shards) == 2
    rows = sum(len(TSVFile(os.path.join(env["SAM_DATASET"], s))) for s in shards)
    assert rows == 3
    for name in os.listdir(env["SAM_JSON"]):
        if name.endswith(".json"):
            with open(os.path.join(env["SAM_JSON"], name)) as f:
                assert all(a["area"] >= 20 for a in json.load(f)["annotations"])


def test_val_panoptic_is_the_finest_partition_of_the_sa1b_val(root):
    env = builtin_env(root)
    paths = {
        "image_root": os.path.join(root, "coco", "val2017"),
        "panoptic_root": os.path.join(root, "coco", "panoptic_val2017"),
        "panoptic_json": os.path.join(root, "coco", "annotations", "panoptic_val2017.json"),
    }
    dicts = load_coco_panoptic_interactive(**paths)
    assert [d["image_id"] for d in dicts] == [VAL_START_ID, VAL_START_ID + 1]
    level_of = {c["id"]: c["name"] for c in PANOPTIC_CATEGORIES}
    for d in dicts:
        stem = os.path.splitext(os.path.basename(d["file_name"]))[0]
        with open(os.path.join(env["SAM_JSON_VAL"], stem + ".json")) as f:
            anns = json.load(f)["annotations"]
        masks = np.stack([mask_utils.decode(a["segmentation"]).astype(bool) for a in anns])
        ids = _pan_ids(d["pan_seg_file_name"])
        assert ids.shape == (d["height"], d["width"])
        # each pixel's segment is the smallest SA-1B mask containing it (brute force)
        areas = masks.reshape(len(masks), -1).sum(1)
        for y in range(0, ids.shape[0], 7):
            for x in range(0, ids.shape[1], 7):
                inside = np.flatnonzero(masks[:, y, x])
                want = 0 if inside.size == 0 else int(inside[np.argmin(areas[inside])]) + 1
                assert ids[y, x] == want
        for seg in d["segments_info"]:
            k = seg["id"] - 1
            assert seg["area"] == int((ids == seg["id"]).sum()) > 0
            assert level_of[seg["category_id"]] == anns[k]["synthetic"]["level"]
        assert set(np.unique(ids)) - {0} == {s["id"] for s in d["segments_info"]}
        # the JPEG in val2017 is the SA-1B val image
        assert open(d["file_name"], "rb").read() == open(os.path.join(env["SAM_JSON_VAL"], stem + ".jpg"), "rb").read()
