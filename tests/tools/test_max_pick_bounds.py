import json

import numpy as np
import pytest
from PIL import Image

from semantic_sam.data.sa1b import encode_mask_rle
from tools.max_pick_bounds import RULES, main, pick_rule_ious


def _nested_squares():
    """11 x 11 image: the whole image (121 px), a centred 5 x 5 (25 px) and the centre pixel (1 px).

    All three masks are clicked at their common centre (5, 5), so every click lies in all three.
    """
    big = np.ones((11, 11), bool)
    mid = np.zeros((11, 11), bool)
    mid[3:8, 3:8] = True
    small = np.zeros((11, 11), bool)
    small[5, 5] = True
    return np.stack([big, mid, small])


def test_pick_rules_on_nested_squares_match_hand_computed_ious():
    out = pick_rule_ious(_nested_squares())
    big_mid, big_small, mid_small = 25 / 121, 1 / 121, 1 / 25
    # clicked masks: big, mid, small; containing masks from smallest to largest: small, mid, big
    np.testing.assert_allclose(out["smallest"], [big_small, mid_small, 1.0])
    np.testing.assert_allclose(out["kth_smallest_2"], [big_mid, 1.0, mid_small])
    np.testing.assert_allclose(out["largest"], [1.0, big_mid, big_small])
    np.testing.assert_allclose(
        out["uniform"],
        [(big_small + big_mid + 1) / 3, (mid_small + 1 + big_mid) / 3, (1 + mid_small + big_small) / 3],
    )
    np.testing.assert_allclose(out["oracle"], 1.0)
    assert out["num_containing"].tolist() == [3, 3, 3]


def test_disjoint_masks_are_unambiguous():
    a = np.zeros((6, 8), bool)
    a[:, :4] = True
    out = pick_rule_ious(np.stack([a, ~a]))
    for rule in RULES:
        np.testing.assert_allclose(out[rule], 1.0, err_msg=rule)
    assert out["num_containing"].tolist() == [1, 1]


def test_cli_reads_an_sa1b_folder_and_averages_over_clicks(tmp_path, capsys):
    masks = _nested_squares()
    Image.fromarray(np.zeros((11, 11, 3), np.uint8)).save(tmp_path / "sa_1.jpg")
    anns = [{"id": k, "segmentation": encode_mask_rle(m), "bbox": [0, 0, 1, 1]} for k, m in enumerate(masks)]
    (tmp_path / "sa_1.json").write_text(
        json.dumps({"image": {"image_id": 1, "width": 11, "height": 11, "file_name": "sa_1.jpg"}, "annotations": anns})
    )
    res = main([str(tmp_path), "--no-progress"])
    expected = pick_rule_ious(masks)
    for rule in RULES:
        assert res[rule] == pytest.approx(100 * expected[rule].mean())
    assert "3 clicks, 3.00 masks contain each click" in capsys.readouterr().out


def test_cli_rejects_a_folder_without_pairs(tmp_path):
    (tmp_path / "sa_1.jpg").write_bytes(b"")
    with pytest.raises(SystemExit, match="missing json"):
        main([str(tmp_path), "--no-progress"])
