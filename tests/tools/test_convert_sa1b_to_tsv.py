import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import tools.convert_sa1b_to_tsv as conv
from semantic_sam.data.sa1b import TSVShardSource
from semantic_sam.data.tsv import TSVFile
from tools.make_synthetic_sa1b import make_synthetic_sa1b


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sa1b")
    make_synthetic_sa1b(str(folder), 10, seed=3, size=48)
    return str(folder)


@pytest.fixture
def inputs(synthetic, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(synthetic, folder)
    return str(folder)


def _all_names(out):
    names = []
    for p in sorted(f for f in os.listdir(out) if f.endswith(".tsv")):
        names += [row[0] for row in TSVFile(os.path.join(out, p))]
    return names


def test_convert_shards_every_image_once(inputs, tmp_path):
    out = str(tmp_path / "out")
    report = conv.convert_sa1b_to_tsv(inputs, out, 3, progress=False)
    shards = sorted(f for f in os.listdir(out) if f.endswith(".tsv"))
    assert shards == ["sa1b-00000.tsv", "sa1b-00001.tsv", "sa1b-00002.tsv"]
    assert all(os.path.isfile(os.path.join(out, s[:-4] + ".lineidx")) for s in shards)
    assert [len(TSVFile(os.path.join(out, s))) for s in shards] == [3, 3, 4]  # contiguous chunks
    assert _all_names(out) == [f"sa_{i}.jpg" for i in range(1, 11)]  # natural order, each once
    assert report.rows == 10 and len(report.written) == 3 and report.skipped == []
    # rows decode to the original image and annotations
    src = TSVShardSource([os.path.join(out, s) for s in shards])
    rec = src.load(9)
    assert rec.file_name == "sa_10.jpg"
    np.testing.assert_array_equal(rec.image, np.asarray(Image.open(os.path.join(inputs, "sa_10.jpg")).convert("RGB")))
    with open(os.path.join(inputs, "sa_10.json")) as f:
        assert rec.annotations == json.load(f)["annotations"]
    with open(os.path.join(out, "conversion_report.json")) as f:
        assert json.load(f)["rows"] == 10


def test_verification_catches_a_corrupted_shard_and_rerun_repairs_it(inputs, tmp_path):
    out = str(tmp_path / "out")
    conv.convert_sa1b_to_tsv(inputs, out, 3, progress=False)
    shard = os.path.join(out, "sa1b-00001.tsv")
    marker = json.load(open(os.path.join(out, "sa1b-00001.done.json")))
    assert conv.verify_shard(shard, marker["rows"], marker["crc32"]) == []
    data = bytearray(open(shard, "rb").read())
    offsets = [int(x) for x in open(os.path.join(out, "sa1b-00001.lineidx"))]
    pos = offsets[1] + (offsets[2] - offsets[1]) // 2  # middle of row 1 (its base64)
    data[pos] = ord("A") if data[pos] != ord("A") else ord("B")
    open(shard, "wb").write(bytes(data))
    problems = conv.verify_shard(shard, marker["rows"], marker["crc32"])
    assert problems == ["sa1b-00001.tsv row 1: checksum differs from what was written"]

    report = conv.convert_sa1b_to_tsv(inputs, out, 3, progress=False)
    assert [os.path.basename(p) for p in report.written] == ["sa1b-00001.tsv"]
    assert sorted(os.path.basename(p) for p in report.complete) == ["sa1b-00000.tsv", "sa1b-00002.tsv"]
    assert report.rewritten_after_verification[0][0] == shard
    assert "row 1: checksum" in report.rewritten_after_verification[0][1]
    marker = json.load(open(os.path.join(out, "sa1b-00001.done.json")))
    assert conv.verify_shard(shard, marker["rows"], marker["crc32"]) == []
    assert _all_names(out) == [f"sa_{i}.jpg" for i in range(1, 11)]


def test_verify_detects_truncation_and_bad_lineidx(inputs, tmp_path):
    out = str(tmp_path / "out")
    conv.convert_sa1b_to_tsv(inputs, out, 1, progress=False)
    shard = os.path.join(out, "sa1b-00000.tsv")
    with open(shard, "ab") as f:
        f.write(b"trailing garbage\n")
    assert conv.verify_shard(shard)[0].endswith("but the file has %d bytes" % os.path.getsize(shard))
    offsets = [int(x) for x in open(os.path.join(out, "sa1b-00000.lineidx"))]
    with open(shard, "rb+") as f:
        f.truncate(offsets[-1] + 5)  # inside the last row's file name
    assert conv.verify_shard(shard) == ["sa1b-00000.tsv row 9: 1 fields, expected 3"]
    with open(shard, "rb+") as f:
        f.truncate(offsets[-2])  # the .lineidx now points past the end
    assert "does not match" in conv.verify_shard(shard)[0]
    os.remove(os.path.join(out, "sa1b-00000.lineidx"))
    assert conv.verify_shard(shard) == ["sa1b-00000.lineidx is missing"]


def test_resume_after_interruption_does_not_duplicate(inputs, tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    real = conv.check_input
    calls = {"n": 0}

    def interrupted(*args):
        calls["n"] += 1
        if calls["n"] == 5:  # in the middle of shard 1
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(conv, "check_input", interrupted)
    with pytest.raises(KeyboardInterrupt):
        conv.convert_sa1b_to_tsv(inputs, out, 3, progress=False)
    monkeypatch.setattr(conv, "check_input", real)
    assert sorted(os.listdir(out)) == ["sa1b-00000.done.json", "sa1b-00000.lineidx", "sa1b-00000.tsv"]
    # a hard kill leaves partial files behind; the rerun must not trust them
    with open(os.path.join(out, "sa1b-00001.tsv.partial"), "w") as f:
        f.write("sa_4.jpg\t{}\tAAAA\n")

    report = conv.convert_sa1b_to_tsv(inputs, out, 3, progress=False)
    assert [os.path.basename(p) for p in report.complete] == ["sa1b-00000.tsv"]
    assert [os.path.basename(p) for p in report.written] == ["sa1b-00001.tsv", "sa1b-00002.tsv"]
    assert report.rows == 10
    assert _all_names(out) == [f"sa_{i}.jpg" for i in range(1, 11)]
    assert not [f for f in os.listdir(out) if f.endswith(".partial")]


def test_skip_report(inputs, tmp_path, capsys):
    d = inputs
    os.remove(os.path.join(d, "sa_2.json"))  # missing json
    os.remove(os.path.join(d, "sa_3.jpg"))  # missing jpg
    with open(os.path.join(d, "sa_4.jpg"), "wb") as f:  # unreadable jpg
        f.write(b"\xff\xd8\xff not really a jpeg")
    data = json.load(open(os.path.join(d, "sa_5.json")))
    data["annotations"][0]["segmentation"]["size"] = [7, 7]  # RLE size mismatch
    json.dump(data, open(os.path.join(d, "sa_5.json"), "w"))
    data["annotations"] = []  # no masks
    json.dump(data, open(os.path.join(d, "sa_6.json"), "w"))
    with open(os.path.join(d, "sa_7.json"), "w") as f:  # bad json
        f.write("{truncated")
    data = json.load(open(os.path.join(d, "sa_8.json")))
    data["image"]["width"] += 1  # JSON image size differs from the JPEG
    json.dump(data, open(os.path.join(d, "sa_8.json"), "w"))

    out = str(tmp_path / "out")
    assert conv.main(["--input", d, "--output", out, "--num-shards", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    report = json.load(open(os.path.join(out, "conversion_report.json")))
    reasons = {os.path.basename(p): r for p, r in report["skipped"]}
    assert reasons["sa_2.jpg"] == "missing json"
    assert reasons["sa_3.json"] == "missing jpg"
    assert reasons["sa_4.jpg"].startswith("unreadable jpg:")
    assert reasons["sa_5.jpg"].startswith("size mismatch:") and "RLE size 7x7" in reasons["sa_5.jpg"]
    assert reasons["sa_6.jpg"].startswith("no masks:")
    assert reasons["sa_7.jpg"].startswith("bad json:")
    assert reasons["sa_8.jpg"].startswith("size mismatch:") and "JSON image size" in reasons["sa_8.jpg"]
    assert report["skip_counts"] == {
        "missing json": 1,
        "missing jpg": 1,
        "unreadable jpg": 1,
        "size mismatch": 2,
        "no masks": 1,
        "bad json": 1,
    }
    assert _all_names(out) == ["sa_1.jpg", "sa_9.jpg", "sa_10.jpg"]
    assert "skipped 7 inputs" in printed and "sa_4.jpg: unreadable jpg" in printed
    # the report of a resumed run still lists what was skipped in the complete shards
    report2 = conv.convert_sa1b_to_tsv(d, out, 2, progress=False)
    assert len(report2.complete) == 2 and len(report2.skipped) == 7


def test_stale_shards_are_refused_unless_clean(inputs, tmp_path):
    out = str(tmp_path / "out")
    conv.convert_sa1b_to_tsv(inputs, out, 3, progress=False)
    with pytest.raises(conv.ConversionError, match="not part of a 2-shard conversion .*sa1b-00002.tsv"):
        conv.convert_sa1b_to_tsv(inputs, out, 2, progress=False)
    report = conv.convert_sa1b_to_tsv(inputs, out, 2, clean=True, progress=False)
    assert len(report.written) == 2 and sorted(f for f in os.listdir(out) if f.endswith(".tsv")) == [
        "sa1b-00000.tsv",
        "sa1b-00001.tsv",
    ]
    assert _all_names(out) == [f"sa_{i}.jpg" for i in range(1, 11)]


def test_changed_inputs_redo_the_affected_shards(inputs, tmp_path):
    out = str(tmp_path / "out")
    conv.convert_sa1b_to_tsv(inputs, out, 2, progress=False)
    make_synthetic_sa1b(inputs, 1, seed=9, size=48, start_id=11)
    report = conv.convert_sa1b_to_tsv(inputs, out, 2, progress=False)
    # 11 inputs in 2 chunks: shard 0 keeps sa_1..sa_5 and is kept, shard 1 gets sa_6..sa_11
    assert [os.path.basename(p) for p in report.complete] == ["sa1b-00000.tsv"]
    assert [os.path.basename(p) for p in report.written] == ["sa1b-00001.tsv"]
    assert _all_names(out) == [f"sa_{i}.jpg" for i in range(1, 12)]


def test_only_shards_and_cli_errors(inputs, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert (
        conv.main(["--input", inputs, "--output", out, "--num-shards", "4", "--only-shards", "1,3", "--no-progress"])
        == 0
    )
    assert sorted(f for f in os.listdir(out) if f.endswith(".tsv")) == ["sa1b-00001.tsv", "sa1b-00003.tsv"]
    assert (
        conv.main(["--input", inputs, "--output", out, "--num-shards", "4", "--only-shards", "0-1", "--no-progress"])
        == 0
    )
    assert "1 written, 1 already complete" in capsys.readouterr().out
    assert conv.main(["--input", inputs, "--output", out, "--num-shards", "4", "--only-shards", "9"]) == 2
    assert "outside 0..3" in capsys.readouterr().err
    assert conv.main(["--input", str(tmp_path / "nope"), "--output", out, "--num-shards", "1"]) == 2
    assert "SA-1B folder not found" in capsys.readouterr().err


def test_empty_input_folder_is_a_user_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    out = str(tmp_path / "out")
    assert conv.main(["--input", str(empty), "--output", out, "--num-shards", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no sa_N.jpg + sa_N.json pair in {empty}") and err.count("\n") == 1
    assert "--recursive" in err
    assert not os.path.exists(out)  # nothing written
    (empty / "sa_1.jpg").write_bytes(b"x")  # unpaired files are named
    with pytest.raises(conv.ConversionError, match=r"1 unpaired file\(s\), e\.g\. .*sa_1\.jpg \(missing json\)"):
        conv.convert_sa1b_to_tsv(str(empty), out, 1, progress=False)


def test_fewer_inputs_than_shards_is_a_user_error(inputs, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert conv.main(["--input", inputs, "--output", out, "--num-shards", "11", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"only 10 input pair(s) in {inputs} for 11 shards" in err and "--num-shards 10 or fewer" in err


def test_bad_rle_counts_are_skipped_with_the_annotation_named(inputs, tmp_path):
    from pycocotools import mask as mask_utils

    path = os.path.join(inputs, "sa_3.json")
    data = json.load(open(path))
    seg = data["annotations"][2]["segmentation"]
    h, w = seg["size"]
    seg["counts"] = mask_utils.frPyObjects({"size": [h, w], "counts": [h * w - 1]}, h, w)["counts"].decode()
    json.dump(data, open(path, "w"))
    out = str(tmp_path / "out")
    report = conv.convert_sa1b_to_tsv(inputs, out, 2, progress=False)
    assert [(os.path.basename(p), r) for p, r in report.skipped] == [
        ("sa_3.jpg", f"bad rle: annotation 2 (id {data['annotations'][2]['id']}): RLE counts cover {h * w - 1} "
                     f"pixels, expected {h * w} ({h}x{w})")
    ]
    assert report.skip_counts() == {"bad rle": 1}
    assert "sa_3.jpg" not in _all_names(out) and len(_all_names(out)) == 9


def test_a_shard_whose_inputs_were_all_skipped_is_reported(inputs, tmp_path, capsys):
    for i in (1, 2, 3):  # shard 0 of 3 holds sa_1..sa_3
        with open(os.path.join(inputs, f"sa_{i}.json"), "w") as f:
            f.write("{truncated")
    out = str(tmp_path / "out")
    assert conv.main(["--input", inputs, "--output", out, "--num-shards", "3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "WARNING: 1 shard(s) have no rows, every input was skipped (sa1b-00000.tsv)" in printed
    assert json.load(open(os.path.join(out, "conversion_report.json")))["empty_shards"] == ["sa1b-00000.tsv"]
    report = conv.convert_sa1b_to_tsv(inputs, out, 3, progress=False)  # resumed: still reported
    assert [os.path.basename(p) for p in report.empty] == ["sa1b-00000.tsv"]
