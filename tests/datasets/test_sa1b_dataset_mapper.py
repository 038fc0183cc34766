import base64
import io
import json
import logging
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Instances
from PIL import Image
from pycocotools import mask as mask_utils

from datasets.register_sa1b import SA1BSettings, register_all_sa1b
from datasets.sa1b_dataset_mapper import CorruptDatasetError, SA1BDatasetMapper, build_transform_gen
from semantic_sam.config import load_config
from semantic_sam.data.sa1b import TSVShardSource, encode_mask_rle
from semantic_sam.data.tsv import TSVWriter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SWINT = os.path.join(ROOT, "configs", "semantic_sam_only_sa-1b_swinT.yaml")
GREEN, RED = (10, 200, 30), (250, 20, 20)


def _scene(h=48, w=64):
    """Green image with a red square on the left; masks: the square, the right half, the whole image."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = GREEN
    img[10:30, 5:25] = RED
    square = np.zeros((h, w), bool)
    square[10:30, 5:25] = True
    right = np.zeros((h, w), bool)
    right[:, w // 2 :] = True
    return img, [square, right, np.ones((h, w), bool)]


def _row(img, masks, name, size=None, b64=None, text=None, short_rle=False):
    h, w = img.shape[:2]
    anns = []
    for k, m in enumerate(masks):
        seg = encode_mask_rle(m)
        if size is not None:
            seg["size"] = list(size)
        if short_rle and k == 1:  # runs that cover one pixel less than the image (compressed by pycocotools)
            runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, m.T.ravel().astype(int), -1]))).tolist()
            runs = ([0] if m.T.ravel()[0] else []) + runs[:-1] + [runs[-1] - 1]
            seg["counts"] = mask_utils.frPyObjects({"size": [h, w], "counts": runs}, h, w)["counts"].decode()
        anns.append({"id": k, "segmentation": seg, "bbox": [0, 0, 1, 1], "area": int(m.sum())})
    data = {"image": {"image_id": int(name.split("_")[1].split(".")[0]), "file_name": name}, "annotations": anns}
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")  # lossless, so pixel values can be checked exactly
    return [
        name,
        json.dumps(data) if text is None else text,
        base64.b64encode(buf.getvalue()).decode() if b64 is None else b64,
    ]


def _tsv(path, rows):
    with TSVWriter(str(path)) as w:
        for r in rows:
            w.write(r)
    return str(path)


@pytest.fixture
def good_source(tmp_path):
    img, masks = _scene()
    return TSVShardSource([_tsv(tmp_path / "good.tsv", [_row(img, masks, "sa_1.jpg"), _row(img, masks, "sa_2.jpg")])])


@pytest.fixture
def corrupt_source(tmp_path):
    img, masks = _scene()
    rows = [
        _row(img, masks, "sa_0.jpg"),
        _row(img, masks, "sa_1.jpg", b64="%%% not base64 %%%"),
        _row(img, masks, "sa_2.jpg", text='{"image": {}, "annotations": [oops'),
        _row(img, masks, "sa_3.jpg", size=(24, 32)),
        _row(img, [], "sa_4.jpg"),
        _row(img, masks, "sa_5.jpg"),
        _row(img, masks, "sa_6.jpg", short_rle=True),
    ]
    return TSVShardSource([_tsv(tmp_path / "mixed.tsv", rows)])


def _cfg(*overrides):
    return load_config(SWINT, list(overrides))


def _bbox(mask):
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_train_output_shapes_dtypes_and_padding(good_source):
    np.random.seed(0)
    mapper = SA1BDatasetMapper(
        True, source=good_source, augmentations=build_transform_gen(_cfg().SAM.INPUT, True), image_format="RGB"
    )
    out = mapper({"shard": 0, "row": 1})
    assert set(out) >= {"image", "instances", "height", "width", "file_name", "image_id", "bad_rows"}
    img = out["image"]
    assert img.dtype == torch.uint8 and img.shape == (3, 1024, 1024)
    assert (out["height"], out["width"], out["file_name"], out["image_id"], out["bad_rows"]) == (
        48,
        64,
        "sa_2.jpg",
        2,
        0,
    )
    inst = out["instances"]
    assert isinstance(inst, Instances) and inst.image_size == (1024, 1024)
    assert isinstance(inst.gt_masks, BitMasks) and inst.gt_masks.tensor.dtype == torch.bool
    assert inst.gt_masks.tensor.shape == (3, 1024, 1024)
    assert inst.gt_classes.dtype == torch.int64 and inst.gt_classes.tolist() == [0, 0, 0]
    for m, box in zip(inst.gt_masks.tensor.numpy(), inst.gt_boxes.tensor.numpy()):
        np.testing.assert_allclose(box, _bbox(m))
    # 48x64 scaled by 16 x U(0.99, 1.01): 760-776 rows of image, the rest padding of exactly 128
    pixels = img.numpy()
    assert (pixels[:, 776:] == 128).all()
    assert not (pixels[:, :760] == 128).all(axis=0).any()
    masks = inst.gt_masks.tensor.numpy()
    assert not masks[:, 776:].any()  # padding is background in every mask
    assert masks[2, :760].all()  # the whole-image mask covers the whole image part


def test_flip_alone_flips_image_and_masks(good_source):
    mapper = SA1BDatasetMapper(True, source=good_source, augmentations=[T.RandomFlip(prob=1.0)])
    out = mapper({"shard": 0, "row": 0})
    img, masks = _scene()
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), img[:, ::-1])
    np.testing.assert_array_equal(out["instances"].gt_masks.tensor.numpy(), np.stack(masks)[:, :, ::-1])
    np.testing.assert_allclose(out["instances"].gt_boxes.tensor[0].numpy(), [64 - 25, 10, 64 - 5, 30])


def test_image_and_masks_stay_aligned_under_random_augmentation(good_source):
    cfg = _cfg("SAM.INPUT.IMAGE_SIZE=256")
    mapper = SA1BDatasetMapper(True, source=good_source, augmentations=build_transform_gen(cfg.SAM.INPUT, True))
    flipped = []
    for seed in range(6):
        np.random.seed(seed)
        out = mapper({"shard": 0, "row": 0})
        pix = out["image"].permute(1, 2, 0).numpy().astype(int)
        red = (pix[..., 0] > 128) & (pix[..., 1] < 100)
        square = out["instances"].gt_masks.tensor[0].numpy()
        assert (red & square).sum() / (red | square).sum() > 0.95
        half = out["instances"].gt_masks.tensor[1].numpy()
        assert (square & half).sum() == 0  # the half mask is flipped with the square
        flipped.append(bool(np.nonzero(square)[1].mean() > 128))
    assert any(flipped) and not all(flipped)  # both outcomes of the random flip were seen


def test_eval_resize_shortest_edge(good_source):
    mapper = SA1BDatasetMapper(False, source=good_source, augmentations=build_transform_gen(_cfg().SAM.INPUT, False))
    out = mapper({"shard": 0, "row": 0})
    assert out["image"].shape == (3, 800, 1067)
    assert out["instances"].gt_masks.tensor.shape == (3, 800, 1067)


def test_bgr_format(good_source):
    mapper = SA1BDatasetMapper(True, source=good_source, augmentations=[], image_format="BGR")
    img, _ = _scene()
    np.testing.assert_array_equal(mapper({"shard": 0, "row": 0})["image"].permute(1, 2, 0).numpy(), img[:, :, ::-1])


def test_empty_instances_are_filtered(good_source):
    # keep the left 30 columns: the right-half mask disappears, the others remain
    mapper = SA1BDatasetMapper(True, source=good_source, augmentations=[T.CropTransform(0, 0, 30, 48)])
    inst = mapper({"shard": 0, "row": 0})["instances"]
    assert len(inst) == 2 and inst.gt_masks.tensor.shape == (2, 48, 30)
    np.testing.assert_allclose(inst.gt_boxes.tensor.numpy(), [[5, 10, 25, 30], [0, 0, 30, 48]])


@pytest.mark.parametrize(
    "row, reason",
    [
        (1, "not valid base64"),
        (2, "annotation JSON cannot be parsed"),
        (3, "RLE size 24x32 differs"),
        (4, "no masks"),
        (6, "annotation 1 (id 1): RLE counts cover 3071 pixels, expected 3072 (48x64)"),
    ],
)
def test_corrupt_row_is_logged_once_counted_and_replaced(corrupt_source, caplog, row, reason):
    mapper = SA1BDatasetMapper(True, source=corrupt_source, augmentations=[])
    with caplog.at_level(logging.WARNING, logger="datasets.sa1b_dataset_mapper"):
        first = mapper({"shard": 0, "row": row})
        second = mapper({"shard": 0, "row": row})
    assert first["file_name"] in {"sa_0.jpg", "sa_5.jpg"}
    assert first["file_name"] == second["file_name"]  # deterministic replacement
    assert first["bad_rows"] >= 1 and second["bad_rows"] == first["bad_rows"]
    assert mapper.bad_rows == first["bad_rows"] + second["bad_rows"]
    shard = corrupt_source.shards.paths[0]
    msgs = [r.getMessage() for r in caplog.records if f"{shard} row {row}:" in r.getMessage()]
    assert len(msgs) == 1 and reason in msgs[0]  # logged once, naming shard and row


def test_replacement_walks_the_whole_dataset(corrupt_source):
    mapper = SA1BDatasetMapper(True, source=corrupt_source, augmentations=[])
    names = {mapper({"shard": 0, "row": r})["file_name"] for r in range(6)}
    assert names <= {"sa_0.jpg", "sa_5.jpg"}
    assert mapper({"shard": 0, "row": 0})["bad_rows"] == 0


def test_all_corrupt_raises_instead_of_looping(tmp_path):
    img, masks = _scene()
    src = TSVShardSource([_tsv(tmp_path / "bad.tsv", [_row(img, [], f"sa_{i}.jpg") for i in range(4)])])
    mapper = SA1BDatasetMapper(True, source=src, augmentations=[])
    with pytest.raises(CorruptDatasetError, match=r"bad\.tsv row 2 and 3 replacement\(s\) are all corrupt"):
        mapper({"shard": 0, "row": 2})


def test_retries_are_bounded(corrupt_source):
    mapper = SA1BDatasetMapper(True, source=corrupt_source, augmentations=[], max_retries=0)
    with pytest.raises(CorruptDatasetError, match="row 1 and 0 replacement"):
        mapper({"shard": 0, "row": 1})
    assert mapper({"shard": 0, "row": 5})["file_name"] == "sa_5.jpg"


def test_from_config_with_registered_dataset(monkeypatch, tmp_path):
    img, masks = _scene()
    folder = tmp_path / "tsv"
    folder.mkdir()
    _tsv(folder / "part-0.tsv", [_row(img, masks, "sa_1.jpg")])
    register_all_sa1b(SA1BSettings(tsv_root=str(folder)))
    cfg = _cfg("SAM.DATASET.CORRUPT_ROW_RETRIES=7", "SAM.INPUT.IMAGE_SIZE=128")
    mapper = SA1BDatasetMapper(cfg, True)
    assert mapper.max_retries == 7 and len(mapper.source) == 1
    dicts = DatasetCatalog.get("sam_train")
    out = mapper(dicts[0])
    assert out["image"].shape == (3, 128, 128) and len(out["instances"]) == 3


def test_bad_flip_option():
    with pytest.raises(ValueError, match="RANDOM_FLIP"):
        build_transform_gen(_cfg("SAM.INPUT.RANDOM_FLIP=diagonal").SAM.INPUT, True)


def test_detectron2_train_loader_with_workers(tmp_path):
    from detectron2.data import build_detection_train_loader

    img, masks = _scene()
    folder = tmp_path / "tsv"
    folder.mkdir()
    for s in range(2):
        _tsv(folder / f"part-{s}.tsv", [_row(img, masks, f"sa_{s}{r}.jpg") for r in range(2)])
    register_all_sa1b(SA1BSettings(tsv_root=str(folder)))
    cfg = _cfg("SAM.INPUT.IMAGE_SIZE=64")
    mapper = SA1BDatasetMapper(cfg, True)
    mapper.source.shards.read_row(0, 0)  # the parent holds an open handle before the workers fork
    loader = build_detection_train_loader(
        DatasetCatalog.get("sam_train"), mapper=mapper, total_batch_size=4, num_workers=2, aspect_ratio_grouping=False
    )
    batch = next(iter(loader))
    assert len(batch) == 4 and all(b["image"].shape == (3, 64, 64) for b in batch)
    assert {b["file_name"] for b in batch} <= {"sa_00.jpg", "sa_01.jpg", "sa_10.jpg", "sa_11.jpg"}


def test_json_folder_source(tmp_path):
    from semantic_sam.data.sa1b import JsonFolderSource, find_sa1b_pairs
    from tools.make_synthetic_sa1b import make_synthetic_sa1b

    make_synthetic_sa1b(str(tmp_path), 3, seed=0, size=64)
    os.remove(tmp_path / "sa_2.json")  # after listing: the record becomes unreadable and is replaced
    src = JsonFolderSource(
        find_sa1b_pairs(str(tmp_path))[0] + [(str(tmp_path / "sa_2.jpg"), str(tmp_path / "sa_2.json"))]
    )
    mapper = SA1BDatasetMapper(True, source=src, augmentations=build_transform_gen(_cfg().SAM.INPUT, True))
    out = mapper(src.dataset_dicts()[0])
    assert out["file_name"] == "sa_1.jpg" and out["image"].shape == (3, 1024, 1024) and len(out["instances"]) > 0
    out = mapper(src.dataset_dicts()[2])
    assert out["bad_rows"] == 1 and out["file_name"] in {"sa_1.jpg", "sa_3.jpg"}


def test_eval_mapper_never_substitutes_a_corrupt_record(corrupt_source, caplog):
    from datasets.sa1b_eval_mapper import SA1BEvalMapper
    from semantic_sam.data.sa1b import CorruptRecordError, CorruptRLEError
    from semantic_sam.evaluation import SKIPPED_RECORD

    base = SA1BDatasetMapper(False, source=corrupt_source, augmentations=[])
    assert not base.replace_corrupt  # evaluation default
    with pytest.raises(CorruptRLEError, match=r"mixed\.tsv row 6: annotation 1 \(id 1\): RLE counts cover 3071"):
        base({"shard": 0, "row": 6})
    with pytest.raises(CorruptRecordError, match="row 1: image field is not valid base64"):
        base({"shard": 0, "row": 1})
    assert base.bad_rows == 2

    mapper = SA1BEvalMapper(base=base)
    with caplog.at_level(logging.WARNING, logger="datasets.sa1b_eval_mapper"):
        out = mapper({"shard": 0, "row": 6})
    assert set(out) == {SKIPPED_RECORD} and "image" not in out
    assert out[SKIPPED_RECORD]["where"] == f"shard {corrupt_source.shards.paths[0]} row 6"
    assert "RLE counts cover 3071 pixels, expected 3072" in out[SKIPPED_RECORD]["reason"]
    assert any("mixed.tsv row 6" in r.getMessage() for r in caplog.records)
    good = mapper({"shard": 0, "row": 5})
    assert good["file_name"] == "sa_5.jpg" and len(good["points"]) == 3
    with pytest.raises(ValueError, match="must not replace corrupt records"):
        SA1BEvalMapper(base=SA1BDatasetMapper(True, source=corrupt_source, augmentations=[]))
