"""tools/bench/rows_amg.py: the reference-order generator's run-length encoding."""
import numpy as np
import torch

from tools.bench.rows_amg import masks_to_uncompressed_rle


def test_uncompressed_rle_matches_pycocotools():
    from semantic_sam.predictor.amg_utils import coco_rle_to_mask

    g = torch.Generator().manual_seed(0)
    masks = torch.rand(4, 7, 5, generator=g) > 0.5
    masks[1] = False
    masks[2] = True
    masks[3, 0, 0] = True
    rles = masks_to_uncompressed_rle(masks)
    for m, rle in zip(masks, rles):
        assert rle["size"] == [7, 5] and sum(rle["counts"]) == 35
        np.testing.assert_array_equal(coco_rle_to_mask(rle), m.numpy())
