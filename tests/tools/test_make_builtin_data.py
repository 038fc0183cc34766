import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from datasets.builtin_labels import OBJECT_CLASSES, OBJECT_PARTS, STUFF_CLASSES
from datasets.register_coco_panoptic_interactive import load_coco_panoptic_interactive
from semantic_sam.data.tsv import TSVFile
from tools.make_builtin_data import (
    LABELLED_LAYOUTS,
    PANOPTIC_CATEGORIES,
    VAL_START_ID,
    builtin_env,
    finest_partition,
    main,
    make_builtin_data,
    write_builtin_panoptic,
    write_builtin_parts,
)


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


# ------------------------------------------------------------------------------------------ labelled layouts
@pytest.fixture(scope="module")
def labelled_root(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("builtin_labelled"))
    make_builtin_data(
        out, num_train=3, num_val=2, seed=7, size=96, min_area=20, num_shards=2, labelled=LABELLED_LAYOUTS
    )
    return out


SPLITS = (("train", 1), ("val", VAL_START_ID))


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names)


def _scene(root, split, file_name):
    with open(os.path.join(root, "sa1b_json", split, os.path.splitext(file_name)[0] + ".json")) as f:
        anns = json.load(f)["annotations"]
    masks = [mask_utils.decode(a["segmentation"]).astype(bool) for a in anns]
    return anns, masks, {a["id"]: a for a in anns}


def _object_name(ann, by_id):
    while ann["synthetic"]["level"] not in ("object", "group"):
        ann = by_id[ann["synthetic"]["parent"]]
    return ann["synthetic"]["name"]


def _expected_segments(anns, masks, min_area):
    """(name, isthing, mask) of the stuff regions, the objects and each group's pixels outside its members."""
    out = []
    for a, m in zip(anns, masks):
        tier = a["synthetic"]["level"]
        if tier in ("stuff", "object"):
            out.append((a["synthetic"]["name"], int(tier == "object"), m))
        elif tier == "group":
            left = m.copy()
            for b, mb in zip(anns, masks):
                if b["synthetic"]["parent"] == a["id"] and b["synthetic"]["level"] == "object":
                    left &= ~mb
            if left.sum() >= min_area:
                out.append((a["synthetic"]["name"], 1, left))
    return out


def test_labelled_layouts_leave_the_default_outputs_unchanged(root, labelled_root):
    default, labelled = _files(root), _files(labelled_root)
    assert not any(f.startswith(("builtin_panoptic", "builtin_parts")) for f in default)
    assert set(default) < set(labelled)
    assert {f.split(os.sep)[0] for f in set(labelled) - set(default)} == {"builtin_panoptic", "builtin_parts"}
    for f in default:
        with open(os.path.join(root, f), "rb") as a, open(os.path.join(labelled_root, f), "rb") as b:
            assert a.read() == b.read(), f


def test_builtin_panoptic_has_a_segment_per_object_and_stuff_region(labelled_root):
    n_objects = n_stuff = 0
    for split, start in SPLITS:
        with open(os.path.join(labelled_root, "builtin_panoptic", f"panoptic_{split}.json")) as f:
            data = json.load(f)
        cats = {c["id"]: c for c in data["categories"]}
        assert {c["name"] for c in cats.values() if c["isthing"]} == set(OBJECT_CLASSES)
        assert {c["name"] for c in cats.values() if not c["isthing"]} == set(STUFF_CLASSES)
        assert [img["id"] for img in data["images"]] == [start + i for i in range(len(data["images"]))]
        for img, ann in zip(data["images"], data["annotations"]):
            assert os.path.isfile(os.path.join(labelled_root, "sa1b_json", split, img["file_name"]))
            ids = _pan_ids(os.path.join(labelled_root, "builtin_panoptic", f"panoptic_{split}", ann["file_name"]))
            assert ids.shape == (img["height"], img["width"])
            assert set(np.unique(ids)) - {0} == {s["id"] for s in ann["segments_info"]}
            got = sorted(
                (cats[s["category_id"]]["name"], cats[s["category_id"]]["isthing"], (ids == s["id"]).tobytes())
                for s in ann["segments_info"]
            )
            anns, masks, by_id = _scene(labelled_root, split, img["file_name"])
            expected = sorted((n, t, m.tobytes()) for n, t, m in _expected_segments(anns, masks, min_area=20))
            assert got == expected
            for s in ann["segments_info"]:
                assert s["area"] == int((ids == s["id"]).sum()) and s["iscrowd"] == 0
            # every pixel of a part lies in the one segment of its object
            name_of = {s["id"]: cats[s["category_id"]]["name"] for s in ann["segments_info"]}
            for a, m in zip(anns, masks):
                if a["synthetic"]["level"] in ("part", "subpart"):
                    (seg,) = np.unique(ids[m])
                    assert name_of[int(seg)] == _object_name(a, by_id)
            n_objects += sum(t for _, t, _ in expected)
            n_stuff += sum(1 - t for _, t, _ in expected)
    assert n_objects > 0 and n_stuff > 0


def test_builtin_parts_json_holds_every_part_as_object_colon_part(labelled_root):
    n = 0
    for split, _ in SPLITS:
        with open(os.path.join(labelled_root, "builtin_parts", f"{split}.json")) as f:
            data = json.load(f)
        names = {c["id"]: c["name"] for c in data["categories"]}
        assert set(names.values()) == {f"{o}:{p}" for o, (ps, ss) in OBJECT_PARTS.items() for p in ps + ss}
        for img in data["images"]:
            anns, _, by_id = _scene(labelled_root, split, img["file_name"])
            expected = sorted(
                (a["id"], f"{_object_name(a, by_id)}:{a['synthetic']['name']}", a["segmentation"]["counts"], a["bbox"])
                for a in anns
                if a["synthetic"]["level"] in ("part", "subpart")
            )
            mine = [a for a in data["annotations"] if a["image_id"] == img["id"]]
            got = sorted((a["id"], names[a["category_id"]], a["segmentation"]["counts"], a["bbox"]) for a in mine)
            assert got == expected
            assert all(a["segmentation"]["size"] == [img["height"], img["width"]] and a["iscrowd"] == 0 for a in mine)
            n += len(mine)
    assert n > 0


def test_labelled_layouts_are_deterministic(labelled_root, tmp_path):
    make_builtin_data(str(tmp_path), num_train=3, num_val=2, seed=7, size=96, min_area=20, num_shards=2,
                      labelled=LABELLED_LAYOUTS)
    files = [f for f in _files(labelled_root) if f.startswith(("builtin_panoptic", "builtin_parts"))]
    assert files == [f for f in _files(str(tmp_path)) if f.startswith(("builtin_panoptic", "builtin_parts"))]
    for f in files:
        with open(os.path.join(labelled_root, f), "rb") as a, open(os.path.join(tmp_path, f), "rb") as b:
            assert a.read() == b.read(), f


def test_labelled_layout_errors(labelled_root, tmp_path):
    with pytest.raises(ValueError, match="unknown layout 'masks'"):
        make_builtin_data(str(tmp_path / "none"), num_train=1, num_val=1, labelled=("masks",))
    with pytest.raises(ValueError, match="colours: unknown scheme 'sepia'"):
        make_builtin_data(str(tmp_path / "none"), num_train=1, num_val=1, colours="sepia")
    assert not os.path.exists(tmp_path / "none")

    copy = tmp_path / "copy"
    shutil.copytree(os.path.join(labelled_root, "sa1b_json"), copy / "sa1b_json")
    pairs = [(str(copy / "sa1b_json" / "val" / f"sa_{VAL_START_ID}.{ext}")) for ext in ("jpg", "json")]
    with pytest.raises(ValueError, match="read their images from"):
        write_builtin_parts([tuple(pairs)], labelled_root, "val")
    with open(pairs[1]) as f:
        record = json.load(f)
    obj = next(a for a in record["annotations"] if a["synthetic"]["level"] == "object")
    obj["synthetic"]["name"] = "spaceship"
    with open(pairs[1], "w") as f:
        json.dump(record, f)
    with pytest.raises(ValueError, match=r"object 'spaceship' is not a built-in object class"):
        write_builtin_panoptic([tuple(pairs)], str(copy), "val")
    del record["annotations"][0]["synthetic"]
    with open(pairs[1], "w") as f:
        json.dump(record, f)
    with pytest.raises(ValueError, match="has no 'synthetic' name, level and parent"):
        write_builtin_parts([tuple(pairs)], str(copy), "val")


def test_cli_labelled_flag(tmp_path, capsys):
    out = str(tmp_path / "data")
    argv = ["--output", out, "--num-train", "1", "--num-val", "1", "--size", "48", "--min-area", "4", "--no-progress"]
    assert main(argv + ["--labelled", "parts"]) == 0
    assert os.path.isfile(os.path.join(out, "builtin_parts", "train.json"))
    assert os.path.isfile(os.path.join(out, "builtin_parts", "val.json"))
    assert not os.path.exists(os.path.join(out, "builtin_panoptic"))
    with pytest.raises(SystemExit):
        main(argv + ["--labelled", "masks"])
    assert "invalid choice: 'masks'" in capsys.readouterr().err
    assert main(["--output", out, "--num-train", "1", "--num-val", "1", "--size", "8", "--no-progress"]) == 2
    assert "error: need num_images >= 0 and size >= 16" in capsys.readouterr().err


def _ann(ann_id, mask, name, level, parent):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "id": ann_id,
        "segmentation": {"size": list(mask.shape), "counts": rle["counts"].decode("ascii")},
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "area": int(mask.sum()),
        "synthetic": {"name": name, "level": level, "parent": parent},
    }


def test_a_group_without_its_member_keeps_the_members_class(tmp_path):
    """By hand (10 x 12): a house group whose second member's mask was dropped (its wall hangs under the
    group) and a tree group with 2 pixels outside its member (under min_area: void)."""
    h, w = 10, 12

    def box(y0, y1, x0, x1):
        m = np.zeros((h, w), bool)
        m[y0:y1, x0:x1] = True
        return m

    sky, house1, roof = box(0, 5, 0, 12), box(5, 10, 0, 3), box(5, 7, 0, 3)
    houses, wall = box(5, 10, 0, 6), box(7, 10, 3, 6)
    tree, trees = box(5, 10, 8, 10), box(5, 10, 8, 10) | box(9, 10, 10, 12)
    ground = ~(sky | houses | trees)
    anns = [
        _ann(1, sky, "sky", "stuff", None),
        _ann(2, ground, "ground", "stuff", None),
        _ann(3, houses, "house", "group", None),
        _ann(4, house1, "house", "object", 3),
        _ann(5, roof, "roof", "part", 4),
        _ann(6, wall, "wall", "part", 3),
        _ann(7, trees, "tree", "group", None),
        _ann(8, tree, "tree", "object", 7),
    ]
    folder = tmp_path / "sa1b_json" / "val"
    folder.mkdir(parents=True)
    jpg, js = str(folder / "sa_9.jpg"), str(folder / "sa_9.json")
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(jpg)
    with open(js, "w") as f:
        json.dump({"image": {"image_id": 9, "width": w, "height": h, "file_name": "sa_9.jpg"}, "annotations": anns}, f)

    with open(write_builtin_panoptic([(jpg, js)], str(tmp_path), "val", min_area=4)) as f:
        data = json.load(f)
    name = {c["id"]: c["name"] for c in data["categories"]}
    ids = _pan_ids(tmp_path / "builtin_panoptic" / "panoptic_val" / "sa_9.png")
    got = sorted((name[s["category_id"]], (ids == s["id"]).tobytes()) for s in data["annotations"][0]["segments_info"])
    expected = [("sky", sky), ("ground", ground), ("house", house1), ("house", houses & ~house1), ("tree", tree)]
    assert got == sorted((n, m.tobytes()) for n, m in expected)
    assert (ids[trees & ~tree] == 0).all()

    with open(write_builtin_parts([(jpg, js)], str(tmp_path), "val")) as f:
        data = json.load(f)
    name = {c["id"]: c["name"] for c in data["categories"]}
    got = sorted((a["id"], name[a["category_id"]]) for a in data["annotations"])
    assert got == [(5, "house:roof"), (6, "house:wall")]


def test_typical_colours_change_the_pixels_not_the_layout(labelled_root, tmp_path):
    """--colours typical writes the same files (names, splits, layouts) with other pixels."""
    make_builtin_data(str(tmp_path), num_train=3, num_val=2, seed=7, size=96, min_area=20, num_shards=2,
                      labelled=LABELLED_LAYOUTS, colours="typical")
    assert _files(str(tmp_path)) == _files(labelled_root)
    jpg = os.path.join("sa1b_json", "val", f"sa_{VAL_START_ID}.jpg")
    a, b = (np.asarray(Image.open(os.path.join(root, jpg))) for root in (labelled_root, str(tmp_path)))
    assert a.shape == b.shape and not np.array_equal(a, b)
