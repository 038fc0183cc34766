import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from tools.make_synthetic_sa1b import main, make_synthetic_sa1b, render_scene


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
