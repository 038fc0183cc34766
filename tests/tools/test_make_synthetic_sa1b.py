import hashlib
import json
import os
import re

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from datasets.builtin_labels import OBJECT_CLASSES, OBJECT_PARTS, STUFF_CLASSES
from tools.make_synthetic_sa1b import COLOURS, PALETTES, main, make_synthetic_sa1b, render_scene

PLAIN = re.compile(r"[a-z]+( [a-z]+)*")
# The names the built-in model must learn (issue 17): every one is a class of datasets/builtin_labels.py.
REQUIRED_STUFF = {"sky", "ground", "water", "wall", "floor"}
REQUIRED_OBJECTS = {"house", "tree", "face", "car", "flower", "robot", "target", "bug", "ball"}
REQUIRED_PARTS = {"roof", "wall", "door", "window", "trunk", "foliage", "eye", "mouth", "nose", "wheel", "petal",
                  "head", "arm", "pane", "knob"}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth")
    return make_synthetic_sa1b(str(folder), 6, seed=5, size=96)


def _load(pair):
    jpg, js = pair
    with open(js) as f:
        return np.asarray(Image.open(jpg).convert("RGB")), json.load(f)


def test_files_and_sa1b_schema(written):
    assert [os.path.basename(j) for j, _ in written] == [f"sa_{i}.jpg" for i in range(1, 7)]
    for k, pair in enumerate(written, start=1):
        img, data = _load(pair)
        h, w = img.shape[:2]
        assert max(h, w) == 96
        assert data["image"] == {"image_id": k, "width": w, "height": h, "file_name": f"sa_{k}.jpg"}
        anns = data["annotations"]
        assert len(anns) >= 3
        assert len({a["id"] for a in anns}) == len(anns)
        for a in anns:
            assert set(a) >= {
                "id",
                "segmentation",
                "bbox",
                "area",
                "predicted_iou",
                "stability_score",
                "point_coords",
                "crop_box",
            }
            seg = a["segmentation"]
            assert seg["size"] == [h, w] and isinstance(seg["counts"], str)
            m = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()})
            ys, xs = np.nonzero(m)
            assert a["area"] == int(m.sum()) > 0
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            ((px, py),) = a["point_coords"]
            assert m[int(py), int(px)] == 1  # the point lies inside its mask
            assert a["crop_box"] == [0, 0, w, h]
            assert 0 < a["predicted_iou"] <= 1 and 0 < a["stability_score"] <= 1


def test_masks_nest_like_a_tree(written):
    depths = []
    levels = set()
    for pair in written:
        img, data = _load(pair)
        anns = {a["id"]: a for a in data["annotations"]}
        masks = {
            i: mask_utils.decode(
                {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}
            ).astype(bool)
            for i, a in anns.items()
        }
        for i, a in anns.items():
            levels.add(a["synthetic"]["level"])
            parent = a["synthetic"]["parent"]
            if parent is not None:
                assert not (masks[i] & ~masks[parent]).any()  # a part lies inside its whole
                assert masks[i].sum() < masks[parent].sum()
        # any two masks are nested or disjoint
        ids = list(masks)
        for x in ids:
            for y in ids:
                inter = (masks[x] & masks[y]).sum()
                assert inter in (0, masks[x].sum(), masks[y].sum())
        depths.append(np.sum([masks[i] for i in ids], axis=0).max())
    assert levels >= {"stuff", "object", "part", "subpart"}
    assert max(depths) >= 3  # some pixels lie in 3+ nested masks (object > part > sub-part)


def test_deterministic_by_seed_and_index(tmp_path, written):
    a = make_synthetic_sa1b(str(tmp_path / "a"), 2, seed=5, size=96)
    for (j1, s1), (j2, s2) in zip(a, written[:2]):
        assert open(j1, "rb").read() == open(j2, "rb").read()
        assert open(s1).read() == open(s2).read()
    b = make_synthetic_sa1b(str(tmp_path / "b"), 1, seed=6, size=96)
    assert open(b[0][1]).read() != open(written[0][1]).read()


def test_render_scene_directly():
    img, regions = render_scene(np.random.default_rng(0), 40, 60)
    assert img.shape == (40, 60, 3) and img.dtype == np.uint8
    assert regions and all(r["mask"].shape == (40, 60) for r in regions)
    assert all(r["parent"] is None or r["parent"] < k for k, r in enumerate(regions))


def test_cli(tmp_path, capsys):
    assert main(["--output", str(tmp_path), "--num-images", "2", "--seed", "1", "--size", "32", "--no-progress"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["sa_1.jpg", "sa_1.json", "sa_2.jpg", "sa_2.json"]
    assert "wrote 2 images" in capsys.readouterr().out
    with pytest.raises(ValueError, match="size >= 16"):
        make_synthetic_sa1b(str(tmp_path), 1, size=8)


def test_pixels_and_masks_are_those_of_the_recipe():
    """Digest of the images, masks, tiers and parents of six scenes, as the generator drew them before its
    names changed (issue 17): the built-in model's recipe reproduces from the same pixels and masks."""
    digest = hashlib.sha256()
    for seed in range(6):
        image, regions = render_scene(np.random.default_rng(seed), 72, 96)
        digest.update(image.tobytes())
        for r in regions:
            digest.update(np.packbits(r["mask"]).tobytes())
            digest.update(f"{r['level']}:{r['parent']};".encode())
    assert digest.hexdigest() == "373f541264994bc2562c256d57e1ad4b8349357615d2df41be427e74a5d77586"


def _object_of(regions, k):
    while regions[k]["level"] not in ("object", "group"):
        k = regions[k]["parent"]
    return regions[k]["name"]


def _named(regions):
    """(tier, object, name) of every region (object None for stuff) after checking its name."""
    out = set()
    for k, r in enumerate(regions):
        name, tier = r["name"], r["level"]
        assert PLAIN.fullmatch(name), name
        if tier == "stuff":
            assert name in STUFF_CLASSES
            out.add((tier, None, name))
        elif tier in ("object", "group"):
            assert name in OBJECT_CLASSES
            parent = r["parent"]
            if parent is not None:  # a group's members share its name
                assert regions[parent]["level"] == "group" and regions[parent]["name"] == name
            out.add((tier, name, name))
        else:
            obj = _object_of(regions, k)
            parts, subparts = OBJECT_PARTS[obj]
            assert name in (parts if tier == "part" else subparts), (obj, tier, name)
            out.add((tier, obj, name))
    return out


def _catalog():
    """(tier, object, name) of every class of datasets/builtin_labels.py."""
    catalog = {("stuff", None, n) for n in STUFF_CLASSES} | {("object", o, o) for o in OBJECT_CLASSES}
    for obj, (parts, subparts) in OBJECT_PARTS.items():
        catalog |= {("part", obj, n) for n in parts} | {("subpart", obj, n) for n in subparts}
    return catalog


def test_every_mask_has_a_plain_name_of_the_label_catalog():
    """80 scenes show every name of datasets/builtin_labels.py at its tier and no other name."""
    seen = set()
    for seed in range(80):
        _, regions = render_scene(np.random.default_rng(seed), 120, 160)
        seen |= _named(regions)
    catalog = _catalog()
    assert {k for k in seen if k[0] != "group"} == catalog
    assert {n for t, _, n in seen if t == "stuff"} >= REQUIRED_STUFF
    assert {n for t, _, n in seen if t == "object"} >= REQUIRED_OBJECTS
    assert {n for t, _, n in seen if t in ("part", "subpart")} >= REQUIRED_PARTS
    assert any(t == "group" for t, _, _ in seen)


def test_written_names_are_the_scene_names(written):
    for pair in written:
        _, data = _load(pair)
        index = {a["id"]: k for k, a in enumerate(data["annotations"])}
        regions = [
            {
                "name": a["synthetic"]["name"],
                "level": a["synthetic"]["level"],
                "parent": None if a["synthetic"]["parent"] is None else index[a["synthetic"]["parent"]],
            }
            for a in data["annotations"]
        ]
        assert _named(regions)


def _region_key(regions, k):
    r = regions[k]
    if r["level"] in ("stuff", "object", "group"):
        return r["name"]
    return f"{_object_of(regions, k)}:{r['name']}"


def _own_pixels(regions, k):
    """The pixels region ``k`` painted itself: its mask minus its children's."""
    own = regions[k]["mask"].copy()
    for c in regions:
        if c["parent"] == k:
            own &= ~c["mask"]
    return own


def _share_in_hue(colours, key, hue_lo, hue_hi, min_sat=0.3):
    """Share of the ``key`` regions of 40 scenes whose median own-pixel hue (turns) is in [hue_lo, hue_hi]."""
    import cv2

    hits = total = 0
    for seed in range(40):
        image, regions = render_scene(np.random.default_rng(seed), 120, 160, colours)
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL).astype(np.float32) / 255.0
        for k in range(len(regions)):
            own = _own_pixels(regions, k)
            if _region_key(regions, k) != key or own.sum() < 20:
                continue
            h, s = np.median(hsv[..., 0][own]), np.median(hsv[..., 1][own])
            total += 1
            hits += bool(hue_lo <= h <= hue_hi and s >= min_sat)
    assert total >= 10, (key, total)
    return hits / total


def test_typical_colours_make_foliage_green_and_leave_random_scenes_any_colour():
    """Under the typical scheme most foliage is green (hue 0.2-0.42 turns, saturated); under the random
    scheme about as much foliage falls in that hue band as the band is wide (0.22 of the hues, fewer
    saturated)."""
    assert _share_in_hue("typical", "tree:foliage", 0.2, 0.42) >= 0.7
    assert _share_in_hue("random", "tree:foliage", 0.2, 0.42) <= 0.35


def test_every_painted_region_class_has_a_palette_and_no_palette_is_unused():
    """Palette keys: the stuff, the ball (one region) and every object:part of the catalogue but the flower's
    bloom (a node that paints nothing itself: its petals and centre do)."""
    expected = set(STUFF_CLASSES) | {"ball"}
    for obj, (parts, subparts) in OBJECT_PARTS.items():
        expected |= {f"{obj}:{n}" for n in (*parts, *subparts)}
    assert set(PALETTES) == expected - {"flower:bloom"}
    for box in {b for boxes in PALETTES.values() for b in boxes}:
        h0, h1, s0, s1, v0, v1 = box
        assert h0 < h1 and 0 <= s0 < s1 <= 1 and 0 <= v0 < v1 <= 1, box


def test_typical_scenes_have_the_masks_of_random_ones_and_reject_unknown_schemes(tmp_path):
    """The scheme changes colours only (80 typical scenes draw every class of the catalogue without a missing
    palette); unknown schemes are refused."""
    assert COLOURS == ("random", "typical")
    names = set()
    for seed in range(80):
        _, regions = render_scene(np.random.default_rng(seed), 120, 160, "typical")
        names |= _named(regions)
    catalog = _catalog()
    assert {k for k in names if k[0] != "group"} == catalog
    with pytest.raises(ValueError, match="colours: unknown scheme 'sepia'"):
        render_scene(np.random.default_rng(0), 40, 60, "sepia")
    with pytest.raises(ValueError, match="colours: unknown scheme"):
        make_synthetic_sa1b(str(tmp_path), 1, colours="sepia")
    assert main(["--output", str(tmp_path / "t"), "--num-images", "1", "--size", "48", "--no-progress",
                 "--colours", "typical"]) == 0
    random_jpg = make_synthetic_sa1b(str(tmp_path / "r"), 1, size=48)[0][0]
    typical_jpg = str(tmp_path / "t" / "sa_1.jpg")
    assert np.asarray(Image.open(random_jpg)).shape == np.asarray(Image.open(typical_jpg)).shape
    assert not np.array_equal(np.asarray(Image.open(random_jpg)), np.asarray(Image.open(typical_jpg)))
