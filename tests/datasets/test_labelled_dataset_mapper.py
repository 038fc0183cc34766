"""Labelled mapper (large-scale jitter, masks from RLE / polygons / panoptic PNG, labels) and the
labelled-data config keys, on the fixture tool's datasets with a small IMAGE_SIZE."""
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from pycocotools import mask as mask_util

from datasets.labelled_dataset_mapper import LabelledDataError, LabelledDatasetMapper
from datasets.register_coco_panoptic_labelled import COCO_LABELLED_TRAIN, register_coco_panoptic_labelled
from datasets.register_part_datasets import register_all_part_datasets
from semantic_sam.config import ConfigError, get_default_config, load_config
from semantic_sam.config_checks import _Checker
from semantic_sam.data.labelled_config import LABELLED_SECTIONS, check_labelled_data_config
from tools.make_part_fixtures import make_part_fixtures
from tests.utils.catalog import unregister

SECTIONS = ("COCO", "PASCAL_PART", "PARTIMAGENET", "PACO")
PASCAL_PARTS_SORTED = [
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


def _cfg(size=32, min_scale=1.0, max_scale=1.0, flip="none", *extra):
    ov = []
    for s in SECTIONS:
        ov += [f"{s}.INPUT.IMAGE_SIZE={size}", f"{s}.INPUT.MIN_SCALE={min_scale}", f"{s}.INPUT.MAX_SCALE={max_scale}",
               f"{s}.INPUT.RANDOM_FLIP={flip}"]
    return load_config(None, ov + list(extra))


def _rect(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _tight_box(m):
    ys, xs = np.nonzero(m)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def _pascal_image1(root):
    return np.asarray(Image.open(os.path.join(root, "pascal_part", "VOCdevkit", "VOC2010", "JPEGImages",
                                              "2008_000001.jpg")).convert("RGB"))


# Pascal image 1 (48 x 64): the 5 non-crowd part rectangles (x0, y0, x1, y1).
PASCAL1 = [(4, 32, 16, 44), (40, 32, 52, 44), (12, 8, 36, 20), (24, 36, 32, 40), (54, 2, 62, 10)]


# ------------------------------------------------------------------------------------------ hand-checked LSJ
def test_scale_one_halves_the_image_and_pads(root):
    """IMAGE_SIZE 32, scale 1: 48x64 fits 32x32 at 0.5 -> 24x32, padded to 32x32 (rows 24-31 = 128).
    Even rectangle corners halve exactly under nearest resize."""
    mapper = LabelledDatasetMapper(_cfg(), dataset_name="pascal_part_train")
    out = mapper(DatasetCatalog.get("pascal_part_train")[0])
    assert out["image"].shape == (3, 32, 32) and out["image"].dtype == torch.uint8
    assert (out["height"], out["width"]) == (48, 64)
    assert torch.all(out["image"][:, 24:, :] == 128)
    expected_image = np.asarray(Image.fromarray(_pascal_image1(root)).resize((32, 24), Image.BILINEAR))
    assert np.array_equal(out["image"][:, :24].permute(1, 2, 0).numpy(), expected_image)

    inst = out["instances"]
    assert inst.image_size == (32, 32) and len(inst) == 5
    for m, (x0, y0, x1, y1) in zip(inst.gt_masks.tensor.numpy(), PASCAL1):
        assert np.array_equal(m, _rect(32, 32, x0 // 2, y0 // 2, x1 // 2, y1 // 2))
    assert inst.gt_boxes.tensor.tolist() == [[x0 / 2, y0 / 2, x1 / 2, y1 / 2] for x0, y0, x1, y1 in PASCAL1]
    assert inst.gt_classes.tolist() == [29, 29, 28, 24, 71]
    assert inst.gt_object_classes.tolist() == [5, 5, 5, 5, 11]  # car, person in the 14 sorted objects
    assert inst.gt_part_classes.tolist() == [
        PASCAL_PARTS_SORTED.index(p) for p in ("wheel", "wheel", "window", "license plate", "head")
    ]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_scale_two_crops_at_one_offset_for_image_and_masks(root, seed):
    """Scale 2 with IMAGE_SIZE 32: 48x64 fits 64x64 at 1.0 (no resize), then a random 32x32 crop. The
    output image is the original cropped at some offset; every mask is its rectangle cropped at that same
    offset; rectangles cropped away are dropped."""
    np.random.seed(seed)
    out = LabelledDatasetMapper(_cfg(32, 2.0, 2.0), dataset_name="pascal_part_train")(
        DatasetCatalog.get("pascal_part_train")[0]
    )
    original = _pascal_image1(root)
    image = out["image"].permute(1, 2, 0).numpy()
    offsets = [(oy, ox) for oy in range(17) for ox in range(33)
               if np.array_equal(original[oy:oy + 32, ox:ox + 32], image)]
    assert len(offsets) == 1
    oy, ox = offsets[0]
    expected = [_rect(48, 64, *r)[oy:oy + 32, ox:ox + 32] for r in PASCAL1]
    kept = [e for e in expected if e.any()]
    masks = out["instances"].gt_masks.tensor.numpy()
    assert len(masks) == len(kept) >= 1
    for m, e in zip(masks, kept):
        assert np.array_equal(m, e)
    assert out["instances"].gt_boxes.tensor.tolist() == [[float(v) for v in _tight_box(e)] for e in kept]


def test_flip_moves_image_and_masks_together(root):
    expected_image = np.asarray(Image.fromarray(_pascal_image1(root)).resize((32, 24), Image.BILINEAR))
    mapper = LabelledDatasetMapper(_cfg(flip="horizontal"), dataset_name="pascal_part_train")
    seen = set()
    for seed in range(8):
        np.random.seed(seed)
        out = mapper(DatasetCatalog.get("pascal_part_train")[0])
        image = out["image"][:, :24].permute(1, 2, 0).numpy()
        flipped = np.array_equal(image, expected_image[:, ::-1])
        assert flipped or np.array_equal(image, expected_image)
        seen.add(flipped)
        for m, (x0, y0, x1, y1) in zip(out["instances"].gt_masks.tensor.numpy(), PASCAL1):
            e = _rect(32, 32, x0 // 2, y0 // 2, x1 // 2, y1 // 2)
            e[:24] = e[:24, ::-1].copy() if flipped else e[:24]
            assert np.array_equal(m, e)
    assert seen == {True, False}


def test_default_lsj_gives_image_size_crops_with_consistent_boxes(root):
    # The defaults' scale range 0.1-2.0 at a small IMAGE_SIZE.
    cfg = load_config(None, ["PARTIMAGENET.INPUT.IMAGE_SIZE=40"])
    mapper = LabelledDatasetMapper(cfg, dataset_name="partimagenet_train")
    assert mapper.augmentations.augs[1].min_scale == 0.1 and mapper.augmentations.augs[1].max_scale == 2.0
    np.random.seed(0)
    for _ in range(6):
        for d in DatasetCatalog.get("partimagenet_train"):
            inst = mapper(d)["instances"]
            assert inst.image_size == (40, 40) and inst.gt_masks.tensor.shape[1:] == (40, 40)
            for m, box in zip(inst.gt_masks.tensor.numpy(), inst.gt_boxes.tensor.tolist()):
                assert m.any() and box == [float(v) for v in _tight_box(m)]


# ------------------------------------------------------------------------------------------ mask sources
def test_polygons_are_rasterised_then_resized(root):
    """PartImageNet image 2 (48 x 48), IMAGE_SIZE 32 at scale 1: 32x32, each mask the nearest resize of
    the polygon's mask rasterised at the original size."""
    d = DatasetCatalog.get("partimagenet_train")[1]
    out = LabelledDatasetMapper(_cfg(), dataset_name="partimagenet_train")(d)
    inst = out["instances"]
    assert len(inst) == 4
    for m, ann in zip(inst.gt_masks.tensor.numpy(), d["annotations"]):
        full = mask_util.decode(mask_util.merge(mask_util.frPyObjects(ann["segmentation"], 48, 48)))
        assert np.array_equal(m, np.asarray(Image.fromarray(full).resize((32, 32), Image.NEAREST)).astype(bool))
    meta = MetadataCatalog.get("partimagenet_train")
    assert [meta.part_classes[p] for p in inst.gt_part_classes.tolist()] == ["body", "tire", "tire", "side mirror"]
    assert set(inst.gt_object_classes.tolist()) == {meta.object_classes.index("car")}


def test_coco_panoptic_masks_from_the_png(root):
    """COCO image 1 (48 x 64) at 0.5: person rect (6,6)-(28,30), dog (36,20)-(60,44); the stuff segment is the
    rest minus the crowd rect (0,40)-(10,48), which has no instance."""
    out = LabelledDatasetMapper(_cfg(), dataset_name=COCO_LABELLED_TRAIN)(DatasetCatalog.get(COCO_LABELLED_TRAIN)[0])
    inst = out["instances"]
    person, dog, stuff = inst.gt_masks.tensor.numpy()
    assert np.array_equal(person, _rect(32, 32, 3, 3, 14, 15))
    assert np.array_equal(dog, _rect(32, 32, 18, 10, 30, 22))
    expected_stuff = _rect(32, 32, 0, 0, 32, 24) & ~person & ~dog & ~_rect(32, 32, 0, 20, 5, 24)
    assert np.array_equal(stuff, expected_stuff)  # the padding (rows 24-31) is void, not stuff
    assert inst.gt_classes.tolist() == inst.gt_object_classes.tolist() == [0, 16, 116]
    assert inst.gt_part_classes.tolist() == [-1, -1, -1]


@pytest.mark.parametrize(
    "policy, expected",
    [
        ("drop", [("handbag", "strap"), ("handbag", "handle"), ("car", "wheel"), ("car", "antenna")]),
        ("object_only", [("handbag", None), ("handbag", "strap"), ("handbag", "handle"), ("car", None),
                         ("car", "wheel"), ("car", "antenna")]),
        ("whole_part", [("handbag", "whole"), ("handbag", "strap"), ("handbag", "handle"), ("car", "whole"),
                        ("car", "wheel"), ("car", "antenna")]),
    ],
)
def test_paco_whole_instances(root, policy, expected):
    cfg = _cfg(64, 1.0, 1.0, "none", f"PACO.DATASET.WHOLE_INSTANCES={policy}")
    d = DatasetCatalog.get("paco_lvis_train")[0]
    inst = LabelledDatasetMapper(cfg, dataset_name="paco_lvis_train")(d)["instances"]
    meta = MetadataCatalog.get("paco_lvis_train")
    got = [(meta.object_classes[o], None if p == -1 else meta.part_classes[p])
           for o, p in zip(inst.gt_object_classes.tolist(), inst.gt_part_classes.tolist())]
    assert got == expected


def test_bgr_reverses_the_channels(root):
    d = DatasetCatalog.get("pascal_part_val")[0]
    rgb = LabelledDatasetMapper(_cfg(), dataset_name="pascal_part_val")(d)["image"]
    bgr = LabelledDatasetMapper(_cfg(32, 1.0, 1.0, "none", "PASCAL_PART.INPUT.FORMAT=BGR"),
                                dataset_name="pascal_part_val")(d)["image"]
    assert torch.equal(bgr, rgb.flip(0))


def test_evaluation_resizes_the_shortest_edge(root):
    cfg = load_config(None, ["PASCAL_PART.INPUT.MIN_SIZE_TEST=96", "PASCAL_PART.INPUT.MAX_SIZE_TEST=200"])
    out = LabelledDatasetMapper(cfg, is_train=False, dataset_name="pascal_part_val")(
        DatasetCatalog.get("pascal_part_val")[0]
    )
    assert out["image"].shape == (3, 96, 115)  # 40 x 48 -> shortest 96
    assert len(out["instances"]) == 2


def test_unregistered_dataset_is_refused():
    with pytest.raises(LabelledDataError, match="'sam_train_nope' is not a registered labelled dataset"):
        LabelledDatasetMapper(_cfg(), dataset_name="sam_train_nope")


# ------------------------------------------------------------------------------------------ config keys
def _check(overrides=(), config=None):
    cfg = load_config(config, list(overrides))
    check_labelled_data_config(_Checker(cfg, {}))


def test_defaults_and_released_configs_pass():
    cfg = get_default_config()
    assert LABELLED_SECTIONS == SECTIONS
    for s in ("PASCAL_PART", "PARTIMAGENET", "PACO"):
        node = cfg[s]["INPUT"]
        assert (node.IMAGE_SIZE, node.MIN_SCALE, node.MAX_SCALE, node.RANDOM_FLIP) == (1024, 0.1, 2.0, "horizontal")
    assert (cfg.COCO.INPUT.IMAGE_SIZE, cfg.COCO.INPUT.MIN_SCALE, cfg.COCO.INPUT.MAX_SCALE) == (1024, 0.1, 2.0)
    assert (cfg.SAM.INPUT.MIN_SCALE, cfg.SAM.INPUT.MAX_SCALE) == (0.99, 1.01)  # no jitter for SA-1B
    assert cfg.PACO.DATASET.WHOLE_INSTANCES == "drop"
    _check()
    here = os.path.dirname(os.path.abspath(__file__))
    _check(config=os.path.join(here, "..", "..", "configs", "semantic_sam_only_sa-1b_swinT.yaml"))


@pytest.mark.parametrize(
    "override, key",
    [
        ("PASCAL_PART.INPUT.IMAGE_SIZE=0", "PASCAL_PART.INPUT.IMAGE_SIZE"),
        ("PARTIMAGENET.INPUT.MIN_SCALE=0", "PARTIMAGENET.INPUT.MIN_SCALE"),
        ("PACO.INPUT.MAX_SCALE=0.05", "PACO.INPUT.MAX_SCALE"),
        ("COCO.INPUT.RANDOM_FLIP=diagonal", "COCO.INPUT.RANDOM_FLIP"),
        ("PACO.INPUT.FORMAT=YUV", "PACO.INPUT.FORMAT"),
        ("PASCAL_PART.INPUT.MAX_SIZE_TEST=0", "PASCAL_PART.INPUT.MAX_SIZE_TEST"),
        ("PACO.DATASET.WHOLE_INSTANCES=keep", "PACO.DATASET.WHOLE_INSTANCES"),
    ],
)
def test_bad_values_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"invalid value for config key '{key}'"):
        _check([override])


def test_the_misspelt_reference_section_points_to_the_read_one():
    with pytest.raises(ConfigError, match=r"'PSACAL_PART.INPUT.MIN_SCALE'.*set PASCAL_PART.INPUT.MIN_SCALE instead"):
        _check(["PSACAL_PART.INPUT.MIN_SCALE=0.5"])
