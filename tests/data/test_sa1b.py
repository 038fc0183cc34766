import base64
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from semantic_sam.data.sa1b import (
    CorruptRecordError,
    JsonFolderSource,
    TSVShardSource,
    decode_image_base64,
    decode_masks,
    decode_rle,
    encode_mask_rle,
    find_sa1b_pairs,
    natural_sort_key,
    parse_annotation_json,
    record_from_files,
    record_from_tsv_row,
    validate_annotations,
)
from semantic_sam.data.tsv import TSVFormatError, TSVWriter


def _image(h=12, w=16):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png(img):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _masks(h=12, w=16):
    a = np.zeros((h, w), bool)
    a[2:8, 3:10] = True
    b = np.zeros((h, w), bool)
    b[4:6, 5:7] = True
    return [a, b]


def _json(h=12, w=16, masks=None, name="sa_1.jpg"):
    masks = _masks(h, w) if masks is None else masks
    return {
        "image": {"image_id": 1, "width": w, "height": h, "file_name": name},
        "annotations": [
            {"id": k, "segmentation": encode_mask_rle(m), "bbox": [0, 0, 1, 1]} for k, m in enumerate(masks)
        ],
    }


def _row(img=None, data=None, name="sa_1.jpg"):
    img = _image() if img is None else img
    data = _json(*img.shape[:2]) if data is None else data
    return [name, json.dumps(data), base64.b64encode(_png(img)).decode()]


def test_rle_round_trip_compressed_and_uncompressed():
    m = _masks()[0]
    rle = encode_mask_rle(m)
    assert isinstance(rle["counts"], str) and rle["size"] == [12, 16]
    np.testing.assert_array_equal(decode_rle(rle), m)
    # uncompressed (column-major run lengths): 2 rows x 3 cols, mask = middle column
    np.testing.assert_array_equal(decode_rle({"size": [2, 3], "counts": [2, 2, 2]}), [[0, 1, 0], [0, 1, 0]])
    masks = decode_masks([{"segmentation": encode_mask_rle(x)} for x in _masks()])
    assert masks.dtype == bool and masks.shape == (2, 12, 16)


def test_bad_rle_counts_raise():
    with pytest.raises(CorruptRecordError, match="RLE cannot be decoded"):
        decode_rle({"size": [4, 4], "counts": "zzzzzzzz"}, "here")


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "cannot be parsed"),
        ("[]", "must be an object"),
        ('{"annotations": []}', "no 'image' object"),
        ('{"image": {}}', "no 'annotations' list"),
        ('{"image": {}, "annotations": [{"segmentation": [1, 2]}]}', "annotation 0: 'segmentation' must be an RLE"),
        ('{"image": {}, "annotations": [{"segmentation": {"size": [3], "counts": ""}}]}', "RLE 'size'"),
    ],
)
def test_parse_annotation_json_errors(text, message):
    with pytest.raises(CorruptRecordError, match=message) as e:
        parse_annotation_json(text, "shard x.tsv row 7")
    assert str(e.value).startswith("shard x.tsv row 7: ")


def test_validate_annotations():
    data = _json()
    validate_annotations(data, (12, 16), "w")
    with pytest.raises(CorruptRecordError, match=r"JSON image size 12x16 \(HxW\) differs from the image's 12x15"):
        validate_annotations(data, (12, 15), "w")
    data["image"].pop("width")
    with pytest.raises(
        CorruptRecordError, match=r"annotation 0 \(id 0\): RLE size 12x16 differs from the image size 12x15"
    ):
        validate_annotations(data, (12, 15), "w")
    with pytest.raises(CorruptRecordError, match="no masks"):
        validate_annotations({"image": {}, "annotations": []}, (12, 16), "w")


def test_record_from_tsv_row():
    img = _image()
    rec = record_from_tsv_row(_row(img), "shard s.tsv row 0")
    np.testing.assert_array_equal(rec.image, img)
    assert (rec.height, rec.width, rec.file_name) == (12, 16, "sa_1.jpg")
    assert len(rec.annotations) == 2 and rec.where == "shard s.tsv row 0"


def test_record_from_tsv_row_errors():
    row = _row()
    with pytest.raises(CorruptRecordError, match="expected 3 tab-separated fields"):
        record_from_tsv_row(row[:2], "r")
    with pytest.raises(CorruptRecordError, match="not valid base64"):
        record_from_tsv_row([row[0], row[1], "@@not base64@@"], "r")
    with pytest.raises(CorruptRecordError, match="image cannot be decoded"):
        record_from_tsv_row([row[0], row[1], base64.b64encode(b"not an image").decode()], "r")
    with pytest.raises(CorruptRecordError, match="JSON image size 12x16"):
        record_from_tsv_row(_row(_image(10, 16), _json(12, 16)), "r")
    data = _json(12, 16)
    del data["image"]["height"]
    with pytest.raises(CorruptRecordError, match="RLE size 12x16 differs from the image size 10x16"):
        record_from_tsv_row(_row(_image(10, 16), data), "r")
    with pytest.raises(CorruptRecordError, match="no masks"):
        record_from_tsv_row(_row(data=_json(masks=[])), "r")
    with pytest.raises(CorruptRecordError, match="cannot be parsed"):
        record_from_tsv_row([row[0], "{oops", row[2]], "r")
    with pytest.raises(CorruptRecordError, match="not valid base64"):
        decode_image_base64("abc", "r")


def test_natural_sort_key():
    names = ["sa_10.jpg", "sa_2.jpg", "sa_1.jpg", "b-1.tsv", "a.tsv"]
    assert sorted(names, key=natural_sort_key) == ["a.tsv", "b-1.tsv", "sa_1.jpg", "sa_2.jpg", "sa_10.jpg"]


def test_find_pairs_and_json_source(tmp_path):
    for i in (10, 2, 1):
        img = _image()
        (tmp_path / f"sa_{i}.jpg").write_bytes(_png(img))
        (tmp_path / f"sa_{i}.json").write_text(json.dumps(_json(name=f"sa_{i}.jpg")))
    (tmp_path / "sa_3.jpg").write_bytes(b"x")
    (tmp_path / "sa_4.json").write_text("{}")
    pairs, unpaired = find_sa1b_pairs(str(tmp_path))
    assert [os.path.basename(p[0]) for p in pairs] == ["sa_1.jpg", "sa_2.jpg", "sa_10.jpg"]
    assert [(os.path.basename(p), r) for p, r in unpaired] == [
        ("sa_3.jpg", "missing json"),
        ("sa_4.json", "missing jpg"),
    ]
    src = JsonFolderSource(pairs)
    dicts = src.dataset_dicts()
    assert len(src) == 3 and dicts[2]["file_name"].endswith("sa_10.jpg") and src.index_of(dicts[2]) == 2
    rec = src.load(1)
    assert rec.file_name == "sa_2.jpg" and rec.image.shape == (12, 16, 3)
    assert "sa_2.jpg" in src.describe(1)
    with pytest.raises(FileNotFoundError, match="SA-1B folder not found"):
        find_sa1b_pairs(str(tmp_path / "missing"))


def test_record_from_files_missing_json(tmp_path):
    (tmp_path / "sa_1.jpg").write_bytes(_png(_image()))
    with pytest.raises(CorruptRecordError, match="file missing"):
        record_from_files(str(tmp_path / "sa_1.jpg"), str(tmp_path / "sa_1.json"))


def test_tsv_shard_source(tmp_path):
    paths = []
    for s, n in enumerate([2, 1]):
        p = str(tmp_path / f"s{s}.tsv")
        with TSVWriter(p) as w:
            for r in range(n):
                w.write(_row(name=f"sa_{s}_{r}.jpg", data=_json(name="")))
        paths.append(p)
    with TSVWriter(str(tmp_path / "bad.tsv")) as w:
        w.write(["a", "b"])
    src = TSVShardSource(paths + [str(tmp_path / "bad.tsv")])
    assert src.dataset_dicts() == [
        {"shard": 0, "row": 0},
        {"shard": 0, "row": 1},
        {"shard": 1, "row": 0},
        {"shard": 2, "row": 0},
    ]
    assert src.index_of({"shard": 1, "row": 0}) == 2
    assert src.load(2).file_name == "sa_1_0.jpg"  # the TSV name is used when the JSON has none
    assert src.describe(1) == f"shard {paths[0]} row 1"
    with pytest.raises(CorruptRecordError, match=r"bad\.tsv row 0: expected 3 tab-separated fields"):
        src.load(3)
    with pytest.raises(KeyError, match="needs 'shard' and 'row'"):
        src.index_of({"idx": (0, 0)})


def test_tsv_shard_source_refuses_an_empty_shard(tmp_path):
    good = str(tmp_path / "s0.tsv")
    with TSVWriter(good) as w:
        w.write(_row())
    empty = str(tmp_path / "s1.tsv")
    with TSVWriter(empty):  # zero rows: an empty .tsv and an empty .lineidx
        pass
    assert os.path.getsize(empty) == 0 and os.path.getsize(tmp_path / "s1.lineidx") == 0
    for call in (len, lambda s: s.dataset_dicts()):
        with pytest.raises(TSVFormatError) as e:
            call(TSVShardSource([good, empty]))
        assert str(e.value).startswith(f"{empty} is an empty SA-1B shard (no rows in s1.lineidx)")
        assert "\n" not in str(e.value)
    # without its .lineidx (regenerated by a scan) the shard is just as empty
    os.remove(tmp_path / "s1.lineidx")
    with pytest.raises(TSVFormatError, match="s1.tsv is an empty SA-1B shard"):
        TSVShardSource([empty]).dataset_dicts()


def test_tsv_shard_source_empty_lineidx_of_a_non_empty_shard(tmp_path):
    path = str(tmp_path / "s0.tsv")
    with TSVWriter(path) as w:
        w.write(_row())
    open(tmp_path / "s0.lineidx", "w").close()
    with pytest.raises(TSVFormatError, match=r"s0\.lineidx is empty but .*s0\.tsv has \d+ bytes"):
        TSVShardSource([path]).dataset_dicts()
